"""The storage contract on PostgreSQL, plus what is special to it: schemas per namespace,
migrations racing, two processes claiming, dropped connections, corrupt records."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from omniq.config import Settings
from omniq.errors import ConfigError, StorageConnectionError, StorageError
from omniq.models import EventType, Progress, Task, TaskEvent, TaskResult, TaskStatus, utcnow
from omniq.storage.base import Ack, Finish
from omniq.storage.postgres import (
    AsyncPostgresEventStorage,
    AsyncPostgresQueue,
    AsyncPostgresResultStorage,
    AsyncPostgresScheduleStorage,
    PostgresBackend,
    PostgresConnection,
    PostgresEventStorage,
    PostgresQueue,
    PostgresResultStorage,
    PostgresScheduleStorage,
)
from omniq.storage.postgres.connection import SCHEMA_VERSION
from omniq.storage.registry import bundle_for_url
from tests.conftest import POSTGRES_URL, drop_postgres_schema, free_port, unique_name
from tests.storage import _race_worker
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


@pytest.fixture
async def schema(namespace: str) -> AsyncIterator[str]:
    """This test's namespace; its schema is dropped afterwards."""
    yield namespace
    await drop_postgres_schema(POSTGRES_URL, namespace)


@pytest.fixture
async def make_backend(schema: str) -> AsyncIterator[MakeBackend]:
    """Opened bundles on this test's schema, each with its own pool."""
    made: list[PostgresBackend] = []

    async def make() -> PostgresBackend:
        backend = PostgresBackend(f"{POSTGRES_URL}?namespace={schema}", None)
        await backend.connect()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        # Components a test used without connecting them connected on first use: each
        # holds a reference to the pool.
        while backend.connection.references:
            await backend.close()


@pytest.fixture
async def backend(make_backend: MakeBackend) -> PostgresBackend:
    return await make_backend()


@pytest.fixture
async def sql() -> AsyncIterator[asyncpg.Connection]:
    """A plain connection, to look at (and break) what OmniQ stored."""
    conn = await asyncpg.connect(POSTGRES_URL)
    yield conn
    await conn.close()


class TestPostgresQueue(QueueContract):
    pass


class TestPostgresResults(ResultContract):
    pass


class TestPostgresEvents(EventContract):
    pass


class TestPostgresSchedules(ScheduleContract):
    pass


# -- event groups ------------------------------------------------------------------------


async def test_deleting_a_task_keeps_its_grouped_events_until_their_retention(
    backend: PostgresBackend, sql: asyncpg.Connection
) -> None:
    queue, log = backend.task_queue(), backend.event_storage()
    await log.connect()
    then = utcnow() - timedelta(hours=2)
    tasks = [make_task(created_at=then) for _ in range(5)]  # uniform: one group

    def logged(task: Task) -> list[TaskEvent]:
        return [
            make_event(task.id, EventType.ENQUEUED, timestamp=then),
            make_event(task.id, EventType.SCHEDULED, timestamp=then + timedelta(hours=1.5)),
        ]

    await queue.enqueue_logged(tasks, [logged(t) for t in tasks], log)
    claimed = await queue.claim(["default"], "w", limit=2, lease_seconds=30, now=utcnow())
    await queue.ack_many([Ack(t.id, "w", TaskStatus.COMPLETE) for t in claimed], now=then)
    running = make_event(claimed[0].id, EventType.EXECUTING, timestamp=then + timedelta(hours=1))
    await log.append([running])
    assert await queue.delete_finished(utcnow()) == 2
    # The deleted tasks' events moved to rows of their own, and read back in time order.
    assert await log.get(claimed[0].id) == [logged(claimed[0])[0], running, logged(claimed[0])[1]]
    for task in tasks[1:]:
        assert await log.get(task.id) == logged(task)
    group = f"SELECT tasks, cardinality(data) FROM {backend.schema}.event_groups"
    assert [tuple(row) for row in await sql.fetch(group)] == [(3, 2)]
    # Retention takes each task's old event once, whether grouped or moved, and keeps the
    # group's newer event.
    assert await log.delete_before(utcnow() - timedelta(hours=1)) == 6
    assert [tuple(row) for row in await sql.fetch(group)] == [(3, 1)]
    for task in tasks[1:]:
        assert [e.event_type for e in await log.get(task.id)] == [EventType.SCHEDULED]
    assert await log.delete_before(utcnow()) == 5
    assert await sql.fetch(group) == []
    # The tasks left point at a deleted group: they read no events, and delete cleanly.
    rest = await queue.claim(["default"], "w", limit=3, lease_seconds=30, now=utcnow())
    await queue.ack_many([Ack(t.id, "w", TaskStatus.COMPLETE) for t in rest], now=then)
    assert await queue.delete_finished(utcnow()) == 3
    assert [await log.get(task.id) for task in tasks] == [[]] * 5


