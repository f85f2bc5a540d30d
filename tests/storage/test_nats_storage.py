"""The storage contract on NATS (JetStream), plus what is special to it."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import pytest

from omniq import AsyncOmniQ
from omniq.errors import StorageConnectionError, ValueTooLargeError
from omniq.models import EventType, Task, TaskEvent, TaskResult, TaskStatus, utcnow
from omniq.storage.base import Ack, Finish
from omniq.storage.nats import (
    AsyncNATSEventStorage,
    AsyncNATSQueue,
    AsyncNATSResultStorage,
    AsyncNATSScheduleStorage,
    NATSBackend,
    NATSEventStorage,
    NATSQueue,
    NATSResultStorage,
    NATSScheduleStorage,
)
from omniq.storage.nats._base import Record, decode_record, record_of
from omniq.storage.nats.connection import sanitize
from omniq.storage.redis import AsyncRedisResultStorage
from omniq.storage.registry import bundle_for_url
from omniq.storage.sqlite import AsyncSQLiteEventStorage
from tests.conformance import tasks
from tests.conftest import (
    NATS_URL,
    REDIS_URL,
    delete_nats_namespace,
    delete_redis_namespace,
    free_port,
    unique_name,
)
from tests.storage import _nats_race
from tests.storage._nats_helpers import rewrite_nats_task
from tests.storage._nats_server import PrivateNATS
from tests.storage.contract import (
    EventContract,
    MakeBackend,
    QueueContract,
    ResultContract,
    S,
    ScheduleContract,
    assert_sync_twin_mirrors,
    assert_unreadable_is_listed_and_handed_out,
    make_event,
    make_result,
    make_task,
)


@pytest.fixture
async def make_backend(namespace: str) -> AsyncIterator[MakeBackend]:
    """Opened bundles on this test's namespace, each with its own client."""
    made: list[NATSBackend] = []

    async def make() -> NATSBackend:
        backend = NATSBackend(f"{NATS_URL}?namespace={namespace}", None)
        await backend.connect()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        while backend.connection.references:
            await backend.close()
    await delete_nats_namespace(NATS_URL, namespace)


@pytest.fixture
async def backend(make_backend: MakeBackend) -> NATSBackend:
    made = await make_backend()
    assert isinstance(made, NATSBackend)
    return made


class TestNATSQueue(QueueContract):
    pass


class TestNATSResults(ResultContract):
    pass


class TestNATSEvents(EventContract):
    pass


class TestNATSSchedules(ScheduleContract):
    pass


# -- the package's names -------------------------------------------------------------------


def test_blocking_twins_mirror_the_async_components() -> None:
    assert_sync_twin_mirrors(NATSQueue, AsyncNATSQueue)
    assert_sync_twin_mirrors(NATSResultStorage, AsyncNATSResultStorage)
    assert_sync_twin_mirrors(NATSEventStorage, AsyncNATSEventStorage)
    assert_sync_twin_mirrors(NATSScheduleStorage, AsyncNATSScheduleStorage)


def test_the_registry_serves_nats_urls() -> None:
    assert isinstance(bundle_for_url(NATS_URL), NATSBackend)


# -- names on the server -------------------------------------------------------------------


async def test_the_namespace_names_every_stream_and_bucket(make_backend: MakeBackend) -> None:
    backend = await make_backend()
    assert isinstance(backend, NATSBackend)
    prefix = backend.connection.prefix
    js = await backend.connection.jetstream()
    mine = sorted(
        info.config.name or ""
        for info in await js.streams_info()
        if prefix in (info.config.name or "")
    )
    assert mine == sorted(
        [
            f"KV_{prefix}_tasks",
            f"KV_{prefix}_results",
            f"KV_{prefix}_schedules",
            f"KV_{prefix}_workers",
            f"KV_{prefix}_progress",
            f"{prefix}_events",
        ]
    )


async def test_a_namespace_with_characters_nats_refuses_is_made_safe() -> None:
    namespace = f"{unique_name('my.app ')}*>"
    queue = AsyncNATSQueue(NATS_URL, namespace=namespace)
    try:
        task = make_task()
        await queue.enqueue([task])
        assert queue.connection.prefix == sanitize(namespace)
        assert "." not in queue.connection.prefix and "*" not in queue.connection.prefix
        stored = await queue.get(task.id)
        assert stored is not None and stored.id == task.id
    finally:
        await queue.close()
        await delete_nats_namespace(NATS_URL, namespace)


