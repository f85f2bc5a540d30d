"""The storage interfaces every backend implements.

Four small async interfaces: the task queue, the result storage, the event storage and
the schedule storage. Each backend implements the primitives below and joins the one
conformance suite (``tests/conformance``). The semantics (status changes, retries,
events) live above, in ``omniq.core`` and ``omniq.workers``; a backend only keeps records
and makes the few compare-and-set steps atomic.

Backends deal in records (``Task``, ``TaskResult``, ``TaskEvent``, ``Schedule``) whose user
data is already encoded to bytes (``Task.payload``; ``TaskResult.result`` holds the
encoded return value at this level), never in user objects.

Claimable, the one rule every backend applies in ``claim``: a task is claimable when its
``due_at`` (None: at once) has passed and either its status is ``PENDING`` or
``RETRYING``, or it is ``SCHEDULED`` with no ``depends_on``, or it is ``RUNNING`` with a
lease that has run out (its worker is presumed dead). A ``SCHEDULED`` task with
``depends_on`` is held until ``transition`` moves it to ``PENDING``.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from omniq.decisions import cancelled_result
from omniq.errors import StorageError
from omniq.models import Schedule, Task, TaskEvent, TaskResult, TaskStatus, utcnow
from omniq.storage._fleet import FleetQueue
from omniq.storage._records import (
    Ack,
    Finish,
    UnreadableTask,
    event_fields_but_task_id,
    event_of,
    unreadable_task,
)

__all__ = [
    "Ack",
    "BaseEventStorage",
    "BaseResultStorage",
    "BaseScheduleStorage",
    "BaseStorage",
    "BaseTaskQueue",
    "Finish",
    "UnreadableTask",
    "event_fields_but_task_id",
    "event_of",
    "unreadable_task",
]

logger = logging.getLogger("omniq")


class BaseStorage(ABC):  # noqa: B024 - connect/close are optional hooks, not abstract
    """Lifecycle shared by every storage component: connect lazily, close idempotently."""

    async def connect(self) -> None:  # noqa: B027 - optional hook
        """Open connections and create the schema if needed. Safe to call twice."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call twice."""

    async def __aenter__(self) -> BaseStorage:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class BaseTaskQueue(BaseStorage, FleetQueue):
    """A durable queue of tasks with lease-based claims.

    Delivery is at-least-once with exactly one holder at a time: ``claim`` leases a task
    to one worker; the holder renews the lease while it runs the task and ends it with
    ``ack`` (a final status), ``retry`` (run again later) or ``release`` (hand back
    without spending an attempt). A lease that runs out makes the task claimable again.
    """

    #: True when ``wait`` is woken by the backend itself (no polling needed).
    notifies: bool = False
    #: How many enqueue writes one client keeps out at once; concurrent calls beyond that
    #: wait and are stored together in the next write (one statement, one commit). A
    #: backend whose connection pipelines requests sets more, so that the client's work
    #: overlaps the server's.
    enqueue_writes_in_flight: int = 1

    @abstractmethod
    async def enqueue(self, tasks: Sequence[Task]) -> list[str]:
        """Store ``tasks`` as given and return their ids in order.

        Idempotent: a task whose id already exists is left unchanged (its id is still
        returned). Each task is stored atomically; a batch should take as few round
        trips as the backend allows. Wakes waiting workers.
        """

    def writes_events(self, event_storage: BaseEventStorage) -> bool:
        """True when :meth:`enqueue_logged` can append events to ``event_storage`` in the
        same atomic call that stores the tasks (the two share a connection)."""
        return False

    async def enqueue_logged(
        self,
        tasks: Sequence[Task],
        events: Sequence[Sequence[TaskEvent]],
        event_storage: BaseEventStorage,
    ) -> list[str]:
        """:meth:`enqueue`, and append ``events[i]`` to ``event_storage`` for each task
        ``tasks[i]`` stored by this call (not for one whose id already existed).

        An event with an empty ``task_id`` is logged as ``tasks[i]``'s: the tasks of a
        batch that log the same events can share one list (it is never modified).

        A backend for which :meth:`writes_events` holds does both atomically, in the
        round trips of the enqueue alone (:meth:`_enqueue_with_events`). Otherwise this looks up
        which ids exist, writes the tasks, then the events of the new ones: not atomic,
        and a race with another producer of the same id may log its events twice.
        """
        if self.writes_events(event_storage):
            await event_storage.connect()
            return await self._enqueue_with_events(tasks, events)
        seen = {task.id for task in await self.get_many([t.id for t in tasks]) if task}
        ids = await self.enqueue(tasks)
        fresh: list[TaskEvent] = []
        for task, group in zip(tasks, events, strict=True):
            if task.id not in seen:
                seen.add(task.id)
                fresh += (event_of(task.id, event) for event in group)
        if fresh:
            await event_storage.append(fresh)
        return ids

    async def _enqueue_with_events(
        self, tasks: Sequence[Task], events: Sequence[Sequence[TaskEvent]] | None
    ) -> list[str]:
        """Store ``tasks``, and ``events[i]`` for each new ``tasks[i]``, in one atomic call:
        what a backend for which :meth:`writes_events` holds implements."""
        raise NotImplementedError(f"{type(self).__name__} does not store events with tasks")

    @abstractmethod
    async def claim(
        self,
        queues: Sequence[str],
        worker_id: str,
        *,
        limit: int,
        lease_seconds: float,
        now: datetime,
        strict: bool = False,
    ) -> list[Task]:
        """Atomically lease up to ``limit`` claimable tasks from ``queues``.

        Order: higher ``priority`` first, then earlier due time (``due_at``, or the
        creation time), then enqueue order. By default (``strict=False``) the queues are
        merged: that order runs across all of them, whatever order they are listed in.
        With ``strict=True`` the list order comes first: the claim takes the claimable
        tasks of ``queues[0]`` (in the order above), and only when those are fewer than
        ``limit`` fills the rest from ``queues[1]``, and so on; the returned list follows
        (queue position, priority, due time, enqueue order). A name listed twice counts
        at its first position. Each claimed task becomes ``RUNNING`` with
        ``worker_id``, ``lease_expires_at = now + lease_seconds`` and ``attempts + 1``;
        the returned tasks show those values. Two concurrent claims never return the
        same task. A claimable task whose record cannot be decoded is leased the same way
        and returned as an :class:`UnreadableTask` (the worker fails it), never skipped.
        """

    @abstractmethod
    async def renew(
        self, task_ids: Collection[str], worker_id: str, *, lease_seconds: float, now: datetime
    ) -> set[str]:
        """Extend the leases ``worker_id`` still holds; return the ids it still holds."""

    @abstractmethod
    async def ack_many(self, acks: Sequence[Ack], *, now: datetime) -> list[bool]:
        """Move each task its worker still holds to the given final status.

        Returns, per ack, whether it took effect (False when the lease was lost).
        """

    def finish_logs_events(self, event_storage: BaseEventStorage) -> bool:
        """True when :meth:`finish` can store events in ``event_storage`` in the same
        atomic step as the results and acks (they share a connection)."""
        return False

    def finishes_together(self, result_storage: BaseResultStorage) -> bool:
        """True when :meth:`finish` stores results in ``result_storage`` with the acks in
        one atomic step (:meth:`_finish_together`; they share a connection)."""
        return False

    async def finish(
        self,
        items: Sequence[Finish],
        result_storage: BaseResultStorage,
        event_storage: BaseEventStorage | None = None,
        *,
        now: datetime,
    ) -> tuple[builtins.list[bool], dict[str, builtins.list[Task]]]:
        """End tasks their workers hold: what a worker does with each batch of finished
        tasks. Returns, per item, whether its ack took effect, and the dependents of the
        acknowledged tasks (read after the acks, so a dependent sees its parent final).

        For each item whose task its worker still holds: store the result, append the
        events to ``event_storage`` (only given when :meth:`finish_logs_events` holds) and
        acknowledge. An item whose task was cancelled, or taken over after its lease ran
        out, changes nothing: exactly one outcome wins, and it keeps its result and events.
        Results go before the acks, so a crash in between repeats a task rather than
        losing its result.

        A backend that holds results (and events) on the queue's connection does all of
        it in one transaction or script (:meth:`finishes_together`). Otherwise, for
        components on different backends, this reads which tasks are still held, stores
        their results, then acks: a cancel that lands between the read and the ack finds
        the result stored, and the cancelled task's result is written again here, so a
        reader sees the finished result for a moment at most.
        """
        if not items:
            return [], {}
        if self.finishes_together(result_storage):
            await result_storage.connect()  # first use connects, as if it wrote the results
            log_events = event_storage is not None and self.finish_logs_events(event_storage)
            return await self._finish_together(items, log_events, now)
        held = await self._still_held(items)
        trying = [item for item, ok in zip(items, held, strict=True) if ok]
        flags = iter(await self._finish_held(trying, result_storage, event_storage, now=now))
        acked = [ok and next(flags) for ok in held]
        beaten = [
            item.ack.task_id
            for item, ok, done in zip(items, held, acked, strict=True)
            if ok and not done
        ]
        if beaten:
            await self._restore_results(beaten, result_storage)
        ids = [item.ack.task_id for item, ok in zip(items, acked, strict=True) if ok]
        return acked, (await self.dependents_many(ids) if ids else {})

    async def _finish_together(
        self, items: Sequence[Finish], log_events: bool, now: datetime
    ) -> tuple[builtins.list[bool], dict[str, builtins.list[Task]]]:
        """Each ack whose task its worker still holds, with its result and (``log_events``)
        its events, in one transaction or script; then the acknowledged tasks' dependents:
        what a backend for which :meth:`finishes_together` holds implements."""
        raise NotImplementedError(f"{type(self).__name__} does not finish atomically")

    async def _still_held(self, items: Sequence[Finish]) -> builtins.list[bool]:
        """Per item, whether its worker still holds its task (see :meth:`_holding`). A
        wrong True costs a result written and restored; the ack decides."""
        return await self._holding(
            [item.ack.task_id for item in items], [item.ack.worker_id for item in items]
        )

    async def _holding(
        self, task_ids: Sequence[str], worker_ids: Sequence[str]
    ) -> builtins.list[bool]:
        """Per task, whether ``worker_ids[i]`` still holds ``task_ids[i]``: what a
        finish and a look for cancels ask. The default reads the tasks; a backend that
        can tell more cheaply overrides it."""
        current = await self.get_many(builtins.list(task_ids))
        return [
            task is not None and task.status is TaskStatus.RUNNING and task.worker_id == worker
            for task, worker in zip(current, worker_ids, strict=True)
        ]

    async def _finish_held(
        self,
        items: Sequence[Finish],
        result_storage: BaseResultStorage,
        event_storage: BaseEventStorage | None,
        *,
        now: datetime,
    ) -> builtins.list[bool]:
        """Results, then acks, then the events of the acknowledged (the default's steps)."""
        if not items:
            return []
        await result_storage.put_many([item.result for item in items])
        acked = await self.ack_many([item.ack for item in items], now=now)
        if event_storage is not None:
            events = [
                event for item, ok in zip(items, acked, strict=True) if ok for event in item.events
            ]
            if events:
                await event_storage.append(events)
        return acked

    async def _restore_results(
        self, task_ids: Sequence[str], result_storage: BaseResultStorage
    ) -> None:
        """Write again the result of tasks a cancel took from their worker while it was
        storing its own: the cancel's outcome won (see :meth:`finish`)."""
        tasks = await self.get_many(task_ids)
        restored = [
            cancelled_result(task, now=task.updated_at or task.created_at)
            for task in tasks
            if task is not None and task.status is TaskStatus.CANCELLED
        ]
        if restored:
            await result_storage.put_many(restored)

    async def ack(self, task_id: str, worker_id: str, status: TaskStatus, *, now: datetime) -> bool:
        """Single-task form of :meth:`ack_many`."""
        return (await self.ack_many([Ack(task_id, worker_id, status)], now=now))[0]

    @abstractmethod
    async def retry(self, task_id: str, worker_id: str, *, due_at: datetime, now: datetime) -> bool:
        """Move a held task to ``RETRYING``, claimable again at ``due_at``. Keeps attempts."""

    @abstractmethod
    async def release(self, task_ids: Collection[str], worker_id: str, *, now: datetime) -> int:
        """Hand back held tasks without spending an attempt (graceful stop).

        Each becomes ``PENDING`` (``RETRYING`` if it had run before) with ``attempts - 1``
        and no lease. Returns how many were released.
        """

    @abstractmethod
    async def transition(
        self,
        task_id: str,
        *,
        from_statuses: Collection[TaskStatus],
        to_status: TaskStatus,
        now: datetime,
        due_at: datetime | None = None,
    ) -> Task | None:
        """Compare-and-set a task's status; return the new task, or None if not in ``from``.

        Used for cancelling tasks, expiring them and releasing dependents. When
        ``due_at`` is given it replaces the task's due time. Clears any lease. Wakes
        waiting workers when the task becomes claimable.
        """

    @abstractmethod
    async def get(self, task_id: str) -> Task | None:
        """The task as stored, or None."""

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Several tasks, in order (None for unknown ids)."""
        return [await self.get(task_id) for task_id in task_ids]

    @abstractmethod
    async def list(
        self, *, queue: str | None = None, status: TaskStatus | None = None, limit: int = 100
    ) -> list[Task]:
        """Tasks, newest first, filtered by queue and status."""

    @abstractmethod
    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts per queue and status (``{"default": {"pending": 3}}``); zero counts omitted."""

    async def dependents(self, task_id: str) -> builtins.list[Task]:
        """Tasks whose ``depends_on`` names ``task_id`` (:meth:`dependents_many` of one)."""
        return (await self.dependents_many([task_id])).get(task_id, [])

    @abstractmethod
    async def dependents_many(self, task_ids: Sequence[str]) -> dict[str, builtins.list[Task]]:
        """Tasks whose ``depends_on`` names each of ``task_ids``, by id
        (ids without dependents may be absent). Called once per batch of finished tasks:
        one query where the backend can."""

    @abstractmethod
    async def next_due_at(self, queues: Sequence[str]) -> datetime | None:
        """The earliest time something in ``queues`` becomes claimable, or None.

        Counts due times of waiting tasks and lease expiries of running ones; a time in
        the past means work is claimable now.
        """

    @abstractmethod
    async def delete_finished(self, before: datetime) -> int:
        """Delete tasks in a final state last updated before ``before``; return how many."""

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until work may have arrived in ``queues`` or ``timeout`` passes.

        Backends that can be notified (Redis blocking pops, LISTEN/NOTIFY, file
        watches) override this; the default just sleeps. Spurious wake-ups are allowed.
        """
        await asyncio.sleep(timeout)

    async def wait_and_claim(
        self,
        queues: Sequence[str],
        worker_id: str,
        *,
        limit: int,
        lease_seconds: float,
        timeout: float,
        strict: bool = False,
    ) -> builtins.list[Task]:
        """:meth:`wait`, then :meth:`claim` at once: what an idle worker does.

        ``strict`` is :meth:`claim`'s (the list order of ``queues`` first). Backends that
        can run the claim on the server the moment the wait ends (Redis pipelines it
        behind the blocking pop) override this to save a round trip.
        """
        await self.wait(queues, timeout)
        return await self._claim_or_hand_back(
            queues, worker_id, limit=limit, lease_seconds=lease_seconds, strict=strict
        )

    async def _claim_or_hand_back(
        self,
        queues: Sequence[str],
        worker_id: str,
        *,
        limit: int,
        lease_seconds: float,
        strict: bool = False,
    ) -> builtins.list[Task]:
        """:meth:`claim` now, for a caller that may be cancelled while it is out.

        A claim cannot be called back once sent: the store may commit it (a thread
        finishing its transaction, a reply already on its way) after the caller has
        gone. So the claim runs to its end whatever happens to the caller, and when the
        caller was cancelled (a worker stopping or nudged), what it leased is released
        at once, its attempt given back, instead of waiting out its lease.
        """
        claiming = asyncio.ensure_future(
            self.claim(
                queues,
                worker_id,
                limit=limit,
                lease_seconds=lease_seconds,
                now=utcnow(),
                strict=strict,
            )
        )
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            try:
                orphans = await claiming
                if orphans:
                    await self.release([t.id for t in orphans], worker_id, now=utcnow())
            except StorageError as exc:
                logger.warning("handing back a claim cut short failed: %s", exc)
            raise

    #: How often the default :meth:`watch_cancels` looks at the held tasks, in seconds.
    cancel_poll_interval: float = 0.2

    async def watch_cancels(
        self,
        worker_id: str,
        held: Callable[[], Collection[str]],
        notice: Callable[[str], None],
    ) -> None:
        """Call ``notice(task_id)`` for each task in ``held()`` that ``worker_id`` no
        longer holds (cancelled, or taken over after its lease ran out), promptly: the
        worker stops running it. Runs until cancelled; spurious notices are allowed.

        Backends that can push (a message per cancel) override this; the default reads
        the held tasks every :attr:`cancel_poll_interval` seconds.
        """
        while True:
            await asyncio.sleep(self.cancel_poll_interval)
            await self._look_at_held(worker_id, held, notice)

    async def _look_at_held(
        self,
        worker_id: str,
        held: Callable[[], Collection[str]],
        notice: Callable[[str], None],
    ) -> None:
        """One look of :meth:`watch_cancels`: ``notice`` each held task ``worker_id`` no
        longer holds. A failed read notices nothing (the lease renewal finds a lost task
        later at worst)."""
        ids = builtins.list(held())
        if not ids:
            return
        try:
            still = await self._holding(ids, [worker_id] * len(ids))
        except StorageError:
            return
        for task_id, ok in zip(ids, still, strict=True):
            if not ok:
                notice(task_id)


class BaseResultStorage(BaseStorage):
    """Results of tasks in a final state. ``TaskResult.result`` holds encoded bytes here."""

    @abstractmethod
    async def put_many(self, results: Sequence[TaskResult]) -> None:
        """Store results (replacing any for the same task id), in as few round trips as possible."""

    async def put(self, result: TaskResult) -> None:
        """Single-result form of :meth:`put_many`."""
        await self.put_many([result])

    @abstractmethod
    async def get(self, task_id: str) -> TaskResult | None:
        """The stored result, or None (also once it expired)."""

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Block until a result for ``task_id`` exists or ``timeout`` passes.

        The default polls with a short, growing interval; backends that can be notified
        override it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.002
        while True:
            result = await self.get(task_id)
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.1)

    @abstractmethod
    async def delete_expired(self, now: datetime) -> int:
        """Delete results whose ``expires_at`` has passed; return how many."""

    @abstractmethod
    async def delete(self, task_ids: Sequence[str]) -> None:
        """Delete the results of ``task_ids`` (a requeued task's old one): a reader sees
        none until a new one is stored. Unknown ids are ignored."""


class BaseEventStorage(BaseStorage):
    """An append-only log of task lifecycle events."""

    @abstractmethod
    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Append events; concurrent writers never corrupt each other."""

    @abstractmethod
    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first."""

    @abstractmethod
    async def delete_before(self, before: datetime) -> int:
        """Delete events older than ``before``; return how many."""


class BaseScheduleStorage(BaseStorage):
    """Recurring schedules. Firing a tick is a compare-and-set on ``next_run_at``."""

    @abstractmethod
    async def upsert(self, schedule: Schedule) -> None:
        """Insert or replace the schedule with this id."""

    @abstractmethod
    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""

    @abstractmethod
    async def list(self) -> builtins.list[Schedule]:
        """All schedules, by id."""

    @abstractmethod
    async def delete(self, schedule_id: str) -> bool:
        """Remove a schedule; False if it did not exist."""

    @abstractmethod
    async def update(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule | None:
        """Apply field changes (``paused``, …); return the new schedule or None if unknown."""

    @abstractmethod
    async def due(self, now: datetime, limit: int = 100) -> builtins.list[Schedule]:
        """Unpaused schedules whose ``next_run_at`` is at or before ``now``."""

    @abstractmethod
    async def advance(
        self,
        schedule_id: str,
        *,
        expected_next_run_at: datetime,
        next_run_at: datetime | None,
        last_run_at: datetime,
    ) -> bool:
        """Claim one tick: if ``next_run_at`` still equals ``expected_next_run_at``, set it
        to ``next_run_at`` (None: finished), ``last_run_at``, and ``runs + 1``; True if this
        caller won. Exactly one of several racing workers wins each tick.
        """