async def test_a_corrupt_grouped_event_is_an_error_naming_the_task(
    backend: PostgresBackend, sql: asyncpg.Connection
) -> None:
    queue, log = backend.task_queue(), backend.event_storage()
    await log.connect()
    task = make_task()
    await queue.enqueue_logged([task], [[make_event(task.id, EventType.ENQUEUED)]], log)
    assert len(await log.get(task.id)) == 1
    await sql.execute(f"UPDATE {backend.schema}.event_groups SET data = ARRAY['\\xc1'::bytea]")
    with pytest.raises(StorageError, match=task.id):
        await log.get(task.id)
    assert await queue.get(task.id) is not None  # the task itself is untouched


# -- URLs, namespaces, migrations ---------------------------------------------------------


def test_backend_for_url_builds_the_postgres_bundle() -> None:
    for url in (POSTGRES_URL, POSTGRES_URL.replace("postgresql://", "postgres://")):
        assert isinstance(bundle_for_url(url, None), PostgresBackend)


async def test_url_namespace_names_the_schema_and_is_not_sent_to_the_server(
    schema: str, sql: asyncpg.Connection
) -> None:
    async with AsyncPostgresQueue(f"{POSTGRES_URL}?namespace={schema}") as queue:
        assert queue.namespace == schema
        await queue.enqueue([make_task("t1")])
    stored = await sql.fetchval(f'SELECT count(*) FROM "{schema}".tasks')
    assert stored == 1


@pytest.mark.parametrize("bad", ["has space", 'quo"te', "semi;colon", "1digit-first", "x" * 49])
def test_bad_namespace_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="namespace"):
        PostgresConnection(POSTGRES_URL, Settings(), namespace=bad)


async def _sessions_under_load(url: str, schema: str, sql: asyncpg.Connection) -> int:
    """How many sessions a queue on ``url`` keeps open after 30 overlapping reads."""
    async with AsyncPostgresQueue(url) as queue:
        await queue.enqueue([make_task("t1")])
        await asyncio.gather(*(queue.stats() for _ in range(30)))
        count: int = await sql.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            f"omniq:{schema}",
        )
    return count


async def test_url_pool_size_caps_the_connections_and_is_not_sent_to_the_server(
    schema: str, sql: asyncpg.Connection
) -> None:
    default = await _sessions_under_load(f"{POSTGRES_URL}?namespace={schema}", schema, sql)
    capped = await _sessions_under_load(
        f"{POSTGRES_URL}?pool_size=3&namespace={schema}", schema, sql
    )
    assert 3 < default <= 10  # the default pool does open more under this load
    assert 2 <= capped <= 3


@pytest.mark.parametrize("bad", ["1", "0", "-4", "ten", ""])
def test_bad_pool_size_is_a_config_error_naming_it(bad: str) -> None:
    with pytest.raises(ConfigError, match="pool_size"):
        PostgresBackend(f"{POSTGRES_URL}?pool_size={bad}", None)


async def test_namespaces_do_not_see_each_other(schema: str) -> None:
    other = unique_name("omniqtest")
    try:
        async with (
            AsyncPostgresQueue(POSTGRES_URL, namespace=schema) as one,
            AsyncPostgresQueue(POSTGRES_URL, namespace=other) as two,
        ):
            await one.enqueue([make_task("only-in-one")])
            assert await two.get("only-in-one") is None
            assert await two.stats() == {}
            assert await one.stats() == {"default": {"pending": 1}}
    finally:
        await drop_postgres_schema(POSTGRES_URL, other)


