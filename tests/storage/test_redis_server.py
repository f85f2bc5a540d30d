"""The Redis backend against a private ``redis-server`` this module starts on a free port.

A server restart loses no acknowledged task and the client reconnects by itself; an idle
worker sends only a few commands per second; batches take a bounded number of round
trips, counted both by the client and by the server's ``INFO commandstats``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from omniq import AsyncOmniQ
from omniq.errors import StorageConnectionError
from omniq.models import TaskStatus, utcnow
from omniq.storage.base import Ack
from omniq.storage.redis import AsyncRedisQueue, AsyncRedisResultStorage
from tests.storage._redis_server import PrivateRedis
from tests.storage.contract import make_result, make_task


@pytest.fixture(scope="module")
def counted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A private server without persistence, shared by the counting tests."""
    server = PrivateRedis(tmp_path_factory.mktemp("redis-counted"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def persistent_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private server with an fsync'ed append-only file, killed after the test."""
    server = PrivateRedis(tmp_path / "redis-data", persistent=True)
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def stats_client(counted_server: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    """A plain client that reads the private server's command counters."""
    client = aioredis.Redis.from_url(counted_server.url)
    yield client
    await client.aclose()


async def command_counts(client: aioredis.Redis) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``), without the INFO calls themselves."""
    stats = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(values["calls"])
        for name, values in stats.items()
        if name != "cmdstat_info"
    }


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands run between two ``command_counts``."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


# ``INFO commandstats`` also counts the commands a script runs; these are the ones the
# client sends itself when it is idle (a script call, a blocking pop) ...
IDLE_CLIENT_COMMANDS = {"evalsha", "blpop"}
# ... and these the only ones the idle scripts run: reads, nothing is written.
IDLE_SCRIPT_READS = {
    *("zrange", "zrangebyscore", "hget", "hmget", "smembers", "zcard", "llen"),
    "time",  # a claim pipelined behind a blocking pop reads the server's clock
    "hgetall",  # a claim reads the global limits (an empty hash when none are set)
}


def idle_commands_sent(sent: dict[str, int]) -> int:
    """How many commands an idle client sent, checking the rest were script reads."""
    assert set(sent) <= IDLE_CLIENT_COMMANDS | IDLE_SCRIPT_READS, sent
    return sum(sent.get(name, 0) for name in IDLE_CLIENT_COMMANDS)


# -- restart ----------------------------------------------------------------------------


async def test_restart_loses_no_acknowledged_task_and_reconnects(
    persistent_server: PrivateRedis,
) -> None:
    queue = AsyncRedisQueue(persistent_server.url, namespace="app")
    results = AsyncRedisResultStorage(persistent_server.url, namespace="app")
    await queue.connect()
    await results.connect()
    try:
        tasks = [make_task(f"t{i:03}", priority=i % 3) for i in range(100)]
        await queue.enqueue(tasks)
        now = utcnow()
        claimed = await queue.claim(["default"], "w1", limit=10, lease_seconds=60, now=now)
        done = claimed[:5]
        stored_results = [make_result(t.id) for t in done]
        await results.put_many(stored_results)
        assert await queue.ack_many(
            [Ack(t.id, "w1", TaskStatus.COMPLETE) for t in done], now=now
        ) == [True] * 5  # fmt: skip
        before = await queue.stats()
        idle_waiter = asyncio.ensure_future(queue.wait(["default"], 30.0))
        await asyncio.sleep(0.1)  # let it block on the server that is about to die

        persistent_server.restart()  # SIGKILL: only the append-only file survives

        # The blocked wait ends (it is woken or gives up), it does not hang.
        with contextlib.suppress(StorageConnectionError):
            await asyncio.wait_for(idle_waiter, 40)
        # Every idle connection is stale now; the next calls reconnect by themselves
        # (and load the scripts again: the restarted server has none).
        assert await queue.stats() == before
        assert before == {"default": {"pending": 90, "running": 5, "complete": 5}}
        for task, result in zip(done, stored_results, strict=True):
            stored = await queue.get(task.id)
            assert stored is not None
            assert stored.status is TaskStatus.COMPLETE
            assert await results.get(task.id) == result
        held = {t.id for t in claimed[5:]}
        assert await queue.renew(held, "w1", lease_seconds=60, now=utcnow()) == held
        again = await queue.claim(["default"], "w2", limit=100, lease_seconds=60, now=utcnow())
        assert len(again) == 90
        assert not held & {t.id for t in again}
        acks = [Ack(t.id, "w2", TaskStatus.COMPLETE) for t in again]
        assert await queue.ack_many(acks, now=utcnow()) == [True] * 90
    finally:
        await queue.close()
        await results.close()


async def test_a_running_worker_pool_carries_on_after_a_restart(
    persistent_server: PrivateRedis,
) -> None:
    url = f"{persistent_server.url}?namespace=pool"
    oq = AsyncOmniQ(task_queue=url, result_storage=url, event_storage=url, poll_interval=0.2)
    await oq.connect()
    pool = oq.worker(worker_type="async", concurrency=2)
    try:
        await pool.start()
        first = await oq.enqueue("tests.conformance.tasks:add", 1, 2)
        result = await oq.get_result(first, wait=True, timeout=10)
        assert result is not None
        assert result.result == 3
        persistent_server.restart()
        second = await oq.enqueue("tests.conformance.tasks:add", 2, 3)
        result = await oq.get_result(second, wait=True, timeout=20)
        assert result is not None
        assert result.result == 5
        assert (await oq.get_result(first)) is not None  # written before the crash: kept
    finally:
        await pool.stop(timeout=5)
        await oq.close()


async def test_calls_fail_with_storage_connection_error_while_the_server_is_down(
    persistent_server: PrivateRedis,
) -> None:
    async with AsyncRedisQueue(persistent_server.url, namespace="app") as queue:
        await queue.enqueue([make_task("kept")])
        persistent_server.kill()
        with pytest.raises(StorageConnectionError):
            await queue.get("kept")
        persistent_server.start()
        assert await queue.get("kept") is not None


# -- idle workers -------------------------------------------------------------------------


async def test_idle_wait_loop_sends_a_few_commands_per_second(
    counted_server: PrivateRedis, stats_client: aioredis.Redis
) -> None:
    async with AsyncRedisQueue(counted_server.url, namespace="idle") as queue:
        await queue.stats()  # connected, scripts loaded
        await queue.wait(["default"], 0.01)  # the blocking connection opened (its handshake)
        loop = asyncio.get_running_loop()
        before = await command_counts(stats_client)
        start = loop.time()
        iterations = 0
        while loop.time() - start < 2.0:
            # What a worker does when idle: claim, ask when work is due, block.
            assert (
                await queue.claim(["default"], "w", limit=8, lease_seconds=30, now=utcnow()) == []
            )
            assert await queue.next_due_at(["default"]) is None
            await queue.wait(["default"], 1.0)
            iterations += 1
        sent = delta(before, await command_counts(stats_client))
    assert iterations <= 3  # each wait blocked for its full second
    assert idle_commands_sent(sent) == 3 * iterations <= 9, sent
    assert sent["blpop"] == iterations


async def test_idle_worker_pool_sends_a_few_commands_per_second(
    counted_server: PrivateRedis, stats_client: aioredis.Redis
) -> None:
    url = f"{counted_server.url}?namespace=pool"
    oq = AsyncOmniQ(task_queue=url, result_storage=url, event_storage=url, poll_interval=1.0)
    await oq.connect()
    pool = oq.worker(worker_type="async", concurrency=4)
    try:
        await pool.start()
        await asyncio.sleep(0.5)  # start-up traffic is not idle traffic
        before = await command_counts(stats_client)
        await asyncio.sleep(2.0)  # the measuring window
        sent = delta(before, await command_counts(stats_client))
    finally:
        await pool.stop(timeout=5)
        await oq.close()
    # claim, next_due_at, the schedule check and one blocking pop per second at most
    assert idle_commands_sent(sent) <= 10, sent


async def test_wait_returns_when_another_connection_enqueues(
    counted_server: PrivateRedis,
) -> None:
    async with (
        AsyncRedisQueue(counted_server.url, namespace="wake") as worker,
        AsyncRedisQueue(counted_server.url, namespace="wake") as producer,
    ):
        await worker.stats()
        waiter = asyncio.ensure_future(worker.wait(["default", "other"], 30.0))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await producer.enqueue([make_task(queue="other")])
        await asyncio.wait_for(waiter, 5)  # far sooner than its 30 s timeout


# -- round trips ----------------------------------------------------------------------------

ENQUEUE_SCRIPT_COMMANDS = {"exists", "hset", "zadd", "sadd", "incrby", "llen", "lpush"}


async def test_enqueue_of_ten_thousand_tasks_takes_bounded_round_trips(
    counted_server: PrivateRedis, stats_client: aioredis.Redis
) -> None:
    async with AsyncRedisQueue(counted_server.url, namespace="bulk") as queue:
        await queue.stats()
        client = queue.connection
        tasks = [make_task(priority=i % 4) for i in range(10_000)]

        before, trips = await command_counts(stats_client), client.round_trips
        await queue.enqueue(tasks)
        sent = delta(before, await command_counts(stats_client))
        assert client.round_trips - trips == 1
        # 250 tasks per script call, all calls in one pipeline; the rest ran in the scripts
        assert sent.pop("evalsha") == 40
        assert set(sent) <= ENQUEUE_SCRIPT_COMMANDS, sent

        before, trips = await command_counts(stats_client), client.round_trips
        more = [make_task() for _ in range(10_000)]
        for start in range(0, 10_000, 1_000):
            await queue.enqueue(more[start : start + 1_000])
        assert client.round_trips - trips == 10
        assert delta(before, await command_counts(stats_client))["evalsha"] == 40

        before, trips = await command_counts(stats_client), client.round_trips
        claimed = await queue.claim(["default"], "w", limit=1_000, lease_seconds=30, now=utcnow())
        assert len(claimed) == 1_000
        assert await queue.ack_many(
            [Ack(t.id, "w", TaskStatus.COMPLETE) for t in claimed], now=utcnow()
        ) == [True] * 1_000  # fmt: skip
        assert client.round_trips - trips == 2
        assert delta(before, await command_counts(stats_client))["evalsha"] == 2
        assert await queue.stats() == {"default": {"pending": 19_000, "complete": 1_000}}
