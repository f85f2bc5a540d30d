"""The storage contract: what every backend's components promise (``omniq.storage.base``).

A backend joins by subclassing these classes in its own test module and providing two
async fixtures:

- ``backend``: an opened :class:`omniq.storage._bundle.Bundle` on a fresh, empty store;
- ``make_backend``: a callable returning another opened backend on the SAME store (a
  second connection where the backend has connections), for cross-connection tests.

The classes are not collected here (no ``Test`` prefix); subclasses named ``Test…`` are.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from omniq.models import (
    ErrorInfo,
    EventType,
    Progress,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    utcnow,
)
from omniq.storage._bundle import Bundle as Backend
from omniq.storage.base import (
    Ack,
    BaseEventStorage,
    BaseResultStorage,
    BaseScheduleStorage,
    BaseTaskQueue,
    Finish,
    UnreadableTask,
)
from tests.storage.fleet_contract import FleetQueueContract, ResultDeleteContract

MakeBackend = Callable[[], Awaitable[Backend]]


def assert_sync_twin_mirrors(sync_cls: type, async_cls: type) -> None:
    """The blocking twin has every public coroutine of ``async_cls``, blocking, with the
    same parameters."""
    coroutines = {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(async_cls, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    assert {"connect", "close", "get"} <= set(coroutines)
    for name, signature in coroutines.items():
        blocking = getattr(sync_cls, name)
        assert not inspect.iscoroutinefunction(blocking), name
        assert inspect.signature(blocking).parameters.keys() == signature.parameters.keys(), name


S = timedelta(seconds=1)


def make_task(task_id: str | None = None, **fields: object) -> Task:
    """A task with a fresh id (``fields`` override any attribute)."""
    return Task(id=task_id or uuid.uuid4().hex, func="tests.tasks:noop", **fields)  # type: ignore[arg-type]


async def assert_unreadable_is_listed_and_handed_out(
    queue: BaseTaskQueue, good: Task, bad_id: str, *, queue_name: str = "default"
) -> None:
    """``bad_id``'s record was damaged after ``good`` (of a higher priority) and it were
    enqueued: listings still work and show it as an :class:`UnreadableTask`; a claim
    leases both and returns the damaged one as one, whose FAILED acknowledgement goes
    through."""
    listed = {task.id: task for task in await queue.list()}
    assert set(listed) == {good.id, bad_id}
    assert not isinstance(listed[good.id], UnreadableTask)
    unreadable = listed[bad_id]
    assert isinstance(unreadable, UnreadableTask)
    assert bad_id in unreadable.reason and "corrupt" in unreadable.reason
    assert (unreadable.queue, unreadable.status) == (queue_name, TaskStatus.PENDING)

    claimed = await queue.claim([queue_name], "w", limit=5, lease_seconds=30, now=utcnow())
    assert [t.id for t in claimed] == [good.id, bad_id]
    assert not isinstance(claimed[0], UnreadableTask)
    unreadable = claimed[1]
    assert isinstance(unreadable, UnreadableTask)
    assert bad_id in unreadable.reason and "corrupt" in unreadable.reason
    assert (unreadable.queue, unreadable.attempts) == (queue_name, 1)
    assert (unreadable.status, unreadable.worker_id) == (TaskStatus.RUNNING, "w")
    assert await queue.stats() == {queue_name: {"running": 2}}
    acks = [Ack(bad_id, "w", TaskStatus.FAILED)]
    assert await queue.ack_many(acks, now=utcnow()) == [True]
    assert await queue.stats() == {queue_name: {"running": 1, "failed": 1}}
    # Handed out once: the next claim finds nothing; a listing shows it failed.
    assert await queue.claim([queue_name], "w", limit=5, lease_seconds=30, now=utcnow()) == []
    failed = await queue.list(queue=queue_name, status=TaskStatus.FAILED)
    assert [(t.id, t.status) for t in failed] == [(bad_id, TaskStatus.FAILED)]


def close_to(a: datetime | None, b: datetime, tolerance: float = 0.002) -> bool:
    """True when two instants are within ``tolerance`` seconds."""
    return a is not None and abs((a - b).total_seconds()) <= tolerance


def lease_counted_from(
    lease: datetime | None, start: datetime, seconds: float, *, real_start: datetime
) -> bool:
    """True when ``lease`` ends ``seconds`` after ``start``, moved on by no more than the
    real time elapsed since ``real_start``: a store may count a lease from when its write
    decides, after the call's own requests (the file backend, on a slow object store)."""
    if lease is None:
        return False
    spent = (utcnow() - real_start).total_seconds()
    earliest = start + timedelta(seconds=seconds - 0.002)
    return earliest <= lease <= start + timedelta(seconds=seconds + spent + 0.002)


async def produce_until(done: asyncio.Future[Any], action: Callable[[], Awaitable[object]]) -> None:
    """Repeat ``action`` every 50 ms until ``done`` finishes (whenever the waiter listens)."""
    while not done.done():
        await action()
        await asyncio.wait({done}, timeout=0.05)