async def test_concurrent_first_connects_migrate_once(schema: str, sql: asyncpg.Connection) -> None:
    backends = [PostgresBackend(f"{POSTGRES_URL}?namespace={schema}") for _ in range(4)]
    await asyncio.gather(*(backend.connect() for backend in backends))
    try:
        versions = await sql.fetch(f'SELECT version FROM "{schema}".schema_version')
        assert [row[0] for row in versions] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        await asyncio.gather(*(backend.close() for backend in backends))


async def test_newer_schema_is_refused(schema: str, sql: asyncpg.Connection) -> None:
    async with AsyncPostgresQueue(POSTGRES_URL, namespace=schema):
        pass
    await sql.execute(f'INSERT INTO "{schema}".schema_version (version) VALUES (99)')
    with pytest.raises(StorageError, match="version 99"):
        await AsyncPostgresQueue(POSTGRES_URL, namespace=schema).connect()


async def test_a_version_1_schema_is_upgraded_and_keeps_its_data(
    schema: str, sql: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{POSTGRES_URL}?namespace={schema}"
    with monkeypatch.context() as patch:
        patch.setattr("omniq.storage.postgres.connection.SCHEMA_VERSION", 1)
        old = PostgresBackend(url, None)
        await old.connect()
        queue, events = old.task_queue(), old.event_storage()
        tasks = [make_task() for _ in range(3)]
        await queue.enqueue(tasks)
        await events.append([make_event(t.id, EventType.ENQUEUED) for t in tasks])
        while old.connection.references:  # the components connected on first use
            await old.close()
    assert await sql.fetchval(f'SELECT max(version) FROM "{schema}".schema_version') == 1
    assert await sql.fetchval(f"SELECT to_regclass('\"{schema}\".events_pkey')") is not None

    new = PostgresBackend(url, None)
    await new.connect()
    try:
        versions = await sql.fetch(f'SELECT version FROM "{schema}".schema_version')
        assert [row[0] for row in versions] == list(range(1, SCHEMA_VERSION + 1))
        indexes = dict(
            await sql.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 "
                "AND tablename = 'events'",
                schema,
            )
        )
        assert set(indexes) == {"events_task", "events_ts"}
        assert "USING brin" in indexes["events_ts"]
        queue, events = new.task_queue(), new.event_storage()
        assert [t.id for t in await queue.get_many([t.id for t in tasks])] == [t.id for t in tasks]
        for task in tasks:
            [event] = await events.get(task.id)
            assert (event.task_id, event.event_type) == (task.id, EventType.ENQUEUED)
        # The upgraded log takes new events, and time-based cleanup still finds the old.
        await events.append([make_event(tasks[0].id, EventType.EXECUTING)])
        assert len(await events.get(tasks[0].id)) == 2
        assert await events.delete_before(utcnow() + timedelta(seconds=1)) == 4
    finally:
        while new.connection.references:
            await new.close()


def test_two_processes_migrate_a_fresh_schema_at_once(schema: str) -> None:
    results = _race_worker.spawn_pair(_race_worker.open_fresh, f"{POSTGRES_URL}?namespace={schema}")
    assert sorted(results) == [("ok", 0), ("ok", 0)]


def test_two_processes_claim_each_task_exactly_once(schema: str) -> None:
    url = f"{POSTGRES_URL}?namespace={schema}"
    tasks = [make_task() for _ in range(500)]
    with PostgresQueue(url) as queue:
        queue.enqueue(tasks)
    results = _race_worker.spawn_pair(_race_worker.claim_all, url)
    counts = Counter(task_id for _, ids in results for task_id in ids)
    assert set(counts) == {t.id for t in tasks}
    assert set(counts.values()) == {1}
    assert all(ids for _, ids in results), "both processes should have claimed some tasks"
    with PostgresQueue(url) as queue:
        assert queue.stats() == {"default": {"complete": 500}}


# -- sync twins ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sync_cls", "async_cls"),
    [
        (PostgresQueue, AsyncPostgresQueue),
        (PostgresResultStorage, AsyncPostgresResultStorage),
        (PostgresEventStorage, AsyncPostgresEventStorage),
        (PostgresScheduleStorage, AsyncPostgresScheduleStorage),
    ],
)
def test_sync_twins_mirror_async_methods_and_signatures(sync_cls: type, async_cls: type) -> None:
    assert_sync_twin_mirrors(sync_cls, async_cls)


