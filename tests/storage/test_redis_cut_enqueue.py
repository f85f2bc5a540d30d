"""A streamed ``enqueue_many`` on Redis whose connection is cut in the middle.

A batch's script calls are written one by one as they are built; a connection lost
under them is not an error for the caller: the client reconnects and sends the batch
again whole, and the enqueue script leaves a task that is already stored (and its
events) alone. The cut is real: a loopback proxy between the client and the server
aborts the connection after an exact number of bytes, either halfway through the calls
going in (the server ran some of them, and has half a command) or halfway through the
replies coming back (the server ran them all, the client heard of some).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis as sync_redis

from omniq import AsyncOmniQ, EventType, TaskStatus
from tests._tcp_proxy import CuttingProxy
from tests.conformance import tasks
from tests.conftest import REDIS_URL, delete_redis_namespace

TASKS = 10_000


@pytest.fixture
async def proxy() -> AsyncIterator[CuttingProxy]:
    target = sync_redis.Redis.from_url(REDIS_URL).connection_pool.connection_kwargs
    async with CuttingProxy((target["host"], target["port"])) as running:
        yield running


@pytest.fixture
async def oq(proxy: CuttingProxy, namespace: str) -> AsyncIterator[AsyncOmniQ]:
    url = f"redis://127.0.0.1:{proxy.port}/0"
    client = AsyncOmniQ(task_queue=url, result_storage=url, event_storage=url, namespace=namespace)
    await client.connect()
    yield client
    await client.close()
    await delete_redis_namespace(REDIS_URL, namespace)


@pytest.mark.parametrize(
    ("upstream", "cut_at"),
    [
        pytest.param(True, 600_000, id="calls-going-in"),
        pytest.param(False, 100, id="replies-coming-back"),
    ],
)
async def test_enqueue_many_cut_mid_stream_stores_every_task_once(
    oq: AsyncOmniQ, proxy: CuttingProxy, namespace: str, upstream: bool, cut_at: int
) -> None:
    plain = sync_redis.Redis.from_url(REDIS_URL)
    pending_key = f"{namespace}:q:default:s:pending"
    stored_at_cut: list[int] = []
    proxy.cut_after(
        cut_at, upstream=upstream, on_cut=lambda: stored_at_cut.append(plain.zcard(pending_key))
    )
    try:
        ids = await oq.enqueue_many(tasks.add, [(i, i) for i in range(TASKS)])
    finally:
        plain.close()

    assert proxy.cuts == 1 and proxy.connections >= 2  # cut, then sent again
    # Mid-stream: the server had run part of the batch (those calls are sent twice).
    assert 0 < stored_at_cut[0] < TASKS
    assert len(ids) == len(set(ids)) == TASKS
    # Every task stored exactly once: none lost, none twice.
    assert await oq.stats() == {"default": {"pending": TASKS}}
    listed = await oq.list_tasks(limit=TASKS + 1)
    assert sorted(task.id for task in listed) == sorted(ids)
    assert all(task.status is TaskStatus.PENDING and task.attempts == 0 for task in listed)
    # And each logged its ENQUEUED once, also those whose first call ran before the cut.
    for task_id in ids[:: TASKS // 200] + ids[-1:]:
        events = await oq.get_events(task_id)
        assert [event.event_type for event in events] == [EventType.ENQUEUED], task_id