class QueueContract(FleetQueueContract):
    """``BaseTaskQueue``: claims, leases, ordering, status changes, queries."""

    @pytest.fixture
    async def queue(self, backend: Backend) -> AsyncIterator[BaseTaskQueue]:
        q = backend.task_queue()
        await q.connect()
        yield q
        await q.close()

    @pytest.fixture
    async def other_queue(self, make_backend: MakeBackend) -> AsyncIterator[BaseTaskQueue]:
        """The same queue through a second connection."""
        q = (await make_backend()).task_queue()
        await q.connect()
        yield q
        await q.close()

    async def test_enqueue_returns_ids_and_stores_tasks_as_given(
        self, queue: BaseTaskQueue
    ) -> None:
        tasks = [
            make_task(queue="q1", priority=3, payload=b"\x00abc", max_retries=2) for _ in range(3)
        ]
        assert await queue.enqueue(tasks) == [t.id for t in tasks]
        stored = await queue.get(tasks[0].id)
        assert stored is not None
        assert (stored.queue, stored.priority, stored.payload, stored.max_retries) == (
            "q1",
            3,
            b"\x00abc",
            2,
        )
        assert stored.status is TaskStatus.PENDING
        assert stored.attempts == 0
        assert stored.created_at == tasks[0].created_at
        assert stored.due_at is None

    async def test_enqueue_is_idempotent(self, queue: BaseTaskQueue) -> None:
        task = make_task(priority=1)
        await queue.enqueue([task])
        changed = make_task(task.id, priority=9, queue="elsewhere")
        assert await queue.enqueue([changed, changed]) == [task.id, task.id]
        stored = await queue.get(task.id)
        assert stored is not None
        assert (stored.priority, stored.queue) == (1, "default")
        assert await queue.stats() == {"default": {"pending": 1}}

    async def test_enqueue_logged_writes_the_events_of_new_tasks_only(
        self, queue: BaseTaskQueue, backend: Backend
    ) -> None:
        log = backend.event_storage()
        await log.connect()
        old, new = make_task(), make_task()
        await queue.enqueue([old])

        def enqueued(task: Task) -> list[TaskEvent]:
            return [make_event(task.id, EventType.ENQUEUED, timestamp=utcnow(), queue="default")]

        ids = await queue.enqueue_logged(
            [old, new, new], [enqueued(old), enqueued(new), enqueued(new)], log
        )
        assert ids == [old.id, new.id, new.id]
        assert await queue.get(new.id) is not None
        assert [event.event_type for event in await log.get(new.id)] == [EventType.ENQUEUED]
        assert await log.get(old.id) == []
        await log.close()

    async def test_enqueue_logged_names_shared_unnamed_events_after_each_task(
        self, queue: BaseTaskQueue, backend: Backend
    ) -> None:
        # The client hands every task of a bulk enqueue the same list of events with an
        # empty task id: each task's log must hold them under its own id, and a task
        # with a list of its own (another queue, other events) keeps that one.
        log = backend.event_storage()
        await log.connect()
        now = utcnow()
        shared = [make_event("", EventType.ENQUEUED, timestamp=now, queue="default")]
        plain = [make_task() for _ in range(4)]
        other = make_task(queue="other")
        own = [
            make_event("", EventType.ENQUEUED, timestamp=now, queue="other"),
            make_event("", EventType.SCHEDULED, timestamp=now, queue="other", message="why"),
        ]
        tasks = [*plain[:2], other, *plain[2:]]
        await queue.enqueue_logged(tasks, [shared, shared, own, shared, shared], log)
        for task in plain:
            events = await log.get(task.id)
            assert [(e.task_id, e.event_type, e.queue) for e in events] == [
                (task.id, EventType.ENQUEUED, "default")
            ]
        events = await log.get(other.id)
        assert [(e.task_id, e.event_type, e.message) for e in events] == [
            (other.id, EventType.ENQUEUED, ""),
            (other.id, EventType.SCHEDULED, "why"),
        ]
        assert shared[0].task_id == "" and own[0].task_id == ""
        await log.close()

    async def test_a_mixed_batch_stores_each_task_with_its_own_fields(
        self, queue: BaseTaskQueue
    ) -> None:
        # Runs of tasks with the same queue, priority, status... sit beside tasks that
        # differ in one field each: a backend that shares fields across a run (Redis
        # sends them once) must not carry one task's fields over to the next.
        now = utcnow()
        running = make_task(
            queue="q1", status=TaskStatus.RUNNING, worker_id="w0", lease_expires_at=now + 60 * S
        )
        tasks = [
            make_task(queue="q1", priority=1),
            make_task(queue="q1", priority=1, max_retries=4),
            make_task(queue="q2", priority=5, due_at=now + 3600 * S),
            running,
            make_task(queue="q1", priority=1),
            make_task(queue="q1", status=TaskStatus.SCHEDULED, depends_on=(running.id,)),
            make_task(queue="q1", priority=2),
        ]
        await queue.enqueue(tasks)
        stored = await queue.get_many([task.id for task in tasks])

        def fields(task: Task | None) -> tuple[object, ...]:
            assert task is not None
            return (
                task.id,
                task.queue,
                task.priority,
                task.status,
                task.worker_id,
                task.max_retries,
                task.depends_on,
            )

        assert [fields(task) for task in stored] == [fields(task) for task in tasks]
        assert [task.due_at for task in stored] == [task.due_at for task in tasks]
        assert await queue.stats() == {
            "q1": {"pending": 4, "running": 1, "scheduled": 1},
            "q2": {"pending": 1},
        }
        claimed = await queue.claim(["q1", "q2"], "w", limit=10, lease_seconds=30, now=utcnow())
        assert [task.id for task in claimed] == [tasks[6].id, tasks[0].id, tasks[1].id, tasks[4].id]
        assert [task.id for task in await queue.dependents(running.id)] == [tasks[5].id]

    async def test_enqueue_nothing(self, queue: BaseTaskQueue) -> None:
        assert await queue.enqueue([]) == []

    async def test_claim_order_priority_then_due_then_enqueue_order(
        self, queue: BaseTaskQueue
    ) -> None:
        now = utcnow()
        late = make_task("late", due_at=now - 10 * S)
        early = make_task("early", due_at=now - 20 * S)
        urgent = make_task("urgent", priority=5, due_at=now - 1 * S)
        late_twin = make_task("late-twin", due_at=now - 10 * S)
        created_only = make_task("created-only", created_at=now - 15 * S)
        await queue.enqueue([late, early])
        await queue.enqueue([urgent, late_twin, created_only])
        one = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
        rest = await queue.claim(["default"], "w", limit=10, lease_seconds=30, now=now)
        assert [t.id for t in one + rest] == [
            "urgent",
            "early",
            "created-only",
            "late",
            "late-twin",
        ]

    async def test_claim_sets_lease_worker_and_attempts(self, queue: BaseTaskQueue) -> None:
        task = make_task()
        await queue.enqueue([task])
        now = utcnow()
        [claimed] = await queue.claim(["default"], "w1", limit=5, lease_seconds=30, now=now)
        assert claimed.id == task.id
        assert claimed.status is TaskStatus.RUNNING
        assert claimed.worker_id == "w1"
        assert claimed.attempts == 1
        assert lease_counted_from(claimed.lease_expires_at, now, 30, real_start=now)
        stored = await queue.get(task.id)
        assert stored is not None
        assert (stored.status, stored.worker_id, stored.attempts) == (TaskStatus.RUNNING, "w1", 1)
        assert stored.lease_expires_at == claimed.lease_expires_at

    async def test_claim_only_from_named_queues(self, queue: BaseTaskQueue) -> None:
        a, b, c = make_task(queue="a"), make_task(queue="b", priority=2), make_task(queue="c")
        await queue.enqueue([a, b, c])
        claimed = await queue.claim(["a", "b"], "w", limit=10, lease_seconds=30, now=utcnow())
        assert [t.id for t in claimed] == [b.id, a.id]
        assert await queue.claim(["nope"], "w", limit=10, lease_seconds=30, now=utcnow()) == []

    @staticmethod
    async def enqueue_high_and_low(queue: BaseTaskQueue, now: datetime) -> None:
        """Older tasks in "low" (one urgent), newer ones in "high" (one not yet due), and
        an urgent one in a queue nobody asks for."""
        await queue.enqueue(
            [
                make_task("low-old", queue="low", due_at=now - 30 * S),
                make_task("low-urgent", queue="low", priority=5, due_at=now - 5 * S),
                make_task("low-older", queue="low", due_at=now - 40 * S),
                make_task("high-new", queue="high", due_at=now - 10 * S),
                make_task("high-later", queue="high", priority=9, due_at=now + 60 * S),
                make_task("high-newest", queue="high", due_at=now - 1 * S),
                make_task("high-top", queue="high", priority=1, due_at=now - 2 * S),
                make_task("elsewhere", queue="other", priority=9, due_at=now - 50 * S),
            ]
        )

    async def test_strict_claim_takes_the_queues_in_list_order(self, queue: BaseTaskQueue) -> None:
        now = utcnow()
        await self.enqueue_high_and_low(queue, now)
        queues = ["high", "low", "high"]  # a name listed again keeps its first place

        def claim(limit: int) -> Awaitable[list[Task]]:
            return queue.claim(queues, "w", limit=limit, lease_seconds=300, now=now, strict=True)

        # Within a queue: priority, then due time; "high" first, "low" fills the batch.
        assert [t.id for t in await claim(2)] == ["high-top", "high-new"]
        assert [t.id for t in await claim(3)] == ["high-newest", "low-urgent", "low-older"]
        assert [t.id for t in await claim(10)] == ["low-old"]
        assert await claim(10) == []
        # Once due, the delayed task is claimed: "low" has nothing left (its leases run).
        later = await queue.claim(
            ["low", "high"], "w", limit=10, lease_seconds=30, now=now + 61 * S, strict=True
        )
        assert [t.id for t in later] == ["high-later"]

    async def test_strict_claim_takes_a_lost_lease_in_its_queue_turn(
        self, queue: BaseTaskQueue
    ) -> None:
        now = utcnow()
        await queue.enqueue([make_task("low-lost", queue="low", due_at=now - 20 * S)])
        await queue.claim(["low"], "dead", limit=1, lease_seconds=10, now=now)
        await queue.enqueue([make_task("high-new", queue="high", due_at=now - 1 * S)])
        later = now + 11 * S  # the lease of low-lost has run out

        def claim(queues: list[str]) -> Awaitable[list[Task]]:
            return queue.claim(queues, "w", limit=1, lease_seconds=30, now=later, strict=True)

        assert [t.id for t in await claim(["high", "low"])] == ["high-new"]
        [lost] = await claim(["high", "low"])
        assert (lost.id, lost.attempts, lost.worker_id) == ("low-lost", 2, "w")

    async def test_merged_claim_ignores_the_list_order(self, queue: BaseTaskQueue) -> None:
        now = utcnow()
        await self.enqueue_high_and_low(queue, now)
        claimed = await queue.claim(["high", "low"], "w", limit=10, lease_seconds=30, now=now)
        assert [t.id for t in claimed] == [
            "low-urgent",
            "high-top",
            "low-older",
            "low-old",
            "high-new",
            "high-newest",
        ]

    async def test_strict_wait_and_claim_takes_the_queues_in_list_order(
        self, queue: BaseTaskQueue
    ) -> None:
        await self.enqueue_high_and_low(queue, utcnow())
        claimed = await asyncio.wait_for(
            queue.wait_and_claim(
                ["high", "low"], "w", limit=4, lease_seconds=30, timeout=0.2, strict=True
            ),
            5,
        )
        assert [t.id for t in claimed] == ["high-top", "high-new", "high-newest", "low-urgent"]
        assert all(t.status is TaskStatus.RUNNING for t in claimed)

    async def test_due_at_is_respected(self, queue: BaseTaskQueue) -> None:
        now = utcnow()
        task = make_task(due_at=now + 60 * S)
        await queue.enqueue([task])
        assert await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now) == []
        later = now + 61 * S
        [claimed] = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=later)
        assert claimed.id == task.id

    async def test_scheduled_without_deps_is_claimable_when_due(self, queue: BaseTaskQueue) -> None:
        now = utcnow()
        task = make_task(status=TaskStatus.SCHEDULED, due_at=now + 5 * S)
        await queue.enqueue([task])
        assert await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now) == []
        claimed = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now + 6 * S)
        assert [t.id for t in claimed] == [task.id]

    async def test_scheduled_with_deps_is_held_until_transition(self, queue: BaseTaskQueue) -> None:
        dep = make_task(
            status=TaskStatus.RUNNING, worker_id="x", lease_expires_at=utcnow() + 60 * S
        )
        held = make_task(status=TaskStatus.SCHEDULED, depends_on=(dep.id,))
        await queue.enqueue([dep, held])
        assert await queue.claim(["default"], "w", limit=5, lease_seconds=30, now=utcnow()) == []
        assert dep.lease_expires_at is not None
        assert close_to(await queue.next_due_at(["default"]), dep.lease_expires_at)
        moved = await queue.transition(
            held.id,
            from_statuses={TaskStatus.SCHEDULED},
            to_status=TaskStatus.PENDING,
            now=utcnow(),
        )
        assert moved is not None
        assert moved.status is TaskStatus.PENDING
        claimed = await queue.claim(["default"], "w", limit=5, lease_seconds=30, now=utcnow())
        assert [t.id for t in claimed] == [held.id]

    async def test_expired_lease_is_reclaimed_and_counts_an_attempt(
        self, queue: BaseTaskQueue
    ) -> None:
        task = make_task(max_retries=3)
        await queue.enqueue([task])
        now = utcnow()
        await queue.claim(["default"], "w1", limit=1, lease_seconds=10, now=now)
        assert (
            await queue.claim(["default"], "w2", limit=1, lease_seconds=10, now=now + 5 * S) == []
        )
        due = await queue.next_due_at(["default"])
        assert lease_counted_from(due, now, 10, real_start=now)
        [again] = await queue.claim(["default"], "w2", limit=1, lease_seconds=10, now=now + 11 * S)
        assert (again.id, again.worker_id, again.attempts) == (task.id, "w2", 2)
        assert again.lost_runs == 1  # the run w1 started was lost with its lease
        # The first worker lost it: its renewals and acks no longer take effect.
        assert await queue.renew([task.id], "w1", lease_seconds=10, now=now + 12 * S) == set()
        assert await queue.ack(task.id, "w1", TaskStatus.COMPLETE, now=now + 12 * S) is False
        assert await queue.ack(task.id, "w2", TaskStatus.COMPLETE, now=now + 12 * S) is True
        stored = await queue.get(task.id)
        assert stored is not None
        assert stored.status is TaskStatus.COMPLETE
        assert stored.lease_expires_at is None
        assert (stored.attempts, stored.lost_runs) == (2, 1)

    async def test_a_claim_that_did_not_run_the_task_gives_its_attempt_back(
        self, queue: BaseTaskQueue
    ) -> None:
        # A worker that finds a claimed task past its ttl acknowledges it with ran=False.
        task = make_task()
        await queue.enqueue([task])
        now = utcnow()
        await queue.claim(["default"], "w", limit=1, lease_seconds=10, now=now)
        acks = [Ack(task.id, "w", TaskStatus.EXPIRED, ran=False)]
        assert await queue.ack_many(acks, now=now) == [True]
        stored = await queue.get(task.id)
        assert stored is not None
        assert (stored.status, stored.attempts) == (TaskStatus.EXPIRED, 0)

    async def test_concurrent_claims_never_share_a_task(
        self, queue: BaseTaskQueue, other_queue: BaseTaskQueue
    ) -> None:
        tasks = [make_task() for _ in range(200)]
        await queue.enqueue(tasks)
        now = utcnow()
        claims = [
            q.claim(["default"], f"w{i}", limit=8, lease_seconds=30, now=now)
            for i in range(20)
            for q in (queue, other_queue)
        ]
        results = await asyncio.gather(*claims)
        ids = [t.id for claimed in results for t in claimed]
        assert len(ids) == len(set(ids)) == 200

    async def test_concurrent_strict_claims_never_share_a_task(
        self, queue: BaseTaskQueue, other_queue: BaseTaskQueue
    ) -> None:
        tasks = [make_task(queue=("high", "low")[i % 2], priority=i % 3) for i in range(200)]
        await queue.enqueue(tasks)
        now = utcnow()
        claims = [
            q.claim(["high", "low"], f"w{i}", limit=8, lease_seconds=30, now=now, strict=True)
            for i in range(20)
            for q in (queue, other_queue)
        ]
        results = await asyncio.gather(*claims)
        ids = [t.id for claimed in results for t in claimed]
        assert len(ids) == len(set(ids)) == 200

    async def test_renew_returns_only_held_ids(self, queue: BaseTaskQueue) -> None:
        mine, theirs, waiting = make_task(), make_task(), make_task(priority=-1)
        await queue.enqueue([mine, theirs, waiting])
        now = utcnow()
        await queue.claim(["default"], "me", limit=1, lease_seconds=10, now=now)
        await queue.claim(["default"], "them", limit=1, lease_seconds=10, now=now)
        ids = [mine.id, theirs.id, waiting.id, "unknown"]
        held = await queue.renew(ids, "me", lease_seconds=100, now=now + 5 * S)
        assert held == {mine.id}
        stored = await queue.get(mine.id)
        assert stored is not None
        assert lease_counted_from(stored.lease_expires_at, now + 5 * S, 100, real_start=now)
        assert await queue.renew([], "me", lease_seconds=100, now=now) == set()

    async def test_ack_many_reports_per_ack(self, queue: BaseTaskQueue) -> None:
        a, b, c = make_task(priority=3), make_task(priority=2), make_task(priority=1)
        await queue.enqueue([a, b, c])
        now = utcnow()
        await queue.claim(["default"], "w", limit=2, lease_seconds=30, now=now)
        acks = [
            Ack(a.id, "w", TaskStatus.COMPLETE),
            Ack(b.id, "other", TaskStatus.COMPLETE),
            Ack(c.id, "w", TaskStatus.FAILED),
            Ack(b.id, "w", TaskStatus.FAILED),
            Ack("unknown", "w", TaskStatus.COMPLETE),
        ]
        assert await queue.ack_many(acks, now=now) == [True, False, False, True, False]
        got = await queue.get_many([a.id, b.id, c.id])
        assert [t.status if t else None for t in got] == [
            TaskStatus.COMPLETE,
            TaskStatus.FAILED,
            TaskStatus.PENDING,
        ]
        assert await queue.ack_many([], now=now) == []

    async def test_retry_keeps_attempts_and_sets_due(self, queue: BaseTaskQueue) -> None:
        task = make_task(max_retries=2)
        await queue.enqueue([task])
        now = utcnow()
        await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
        assert await queue.retry(task.id, "intruder", due_at=now, now=now) is False
        assert await queue.retry(task.id, "w", due_at=now + 30 * S, now=now) is True
        stored = await queue.get(task.id)
        assert stored is not None
        assert (stored.status, stored.attempts) == (TaskStatus.RETRYING, 1)
        assert close_to(stored.due_at, now + 30 * S)
        assert stored.lease_expires_at is None
        assert await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now) == []
        [again] = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now + 31 * S)
        assert again.attempts == 2
        assert await queue.retry(task.id, "w", due_at=now, now=now) is True
        assert await queue.retry(task.id, "w", due_at=now, now=now) is False  # no longer held

    async def test_release_gives_back_the_attempt(self, queue: BaseTaskQueue) -> None:
        fresh, retried = make_task(priority=1), make_task()
        await queue.enqueue([fresh, retried])
        now = utcnow()
        await queue.claim(["default"], "w", limit=2, lease_seconds=30, now=now)
        await queue.retry(retried.id, "w", due_at=now, now=now)
        await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
        assert await queue.release([fresh.id, retried.id], "intruder", now=now) == 0
        assert await queue.release([fresh.id, retried.id, "unknown"], "w", now=now) == 2
        a, b = await queue.get_many([fresh.id, retried.id])
        assert a is not None
        assert (a.status, a.attempts, a.lease_expires_at) == (
            TaskStatus.PENDING,
            0,
            None,
        )
        assert b is not None
        assert (b.status, b.attempts) == (TaskStatus.RETRYING, 1)
        claimed = await queue.claim(["default"], "w2", limit=5, lease_seconds=30, now=now)
        assert {t.id: t.attempts for t in claimed} == {fresh.id: 1, retried.id: 2}
        assert await queue.release([], "w2", now=now) == 0

    async def test_transition_is_a_compare_and_set(self, queue: BaseTaskQueue) -> None:
        task = make_task()
        await queue.enqueue([task])
        now = utcnow()
        waiting = {TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RETRYING}
        assert (
            await queue.transition(
                task.id, from_statuses={TaskStatus.RUNNING}, to_status=TaskStatus.FAILED, now=now
            )
            is None
        )
        moved = await queue.transition(
            task.id, from_statuses=waiting, to_status=TaskStatus.SCHEDULED, now=now,
            due_at=now + 60 * S,
        )  # fmt: skip
        assert moved is not None
        assert moved.status is TaskStatus.SCHEDULED
        assert close_to(moved.due_at, now + 60 * S)
        assert await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now) == []
        assert await queue.transition(
            "unknown", from_statuses=waiting, to_status=TaskStatus.CANCELLED, now=now
        ) is None  # fmt: skip

    async def test_transition_clears_the_lease(self, queue: BaseTaskQueue) -> None:
        task = make_task()
        await queue.enqueue([task])
        now = utcnow()
        await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
        cancelled = await queue.transition(
            task.id, from_statuses={TaskStatus.RUNNING}, to_status=TaskStatus.CANCELLED, now=now
        )
        assert cancelled is not None
        assert (cancelled.status, cancelled.lease_expires_at) == (TaskStatus.CANCELLED, None)
        assert await queue.ack(task.id, "w", TaskStatus.COMPLETE, now=now) is False
        assert (
            await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now + 99 * S) == []
        )

    async def test_get_and_get_many(self, queue: BaseTaskQueue) -> None:
        a, b = make_task(), make_task()
        await queue.enqueue([a, b])
        assert await queue.get("unknown") is None
        got = await queue.get_many([b.id, "unknown", a.id])
        assert [t.id if t else None for t in got] == [b.id, None, a.id]
        assert await queue.get_many([]) == []

    async def test_list_filters_and_newest_first(self, queue: BaseTaskQueue) -> None:
        tasks = [make_task(queue="a" if i % 2 else "b") for i in range(6)]
        for task in tasks:
            await queue.enqueue([task])
        await queue.claim(["a"], "w", limit=1, lease_seconds=30, now=utcnow())
        newest_first = [t.id for t in reversed(tasks)]
        assert [t.id for t in await queue.list()] == newest_first
        assert [t.id for t in await queue.list(limit=2)] == newest_first[:2]
        in_a = [t.id for t in reversed(tasks) if t.queue == "a"]
        assert [t.id for t in await queue.list(queue="a")] == in_a
        assert [t.id for t in await queue.list(status=TaskStatus.RUNNING)] == [tasks[1].id]
        pending_a = await queue.list(queue="a", status=TaskStatus.PENDING)
        assert [t.id for t in pending_a] == in_a[:2]
        assert await queue.list(queue="zzz") == []

    async def test_stats(self, queue: BaseTaskQueue) -> None:
        assert await queue.stats() == {}
        await queue.enqueue([make_task(queue="a") for _ in range(3)] + [make_task(queue="b")])
        await queue.claim(["a"], "w", limit=1, lease_seconds=30, now=utcnow())
        assert await queue.stats() == {"a": {"pending": 2, "running": 1}, "b": {"pending": 1}}

    async def test_dependents(self, queue: BaseTaskQueue) -> None:
        a, b = make_task(), make_task()
        c = make_task(status=TaskStatus.SCHEDULED, depends_on=(a.id, b.id))
        d = make_task(status=TaskStatus.SCHEDULED, depends_on=(a.id,))
        await queue.enqueue([a, b, c, d])
        assert {t.id for t in await queue.dependents(a.id)} == {c.id, d.id}
        [dep] = await queue.dependents(b.id)
        assert dep.id == c.id
        assert dep.depends_on == (a.id, b.id)
        assert dep.status is TaskStatus.SCHEDULED
        assert await queue.dependents(c.id) == []
        many = await queue.dependents_many([a.id, b.id, c.id])
        assert {k: {t.id for t in v} for k, v in many.items() if v} == {
            a.id: {c.id, d.id},
            b.id: {c.id},
        }

    async def test_finish_and_dependents(self, queue: BaseTaskQueue, backend: Backend) -> None:
        # What a worker does with each batch of finished tasks: results and events stored,
        # tasks acknowledged, and the dependents of exactly those acknowledged returned,
        # read after the acks (a backend may do all of it in one round trip or transaction).
        results, events = backend.result_storage(), backend.event_storage()
        await results.connect()
        await events.connect()
        try:
            mine, theirs = make_task(priority=2), make_task(priority=1)
            child = make_task(status=TaskStatus.SCHEDULED, depends_on=(mine.id, theirs.id))
            await queue.enqueue([mine, theirs, child])
            now = utcnow()
            await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
            await queue.claim(["default"], "them", limit=1, lease_seconds=30, now=now)
            done, not_mine = make_result(mine.id, worker_id="w"), make_result(theirs.id)
            logged = [
                TaskEvent(task_id=mine.id, event_type=EventType.EXECUTING, timestamp=now),
                TaskEvent(task_id=mine.id, event_type=EventType.COMPLETE, timestamp=now + S),
            ]
            ignored = [TaskEvent(task_id=theirs.id, event_type=EventType.COMPLETE)]
            logs = queue.finish_logs_events(events)
            acked, dependents = await queue.finish(
                [
                    Finish(Ack(mine.id, "w", TaskStatus.COMPLETE), done, logged),
                    Finish(Ack(theirs.id, "w", TaskStatus.COMPLETE), not_mine, ignored),
                ],
                results,
                events if logs else None,
                now=now,
            )
            assert acked == [True, False]  # theirs is held by another worker
            assert await results.get(mine.id) == done
            assert await results.get(theirs.id) is None  # a finish that lost stores nothing
            if logs:
                assert await events.get(mine.id) == logged
            assert await events.get(theirs.id) == []
            assert {k: [t.id for t in v] for k, v in dependents.items() if v} == {
                mine.id: [child.id]
            }
            [seen] = dependents[mine.id]
            assert seen.depends_on == (mine.id, theirs.id)
            stored = await queue.get(mine.id)
            assert stored is not None and stored.status is TaskStatus.COMPLETE
            nothing = await queue.finish([], results, now=now)
            assert nothing == ([], {})
        finally:
            await results.close()
            await events.close()

    async def test_a_cancel_beats_a_later_finish(
        self, queue: BaseTaskQueue, backend: Backend
    ) -> None:
        # cancel() moves a running task to CANCELLED and stores its result; its worker's
        # finish, arriving later, must change neither (SPEC §3: one outcome wins).
        results = backend.result_storage()
        await results.connect()
        try:
            task = make_task()
            await queue.enqueue([task])
            now = utcnow()
            await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
            running = {TaskStatus.RUNNING}
            cancelled = await queue.transition(
                task.id, from_statuses=running, to_status=TaskStatus.CANCELLED, now=now
            )
            assert cancelled is not None
            verdict = make_result(task.id, status=TaskStatus.CANCELLED, result=None)
            await results.put(verdict)
            late = make_result(task.id, worker_id="w")
            acked, _ = await queue.finish(
                [Finish(Ack(task.id, "w", TaskStatus.COMPLETE), late)], results, now=now
            )
            assert acked == [False]
            assert await results.get(task.id) == verdict
            stored = await queue.get(task.id)
            assert stored is not None and stored.status is TaskStatus.CANCELLED
        finally:
            await results.close()

    async def test_next_due_at(self, queue: BaseTaskQueue) -> None:
        assert await queue.next_due_at(["default"]) is None
        now = utcnow()
        await queue.enqueue([make_task(due_at=now + 60 * S), make_task(due_at=now + 30 * S)])
        await queue.enqueue([make_task(queue="other", due_at=now - 5 * S)])
        assert close_to(await queue.next_due_at(["default"]), now + 30 * S)
        assert close_to(await queue.next_due_at(["default", "other"]), now - 5 * S)
        assert await queue.next_due_at(["empty"]) is None

    async def test_delete_finished(self, queue: BaseTaskQueue) -> None:
        done, failed, waiting = make_task(priority=2), make_task(priority=1), make_task()
        await queue.enqueue([done, failed, waiting])
        now = utcnow()
        await queue.claim(["default"], "w", limit=2, lease_seconds=30, now=now)
        await queue.ack_many(
            [Ack(done.id, "w", TaskStatus.COMPLETE), Ack(failed.id, "w", TaskStatus.FAILED)],
            now=now,
        )
        assert await queue.delete_finished(now - 1 * S) == 0
        assert await queue.delete_finished(now + 1 * S) == 2
        assert await queue.get_many([done.id, failed.id, waiting.id]) == [None, None, waiting]

    async def test_wait_times_out(self, queue: BaseTaskQueue) -> None:
        await asyncio.wait_for(queue.wait(["default"], 0.05), 5)

    async def test_wait_wakes_on_enqueue_in_process(self, queue: BaseTaskQueue) -> None:
        # A queue that cannot be notified wakes by its timeout: give it a short one.
        waiter = asyncio.ensure_future(queue.wait(["default"], 5.0 if queue.notifies else 0.3))
        await produce_until(waiter, lambda: queue.enqueue([make_task()]))
        await asyncio.wait_for(waiter, 2)

    async def test_wait_wakes_on_enqueue_from_another_connection(
        self, queue: BaseTaskQueue, other_queue: BaseTaskQueue
    ) -> None:
        waiter = asyncio.ensure_future(queue.wait(["default"], 5.0 if queue.notifies else 0.3))
        producer = asyncio.ensure_future(
            produce_until(waiter, lambda: other_queue.enqueue([make_task()]))
        )
        await asyncio.wait_for(waiter, 2)
        await producer

    async def test_wait_and_claim_leases_what_arrives_while_waiting(
        self, queue: BaseTaskQueue, other_queue: BaseTaskQueue
    ) -> None:
        task = make_task()
        waiter = asyncio.ensure_future(
            queue.wait_and_claim(
                ["default"], "w1", limit=4, lease_seconds=30, timeout=5.0 if queue.notifies else 0.3
            )
        )
        await asyncio.sleep(0.05)
        await other_queue.enqueue([task])
        claimed = await asyncio.wait_for(waiter, 5)
        if not claimed:  # a queue that cannot be notified claims as its timeout ends
            claimed = await queue.wait_and_claim(
                ["default"], "w1", limit=4, lease_seconds=30, timeout=0.05
            )
        now = utcnow()
        assert [t.id for t in claimed] == [task.id]
        assert (claimed[0].status, claimed[0].worker_id, claimed[0].attempts) == (
            TaskStatus.RUNNING,
            "w1",
            1,
        )
        # Leased as the wait ended, just before now (by the server's clock on Redis).
        assert close_to(claimed[0].lease_expires_at, now + 30 * S, tolerance=1.0)
        stored = await queue.get(task.id)
        assert stored is not None and stored.worker_id == "w1"
        assert stored.lease_expires_at == claimed[0].lease_expires_at

    async def test_wait_and_claim_returns_nothing_when_nothing_arrives(
        self, queue: BaseTaskQueue
    ) -> None:
        claimed = await asyncio.wait_for(
            queue.wait_and_claim(["default"], "w1", limit=4, lease_seconds=30, timeout=0.05), 5
        )
        assert claimed == []

    async def test_progress_is_kept_apart_from_the_task_record(
        self, queue: BaseTaskQueue, other_queue: BaseTaskQueue
    ) -> None:
        task, other = make_task(), make_task()
        await queue.enqueue([task, other])
        now = utcnow()
        [claimed] = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now)
        first = Progress(done=1, total=3, message="one", updated_at=now)
        latest = Progress(done=2, total=3, message="two", updated_at=now + 1 * S)
        await queue.set_progress({claimed.id: first, "no-such-task": first})
        await queue.set_progress({claimed.id: latest})
        assert await other_queue.get_progress([claimed.id, "no-such-task"]) == {claimed.id: latest}
        assert await queue.get("no-such-task") is None
        # Writing it changed nothing the claim's compare-and-sets look at.
        assert await queue.renew([claimed.id], "w", lease_seconds=30, now=now) == {claimed.id}
        assert await queue.ack_many([Ack(claimed.id, "w", TaskStatus.COMPLETE)], now=now) == [True]
        assert await queue.get_progress([claimed.id]) == {claimed.id: latest}
        # Deleted with its task, and not brought back (nor the task) by a late write.
        assert await queue.delete_finished(now + 1 * S) == 1
        await queue.set_progress({claimed.id: first})
        assert await queue.get_progress([claimed.id]) == {}
        assert await queue.get(claimed.id) is None
        waiting = await queue.get(other.id)
        assert waiting is not None and waiting.status is TaskStatus.PENDING