async def test_sync_twins_work_on_their_own_loop(schema: str) -> None:
    def run() -> None:
        with PostgresQueue(POSTGRES_URL, namespace=schema) as queue:
            assert queue.enqueue([make_task("s1")]) == ["s1"]
            [got] = queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
            assert queue.ack(got.id, "w", TaskStatus.COMPLETE, now=utcnow()) is True
            assert queue.stats() == {"default": {"complete": 1}}
        with PostgresEventStorage(POSTGRES_URL, namespace=schema) as events:
            events.append([make_event("s1", EventType.ENQUEUED)])
            assert len(events.get("s1")) == 1

    await asyncio.to_thread(run)


# -- one statement per operation ----------------------------------------------------------


async def test_events_ride_in_the_enqueue_statement(backend: PostgresBackend) -> None:
    queue, events = backend.task_queue(), backend.event_storage()
    await queue.connect()
    await events.connect()
    assert queue.writes_events(events)
    tasks = [make_task() for _ in range(3)]
    logged = [[make_event(t.id, EventType.ENQUEUED)] for t in tasks]
    await queue.enqueue_logged(tasks, logged, events)
    # Again, with one new task: only its event is added.
    extra = make_task()
    await queue.enqueue_logged(
        [*tasks, extra], [*logged, [make_event(extra.id, EventType.ENQUEUED)]], events
    )
    assert [len(await events.get(t.id)) for t in [*tasks, extra]] == [1, 1, 1, 1]
    for task in [*tasks, extra]:
        [event] = await events.get(task.id)
        assert (event.task_id, event.event_type, event.queue) == (
            task.id,
            EventType.ENQUEUED,
            task.queue,
        )
    # Another pool on the same schema cannot share the enqueue's statement.
    other = PostgresBackend(f"{POSTGRES_URL}?namespace={backend.namespace}")
    assert not queue.writes_events(other.event_storage())


async def test_a_uniform_batch_stores_each_task_and_event_under_its_own_id(
    backend: PostgresBackend, sql: asyncpg.Connection
) -> None:
    """Tasks that differ only in id and data (enqueue_many's) go with their shared columns
    and events sent once; what is read back is the same as for any other batch."""
    queue, events = backend.task_queue(), backend.event_storage()
    await events.connect()
    now = utcnow()
    due = now + timedelta(hours=1)

    def batch(count: int, **fields: object) -> list[Task]:
        return [
            make_task(payload=bytes([n]), created_at=now, due_at=due, priority=3, **fields)
            for n in range(count)
        ]

    def logged(tasks: list[Task]) -> list[list[TaskEvent]]:
        return [
            [
                make_event(t.id, EventType.ENQUEUED, timestamp=now, queue=t.queue),
                make_event(t.id, EventType.SCHEDULED, timestamp=now, queue=t.queue),
            ]
            for t in tasks
        ]

    uniform = batch(3, queue="mail")
    await queue.enqueue_logged(uniform, logged(uniform), events)
    # Again with one new task: only the new one is stored and logged.
    [extra] = batch(1, queue="mail")
    await queue.enqueue_logged([*uniform, extra], logged([*uniform, extra]), events)
    mixed = [*batch(1, queue="mail"), *batch(1, queue="sms")]  # differ in queue: not uniform
    await queue.enqueue_logged(mixed, logged(mixed), events)

    for task in [*uniform, extra, *mixed]:
        stored = await queue.get(task.id)
        assert stored is not None
        assert (stored.payload, stored.queue, stored.priority, stored.status, stored.due_at) == (
            task.payload,
            task.queue,
            3,
            TaskStatus.PENDING,
            due,
        )
        assert [(e.task_id, e.event_type, e.queue) for e in await events.get(task.id)] == [
            (task.id, EventType.ENQUEUED, task.queue),
            (task.id, EventType.SCHEDULED, task.queue),
        ]
    # Each uniform batch logged its events once, as a group its new tasks point at; the
    # mixed batch logged a row per event.
    groups = await sql.fetch(
        f"SELECT tasks, cardinality(data) FROM {backend.schema}.event_groups ORDER BY id"
    )
    assert [tuple(row) for row in groups] == [(3, 2), (1, 2)]
    rows = await sql.fetch(f"SELECT task_id FROM {backend.schema}.events")
    assert sorted(row[0] for row in rows) == sorted(t.id for t in mixed for _ in range(2))


