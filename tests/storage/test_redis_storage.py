"""The Redis backend against the shared Redis on 127.0.0.1:6379 (a fresh namespace per test).

Runs the storage contract, plus what only Redis has: the bundle's one shared client,
namespaces in settings and URLs, key layout isolation, batches in few round trips,
blocking waits and error translation.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine
from datetime import timedelta
from typing import Any, cast

import msgspec
import pytest
import redis as sync_redis
import redis.asyncio as aioredis

from omniq._ids import new_task_id
from omniq.config import Settings
from omniq.errors import ConfigError, EventLoopError, StorageConnectionError, StorageError
from omniq.models import EventType, Task, TaskEvent, TaskStatus, utcnow
from omniq.storage.base import Ack
from omniq.storage.redis import (
    AsyncRedisEventStorage,
    AsyncRedisQueue,
    AsyncRedisResultStorage,
    AsyncRedisScheduleStorage,
    RedisBackend,
    RedisConnection,
    RedisEventStorage,
    RedisQueue,
    RedisResultStorage,
    RedisScheduleStorage,
    split_namespace,
)
from omniq.storage.redis._codec import _us
from omniq.storage.registry import bundle_for_url
from tests.conftest import REDIS_URL, delete_redis_namespace, free_port, unique_name
from tests.storage._redis_helpers import wait_for_blocked_client
from tests.storage.contract import (
    EventContract,
    MakeBackend,
    QueueContract,
    ResultContract,
    ScheduleContract,
    assert_sync_twin_mirrors,
    assert_unreadable_is_listed_and_handed_out,
    make_event,
    make_result,
    make_task,
)


async def close_backend(backend: RedisBackend) -> None:
    """Close every component the backend made, then the backend itself."""
    for component in (
        backend.task_queue(),
        backend.result_storage(),
        backend.event_storage(),
        backend.schedule_storage(),
    ):
        await component.close()
    await backend.close()


@pytest.fixture
async def make_backend(namespace: str) -> AsyncIterator[MakeBackend]:
    """Backends (each with its own client) on this test's namespace; keys deleted after."""
    made: list[RedisBackend] = []
    settings = Settings(namespace=namespace)

    async def make() -> RedisBackend:
        backend = RedisBackend(REDIS_URL, settings)
        await backend.connect()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await close_backend(backend)
    await delete_redis_namespace(REDIS_URL, namespace)


@pytest.fixture
async def backend(make_backend: MakeBackend) -> RedisBackend:
    """A connected RedisBackend on a fresh namespace."""
    made = await make_backend()
    assert isinstance(made, RedisBackend)
    return made


