"""Global limits at the storage level (SPEC §8 "Limits", ``BaseTaskQueue.set_limit``):
the claim under a rate window and a concurrency cap, with the clock passed in, on every
backend that enforces limits; and an old store opened by the code that brought them.

The claims' ``now`` is given, so a window passing or a lease lapsing takes no waiting.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from omniq._limits import Limit, LimitedClaim, held_until
from omniq.models import Task, TaskStatus, utcnow
from omniq.storage.base import BaseTaskQueue
from omniq.storage.file import AsyncFileQueue
from omniq.storage.nats import AsyncNATSQueue
from omniq.storage.postgres import AsyncPostgresQueue
from omniq.storage.redis import AsyncRedisQueue
from omniq.storage.sqlite import AsyncSQLiteQueue
from omniq.storage.sqlite.connection import sqlite_path
from tests.conftest import (
    NATS_URL,
    POSTGRES_URL,
    REDIS_URL,
    delete_nats_namespace,
    delete_redis_namespace,
    drop_postgres_schema,
    unique_name,
)
from tests.storage.contract import make_task

LIMITED_BACKENDS = ["sqlite", "postgres", "redis", "file", "memory", "nats"]


@pytest.fixture(params=LIMITED_BACKENDS)
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BaseTaskQueue]:
    namespace = unique_name("lim")
    made: BaseTaskQueue
    if request.param == "sqlite":
        made = AsyncSQLiteQueue(f"sqlite:///{tmp_path}/omniq.db")
    elif request.param == "file":
        made = AsyncFileQueue(f"file://{tmp_path}/store")
    elif request.param == "memory":
        made = AsyncFileQueue(f"memory://{namespace}")
    elif request.param == "nats":
        made = AsyncNATSQueue(NATS_URL, namespace=namespace)
    elif request.param == "postgres":
        made = AsyncPostgresQueue(POSTGRES_URL, namespace=namespace)
    else:
        made = AsyncRedisQueue(REDIS_URL, namespace=namespace)
    await made.connect()
    yield made
    await made.close()
    if request.param == "postgres":
        await drop_postgres_schema(POSTGRES_URL, namespace)
    if request.param == "redis":
        await delete_redis_namespace(REDIS_URL, namespace)
    if request.param == "nats":
        await delete_nats_namespace(NATS_URL, namespace)
    if request.param == "memory":
        import fsspec

        fs = fsspec.filesystem("memory")
        if fs.exists(namespace):
            fs.rm(namespace, recursive=True)


async def claim(queue: BaseTaskQueue, now_offset: float, limit: int = 10) -> list[Task]:
    return await queue.claim(
        ["default"], "w1", limit=limit, lease_seconds=10, now=T0 + timedelta(seconds=now_offset)
    )


T0 = utcnow().replace(microsecond=0)


async def test_without_limits_a_claim_is_a_plain_list(queue: BaseTaskQueue) -> None:
    await queue.enqueue([make_task(created_at=T0) for _ in range(3)])
    claimed = await claim(queue, 0)
    assert len(claimed) == 3
    assert held_until(claimed) == (False, None)


async def test_a_rate_window_holds_at_most_its_rate(queue: BaseTaskQueue) -> None:
    await queue.set_limit("q:default", Limit(rate=2, per=1.0))
    tasks = [make_task(created_at=T0) for _ in range(5)]
    await queue.enqueue(tasks)

    first = await claim(queue, 0)
    assert [t.id for t in first] == [t.id for t in tasks[:2]]
    assert isinstance(first, LimitedClaim)
    assert first.held_until == T0 + timedelta(seconds=1)  # the oldest start leaves then
    halfway = await claim(queue, 0.5)
    assert held_until(halfway) == (True, T0 + timedelta(seconds=1)) and not halfway
    # [T0, T0 + 1 s) held two starts: the next window takes two more, the one after one.
    assert [t.id for t in await claim(queue, 1.0)] == [t.id for t in tasks[2:4]]
    assert [t.id for t in await claim(queue, 2.0)] == [tasks[4].id]
    waiting = await queue.get(tasks[4].id)
    assert waiting is not None and waiting.attempts == 1  # held back, then once


async def test_a_concurrency_cap_counts_live_leases_only(queue: BaseTaskQueue) -> None:
    await queue.set_limit("q:default", Limit(concurrency=1))
    tasks = [make_task(created_at=T0 + timedelta(milliseconds=i)) for i in range(3)]
    await queue.enqueue(tasks)

    [running] = await claim(queue, 0)
    held = await claim(queue, 5)
    assert held_until(held) == (True, None) and not held  # a cap frees when a task ends
    pending = await queue.get(tasks[1].id)
    assert pending is not None
    assert (pending.status, pending.attempts) == (TaskStatus.PENDING, 0)
    # Its holder died: once the lease lapsed (10 s), the slot is free again; the lapsed
    # task itself comes first in claim order.
    assert [t.id for t in await claim(queue, 11)] == [running.id]
    assert await queue.ack(running.id, "w1", TaskStatus.COMPLETE, now=T0 + timedelta(seconds=12))
    assert [t.id for t in await claim(queue, 12)] == [tasks[1].id]


async def test_a_task_names_limit_lets_other_tasks_flow_past(queue: BaseTaskQueue) -> None:
    await queue.register_task_limits({"t:app:send": Limit(concurrency=1)})
    capped = [
        Task(
            id=uuid.uuid4().hex,
            func="app:send",
            max_concurrency=1,
            created_at=T0 - timedelta(milliseconds=20 - i),
        )
        for i in range(3)
    ]
    free = [make_task(created_at=T0 - timedelta(milliseconds=10 - i)) for i in range(2)]
    await queue.enqueue([*capped, *free])

    claimed = await claim(queue, 0)
    assert [t.id for t in claimed] == [capped[0].id, *(t.id for t in free)]
    assert held_until(claimed) == (True, None)


async def test_a_removed_limit_frees_its_tasks(queue: BaseTaskQueue) -> None:
    await queue.set_limit("q:default", Limit(rate=1, per=3600.0))
    await queue.enqueue([make_task(created_at=T0) for _ in range(3)])
    assert len(await claim(queue, 0)) == 1
    assert not await claim(queue, 1)
    await queue.set_limit("q:default", None)
    rest = await claim(queue, 2)
    assert len(rest) == 2 and held_until(rest) == (False, None)


# -- an old store opened by the new code --------------------------------------------------


async def test_a_version_2_sqlite_store_is_upgraded_and_keeps_its_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omniq.storage.sqlite import connection

    url = f"sqlite:///{tmp_path}/old.db"
    tasks = [make_task(created_at=T0) for _ in range(3)]
    with monkeypatch.context() as patch:
        patch.setattr(connection, "SCHEMA_VERSION", 2)
        patch.setattr(connection, "_MIGRATIONS", connection._MIGRATIONS[:2])
        async with AsyncSQLiteQueue(url) as old:
            await old.enqueue(tasks)
    with sqlite3.connect(sqlite_path(url)) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (2,)

    async with AsyncSQLiteQueue(url) as new:
        assert [t and t.id for t in await new.get_many([t.id for t in tasks])] == [
            t.id for t in tasks
        ]
        await new.set_limit("q:default", Limit(rate=2, per=1.0))
        assert len(await claim(new, 0)) == 2


async def test_a_version_4_postgres_schema_is_upgraded_and_keeps_its_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace = unique_name("lim")
    tasks = [make_task(created_at=T0) for _ in range(3)]
    try:
        with monkeypatch.context() as patch:
            patch.setattr("omniq.storage.postgres.connection.SCHEMA_VERSION", 4)
            async with AsyncPostgresQueue(POSTGRES_URL, namespace=namespace) as old:
                await old.enqueue(tasks)
        async with AsyncPostgresQueue(POSTGRES_URL, namespace=namespace) as new:
            assert [t and t.id for t in await new.get_many([t.id for t in tasks])] == [
                t.id for t in tasks
            ]
            await new.set_limit("q:default", Limit(rate=2, per=1.0))
            assert len(await claim(new, 0)) == 2
    finally:
        await drop_postgres_schema(POSTGRES_URL, namespace)