async def test_ids_nats_would_not_take_as_keys_round_trip(backend: NATSBackend) -> None:
    queue, log, results = backend.task_queue(), backend.event_storage(), backend.result_storage()
    odd = ["a.b c", "*", ">", "=x", "ünïcode/id", "x" * 200]
    tasks = [make_task(ident) for ident in odd]
    assert await queue.enqueue(tasks) == odd
    assert [t.id if t else None for t in await queue.get_many(odd)] == odd
    claimed = await queue.claim(["default"], "w", limit=10, lease_seconds=30, now=utcnow())
    assert sorted(t.id for t in claimed) == sorted(odd)
    await log.append([make_event(ident, EventType.ENQUEUED) for ident in odd])
    await results.put_many([make_result(ident) for ident in odd])
    for ident in odd:
        assert [e.task_id for e in await log.get(ident)] == [ident]
        result = await results.get(ident)
        assert result is not None and result.task_id == ident
    assert {t.id for t in await queue.list()} == set(odd)


async def test_a_damaged_task_is_listed_and_handed_out_to_be_failed(
    backend: NATSBackend,
) -> None:
    queue = backend.task_queue()
    good, bad = make_task(priority=5), make_task()
    await queue.enqueue([good, bad])

    def corrupt(record: Record) -> Record:
        return msgspec.structs.replace(record, body=b"\xc1 not msgpack")

    await rewrite_nats_task(NATS_URL, bad.id, corrupt)
    await queue.stats()  # caught up with the rewrite
    await assert_unreadable_is_listed_and_handed_out(queue, good, bad.id)


async def test_a_claim_in_another_process_index_wins_once(
    backend: NATSBackend, make_backend: MakeBackend
) -> None:
    # Two clients whose indexes both offer the same task: the compare-and-set on its
    # revision lets one claim it; the other gets nothing (and no error).
    other = (await make_backend()).task_queue()
    queue = backend.task_queue()
    task = make_task()
    await queue.enqueue([task])
    await other.stats()  # both indexes hold the task as pending
    now = utcnow()
    first, second = await asyncio.gather(
        queue.claim(["default"], "a", limit=1, lease_seconds=30, now=now),
        other.claim(["default"], "b", limit=1, lease_seconds=30, now=now),
    )
    assert sorted(len(claimed) for claimed in (first, second)) == [0, 1]
    stored = await queue.get(task.id)
    assert stored is not None and stored.attempts == 1


async def test_a_cancel_from_another_client_reaches_the_watching_worker(
    backend: NATSBackend, make_backend: MakeBackend
) -> None:
    queue, other = backend.task_queue(), (await make_backend()).task_queue()
    task = make_task()
    await queue.enqueue([task])
    await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
    noticed: asyncio.Queue[str] = asyncio.Queue()
    watcher = asyncio.ensure_future(queue.watch_cancels("w", lambda: {task.id}, noticed.put_nowait))
    try:
        await asyncio.sleep(0.05)
        moved = await other.transition(
            task.id,
            from_statuses={TaskStatus.RUNNING},
            to_status=TaskStatus.CANCELLED,
            now=utcnow(),
        )
        assert moved is not None
        assert await asyncio.wait_for(noticed.get(), 5) == task.id
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def test_an_idle_worker_waits_on_the_server_not_in_a_loop(backend: NATSBackend) -> None:
    # A due task later than the wait: the waiter is woken by the watch when it is
    # enqueued, and sends nothing while it waits.
    queue = backend.task_queue()
    await queue.stats()
    sent = backend.connection._sent
    waiter = asyncio.ensure_future(queue.wait(["default"], 30.0))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    assert backend.connection._sent == sent  # no request while idle
    await backend.task_queue().enqueue([make_task()])
    await asyncio.wait_for(waiter, 5)


# -- connecting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://127.0.0.1:notaport", "bad URL"),
        ("nats://", "bad URL"),
        ("nats://127.0.0.1:4222/path", "no path"),
        ("nats://no-such-host.invalid:4222", "unknown host"),
    ],
)
async def test_a_bad_url_is_one_clear_error(url: str, expected: str) -> None:
    queue = AsyncNATSQueue(url)
    with pytest.raises(StorageConnectionError, match=expected):
        await queue.connect()


async def test_a_refused_connection_fails_fast_with_a_clear_error() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    queue = AsyncNATSQueue(url)
    with pytest.raises(StorageConnectionError, match=f"{url}: connection refused"):
        await asyncio.wait_for(queue.connect(), 10)