@pytest.fixture
async def redis(namespace: str) -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client on the shared server, to look at the keys."""
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


class TestRedisQueue(QueueContract):
    pass


class TestRedisResults(ResultContract):
    pass


class TestRedisEvents(EventContract):
    pass


class TestRedisSchedules(ScheduleContract):
    pass


# -- the bundle and namespaces ---------------------------------------------------------


async def test_backend_by_url_shares_one_client(namespace: str) -> None:
    backend = bundle_for_url(REDIS_URL, Settings(namespace=namespace))
    assert isinstance(backend, RedisBackend)
    queue, results = backend.task_queue(), backend.result_storage()
    assert backend.task_queue() is queue
    events, schedules = backend.event_storage(), backend.schedule_storage()
    assert queue.connection is results.connection is events.connection is schedules.connection
    assert queue.namespace == namespace
    await queue.enqueue([make_task("a")])  # first use connects through the bundle
    await results.connect()
    await results.connect()  # a second connect takes no second reference
    assert backend.connection.references == 2
    await queue.close()
    assert await results.get("x") is None  # still open for the other component
    await results.close()
    assert backend.connection.references == 0
    assert not backend.connection.is_open
    await delete_redis_namespace(REDIS_URL, namespace)


async def test_url_namespace_wins_and_is_not_sent_to_redis(namespace: str) -> None:
    url = f"{REDIS_URL}?namespace={namespace}"
    assert split_namespace(url) == (REDIS_URL, namespace)
    assert split_namespace(REDIS_URL) == (REDIS_URL, None)
    backend = RedisBackend(url, Settings(namespace="ignored"))
    assert backend.namespace == namespace
    async with AsyncRedisQueue(url) as queue:
        assert queue.namespace == namespace
        await queue.enqueue([make_task("a")])
    async with AsyncRedisQueue(REDIS_URL, namespace=namespace) as same:
        assert await same.get("a") is not None
    await delete_redis_namespace(REDIS_URL, namespace)


def test_bad_namespace_is_a_config_error() -> None:
    for bad in ("", "a:b", "a b", "a*"):
        with pytest.raises(ConfigError, match="namespace"):
            RedisConnection(REDIS_URL, namespace=bad)


async def test_namespaces_do_not_see_each_other(redis: aioredis.Redis) -> None:
    first, second = unique_name("omniqtest"), unique_name("omniqtest")
    try:
        async with (
            AsyncRedisQueue(REDIS_URL, namespace=first) as a,
            AsyncRedisQueue(REDIS_URL, namespace=second) as b,
        ):
            await a.enqueue([make_task("same-id", priority=1)])
            await b.enqueue([make_task("same-id", priority=2)])
            assert await a.stats() == await b.stats() == {"default": {"pending": 1}}
            [got] = await b.claim(["default"], "w", limit=5, lease_seconds=30, now=utcnow())
            assert got.priority == 2
            assert await a.stats() == {"default": {"pending": 1}}
        keys = [key async for key in redis.scan_iter(match=f"{first}:*")]
        assert keys
        assert all(key.startswith(f"{first}:".encode()) for key in keys)
    finally:
        await delete_redis_namespace(REDIS_URL, first)
        await delete_redis_namespace(REDIS_URL, second)


@pytest.mark.parametrize(
    ("sync_cls", "async_cls"),
    [
        (RedisQueue, AsyncRedisQueue),
        (RedisResultStorage, AsyncRedisResultStorage),
        (RedisEventStorage, AsyncRedisEventStorage),
        (RedisScheduleStorage, AsyncRedisScheduleStorage),
    ],
)
def test_sync_twins_mirror_async_methods_and_signatures(sync_cls: type, async_cls: type) -> None:
    assert_sync_twin_mirrors(sync_cls, async_cls)


async def test_sync_twins_work_on_their_own_loop(namespace: str) -> None:
    def run() -> None:
        with RedisQueue(REDIS_URL, namespace=namespace) as queue:
            assert queue.enqueue([make_task("s1")]) == ["s1"]
            [got] = queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
            assert queue.ack(got.id, "w", TaskStatus.COMPLETE, now=utcnow()) is True
            assert queue.stats() == {"default": {"complete": 1}}
        with RedisEventStorage(REDIS_URL, namespace=namespace) as events:
            events.append([make_event("s1", EventType.ENQUEUED)])
            assert len(events.get("s1")) == 1

    await asyncio.to_thread(run)
    await delete_redis_namespace(REDIS_URL, namespace)


def _run_on_a_loop_closed_by_hand(coro: Coroutine[Any, Any, None]) -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()  # without shutting down its async generators: nothing hears of it


@pytest.mark.timeout(60)
@pytest.mark.parametrize("runner", ["asyncio.run", "closed by hand"])
def test_a_standalone_component_follows_its_caller_from_loop_to_loop(
    namespace: str, runner: str
) -> None:
    run = asyncio.run if runner == "asyncio.run" else _run_on_a_loop_closed_by_hand
    queue = AsyncRedisQueue(REDIS_URL, namespace=namespace)  # made outside any loop

    async def step(n: int) -> None:
        async with asyncio.timeout(10):
            await queue.enqueue([make_task(f"t{n}")])
            await queue.wait(["default"], 5.0)  # BLPOP on a connection of its own: a token
            [got] = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
            assert got.id == f"t{n}"
            assert await queue.ack(got.id, "w", TaskStatus.COMPLETE, now=utcnow())

    async def close() -> None:
        async with asyncio.timeout(10):
            assert await queue.stats() == {"default": {"complete": 3}}
            await queue.close()

    try:
        for n in range(3):
            run(step(n))
        run(close())
        assert not queue.connection.is_open
    finally:
        asyncio.run(delete_redis_namespace(REDIS_URL, namespace))


@pytest.mark.timeout(60)
def test_a_standalone_component_refuses_a_second_running_loop(namespace: str) -> None:
    queue = AsyncRedisQueue(REDIS_URL, namespace=namespace)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()

    async def from_here() -> None:
        async with asyncio.timeout(10):
            with pytest.raises(EventLoopError, match="one event loop at a time"):
                await queue.get("t0")

    try:
        enqueued = asyncio.run_coroutine_threadsafe(queue.enqueue([make_task("t0")]), other)
        assert enqueued.result(10) == ["t0"]
        asyncio.run(from_here())
        asyncio.run_coroutine_threadsafe(queue.close(), other).result(10)
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(10)
        other.close()
        asyncio.run(delete_redis_namespace(REDIS_URL, namespace))


# -- batches and round trips -------------------------------------------------------------


async def test_batches_take_one_round_trip_each(backend: RedisBackend) -> None:
    queue = backend.task_queue()
    await queue.connect()
    client = backend.connection
    tasks = [make_task(priority=i % 5) for i in range(2_500)]
    before = client.round_trips
    assert await queue.enqueue(tasks) == [t.id for t in tasks]
    assert client.round_trips - before == 1
    before = client.round_trips
    claimed = await queue.claim(["default"], "w", limit=100, lease_seconds=30, now=utcnow())
    assert [t.priority for t in claimed] == [4] * 100
    acks = [Ack(t.id, "w", TaskStatus.COMPLETE) for t in claimed]
    assert await queue.ack_many(acks, now=utcnow()) == [True] * 100
    assert client.round_trips - before == 2
    assert await queue.stats() == {"default": {"pending": 2_400, "complete": 100}}


async def test_events_on_the_same_client_ride_in_the_enqueue_round_trip(
    backend: RedisBackend, make_backend: MakeBackend
) -> None:
    queue, log = backend.task_queue(), backend.event_storage()
    await queue.connect()
    assert queue.writes_events(log)
    elsewhere = (await make_backend()).event_storage()
    assert not queue.writes_events(elsewhere)  # a second client: no shared transaction
    tasks = [make_task() for _ in range(600)]
    now = utcnow()
    events = [
        [
            make_event(t.id, EventType.ENQUEUED, timestamp=now),
            make_event(t.id, EventType.SCHEDULED, timestamp=now - timedelta(seconds=1)),
        ]
        for t in tasks
    ]
    before = backend.connection.round_trips
    await queue.enqueue_logged(tasks, events, log)
    assert backend.connection.round_trips - before == 1
    stored = await log.get(tasks[-1].id)
    assert [e.event_type for e in stored] == [EventType.SCHEDULED, EventType.ENQUEUED]
    # The index holds each task's oldest event, so retention finds the older one.
    assert await log.delete_before(now - timedelta(milliseconds=500)) == 600
    assert [e.event_type for e in await log.get(tasks[0].id)] == [EventType.ENQUEUED]


async def test_a_batch_cut_by_a_lost_connection_is_sent_again_without_duplicates(
    backend: RedisBackend, redis: aioredis.Redis
) -> None:
    queue, log = backend.task_queue(), backend.event_storage()
    await queue.connect()
    client_id = await backend.connection.call("CLIENT", "ID")
    pending = f"{backend.namespace}:q:default:s:pending"
    tasks = [make_task() for _ in range(20_000)]
    now = utcnow()
    events = [[make_event(t.id, EventType.ENQUEUED, timestamp=now)] for t in tasks]
    stored_at_kill: list[int] = []

    def kill_mid_batch() -> None:
        # A thread, not a task: the client writes the whole batch before it yields to
        # the event loop, so only a thread sees the batch while it is still going in.
        plain = sync_redis.Redis.from_url(REDIS_URL)
        for _ in range(20_000):  # polls every half millisecond, for 10 s at most
            if plain.zcard(pending):
                break
            time.sleep(0.0005)
        plain.execute_command("CLIENT", "KILL", "ID", client_id)
        stored_at_kill.append(plain.zcard(pending))
        plain.close()

    killer = threading.Thread(target=kill_mid_batch)
    killer.start()
    try:
        assert await queue.enqueue_logged(tasks, events, log) == [t.id for t in tasks]
    finally:
        killer.join()
    assert 0 < stored_at_kill[0] < 20_000  # the connection died with the batch half done
    assert await queue.stats() == {"default": {"pending": 20_000}}
    # The calls that had run were sent again and left their tasks (and events) alone.
    for task in (tasks[0], tasks[len(tasks) // 2], tasks[-1]):
        assert [e.event_type for e in await log.get(task.id)] == [EventType.ENQUEUED]
    assert await grouped_event_tasks(redis, backend.namespace) == 20_000


async def grouped_event_tasks(redis: aioredis.Redis, namespace: str) -> int:
    """How many tasks point at the event groups enqueues stored (each counted once)."""
    total = 0
    async for key in redis.scan_iter(match=f"{namespace}:eb:*", count=1000):
        total += int(await cast(Awaitable[bytes], redis.hget(key, "n")))
    return total


async def test_a_bulk_enqueue_stores_its_events_once_per_group(
    backend: RedisBackend, redis: aioredis.Redis
) -> None:
    queue, log = backend.task_queue(), backend.event_storage()
    await queue.connect()
    now = utcnow()
    plain = [make_task() for _ in range(300)]
    other = [make_task(queue="other") for _ in range(3)]
    delayed = make_task(due_at=now + timedelta(hours=1), status=TaskStatus.SCHEDULED)
    tasks = [*plain[:150], *other, delayed, *plain[150:]]

    def logged(task: Task) -> list[TaskEvent]:
        events = [make_event(task.id, EventType.ENQUEUED, timestamp=now, queue=task.queue)]
        if task is delayed:
            events.append(make_event(task.id, EventType.SCHEDULED, timestamp=now, message="x"))
        return events

    await queue.enqueue_logged(tasks, [logged(t) for t in tasks], log)
    # No list per task: one group per kind of task per 250-task call (plain twice).
    assert [key async for key in redis.scan_iter(match=f"{backend.namespace}:e:*")] == []
    groups = [key async for key in redis.scan_iter(match=f"{backend.namespace}:eb:*")]
    assert len(groups) == 4
    assert await grouped_event_tasks(redis, backend.namespace) == len(tasks)
    for task in (plain[0], plain[-1], other[1], delayed):
        assert await log.get(task.id) == logged(task)
    # Events appended later (a worker's) read back after the enqueue's, in time order.
    later = make_event(plain[0].id, EventType.EXECUTING, timestamp=now + timedelta(seconds=1))
    await log.append([later])
    assert await log.get(plain[0].id) == [*logged(plain[0]), later]


async def test_deleting_a_task_keeps_its_grouped_events_until_their_retention(
    backend: RedisBackend, redis: aioredis.Redis
) -> None:
    queue, log = backend.task_queue(), backend.event_storage()
    await queue.connect()
    then = utcnow() - timedelta(hours=2)
    tasks = [make_task() for _ in range(5)]
    events = [[make_event(t.id, EventType.ENQUEUED, timestamp=then)] for t in tasks]
    await queue.enqueue_logged(tasks, events, log)
    claimed = await queue.claim(["default"], "w", limit=2, lease_seconds=30, now=utcnow())
    await queue.ack_many([Ack(t.id, "w", TaskStatus.COMPLETE) for t in claimed], now=then)
    assert await queue.delete_finished(utcnow()) == 2
    for task in tasks:  # the deleted tasks' events moved to their own lists
        assert await log.get(task.id) == events[tasks.index(task)]
    assert await grouped_event_tasks(redis, backend.namespace) == 3
    # Retention counts every task's event once, whether grouped or moved.
    assert await log.delete_before(utcnow() - timedelta(hours=1)) == 5
    assert [await log.get(task.id) for task in tasks] == [[]] * 5
    assert await redis.exists(f"{backend.namespace}:events:b") == 0
    # The tasks left point at a deleted group: they read no events, and delete cleanly.
    rest = await queue.claim(["default"], "w", limit=3, lease_seconds=30, now=utcnow())
    await queue.ack_many([Ack(t.id, "w", TaskStatus.COMPLETE) for t in rest], now=then)
    assert await queue.delete_finished(utcnow()) == 3
    assert [await log.get(task.id) for task in tasks] == [[]] * 5
    assert [key async for key in redis.scan_iter(match=f"{backend.namespace}:e*")] == []


async def test_a_corrupt_grouped_event_is_an_error_naming_the_task(
    backend: RedisBackend, redis: aioredis.Redis
) -> None:
    queue, log = backend.task_queue(), backend.event_storage()
    await queue.connect()
    task = make_task()
    await queue.enqueue_logged([task], [[make_event(task.id, EventType.ENQUEUED)]], log)
    [group] = [key async for key in redis.scan_iter(match=f"{backend.namespace}:eb:*")]
    await cast(Awaitable[int], redis.hset(group, "1", b"0000000000000001\xc1"))
    with pytest.raises(StorageError, match=task.id):
        await log.get(task.id)
    assert await queue.get(task.id) is not None  # the task itself is untouched


async def test_a_wait_cancelled_after_its_claim_hands_the_tasks_back(
    backend: RedisBackend, namespace: str
) -> None:
    queue = backend.task_queue()
    await queue.connect()
    waiter = asyncio.create_task(
        queue.wait_and_claim(["default"], "w1", limit=4, lease_seconds=300, timeout=10)
    )
    plain = sync_redis.Redis.from_url(REDIS_URL)
    # Blocking calls from here on: the event loop must not run until the cancel, so the
    # waiter cannot read the reply of the claim the server is about to run for it.
    await wait_for_blocked_client(backend.connection, plain)
    task = make_task()

    def produce() -> None:
        with RedisQueue(REDIS_URL, namespace=namespace) as producer:
            producer.enqueue([task])

    enqueue = threading.Thread(target=produce)
    enqueue.start()
    enqueue.join()
    for _ in range(2_000):
        if plain.hget(f"{namespace}:t:{task.id}", "s") == b"running":
            break
        time.sleep(0.001)  # noqa: ASYNC251 - deliberately keeps the loop from running
    else:
        raise AssertionError("the waiting claim never ran")
    plain.close()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    # The claim made for the cancelled waiter is handed back at once, not in 300 s.
    claimed: list[Task] = []
    for _ in range(500):
        claimed = await queue.claim(["default"], "w2", limit=4, lease_seconds=30, now=utcnow())
        if claimed:
            break
        await asyncio.sleep(0.01)
    assert [(t.id, t.attempts) for t in claimed] == [(task.id, 1)]


async def test_list_and_stats_do_not_scan(backend: RedisBackend, redis: aioredis.Redis) -> None:
    queue = backend.task_queue()
    await queue.enqueue([make_task(queue=f"q{i % 3}") for i in range(30)])
    before = (await redis.info("commandstats")).get("cmdstat_scan", {}).get("calls", 0)
    assert sum(sum(c.values()) for c in (await queue.stats()).values()) == 30
    assert len(await queue.list(limit=50)) == 30
    after = (await redis.info("commandstats")).get("cmdstat_scan", {}).get("calls", 0)
    assert after == before


async def test_dependency_release_wakes_and_claims(backend: RedisBackend) -> None:
    queue = backend.task_queue()
    parent = make_task("parent")
    child = make_task("child", status=TaskStatus.SCHEDULED, depends_on=("parent",))
    await queue.enqueue([parent, child])
    [got] = await queue.claim(["default"], "w", limit=5, lease_seconds=30, now=utcnow())
    assert got.id == "parent"
    await queue.ack("parent", "w", TaskStatus.COMPLETE, now=utcnow())
    [dependent] = await queue.dependents("parent")
    waiter = asyncio.ensure_future(queue.wait(["default"], 5.0))
    await asyncio.sleep(0)
    moved = await queue.transition(
        dependent.id,
        from_statuses={TaskStatus.SCHEDULED},
        to_status=TaskStatus.PENDING,
        now=utcnow(),
    )
    assert moved is not None
    await asyncio.wait_for(waiter, 2)
    [got] = await queue.claim(["default"], "w", limit=5, lease_seconds=30, now=utcnow())
    assert got.id == "child"


async def test_delete_finished_cleans_every_index(
    backend: RedisBackend, redis: aioredis.Redis, namespace: str
) -> None:
    queue = backend.task_queue()
    tasks = [make_task() for _ in range(1_200)]
    await queue.enqueue(tasks)
    now = utcnow()
    claimed = await queue.claim(["default"], "w", limit=2_000, lease_seconds=30, now=now)
    await queue.ack_many([Ack(t.id, "w", TaskStatus.COMPLETE) for t in claimed], now=now)
    assert await queue.delete_finished(now + timedelta(seconds=1)) == 1_200
    assert await queue.stats() == {}
    # A set: SCAN may return a key twice while Redis resizes its keyspace (seen here after
    # the mass delete, about one run in a hundred).
    left = sorted({key.decode() async for key in redis.scan_iter(match=f"{namespace}:*")})
    # Only the per-namespace bookkeeping stays: no task, index, status or wake-up entry.
    assert left == [f"{namespace}:queues", f"{namespace}:seq"]


async def llen(redis: aioredis.Redis, key: str) -> int:
    """The length of a list (redis-py types the reply loosely)."""
    return await cast(Awaitable[int], redis.llen(key))


async def test_a_draining_claim_drops_stale_wake_ups(
    backend: RedisBackend, redis: aioredis.Redis
) -> None:
    queue = backend.task_queue()
    wake_key = f"{backend.namespace}:q:default:wake"
    await queue.enqueue([make_task() for _ in range(3)])
    assert await llen(redis, wake_key) == 3  # one token per task: three workers may wake
    await queue.claim(["default"], "w", limit=2, lease_seconds=30, now=utcnow())
    assert await llen(redis, wake_key) == 3  # work is left: the tokens still mean something
    await queue.claim(["default"], "w", limit=2, lease_seconds=30, now=utcnow())
    assert await redis.exists(wake_key) == 0  # drained: an idle worker will block at once


async def test_wake_up_tokens_are_capped_at_sixteen(
    backend: RedisBackend, redis: aioredis.Redis
) -> None:
    # Nobody claims: without the cap a busy producer would grow the list without end.
    queue = backend.task_queue()
    wake_key = f"{backend.namespace}:q:default:wake"
    for _ in range(10):
        await queue.enqueue([make_task(), make_task()])
    assert await llen(redis, wake_key) == 16
    await queue.enqueue([make_task() for _ in range(40)])
    assert await llen(redis, wake_key) == 16


async def test_task_hashes_stay_compact_and_deleting_a_task_leaves_no_keys(
    backend: RedisBackend, redis: aioredis.Redis
) -> None:
    # Every value of a task's hash stays under Redis's 64-byte listpack limit, through
    # each state change that rewrites it: that is what keeps a queued task near 1 kB.
    queue = backend.task_queue()
    ns = backend.namespace
    now = utcnow()
    plain, later, dependent = (make_task(new_task_id(), priority=2) for _ in range(3))
    later = msgspec.structs.replace(later, due_at=now + timedelta(hours=1))
    dependent = msgspec.structs.replace(
        dependent, status=TaskStatus.SCHEDULED, depends_on=[plain.id]
    )
    # A payload of a few hundred bytes is stored in pieces, a larger one whole.
    medium = make_task(new_task_id(), queue="other", payload=bytes(range(256)) + b"tail")
    large = make_task(new_task_id(), queue="other", payload=b"x" * 2000)
    await queue.enqueue([plain, later, dependent, medium, large])
    for task in (medium, large):
        stored = await queue.get(task.id)
        assert stored is not None and stored.payload == task.payload
    assert (await redis.object("encoding", f"{ns}:t:{medium.id}")) == b"listpack"

    async def encodings() -> set[str]:
        ids = (plain.id, later.id, dependent.id)
        return {(await redis.object("encoding", f"{ns}:t:{i}")).decode() for i in ids}

    assert await encodings() == {"listpack"}
    [claimed] = await queue.claim(["default"], "w1", limit=5, lease_seconds=30, now=now)
    assert claimed.id == plain.id
    assert await queue.retry(plain.id, "w1", due_at=now + timedelta(seconds=1), now=now)
    assert await encodings() == {"listpack"}
    [again] = await queue.claim(
        ["default"], "w1", limit=5, lease_seconds=30, now=now + timedelta(seconds=2)
    )
    assert (again.id, again.attempts) == (plain.id, 2)
    await queue.ack_many([Ack(plain.id, "w1", TaskStatus.COMPLETE)], now=now)
    assert await encodings() == {"listpack"}

    assert await queue.delete_finished(now + timedelta(seconds=1)) == 1
    assert await queue.get(plain.id) is None
    assert await redis.exists(f"{ns}:t:{plain.id}") == 0
    assert (await queue.get(later.id)) is not None


async def test_a_task_record_leaves_its_id_to_the_hash_key(
    backend: RedisBackend, redis: aioredis.Redis
) -> None:
    # The record is stored without the id (36 bytes a task, and for a plain task one
    # 64-byte piece, one hash field, fewer); every reader puts the id back from the key.
    queue = backend.task_queue()
    ns = backend.namespace
    task = Task(
        id=new_task_id(),
        func="benchmarks.apps.omniq_tasks:noop",
        payload=b"M\x92\x90\x80",  # what enqueue(f) stores for a call with no arguments
        retry_delay=1.0,
        result_ttl=86400.0,
    )
    await queue.enqueue([task])
    fields = await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(f"{ns}:t:{task.id}"))
    pieces = [fields[name] for name in (b"d1", b"d2", b"d3") if name in fields]
    assert len(pieces) == 2
    assert msgspec.msgpack.decode(b"".join(pieces))["id"] == ""
    # Nor does the hash repeat the id in its member, the sequence, 0s or the record's time.
    assert sorted(fields) == [b"d1", b"d2", b"m", b"q", b"s"] and len(fields[b"m"]) == 26
    [got] = await queue.get_many([task.id])
    assert got is not None and got.id == task.id and got.func == task.func
    assert [t.id for t in await queue.list(queue="default")] == [task.id]
    [claimed] = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
    assert claimed.id == task.id and claimed.payload == task.payload


async def test_tasks_stored_in_the_earlier_layout_still_run(
    backend: RedisBackend, redis: aioredis.Redis
) -> None:
    # Before the encoded task had a key of its own it was the hash's field "d", and
    # ready-set members were {sortdue:016}{seq:016}{id}: such tasks are read and claimed.
    queue = backend.task_queue()
    ns = backend.namespace
    await queue.stats()
    task = make_task(new_task_id(), priority=3)
    created = _us(task.created_at)
    member = f"{created:016d}{1:016d}{task.id}"
    await redis.hset(
        f"{ns}:t:{task.id}",
        mapping={
            "d": msgspec.msgpack.encode(task),
            "s": "pending",
            "a": "0",
            "w": "",
            "l": "",
            "due": "",
            "u": str(created),
            "q": "default",
            "p": "3",
            "seq": f"{1:016d}",
            "m": member,
            "x": "",
        },
    )
    await redis.zadd(f"{ns}:q:default:ready", {member: -3})
    await redis.zadd(f"{ns}:q:default:s:pending", {task.id: 1})
    await redis.sadd(f"{ns}:queues", "default")
    await redis.set(f"{ns}:seq", 1)
    newer = make_task(new_task_id())
    await queue.enqueue([newer, task])  # the stored id is left as it is
    assert await redis.hget(f"{ns}:t:{task.id}", "seq") == f"{1:016d}".encode()

    stored = await queue.get(task.id)
    assert stored is not None and stored.payload == task.payload
    claimed = await queue.claim(["default"], "w", limit=5, lease_seconds=30, now=utcnow())
    assert [t.id for t in claimed] == [task.id, newer.id]  # priority 3 first
    assert claimed[0].func == task.func and claimed[0].attempts == 1
    assert await queue.ack_many(
        [Ack(t.id, "w", TaskStatus.COMPLETE) for t in claimed], now=utcnow()
    ) == [True, True]
    assert await queue.stats() == {"default": {"complete": 2}}


async def test_tasks_stored_by_0_1_keep_their_whole_member_and_sequence_and_still_run(
    backend: RedisBackend, redis: aioredis.Redis
) -> None:
    # OmniQ 0.1 kept the whole ready-set member in `m` ({due ms:013}{seq:013x}{id}), the
    # sequence in `seq`, and `a`, `p`, `u` even when they said nothing; a task it left
    # waiting is read, retried and finished (now `m` is the head only, without those).
    queue = backend.task_queue()
    ns = backend.namespace
    await queue.stats()
    task = make_task(new_task_id(), priority=3)
    created = _us(task.created_at)
    member = f"{created // 1000:013d}{1:013x}{task.id}"
    data = msgspec.msgpack.encode(msgspec.structs.replace(task, id=""))
    pieces = {f"d{j + 1}": data[j * 64 : (j + 1) * 64] for j in range((len(data) + 63) // 64)}
    await redis.hset(
        f"{ns}:t:{task.id}",
        mapping={
            "s": "pending",
            "a": "0",
            "u": str(created),
            "q": "default",
            "p": "3",
            "seq": f"{1:016d}",
            "m": member,
            **pieces,
        },
    )
    await redis.zadd(f"{ns}:q:default:ready", {member: -3})
    await redis.zadd(f"{ns}:q:default:s:pending", {task.id: 1})
    await redis.sadd(f"{ns}:queues", "default")
    await redis.set(f"{ns}:seq", 1)
    newer = make_task(new_task_id())
    await queue.enqueue([newer])
    assert await redis.hget(f"{ns}:t:{newer.id}", "seq") is None

    stored = await queue.get(task.id)
    assert stored is not None and stored.payload == task.payload and stored.priority == 3
    [claimed] = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
    assert claimed.id == task.id and claimed.attempts == 1
    assert await queue.retry(task.id, "w", due_at=utcnow(), now=utcnow())
    claimed = await queue.claim(["default"], "w", limit=5, lease_seconds=30, now=utcnow())
    assert [t.id for t in claimed] == [task.id, newer.id]  # priority 3 first
    assert claimed[0].attempts == 2 and claimed[1].attempts == 1
    assert await queue.ack_many(
        [Ack(t.id, "w", TaskStatus.COMPLETE) for t in claimed], now=utcnow()
    ) == [True, True]
    assert await queue.stats() == {"default": {"complete": 2}}
    assert [t.id for t in await queue.list(queue="default")] == [newer.id, task.id]


async def test_a_corrupt_task_is_handed_out_as_unreadable_and_the_others_are_claimed(
    backend: RedisBackend, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    queue = backend.task_queue()
    good = make_task("good", priority=1, queue="mail")
    await queue.enqueue([good, make_task("bad", queue="mail")])
    corrupt = redis.hset(f"{backend.namespace}:t:bad", mapping={"d": b"\xc1 not msgpack"})
    await cast(Awaitable[int], corrupt)
    await assert_unreadable_is_listed_and_handed_out(queue, good, "bad", queue_name="mail")
    assert "bad" in caplog.text


async def test_result_wait_wakes_every_waiter(backend: RedisBackend) -> None:
    results = backend.result_storage()
    await results.connect()
    result = make_result()
    waiters = [asyncio.ensure_future(results.wait(result.task_id, 10.0)) for _ in range(3)]
    await asyncio.sleep(0.05)  # let them block; a late waiter would find the result anyway
    await results.put(result)
    assert await asyncio.wait_for(asyncio.gather(*waiters), 2) == [result] * 3


async def test_result_expiry_is_native(backend: RedisBackend, redis: aioredis.Redis) -> None:
    results = backend.result_storage()
    result = make_result(expires_at=utcnow() + timedelta(seconds=60))
    await results.put(result)
    ttl = await redis.pttl(f"{backend.namespace}:r:{result.task_id}")
    assert 50_000 < ttl <= 60_000
    await results.put(make_result(result.task_id))  # replaced without expiry
    assert await redis.pttl(f"{backend.namespace}:r:{result.task_id}") == -1
    assert await results.delete_expired(utcnow() + timedelta(hours=1)) == 0


# -- errors ----------------------------------------------------------------------------


async def test_unreachable_server_raises_storage_connection_error(namespace: str) -> None:
    queue = AsyncRedisQueue(f"redis://127.0.0.1:{free_port()}/0", namespace=namespace)
    with pytest.raises(StorageConnectionError) as info:
        await queue.connect()
    assert info.value.__cause__ is not None


async def test_server_errors_become_storage_errors(
    backend: RedisBackend, redis: aioredis.Redis
) -> None:
    queue = backend.task_queue()
    await redis.set(f"{backend.namespace}:t:bad", "not a hash")
    with pytest.raises(StorageError, match="WRONGTYPE") as info:
        await queue.get("bad")
    assert not isinstance(info.value, StorageConnectionError)


async def test_an_argument_over_redis_512_mb_limit_is_refused_before_sending(
    redis_cleanup: str,
) -> None:
    # It used to be sent whole, and fail after seconds with the server's raw
    # "ERR Protocol error: invalid bulk length".
    from omniq import AsyncOmniQ
    from omniq.errors import ValueTooLargeError

    oq = AsyncOmniQ(
        task_queue=REDIS_URL,
        result_storage=REDIS_URL,
        event_storage=False,
        namespace=redis_cleanup,
        max_payload_bytes=None,  # OmniQ's own bound off: Redis's is the one under test
    )
    too_big = b"x" * (513 * 2**20)
    server = aioredis.from_url(REDIS_URL)
    async with oq:
        await oq.stats()  # connected before the count starts
        received = (await server.info("stats"))["total_net_input_bytes"]
        with pytest.raises(ValueTooLargeError) as caught:
            await oq.enqueue(len, too_big)
        # Refused before sending: the server got nothing like 513 MB (only small requests,
        # the INFO above among them, from this and other clients).
        sent = (await server.info("stats"))["total_net_input_bytes"] - received
        assert sent < 2**20, sent
        message = str(caught.value)
        assert "Redis's limit of 512 MB per value" in message and "513.0 MB" in message
        assert isinstance(caught.value, ValueError)
        # A bulk enqueue sends each chunk of tasks as it is built: none may go out first.
        with pytest.raises(ValueTooLargeError):
            await oq.enqueue_many(len, [(b"small",)] * 300 + [(too_big,)])
        del too_big
        # Nothing was stored, and the connection is still good.
        assert await oq.list_tasks() == []
        assert await oq.get_result(await oq.enqueue(len, b"small")) is None
    await server.aclose()