async def test_results_and_acks_finish_in_one_statement(backend: PostgresBackend) -> None:
    queue, results = backend.task_queue(), backend.result_storage()
    await queue.connect()
    task = make_task()
    await queue.enqueue([task])
    [held] = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
    waiter = asyncio.ensure_future(results.wait(task.id, 10))
    await asyncio.sleep(0.05)
    result = make_result(task.id)
    # The same result twice in one batch is stored once (the last wins), not an error.
    flags, _ = await queue.finish(
        [Finish(Ack(held.id, "w", TaskStatus.COMPLETE), result)] * 2, results, now=utcnow()
    )
    assert flags == [True, False]  # the repeated ack took effect once
    assert await asyncio.wait_for(waiter, 5) == result
    assert await queue.stats() == {"default": {"complete": 1}}


# -- bad data and a server that goes away --------------------------------------------------


async def test_a_corrupt_task_is_handed_out_as_unreadable_and_the_others_are_claimed(
    backend: PostgresBackend, sql: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    queue = backend.task_queue()
    good, bad = make_task(priority=1, queue="mail"), make_task(queue="mail")
    await queue.enqueue([good, bad])
    await sql.execute(
        f"UPDATE {backend.schema}.tasks SET data = $1 WHERE id = $2", b"\xc1\xc1", bad.id
    )
    with pytest.raises(StorageError, match=bad.id):
        await queue.get(bad.id)
    assert await queue.get(good.id) == good
    await assert_unreadable_is_listed_and_handed_out(queue, good, bad.id, queue_name="mail")
    assert bad.id in caplog.text


async def test_unreachable_server_raises_storage_connection_error(namespace: str) -> None:
    queue = AsyncPostgresQueue(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    with pytest.raises(StorageConnectionError, match="cannot connect") as info:
        await queue.connect()
    assert info.value.__cause__ is not None


async def test_unknown_database_is_named(namespace: str) -> None:
    queue = AsyncPostgresQueue("postgresql://postgres@127.0.0.1:5432/no_such_db_omniq")
    with pytest.raises(StorageConnectionError, match="no_such_db_omniq"):
        await queue.connect()


async def test_server_errors_become_storage_errors(
    backend: PostgresBackend, sql: asyncpg.Connection
) -> None:
    queue = backend.task_queue()
    await sql.execute(f"DROP TABLE {backend.schema}.task_deps")
    with pytest.raises(StorageError, match="task_deps") as info:
        await queue.dependents("x")
    assert not isinstance(info.value, StorageConnectionError)


async def _drop_connections(sql: asyncpg.Connection, backend: PostgresBackend) -> int:
    """Terminate the backend's sessions, as a server restart would (and no one else's:
    they are named after the test's own namespace)."""
    dropped: int = await sql.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
        backend.connection.application_name,
    )
    return dropped


async def test_dropped_connections_are_replaced_and_nothing_is_lost(
    backend: PostgresBackend, sql: asyncpg.Connection
) -> None:
    queue = backend.task_queue()
    first = make_task()
    await queue.enqueue([first])
    waiter = asyncio.ensure_future(queue.wait(["default"], 30))
    await asyncio.sleep(0.1)  # the listener is up
    assert await _drop_connections(sql, backend) >= 2  # the pool's and the listener's
    # A waiter is woken when its listener goes: notifications may have been missed.
    await asyncio.wait_for(waiter, 5)
    second = make_task()
    assert await queue.enqueue([second]) == [second.id]  # on a fresh connection
    claimed = await queue.claim(["default"], "w", limit=5, lease_seconds=30, now=utcnow())
    assert {t.id for t in claimed} == {first.id, second.id}
    # The listener is reopened by the next wait, and wakes it on the next enqueue.
    waiter = asyncio.ensure_future(queue.wait(["default"], 30))
    await asyncio.sleep(0.2)
    assert backend.connection._listener is not None and not backend.connection._listener.is_closed()
    await queue.enqueue([make_task()])
    await asyncio.wait_for(waiter, 5)


async def test_a_cancelled_statement_leaves_the_connections_usable(
    backend: PostgresBackend, sql: asyncpg.Connection
) -> None:
    # The first statement runs on the connection the bundle holds for single statements.
    slow = asyncio.ensure_future(backend.connection.fetchval("sleeping", "SELECT pg_sleep(30)"))
    await asyncio.sleep(0.3)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    # Statements at once: one on the held connection, the others through the pool.
    queue = backend.task_queue()
    tasks = [make_task() for _ in range(20)]
    stored = await asyncio.gather(*(queue.enqueue([task]) for task in tasks))
    assert stored == [[task.id] for task in tasks]
    assert await queue.stats() == {"default": {"pending": 20}}
    sleeping = await sql.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
        "AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
        backend.connection.application_name,
    )
    assert sleeping == 0