async def test_a_server_without_jetstream_is_one_clear_error(tmp_path: Path) -> None:
    server = PrivateNATS(tmp_path / "nats", jetstream=False)
    server.start()
    try:
        queue = AsyncNATSQueue(server.url)
        with pytest.raises(StorageConnectionError, match=r"no JetStream.*nats-server -js"):
            await queue.connect()
    finally:
        server.kill()


async def test_credentials_and_tokens_in_the_url(tmp_path: Path) -> None:
    users = PrivateNATS(tmp_path / "users", args=["--user", "app", "--pass", "s3cret"])
    tokens = PrivateNATS(tmp_path / "tokens", args=["--auth", "t0ken"])
    users.start()
    tokens.start()
    try:
        for url in (
            f"nats://app:s3cret@127.0.0.1:{users.port}",
            f"nats://t0ken@127.0.0.1:{tokens.port}",
        ):
            queue = AsyncNATSQueue(url, namespace="creds")
            await queue.enqueue([make_task()])
            assert (await queue.stats())["default"] == {"pending": 1}
            await queue.close()
        for url in (
            f"nats://app:wrong@127.0.0.1:{users.port}",
            f"nats://wrong@127.0.0.1:{tokens.port}",
        ):
            queue = AsyncNATSQueue(url)
            with pytest.raises(StorageConnectionError, match="authorization refused") as caught:
                await queue.connect()
            assert "wrong" not in str(caught.value)  # neither password nor token shown
    finally:
        users.kill()
        tokens.kill()


async def test_several_servers_in_one_url(namespace: str) -> None:
    # The first is down: the client moves on to the next.
    url = f"nats://127.0.0.1:{free_port()},{NATS_URL.removeprefix('nats://')}"
    queue = AsyncNATSQueue(url, namespace=namespace)
    try:
        await queue.enqueue([make_task()])
        assert (await queue.stats())["default"] == {"pending": 1}
    finally:
        await queue.close()
        await delete_nats_namespace(NATS_URL, namespace)


# -- processes racing ----------------------------------------------------------------------


async def test_four_processes_racing_over_1000_tasks_take_each_once(namespace: str) -> None:
    url = f"{NATS_URL}?namespace={namespace}"
    queue = AsyncNATSQueue(url)
    try:
        tasks = [make_task(priority=i % 4) for i in range(1000)]
        await queue.enqueue(tasks)
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(4), ctx.Queue()
        procs = [
            ctx.Process(target=_nats_race.claim_all, args=(url, f"p{i}", barrier, out))
            for i in range(4)
        ]
        for proc in procs:
            proc.start()
        try:
            taken = [await asyncio.to_thread(out.get, True, 120) for _ in procs]
        finally:
            for proc in procs:
                await asyncio.to_thread(proc.join, 30)
        assert [proc.exitcode for proc in procs] == [0] * 4
        ids = [task_id for _, claimed in taken for task_id in claimed]
        assert len(ids) == len(set(ids)) == 1000
        assert sum(1 for _, claimed in taken if claimed) >= 2  # they did race
        assert await queue.stats() == {"default": {"complete": 1000}}
    finally:
        await queue.close()
        await delete_nats_namespace(NATS_URL, namespace)


# -- mixed backends ------------------------------------------------------------------------


async def test_queue_on_nats_results_on_redis_events_on_sqlite(
    namespace: str, tmp_path: Path
) -> None:
    events_url = f"sqlite:///{tmp_path}/events.db"
    oq = AsyncOmniQ(
        task_queue=f"{NATS_URL}?namespace={namespace}",
        result_storage=f"{REDIS_URL}?namespace={namespace}",
        event_storage=events_url,
        base_dir=str(tmp_path / ".omniq"),
    )
    try:
        async with oq:
            ids = await oq.enqueue_many(tasks.add, [(i, i) for i in range(20)])
            await oq.worker(concurrency=4).run(burst=True)
            assert [(await oq.get_result(i)).result for i in ids] == [2 * i for i in range(20)]  # type: ignore[union-attr]
            kinds = [e.event_type for e in await oq.get_events(ids[0])]
            assert kinds == [EventType.ENQUEUED, EventType.EXECUTING, EventType.COMPLETE]
        # Each record is where its storage is: the result in Redis, the events in SQLite.
        async with AsyncRedisResultStorage(REDIS_URL, namespace=namespace) as results:
            stored = await results.get(ids[0])
            assert stored is not None and stored.status is TaskStatus.COMPLETE
        async with AsyncSQLiteEventStorage(events_url.removeprefix("sqlite:///")) as log:
            assert len(await log.get(ids[0])) == 3
        async with AsyncNATSResultStorage(NATS_URL, namespace=namespace) as on_nats:
            assert await on_nats.get(ids[0]) is None
    finally:
        await delete_nats_namespace(NATS_URL, namespace)
        await delete_redis_namespace(REDIS_URL, namespace)