def make_result(task_id: str | None = None, **fields: object) -> TaskResult:
    """A COMPLETE result with encoded bytes as its value (``fields`` override)."""
    values: dict[str, object] = {
        "status": TaskStatus.COMPLETE,
        "result": b"\x01\x02",
        "attempts": 1,
    }
    values.update(fields)
    return TaskResult(task_id=task_id or uuid.uuid4().hex, **values)  # type: ignore[arg-type]


class ResultContract(ResultDeleteContract):
    """``BaseResultStorage``: put/get, replacement, expiry, waiting."""

    @pytest.fixture
    async def results(self, backend: Backend) -> AsyncIterator[BaseResultStorage]:
        store = backend.result_storage()
        await store.connect()
        yield store
        await store.close()

    @pytest.fixture
    async def other_results(self, make_backend: MakeBackend) -> AsyncIterator[BaseResultStorage]:
        store = (await make_backend()).result_storage()
        await store.connect()
        yield store
        await store.close()

    async def test_put_and_get_round_trip(self, results: BaseResultStorage) -> None:
        ok = make_result(started_at=utcnow() - 2 * S, worker_id="w1")
        failed = make_result(
            status=TaskStatus.FAILED,
            result=None,
            error=ErrorInfo(type="builtins.ValueError", message="bad", traceback="tb"),
        )
        await results.put_many([ok, failed])
        assert await results.get(ok.task_id) == ok
        assert await results.get(failed.task_id) == failed
        assert await results.get("unknown") is None
        await results.put_many([])

    async def test_put_replaces(self, results: BaseResultStorage) -> None:
        first = make_result()
        await results.put(first)
        second = make_result(first.task_id, status=TaskStatus.CANCELLED, result=None)
        await results.put(second)
        assert await results.get(first.task_id) == second

    async def test_expiry(self, results: BaseResultStorage) -> None:
        now = utcnow()
        gone = make_result(expires_at=now - 1 * S)
        kept = make_result(expires_at=now + 3600 * S)
        forever = make_result()
        await results.put_many([gone, kept, forever])
        assert await results.get(gone.task_id) is None
        assert await results.get(kept.task_id) == kept
        assert await results.delete_expired(now) == 1
        assert await results.delete_expired(now + 7200 * S) == 1
        assert await results.get(forever.task_id) == forever

    async def test_wait_returns_a_stored_result_at_once(self, results: BaseResultStorage) -> None:
        result = make_result()
        await results.put(result)
        assert await asyncio.wait_for(results.wait(result.task_id, 5.0), 2) == result

    async def test_wait_times_out(self, results: BaseResultStorage) -> None:
        assert await asyncio.wait_for(results.wait("unknown", 0.05), 5) is None

    async def test_wait_wakes_on_put_in_process(self, results: BaseResultStorage) -> None:
        result = make_result()
        waiter = asyncio.ensure_future(results.wait(result.task_id, 5.0))
        await produce_until(waiter, lambda: results.put(result))
        assert await asyncio.wait_for(waiter, 2) == result

    async def test_wait_wakes_on_put_from_another_connection(
        self, results: BaseResultStorage, other_results: BaseResultStorage
    ) -> None:
        result = make_result()
        waiter = asyncio.ensure_future(results.wait(result.task_id, 5.0))
        await produce_until(waiter, lambda: other_results.put(result))
        assert await asyncio.wait_for(waiter, 2) == result