async def _notified_waiters(
    make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch, task_ids: list[str]
) -> tuple[PostgresBackend, list[asyncio.Future[TaskResult | None]]]:
    """Waiters for ``task_ids`` on one backend, and another backend to store results on.

    Without its backstop a waiter can only be woken by the notification."""
    monkeypatch.setattr("omniq.storage.postgres.results._RESULT_BACKSTOP", 60.0)
    reader, writer = await make_backend(), await make_backend()
    results = reader.result_storage()
    await results.connect()
    waiters = [asyncio.ensure_future(results.wait(task_id, 30.0)) for task_id in task_ids]
    await asyncio.sleep(0.1)  # they listen
    return writer, waiters


async def test_result_wait_wakes_every_waiter_across_pools(
    make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = make_result(expires_at=utcnow() + timedelta(minutes=5))
    writer, waiters = await _notified_waiters(make_backend, monkeypatch, [result.task_id] * 3)
    await writer.result_storage().put(result)
    assert await asyncio.wait_for(asyncio.gather(*waiters), 10) == [result] * 3


async def test_a_batch_of_results_wakes_the_waiter_of_each(
    make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Results are announced many ids per notification, split under PostgreSQL's 8,000-byte
    # payload limit: 300 long ids need several notifications, and each waiter is woken by
    # the one that carries its id.
    expires = utcnow() + timedelta(minutes=5)
    batch = [make_result(f"{i:04d}-" + "x" * 60, expires_at=expires) for i in range(300)]
    watched = [batch[0], batch[150], batch[-1]]
    writer, waiters = await _notified_waiters(
        make_backend, monkeypatch, [r.task_id for r in watched]
    )
    await writer.result_storage().put_many(batch)
    assert await asyncio.wait_for(asyncio.gather(*waiters), 10) == watched


async def test_finishing_tasks_wakes_their_result_waiters(
    make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = [make_task() for _ in range(3)]
    writer, waiters = await _notified_waiters(make_backend, monkeypatch, [t.id for t in tasks])
    queue, stored = writer.task_queue(), writer.result_storage()
    await queue.enqueue(tasks)
    claimed = await queue.claim(["default"], "w", limit=3, lease_seconds=30, now=utcnow())
    assert len(claimed) == 3
    outcomes = [make_result(t.id) for t in tasks]
    items = [
        Finish(Ack(t.id, "w", TaskStatus.COMPLETE), r) for t, r in zip(tasks, outcomes, strict=True)
    ]
    assert (await queue.finish(items, stored, now=utcnow()))[0] == [True] * 3
    assert await asyncio.wait_for(asyncio.gather(*waiters), 10) == outcomes


async def test_a_version_5_schema_gains_the_progress_table_and_keeps_its_tasks(
    schema: str, sql: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{POSTGRES_URL}?namespace={schema}"
    tasks = [make_task() for _ in range(3)]
    with monkeypatch.context() as patch:
        patch.setattr("omniq.storage.postgres.connection.SCHEMA_VERSION", 5)
        old = PostgresBackend(url, None)
        await old.connect()
        await old.task_queue().enqueue(tasks)
        while old.connection.references:
            await old.close()
    assert await sql.fetchval(f"SELECT to_regclass('\"{schema}\".task_progress')") is None

    new = PostgresBackend(url, None)
    await new.connect()
    try:
        queue = new.task_queue()
        assert [t.id for t in await queue.get_many([t.id for t in tasks])] == [t.id for t in tasks]
        progress = Progress(done=1, total=2)
        await queue.set_progress({tasks[0].id: progress})
        assert await queue.get_progress([t.id for t in tasks]) == {tasks[0].id: progress}
    finally:
        while new.connection.references:
            await new.close()