async def test_a_task_over_the_servers_max_payload_is_refused_clearly(
    backend: NATSBackend,
) -> None:
    queue = backend.task_queue()
    huge = make_task(payload=b"x" * (2 * 1024 * 1024))
    with pytest.raises(ValueTooLargeError, match="max_payload"):
        await asyncio.wait_for(queue.enqueue([huge]), 10)  # at once: not retried
    assert await queue.get(huge.id) is None


async def test_a_contended_claim_spreads_within_the_head_priority(backend: NATSBackend) -> None:
    # After lost compare-and-sets a claim draws among more of the queue's head, but only
    # among tasks of the head's queue and priority, and puts the others back.
    queue = backend.task_queue()
    assert isinstance(queue, AsyncNATSQueue)
    urgent = make_task(priority=5)
    rest = [make_task() for _ in range(20)]
    await queue.enqueue([*rest, urgent])
    queue._width = 8  # as after contended claims
    now = utcnow()
    first = await queue.claim(["default"], "w", limit=4, lease_seconds=30, now=now)
    assert first[0].id == urgent.id  # priority first, whatever the spread
    assert {t.id for t in first[1:]} <= {t.id for t in rest}
    seen = [t.id for t in first]
    while claimed := await queue.claim(["default"], "w", limit=4, lease_seconds=30, now=now):
        seen += [t.id for t in claimed]
    assert sorted(seen) == sorted(t.id for t in [urgent, *rest])  # each once, none lost
    assert queue._width == 1  # uncontended claims narrowed it back