def make_event(task_id: str, event_type: EventType, **fields: object) -> TaskEvent:
    """A lifecycle event."""
    return TaskEvent(task_id=task_id, event_type=event_type, **fields)  # type: ignore[arg-type]


class EventContract:
    """``BaseEventStorage``: append-only, per task, oldest first."""

    @pytest.fixture
    async def events(self, backend: Backend) -> AsyncIterator[BaseEventStorage]:
        store = backend.event_storage()
        await store.connect()
        yield store
        await store.close()

    async def test_append_and_get_in_order(self, events: BaseEventStorage) -> None:
        now = utcnow()
        kinds = [EventType.ENQUEUED, EventType.EXECUTING, EventType.ERROR, EventType.RETRY]
        logged = [
            make_event("t1", kind, timestamp=now, attempt=i, worker_id="w", message=f"m{i}")
            for i, kind in enumerate(kinds)
        ]
        await events.append(logged[:1])
        await events.append([make_event("t2", EventType.ENQUEUED)])
        await events.append(logged[1:])
        assert await events.get("t1") == logged
        assert [e.task_id for e in await events.get("t2")] == ["t2"]
        assert await events.get("unknown") == []
        await events.append([])

    async def test_concurrent_appends(self, events: BaseEventStorage) -> None:
        batches = [[make_event("t", EventType.ENQUEUED, attempt=i)] * 3 for i in range(20)]
        await asyncio.gather(*(events.append(batch) for batch in batches))
        got = await events.get("t")
        assert len(got) == 60
        assert sorted(e.attempt for e in got) == sorted(i for i in range(20) for _ in range(3))

    async def test_delete_before(self, events: BaseEventStorage) -> None:
        now = utcnow()
        old = make_event("t", EventType.ENQUEUED, timestamp=now - 100 * S)
        new = make_event("t", EventType.EXECUTING, timestamp=now)
        await events.append([old, new])
        assert await events.delete_before(now - 50 * S) == 1
        assert await events.get("t") == [new]


