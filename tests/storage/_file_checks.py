"""Storage-level checks of the file backend, shared by its local, memory and S3 test modules.

Each test module provides two async fixtures: ``backend`` (a connected FileBackend on a
fresh store) and ``make_backend`` (another connection to the same store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from omniq.models import EventType, Schedule, Task, TaskEvent, TaskResult, TaskStatus, utcnow
from omniq.storage.base import Ack
from omniq.storage.file import FileBackend
from tests.storage.contract import assert_unreadable_is_listed_and_handed_out

MakeBackend = Callable[[], Awaitable[FileBackend]]


def task(task_id: str, **fields: Any) -> Task:
    """A task record as the core would hand it to storage."""
    fields.setdefault("func", "tests.tasks:noop")
    return Task(id=task_id, payload=b"\x00payload", **fields)


async def close_backend(backend: FileBackend) -> None:
    """Close every component the backend made, then the backend itself."""
    for component in (
        backend.task_queue(),
        backend.result_storage(),
        backend.event_storage(),
        backend.schedule_storage(),
    ):
        await component.close()
    await backend.close()


class FileQueueChecks:
    """The task queue: order, leases, holders, dependencies, listing and waiting."""

    async def test_enqueue_is_idempotent_and_get_reads_back(self, backend: FileBackend) -> None:
        queue = backend.task_queue()
        ids = await queue.enqueue([task("a", priority=3), task("b/with odd:chars")])
        assert ids == ["a", "b/with odd:chars"]
        assert await queue.enqueue([task("a", func="other:thing")]) == ["a"]
        stored = await queue.get("a")
        assert stored is not None
        assert (stored.func, stored.priority, stored.payload) == (
            "tests.tasks:noop",
            3,
            b"\x00payload",
        )
        odd = await queue.get("b/with odd:chars")
        assert odd is not None and odd.id == "b/with odd:chars"
        assert await queue.get("missing") is None
        assert [t.id if t else None for t in await queue.get_many(["b/with odd:chars", "x"])] == [
            "b/with odd:chars",
            None,
        ]

    async def test_claim_order_priority_then_due_then_enqueue_order(
        self, backend: FileBackend
    ) -> None:
        queue = backend.task_queue()
        now = utcnow()
        await queue.enqueue(
            [
                task("low-first"),
                task("low-second"),
                task("high", priority=5),
                task("early", due_at=now - timedelta(hours=1)),
                task("negative", priority=-2),
                task("later", due_at=now + timedelta(hours=1)),
            ]
        )
        claimed = await queue.claim(["default"], "w", limit=10, lease_seconds=86400, now=now)
        assert [t.id for t in claimed] == ["high", "early", "low-first", "low-second", "negative"]
        assert all(t.status is TaskStatus.RUNNING and t.attempts == 1 for t in claimed)
        assert all(t.worker_id == "w" for t in claimed)
        later = await queue.claim(
            ["default"], "w", limit=10, lease_seconds=30, now=now + timedelta(hours=2)
        )
        assert [t.id for t in later] == ["later"]

    async def test_claim_only_from_named_queues(self, backend: FileBackend) -> None:
        queue = backend.task_queue()
        await queue.enqueue([task("a", queue="mail"), task("b", queue="video")])
        claimed = await queue.claim(["mail"], "w", limit=5, lease_seconds=30, now=utcnow())
        assert [t.id for t in claimed] == ["a"]

    async def test_concurrent_claims_on_two_connections_never_share_a_task(
        self, backend: FileBackend, make_backend: MakeBackend
    ) -> None:
        other = await make_backend()
        first, second = backend.task_queue(), other.task_queue()
        await first.enqueue([task(f"t{i}") for i in range(40)])
        now = utcnow()
        results = await asyncio.gather(
            *(
                queue.claim(["default"], f"w{n}", limit=3, lease_seconds=30, now=now)
                for n, queue in enumerate([first, second] * 8)
            )
        )
        ids = [t.id for batch in results for t in batch]
        assert len(ids) == len(set(ids)) == 40

    async def test_expired_lease_is_reclaimed_and_old_holder_loses(
        self, backend: FileBackend
    ) -> None:
        queue = backend.task_queue()
        await queue.enqueue([task("a")])
        now = utcnow()
        (held,) = await queue.claim(["default"], "dead", limit=1, lease_seconds=5, now=now)
        # Counted from when the claim wrote it: ``now`` plus the time the claim took.
        assert held.lease_expires_at is not None
        assert held.lease_expires_at >= now + timedelta(seconds=5)
        assert await queue.claim(["default"], "w2", limit=1, lease_seconds=5, now=now) == []
        assert await queue.next_due_at(["default"]) == held.lease_expires_at
        later = held.lease_expires_at + timedelta(seconds=1)
        (again,) = await queue.claim(["default"], "w2", limit=1, lease_seconds=5, now=later)
        assert (again.id, again.attempts, again.worker_id) == ("a", 2, "w2")
        assert await queue.renew(["a"], "dead", lease_seconds=5, now=later) == set()
        assert await queue.ack("a", "dead", TaskStatus.COMPLETE, now=later) is False
        assert await queue.ack("a", "w2", TaskStatus.COMPLETE, now=later) is True
        stored = await queue.get("a")
        assert stored is not None and stored.status is TaskStatus.COMPLETE

    async def test_renew_keeps_the_lease(self, backend: FileBackend) -> None:
        queue = backend.task_queue()
        await queue.enqueue([task("a"), task("b")])
        now = utcnow()
        await queue.claim(["default"], "w", limit=2, lease_seconds=5, now=now)
        assert await queue.renew(["a", "nope"], "w", lease_seconds=60, now=now) == {"a"}
        later = now + timedelta(seconds=10)
        reclaimed = await queue.claim(["default"], "w2", limit=5, lease_seconds=5, now=later)
        assert [t.id for t in reclaimed] == ["b"]

    async def test_ack_many_retry_and_release(self, backend: FileBackend) -> None:
        queue = backend.task_queue()
        await queue.enqueue([task("a"), task("b"), task("c"), task("d")])
        now = utcnow()
        await queue.claim(["default"], "w", limit=4, lease_seconds=30, now=now)
        acks = [Ack("a", "w", TaskStatus.COMPLETE), Ack("b", "other", TaskStatus.FAILED)]
        assert await queue.ack_many(acks, now=now) == [True, False]
        due = now + timedelta(seconds=30)
        assert await queue.retry("b", "w", due_at=due, now=now) is True
        assert await queue.retry("b", "w", due_at=due, now=now) is False
        retried = await queue.get("b")
        assert retried is not None
        assert (retried.status, retried.attempts, retried.due_at) == (TaskStatus.RETRYING, 1, due)
        assert await queue.release(["c", "d", "a"], "w", now=now) == 2
        released = await queue.get("c")
        assert released is not None
        assert (released.status, released.attempts) == (TaskStatus.PENDING, 0)
        assert released.lease_expires_at is None
        claimed = await queue.claim(["default"], "w", limit=5, lease_seconds=3600, now=now)
        assert sorted(t.id for t in claimed) == ["c", "d"]
        (back,) = await queue.claim(["default"], "w", limit=5, lease_seconds=30, now=due)
        assert (back.id, back.attempts) == ("b", 2)

    async def test_release_after_a_retry_keeps_retrying(self, backend: FileBackend) -> None:
        queue = backend.task_queue()
        await queue.enqueue([task("a")])
        now = utcnow()
        await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
        await queue.retry("a", "w", due_at=now, now=now)
        await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
        assert await queue.release(["a"], "w", now=now) == 1
        stored = await queue.get("a")
        assert stored is not None
        assert (stored.status, stored.attempts) == (TaskStatus.RETRYING, 1)

    async def test_dependencies_hold_until_transition(self, backend: FileBackend) -> None:
        queue = backend.task_queue()
        await queue.enqueue(
            [
                task("dep"),
                task("child", status=TaskStatus.SCHEDULED, depends_on=("dep",)),
                task("free", status=TaskStatus.SCHEDULED),
            ]
        )
        now = utcnow()
        claimed = await queue.claim(["default"], "w", limit=5, lease_seconds=30, now=now)
        assert sorted(t.id for t in claimed) == ["dep", "free"]
        assert [t.id for t in await queue.dependents("dep")] == ["child"]
        assert await queue.dependents_many(["dep", "free"]) == {"dep": [await queue.get("child")]}
        moved = await queue.transition(
            "child",
            from_statuses=[TaskStatus.SCHEDULED],
            to_status=TaskStatus.PENDING,
            now=now,
        )
        assert moved is not None and moved.status is TaskStatus.PENDING
        again = await queue.transition(
            "child",
            from_statuses=[TaskStatus.SCHEDULED],
            to_status=TaskStatus.CANCELLED,
            now=now,
        )
        assert again is None
        (child,) = await queue.claim(["default"], "w", limit=5, lease_seconds=30, now=now)
        assert child.id == "child"

    async def test_transition_of_a_running_task_takes_it_from_its_holder(
        self, backend: FileBackend
    ) -> None:
        queue = backend.task_queue()
        await queue.enqueue([task("a")])
        now = utcnow()
        await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
        cancelled = await queue.transition(
            "a",
            from_statuses=[TaskStatus.RUNNING, TaskStatus.PENDING],
            to_status=TaskStatus.CANCELLED,
            now=now,
        )
        assert cancelled is not None and cancelled.lease_expires_at is None
        assert await queue.ack("a", "w", TaskStatus.COMPLETE, now=now) is False
        assert (await queue.stats()) == {"default": {"cancelled": 1}}

    async def test_list_and_stats(self, backend: FileBackend) -> None:
        queue = backend.task_queue()
        await queue.enqueue([task(f"t{i}") for i in range(5)] + [task("m", queue="mail")])
        now = utcnow()
        await queue.claim(["default"], "w", limit=2, lease_seconds=30, now=now)
        await queue.ack("t0", "w", TaskStatus.FAILED, now=now)
        assert await queue.stats() == {
            "default": {"pending": 3, "running": 1, "failed": 1},
            "mail": {"pending": 1},
        }
        newest = await queue.list(limit=3)
        assert [t.id for t in newest] == ["m", "t4", "t3"]
        pending = await queue.list(queue="default", status=TaskStatus.PENDING)
        assert [t.id for t in pending] == ["t4", "t3", "t2"]
        assert [t.id for t in await queue.list(status=TaskStatus.FAILED)] == ["t0"]
        assert await queue.list(queue="nothing") == []

    async def test_next_due_at(self, backend: FileBackend) -> None:
        queue = backend.task_queue()
        assert await queue.next_due_at(["default"]) is None
        due = utcnow() + timedelta(minutes=5)
        await queue.enqueue([task("a", due_at=due), task("b", due_at=due + timedelta(hours=1))])
        assert await queue.next_due_at(["default"]) == due
        assert await queue.next_due_at(["other"]) is None

    async def test_delete_finished(self, backend: FileBackend) -> None:
        queue = backend.task_queue()
        await queue.enqueue([task("a"), task("b"), task("c", depends_on=("a",))])
        now = utcnow()
        await queue.claim(["default"], "w", limit=3, lease_seconds=30, now=now)
        await queue.ack_many(
            [Ack("a", "w", TaskStatus.COMPLETE), Ack("b", "w", TaskStatus.COMPLETE)], now=now
        )
        assert await queue.delete_finished(now) == 0
        assert await queue.delete_finished(now + timedelta(seconds=1)) == 2
        assert await queue.get("a") is None
        assert await queue.get("c") is not None
        assert await queue.stats() == {"default": {"running": 1}}

    async def test_wait_wakes_on_enqueue_from_another_connection(
        self, backend: FileBackend, make_backend: MakeBackend
    ) -> None:
        other = await make_backend()
        queue = backend.task_queue()
        await queue.connect()
        waiter = asyncio.ensure_future(queue.wait(["default"], 60))
        await asyncio.sleep(0)
        assert not waiter.done()
        await other.task_queue().enqueue([task("a")])
        await asyncio.wait_for(waiter, 30)

    async def test_wait_times_out_when_idle(self, backend: FileBackend) -> None:
        queue = backend.task_queue()
        await queue.enqueue([task("later", due_at=utcnow() + timedelta(hours=1))])
        loop = asyncio.get_running_loop()
        start = loop.time()
        await queue.wait(["default"], 0.05)
        assert loop.time() - start >= 0.05

    async def test_stats_and_claim_do_not_depend_on_reading_every_record(
        self, backend: FileBackend
    ) -> None:
        # A damaged record breaks only what reads it: the listing-based paths still work.
        queue = backend.task_queue()
        await queue.enqueue([task("good"), task("bad", priority=-1)])
        store = backend.store("tasks")
        await store.write_many([("t/bad", b"\xc1not msgpack")])
        assert await queue.stats() == {"default": {"pending": 2}}
        assert await queue.next_due_at(["default"]) is not None
        (claimed,) = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
        assert claimed.id == "good"

    async def test_a_corrupt_record_is_handed_out_as_unreadable_and_kept(
        self, backend: FileBackend
    ) -> None:
        queue = backend.task_queue()
        good = task("good", priority=1, queue="mail")
        await queue.enqueue([good, task("bad", queue="mail")])
        store = backend.store("tasks")
        await store.write_many([("t/bad", b"\xc1not msgpack")])
        await assert_unreadable_is_listed_and_handed_out(queue, good, "bad", queue_name="mail")
        # A stand-in record took its place (later reads work); its bytes are kept aside.
        stand_in = await queue.get("bad")
        assert stand_in is not None and stand_in.status is TaskStatus.FAILED
        assert await store.read("unreadable/bad") == b"\xc1not msgpack"

    async def test_stale_entry_left_by_a_crash_is_ignored(self, backend: FileBackend) -> None:
        # A crash between writing a new entry and removing the old one leaves two entries
        # for one task: the task is still claimed once and counted once.
        queue = backend.task_queue()
        await queue.enqueue([task("a")])
        store = backend.store("tasks")
        (name,) = await store.list_dir("ready/default")
        now = utcnow()
        (claimed,) = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
        assert claimed.id == "a"
        await store.write_many([(f"ready/default/{name}", b"")])  # the old entry is back
        assert await queue.stats() == {"default": {"running": 1}}
        assert await queue.claim(["default"], "w2", limit=5, lease_seconds=30, now=now) == []
        assert await queue.list(status=TaskStatus.PENDING) == []


class FileResultChecks:
    """Results: replace, expiry, waiting."""

    async def test_put_get_replace(self, backend: FileBackend) -> None:
        results = backend.result_storage()
        assert await results.get("a") is None
        await results.put(TaskResult(task_id="a", status=TaskStatus.FAILED, attempts=1))
        await results.put_many(
            [
                TaskResult(task_id="a", status=TaskStatus.COMPLETE, result=b"\x01", attempts=2),
                TaskResult(task_id="b", status=TaskStatus.CANCELLED),
            ]
        )
        stored = await results.get("a")
        assert stored is not None
        assert (stored.status, stored.result, stored.attempts) == (TaskStatus.COMPLETE, b"\x01", 2)

    async def test_expired_results_vanish_and_are_deleted(self, backend: FileBackend) -> None:
        results = backend.result_storage()
        now = utcnow()
        await results.put_many(
            [
                TaskResult(task_id="old", status=TaskStatus.COMPLETE, expires_at=now),
                TaskResult(
                    task_id="new",
                    status=TaskStatus.COMPLETE,
                    expires_at=now + timedelta(hours=1),
                ),
                TaskResult(task_id="kept", status=TaskStatus.COMPLETE),
            ]
        )
        assert await results.get("old") is None
        assert await results.get("new") is not None
        assert await results.delete_expired(now + timedelta(seconds=1)) == 1
        assert await results.delete_expired(now + timedelta(seconds=1)) == 0
        assert await results.get("kept") is not None

    async def test_wait_returns_when_the_result_arrives(
        self, backend: FileBackend, make_backend: MakeBackend
    ) -> None:
        other = await make_backend()
        results = backend.result_storage()
        await results.connect()
        waiter = asyncio.ensure_future(results.wait("a", 60))
        await asyncio.sleep(0)
        await other.result_storage().put(TaskResult(task_id="a", status=TaskStatus.COMPLETE))
        stored = await asyncio.wait_for(waiter, 30)
        assert stored is not None and stored.task_id == "a"
        assert await results.wait("missing", 0.01) is None


class FileEventChecks:
    """Events: order, concurrent writers, cleanup."""

    async def test_append_and_get_oldest_first(self, backend: FileBackend) -> None:
        events = backend.event_storage()
        start = utcnow()
        kinds = [EventType.ENQUEUED, EventType.EXECUTING, EventType.COMPLETE]
        in_time_order = [
            TaskEvent(task_id="a", event_type=kind, timestamp=start + timedelta(seconds=i))
            for i, kind in enumerate(kinds)
        ]
        await events.append(
            [*reversed(in_time_order), TaskEvent(task_id="b", event_type=EventType.ENQUEUED)]
        )
        assert [e.event_type for e in await events.get("a")] == kinds
        assert await events.get("nothing") == []

    async def test_concurrent_writers_never_lose_events(
        self, backend: FileBackend, make_backend: MakeBackend
    ) -> None:
        other = await make_backend()
        writers = [backend.event_storage(), other.event_storage()]
        stamp = utcnow()
        await asyncio.gather(
            *(
                writers[n % 2].append(
                    [TaskEvent(task_id="a", event_type=EventType.RETRY, attempt=n, timestamp=stamp)]
                )
                for n in range(30)
            )
        )
        got = await backend.event_storage().get("a")
        assert sorted(e.attempt for e in got) == list(range(30))

    async def test_delete_before(self, backend: FileBackend) -> None:
        events = backend.event_storage()
        now = utcnow()
        await events.append(
            [
                TaskEvent(task_id="a", event_type=EventType.ENQUEUED, timestamp=now),
                TaskEvent(
                    task_id="a",
                    event_type=EventType.EXECUTING,
                    timestamp=now + timedelta(seconds=2),
                ),
                TaskEvent(task_id="b", event_type=EventType.ENQUEUED, timestamp=now),
            ]
        )
        assert await events.delete_before(now + timedelta(seconds=1)) == 2
        assert [e.event_type for e in await events.get("a")] == [EventType.EXECUTING]
        assert await events.get("b") == []


class FileScheduleChecks:
    """Schedules: CRUD, due, exactly one winner per tick."""

    @staticmethod
    def schedule(schedule_id: str, **fields: Any) -> Schedule:
        return Schedule(id=schedule_id, task=task("template"), interval=60.0, **fields)

    async def test_crud_and_due(self, backend: FileBackend) -> None:
        schedules = backend.schedule_storage()
        now = utcnow()
        await schedules.upsert(self.schedule("b", next_run_at=now - timedelta(seconds=1)))
        await schedules.upsert(self.schedule("a", next_run_at=now + timedelta(hours=1)))
        await schedules.upsert(self.schedule("c", next_run_at=now - timedelta(seconds=5)))
        assert [s.id for s in await schedules.list()] == ["a", "b", "c"]
        assert [s.id for s in await schedules.due(now)] == ["c", "b"]
        paused = await schedules.update("c", {"paused": True})
        assert paused is not None and paused.paused
        assert [s.id for s in await schedules.due(now)] == ["b"]
        assert await schedules.update("zzz", {"paused": True}) is None
        assert await schedules.delete("a") is True
        assert await schedules.delete("a") is False
        assert await schedules.get("a") is None
        fetched = await schedules.get("b")
        assert fetched is not None and fetched.task.id == "template"

    async def test_one_winner_per_tick(
        self, backend: FileBackend, make_backend: MakeBackend
    ) -> None:
        other = await make_backend()
        now = utcnow()
        await backend.schedule_storage().upsert(self.schedule("s", next_run_at=now))
        stores = [backend.schedule_storage(), other.schedule_storage()]
        wins = await asyncio.gather(
            *(
                stores[n % 2].advance(
                    "s",
                    expected_next_run_at=now,
                    next_run_at=now + timedelta(minutes=1),
                    last_run_at=now,
                )
                for n in range(10)
            )
        )
        assert wins.count(True) == 1
        stored = await backend.schedule_storage().get("s")
        assert stored is not None
        assert (stored.runs, stored.next_run_at) == (1, now + timedelta(minutes=1))


def tamper_file_task(
    store_url: str,
    task_id: str,
    alter: Callable[[bytes], bytes],
    *,
    replace_record: bytes | None = None,
) -> None:
    """Rewrite a stored task's payload bytes in place, or its whole record with
    ``replace_record`` (file://, memory:// and object stores).

    For tests that check what a worker does with a payload altered in storage.
    """
    import fsspec
    import msgspec

    from omniq.config import Settings
    from omniq.storage.file._layout import decode_record, encode_record, token
    from omniq.storage.file.connection import parse_location

    location = parse_location(store_url)
    # Object stores: the storage_options the test's clients read from the environment.
    options = {} if location.protocol in ("file", "memory") else Settings.from_env().storage_options
    fs = fsspec.filesystem(location.protocol, skip_instance_cache=True, **options)
    path = f"{location.root}/tasks/t/{token(task_id)}"
    if replace_record is not None:
        fs.pipe_file(path, replace_record)
        return
    record = decode_record(fs.cat_file(path))
    task = msgspec.structs.replace(record.task, payload=alter(record.task.payload))
    fs.pipe_file(path, encode_record(msgspec.structs.replace(record, task=task)))