async def test_a_request_nobody_answers_times_out_and_later_ones_still_work(
    backend: NATSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One timer sweeps the requests in flight: an unanswered one fails with
    # TimeoutError (then StorageConnectionError for callers), the others are answered.
    from omniq.storage.nats import _requests

    monkeypatch.setattr(_requests, "_REQUEST_TIMEOUT", 0.2)
    conn = backend.connection
    client = await conn.client()
    subject = f"{unique_name('silent')}.nobody"
    # A listener that never answers: the server then sends no "no responders" status.
    sub = await client.subscribe(subject)
    try:
        asking = asyncio.ensure_future(conn.request(subject, b"x"))
        await asyncio.wait({asking}, timeout=10)  # a guard: the sweep ends it far sooner
        assert asking.done() and isinstance(asking.exception(), TimeoutError)
        assert not conn._replies  # the expired request is forgotten
        task = make_task()
        queue = backend.task_queue()
        await queue.enqueue([task])
        fetched = await queue.get(task.id)
        assert fetched is not None and fetched.id == task.id
    finally:
        await sub.unsubscribe()


@pytest.mark.parametrize(
    "raw",
    [
        b"Nats-Expected-Last-Subject-Sequence: 12\r\n\r\n",
        b"KV-Operation: DEL\r\nbad name: x\r\n\xff: y\r\nv: \xc3\xa9 \r\n\r\n",
        b"a:\tb\r\n:e\r\nno colon\r\n",
        b"",
    ],
)
def test_watch_headers_parse_as_nats_py_parses_them(raw: bytes) -> None:
    from nats.aio.client import Client

    from omniq.storage.nats._protocol import parse_header_lines

    assert parse_header_lines(raw) == Client._parse_header_lines(raw)


async def test_a_batch_writes_a_message_per_task_and_reads_back_every_event(
    backend: NATSBackend,
) -> None:
    # A task's events of one append share a message (a bounded number per message):
    # a delayed task's ENQUEUED and SCHEDULED cost one write; nothing is lost or reordered.
    store = backend.event_storage()
    await store.connect()
    now = utcnow()
    many = [make_event("busy", EventType.RETRY, timestamp=now, attempt=i) for i in range(150)]
    other = make_event("quiet", EventType.ENQUEUED, timestamp=now)
    await store.append([*many[:100], other, *many[100:]])
    assert await store.get("busy") == many
    assert await store.get("quiet") == [other]
    conn = backend.connection
    js = await conn.jetstream()
    info = await js.stream_info(conn.events_stream)
    assert info.state.messages == 4  # 64 + 64 + 22 of "busy", 1 of "quiet"


# -- results riding in the task's final write ----------------------------------------------


async def _finish(
    backend: NATSBackend,
    task: Task,
    result: TaskResult,
    *,
    cancel_first: bool = False,
    events: Sequence[TaskEvent] = (),
) -> list[bool]:
    """Enqueue and claim ``task`` as worker "w", then finish it with ``result`` and
    ``events`` on the backend's own queue, results and events (a cancel landing first
    when ``cancel_first``)."""
    queue, results, log = backend.task_queue(), backend.result_storage(), backend.event_storage()
    assert queue.finish_logs_events(log)
    await queue.enqueue([task])
    now = utcnow()
    [claimed] = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
    assert claimed.id == task.id
    if cancel_first:
        running = {TaskStatus.RUNNING}
        assert await queue.transition(
            task.id, from_statuses=running, to_status=TaskStatus.CANCELLED, now=now
        )
        await results.put(make_result(task.id, status=TaskStatus.CANCELLED, result=None))
    acked, _ = await queue.finish(
        [Finish(Ack(task.id, "w", TaskStatus.COMPLETE), result, events)], results, log, now=now
    )
    return acked


def _run_events(task: Task) -> list[TaskEvent]:
    now = utcnow()
    return [
        TaskEvent(task_id=task.id, event_type=EventType.EXECUTING, timestamp=now, attempt=1),
        TaskEvent(task_id=task.id, event_type=EventType.COMPLETE, timestamp=now, attempt=1),
    ]


async def _messages_in_event_stream(backend: NATSBackend, task_id: str) -> int:
    conn = backend.connection
    subject = f"{conn.events_subject}.{task_id}"
    return len(await conn.scan(conn.events_stream, subject, last_per_subject=False))


async def _in_results_bucket(backend: NATSBackend, task_id: str) -> bytes | None:
    conn = backend.connection
    bucket = conn.results_bucket
    return (await conn.get_last(f"KV_{bucket}", f"$KV.{bucket}.{task_id}"))[1]


async def test_a_finish_writes_result_and_events_with_the_final_status_in_one_write(
    backend: NATSBackend, namespace: str
) -> None:
    # Results and events on the same backend and connection: they ride in the task's
    # final compare-and-set (nothing in the results bucket or the event stream), and
    # read back like any others.
    queue, results = backend.task_queue(), backend.result_storage()
    assert queue.finishes_together(results)
    elsewhere = AsyncNATSResultStorage(NATS_URL, namespace=namespace)  # its own client
    assert not queue.finishes_together(elsewhere)
    task = make_task()
    done, logged = make_result(task.id, worker_id="w"), _run_events(task)
    assert await _finish(backend, task, done, events=logged) == [True]
    assert await results.get(task.id) == done
    assert await backend.event_storage().get(task.id) == logged
    assert await _in_results_bucket(backend, task.id) is None
    assert await _messages_in_event_stream(backend, task.id) == 0
    async with elsewhere:  # another process's client reads it too
        assert await elsewhere.get(task.id) == done
        assert await asyncio.wait_for(elsewhere.wait(task.id, 5.0), 5) == done
    stored = await queue.get(task.id)
    assert stored is not None and stored.status is TaskStatus.COMPLETE


async def test_a_waiter_is_woken_by_a_result_riding_in_the_final_write(
    backend: NATSBackend,
) -> None:
    results = backend.result_storage()
    task = make_task()
    done = make_result(task.id, worker_id="w")
    waiter = asyncio.ensure_future(results.wait(task.id, 10.0))
    await asyncio.sleep(0)  # the waiter subscribes before the finish (it looks once too)
    assert await _finish(backend, task, done) == [True]
    assert await asyncio.wait_for(waiter, 5) == done


async def test_results_and_events_outlive_their_purged_tasks(backend: NATSBackend) -> None:
    # delete_finished purges finished tasks; their results stay readable until they
    # expire, and their events until delete_before, as on every backend (an expired
    # result is not carried over).
    queue, results, log = backend.task_queue(), backend.result_storage(), backend.event_storage()
    now = utcnow()
    kept, later, gone = make_task(), make_task(), make_task()
    forever = make_result(kept.id, worker_id="w")
    for_an_hour = make_result(later.id, worker_id="w", expires_at=now + 3600 * S)
    expired = make_result(gone.id, worker_id="w", expires_at=now - 1 * S)
    logged = {}
    for task, result in ((kept, forever), (later, for_an_hour), (gone, expired)):
        logged[task.id] = _run_events(task)
        assert await _finish(backend, task, result, events=logged[task.id]) == [True]
    assert await queue.delete_finished(utcnow() + 1 * S) == 3
    assert await queue.get_many([kept.id, later.id, gone.id]) == [None, None, None]
    assert await results.get(kept.id) == forever
    assert await results.get(later.id) == for_an_hour
    assert await results.get(gone.id) is None
    assert await _in_results_bucket(backend, gone.id) is None
    for task_id, events in logged.items():
        assert await log.get(task_id) == events


async def test_delete_before_takes_old_events_out_of_task_records(backend: NATSBackend) -> None:
    log = backend.event_storage()
    task = make_task()
    now = utcnow()
    old = TaskEvent(task_id=task.id, event_type=EventType.EXECUTING, timestamp=now - 60 * S)
    new = TaskEvent(task_id=task.id, event_type=EventType.COMPLETE, timestamp=now)
    assert await _finish(backend, task, make_result(task.id, worker_id="w"), events=[old, new])
    assert await log.delete_before(now - 120 * S) == 0
    assert await log.delete_before(now - 30 * S) == 1
    assert await log.get(task.id) == [new]
    assert await log.delete_before(now + 1 * S) == 1
    assert await log.get(task.id) == []


async def test_delete_expired_takes_expired_results_out_of_task_records(
    backend: NATSBackend,
) -> None:
    queue, results = backend.task_queue(), backend.result_storage()
    now = utcnow()
    task = make_task()
    done = make_result(task.id, worker_id="w", expires_at=now + 60 * S)
    assert await _finish(backend, task, done) == [True]
    assert await results.delete_expired(now) == 0
    assert await results.get(task.id) == done
    assert await results.delete_expired(now + 120 * S) == 1
    assert await results.get(task.id) is None  # gone, not only hidden
    stored = await queue.get(task.id)
    assert stored is not None and stored.status is TaskStatus.COMPLETE  # the task stays


@pytest.mark.parametrize("cancel_first", [False, True])
async def test_a_result_too_large_to_ride_with_its_task_is_stored_apart(
    backend: NATSBackend, cancel_first: bool
) -> None:
    # Task and result together over the server's max_payload (each under it): the
    # result goes to the results bucket first, then the ack, then the events; a cancel
    # that won keeps its own result.
    half = backend.connection.max_payload // 2
    task = make_task(payload=b"x" * half)
    big = make_result(task.id, worker_id="w", result=b"y" * half)
    logged = _run_events(task)
    acked = await asyncio.wait_for(
        _finish(backend, task, big, cancel_first=cancel_first, events=logged), 30
    )
    results, log = backend.result_storage(), backend.event_storage()
    stored = await backend.task_queue().get(task.id)
    assert stored is not None
    if cancel_first:
        assert acked == [False]
        verdict = await results.get(task.id)
        assert verdict is not None and verdict.status is TaskStatus.CANCELLED
        assert stored.status is TaskStatus.CANCELLED
        assert await log.get(task.id) == []  # a finish that lost logs nothing
    else:
        assert acked == [True]
        assert await results.get(task.id) == big
        assert await log.get(task.id) == logged
        assert stored.status is TaskStatus.COMPLETE


def test_a_record_written_before_results_rode_in_it_still_decodes() -> None:
    record = record_of(make_task())
    older = msgspec.msgpack.encode(list(msgspec.structs.astuple(record))[:-1])
    assert decode_record(older) == record


async def test_deleting_a_result_takes_it_out_of_its_task_record(backend: NATSBackend) -> None:
    # What requeue relies on: once deleted, a result that rode in the task's final
    # write is gone for every reader; the task and its events stay.
    results, log = backend.result_storage(), backend.event_storage()
    task = make_task()
    logged = _run_events(task)
    assert await _finish(backend, task, make_result(task.id, worker_id="w"), events=logged)
    await results.delete([task.id])
    assert await results.get(task.id) is None
    assert await log.get(task.id) == logged
    stored = await backend.task_queue().get(task.id)
    assert stored is not None and stored.status is TaskStatus.COMPLETE