def make_schedule(schedule_id: str | None = None, **fields: object) -> Schedule:
    """An interval schedule due now (``fields`` override)."""
    values: dict[str, object] = {"interval": 60.0, "next_run_at": utcnow()}
    values.update(fields)
    return Schedule(id=schedule_id or uuid.uuid4().hex, task=make_task("template"), **values)  # type: ignore[arg-type]


class ScheduleContract:
    """``BaseScheduleStorage``: CRUD, due, and the compare-and-set tick."""

    @pytest.fixture
    async def schedules(self, backend: Backend) -> AsyncIterator[BaseScheduleStorage]:
        store = backend.schedule_storage()
        await store.connect()
        yield store
        await store.close()

    @pytest.fixture
    async def other_schedules(
        self, make_backend: MakeBackend
    ) -> AsyncIterator[BaseScheduleStorage]:
        store = (await make_backend()).schedule_storage()
        await store.connect()
        yield store
        await store.close()

    async def test_upsert_get_list_delete(self, schedules: BaseScheduleStorage) -> None:
        b, a = make_schedule("b"), make_schedule("a", cron="*/5 * * * *", interval=None)
        await schedules.upsert(b)
        await schedules.upsert(a)
        assert await schedules.get("a") == a
        assert [s.id for s in await schedules.list()] == ["a", "b"]
        replaced = make_schedule("b", interval=5.0)
        await schedules.upsert(replaced)
        assert await schedules.get("b") == replaced
        assert await schedules.delete("a") is True
        assert await schedules.delete("a") is False
        assert await schedules.get("a") is None
        assert [s.id for s in await schedules.list()] == ["b"]

    async def test_update(self, schedules: BaseScheduleStorage) -> None:
        schedule = make_schedule()
        await schedules.upsert(schedule)
        paused = await schedules.update(schedule.id, {"paused": True})
        assert paused is not None
        assert paused.paused is True
        assert await schedules.get(schedule.id) == paused
        assert await schedules.due(utcnow() + 10 * S) == []
        resumed = await schedules.update(schedule.id, {"paused": False})
        assert resumed is not None
        assert [s.id for s in await schedules.due(utcnow() + 10 * S)] == [schedule.id]
        assert await schedules.update("unknown", {"paused": True}) is None

    async def test_due(self, schedules: BaseScheduleStorage) -> None:
        now = utcnow()
        first = make_schedule(next_run_at=now - 20 * S)
        second = make_schedule(next_run_at=now - 10 * S)
        await schedules.upsert(second)
        await schedules.upsert(first)
        await schedules.upsert(make_schedule(next_run_at=now + 60 * S))
        await schedules.upsert(make_schedule(next_run_at=now - 30 * S, paused=True))
        await schedules.upsert(make_schedule(next_run_at=None))
        assert [s.id for s in await schedules.due(now)] == [first.id, second.id]
        assert [s.id for s in await schedules.due(now, limit=1)] == [first.id]

    async def test_advance_is_a_compare_and_set(self, schedules: BaseScheduleStorage) -> None:
        now = utcnow()
        schedule = make_schedule(next_run_at=now)
        await schedules.upsert(schedule)
        won = await schedules.advance(
            schedule.id, expected_next_run_at=now, next_run_at=now + 60 * S, last_run_at=now
        )
        assert won is True
        again = await schedules.advance(
            schedule.id, expected_next_run_at=now, next_run_at=now + 60 * S, last_run_at=now
        )
        assert again is False
        stored = await schedules.get(schedule.id)
        assert stored is not None
        assert (stored.runs, stored.next_run_at, stored.last_run_at) == (1, now + 60 * S, now)
        assert await schedules.advance(
            "unknown", expected_next_run_at=now, next_run_at=None, last_run_at=now
        ) is False  # fmt: skip

    async def test_advance_to_none_finishes(self, schedules: BaseScheduleStorage) -> None:
        now = utcnow()
        schedule = make_schedule(next_run_at=now)
        await schedules.upsert(schedule)
        assert await schedules.advance(
            schedule.id, expected_next_run_at=now, next_run_at=None, last_run_at=now
        )
        assert await schedules.due(now + 3600 * S) == []
        stored = await schedules.get(schedule.id)
        assert stored is not None
        assert stored.next_run_at is None
        assert stored.runs == 1

    async def test_racing_advances_have_one_winner(
        self, schedules: BaseScheduleStorage, other_schedules: BaseScheduleStorage
    ) -> None:
        now = utcnow()
        schedule = make_schedule(next_run_at=now)
        await schedules.upsert(schedule)
        calls = [
            store.advance(
                schedule.id, expected_next_run_at=now, next_run_at=now + 60 * S, last_run_at=now
            )
            for _ in range(10)
            for store in (schedules, other_schedules)
        ]
        assert sorted(await asyncio.gather(*calls)) == [False] * 19 + [True]
        stored = await schedules.get(schedule.id)
        assert stored is not None
        assert stored.runs == 1
