"""PostgreSQL storage: the task queue, results, events and schedules in one schema.

Every component works standalone from a URL::

    async with AsyncPostgresQueue("postgresql://postgres@127.0.0.1/app") as queue:
        await queue.enqueue([task])

or on the shared pool of a :class:`omniq.backend.postgres.PostgresBackend`. Blocking twins
(``PostgresQueue``, ``PostgresResultStorage``…) run the same coroutines on a private loop.

Each operation is one statement, so one round trip and its own transaction: batches travel
as arrays (``unnest``), the writes that belong together are data-modifying CTEs of one
statement, and the ``NOTIFY`` that wakes workers commits with the write it announces.
Claims lock their rows with ``FOR UPDATE SKIP LOCKED``: concurrent workers never wait on
each other and never take the same task. The events of a batch whose tasks log the same
ones (an ``enqueue_many`` on the same pool) are stored once, as an event group its tasks
point at (see ``sql/postgres/0003_event_groups.sql``).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import operator
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Self

import asyncpg
import msgspec

from omniq._sync import sync_twin
from omniq.errors import StorageError
from omniq.models import Schedule, Task, TaskEvent, TaskResult, TaskStatus
from omniq.storage._rows import dt, task_from_row, ts, unreadable_from_row
from omniq.storage.base import (
    Ack,
    BaseEventStorage,
    BaseResultStorage,
    BaseScheduleStorage,
    BaseStorage,
    BaseTaskQueue,
    Finish,
    UnreadableTask,
    event_fields_but_task_id,
    event_of,
)
from omniq.storage.postgres.connection import PostgresBackend

__all__ = [
    "AsyncPostgresEventStorage",
    "AsyncPostgresQueue",
    "AsyncPostgresResultStorage",
    "AsyncPostgresScheduleStorage",
    "PostgresEventStorage",
    "PostgresQueue",
    "PostgresResultStorage",
    "PostgresScheduleStorage",
]

logger = logging.getLogger("omniq")

_ENCODER = msgspec.msgpack.Encoder()
_RESULT_DECODER = msgspec.msgpack.Decoder(TaskResult)
_EVENT_DECODER = msgspec.msgpack.Decoder(TaskEvent)
_SCHEDULE_DECODER = msgspec.msgpack.Decoder(Schedule)
_CLAIMABLE_TARGETS = frozenset({TaskStatus.PENDING, TaskStatus.RETRYING, TaskStatus.SCHEDULED})
# The columns of a task row (omniq/storage/_rows.py), which transition's row starts with.
_TASK_WIDTH = 11
_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# How long a result waiter trusts notifications before it looks again anyway.
_RESULT_BACKSTOP = 1.0


def _task(row: Sequence[Any]) -> Task:
    return task_from_row(row, "postgres")


class _PostgresComponent(BaseStorage):
    """Connection handling shared by the four components.

    Built from a URL, a component makes its own bundle (one pool); built by a
    :class:`~omniq.backend.postgres.PostgresBackend`, it shares that bundle's pool.
    """

    def __init__(
        self,
        url: str | None = None,
        settings: Any = None,
        *,
        namespace: str | None = None,
        bundle: PostgresBackend | None = None,
    ) -> None:
        self.settings = settings
        if bundle is None:
            url = url or getattr(settings, "postgres_url", None) or _DEFAULT_URL
            bundle = PostgresBackend(url, settings, namespace=namespace)
        self.url = url or bundle.url
        self._pg = bundle
        self._connected = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def connect(self) -> None:
        """Open the pool (shared through the bundle) and create the schema if needed."""
        if self._connected:
            return
        await self._pg.connect()
        self._connected = True

    async def close(self) -> None:
        """Release the pool. Safe to call twice."""
        if not self._connected:
            return
        self._connected = False
        await self._pg.close()

    async def _db(self) -> PostgresBackend:
        if not self._connected:
            await self.connect()
        return self._pg

    def _q(self, name: str) -> str:
        """The statement ``name`` of ``sql/queries.sql``, for this namespace's schema."""
        return self._pg.sql[name]

    @property
    def namespace(self) -> str:
        """The namespace, which names the schema the tables live in."""
        return self._pg.namespace

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._pg!r})"


# -- the task queue ----------------------------------------------------------------------


def _task_row(task: Task) -> tuple[Any, ...]:
    """A task's columns in the enqueue statements' order, all but its data."""
    lease = task.lease_expires_at
    return (
        task.id,
        task.queue,
        task.status.value,
        task.priority,
        ts(task.due_at or task.created_at),
        None if lease is None else ts(lease),
        task.worker_id,
        task.attempts,
        bool(task.depends_on),
        ts(task.updated_at or task.created_at),
    )


def _task_arrays(tasks: Sequence[Task]) -> builtins.list[builtins.list[Any]]:
    """The column arrays of the enqueue statement ($1..$11) for ``tasks``."""
    encode = _ENCODER.encode
    columns = [list(column) for column in zip(*map(_task_row, tasks), strict=True)]
    columns.append([encode(task) for task in tasks])
    return columns


# What tasks of a uniform batch share (compared as objects: the tasks of an enqueue_many are
# copies of one, so the comparison mostly meets the same objects).
_shared_fields = operator.attrgetter(
    "queue", "status", "priority", "due_at", "created_at", "lease_expires_at", "worker_id",
    "attempts", "updated_at", "depends_on",
)  # fmt: skip


def _uniform_args(
    tasks: Sequence[Task], events: Sequence[Sequence[TaskEvent]] | None
) -> tuple[str, tuple[Any, ...]] | None:
    """The statement enqueue_uniform (or, with events, enqueue_uniform_logged) and its arguments but
    the channel, or None when the tasks differ in more than id and data, or have
    dependencies, or their events differ in more than the task id."""
    head = tasks[0]
    if head.depends_on:
        return None
    shared = _shared_fields(head)
    if any(_shared_fields(task) != shared for task in tasks[1:]):
        return None
    encode = _ENCODER.encode
    columns = ([task.id for task in tasks], [encode(task) for task in tasks], *_task_row(head)[1:])
    if not events or not any(events):
        return "enqueue_uniform", columns
    first = events[0]
    head_events = [event_fields_but_task_id(event) for event in first]
    if any(
        logged is not first and [event_fields_but_task_id(event) for event in logged] != head_events
        for logged in events[1:]
    ):
        return None
    records = [msgspec.structs.replace(event, task_id="") for event in events[0]]
    stamps = [ts(record.timestamp) for record in records]
    return "enqueue_uniform_logged", (*columns, stamps, [encode(r) for r in records])


class AsyncPostgresQueue(_PostgresComponent, BaseTaskQueue):
    """The task queue on PostgreSQL.

    ``wait`` is woken by ``NOTIFY`` from any client of the database, within a
    round trip of the enqueue's commit.

    Example::

        async with AsyncPostgresQueue("postgresql://postgres@127.0.0.1/app") as queue:
            await queue.enqueue([Task(id="t1", func="app.tasks:send")])
            tasks = await queue.claim(["default"], "w1", limit=8, lease_seconds=30, now=utcnow())
    """

    notifies = True

    async def enqueue(self, tasks: Sequence[Task]) -> builtins.list[str]:
        """Store ``tasks`` (existing ids are left unchanged): one statement, one
        transaction, whatever the batch size."""
        return await self._enqueue(tasks, None)

    def writes_events(self, event_storage: BaseEventStorage) -> bool:
        """True when ``event_storage`` lives in this queue's schema on the same pool."""
        return isinstance(event_storage, AsyncPostgresEventStorage) and (
            event_storage._pg is self._pg
        )

    async def enqueue_logged(
        self,
        tasks: Sequence[Task],
        events: Sequence[Sequence[TaskEvent]],
        event_storage: BaseEventStorage,
    ) -> builtins.list[str]:
        """Tasks and the events of the new ones in the same statement, when the event
        log shares this pool: an event is stored exactly when its task is."""
        if not self.writes_events(event_storage):
            return await super().enqueue_logged(tasks, events, event_storage)
        await event_storage.connect()
        return await self._enqueue(tasks, events)

    async def _enqueue(
        self, tasks: Sequence[Task], events: Sequence[Sequence[TaskEvent]] | None
    ) -> builtins.list[str]:
        if not tasks:
            return []
        db = await self._db()
        # An id repeated in the batch is stored (and logged) as its first occurrence.
        first: dict[str, int] = {}
        for index, task in enumerate(tasks):
            first.setdefault(task.id, index)
        unique = [tasks[index] for index in first.values()]
        logged = [events[index] for index in first.values()] if events else None
        uniform = _uniform_args(unique, logged)
        if uniform is not None:
            sql, args = uniform
            await db.execute("enqueueing", self._q(sql), *args, db.work_channel)
            return [task.id for task in tasks]
        arrays = _task_arrays(unique)
        parents = [dep for task in unique for dep in task.depends_on]
        children = [task.id for task in unique for _ in task.depends_on]
        event_ids: builtins.list[str] = []
        event_ts: builtins.list[float] = []
        event_data: builtins.list[bytes] = []
        for index in first.values() if events else ():
            for unnamed in events[index]:  # type: ignore[index]
                event = event_of(tasks[index].id, unnamed)
                event_ids.append(event.task_id)
                event_ts.append(ts(event.timestamp))
                event_data.append(_ENCODER.encode(event))
        await db.execute(
            "enqueueing",
            self._q("enqueue"),
            *arrays,
            parents,
            children,
            event_ids,
            event_ts,
            event_data,
            db.work_channel,
        )
        return [task.id for task in tasks]

    async def claim(
        self,
        queues: Sequence[str],
        worker_id: str,
        *,
        limit: int,
        lease_seconds: float,
        now: datetime,
        strict: bool = False,
    ) -> builtins.list[Task]:
        """Lease up to ``limit`` claimable tasks in one statement (``SKIP LOCKED``; with
        ``strict``, the earlier listed queues first)."""
        if limit <= 0 or not queues:
            return []
        now_ts = ts(now)
        names = list(dict.fromkeys(queues))
        one = len(names) == 1
        strict = strict and not one  # one queue: both orders are the same
        db = await self._db()
        rows = await db.fetch(
            "claiming tasks",
            self._q("claim_one" if one else "claim_in_list_order" if strict else "claim_any"),
            names[0] if one else names,
            now_ts,
            limit,
            worker_id,
            now_ts + lease_seconds,
        )
        rows.sort(key=lambda row: (-row[3], row[7], row[0]))
        claimed = [await self._task_or_unreadable(db, row) for row in rows]
        if strict:
            # RETURNING gives rows in no set order and without their queue: the record's
            # queue puts them in list order (a stable sort keeps the order within each).
            rank = {name: i for i, name in enumerate(names)}
            claimed.sort(key=lambda task: rank.get(task.queue, len(rank)))
        for task in claimed:
            if isinstance(task, UnreadableTask):
                logger.error("%s; handing it to the worker to fail", task.reason)
        return claimed

    async def _task_or_unreadable(self, db: PostgresBackend, row: Sequence[Any]) -> Task:
        """The row's task, or, when its record cannot be decoded, an UnreadableTask of
        what the columns say: one bad record must neither block claims nor hide a
        listing."""
        try:
            return _task(row)
        except StorageError as exc:
            queue = await db.fetchval(
                "reading a corrupt task's queue", self._q("queue_of_task"), row[0]
            )
            return unreadable_from_row(row, str(exc), queue)

    async def renew(
        self, task_ids: Collection[str], worker_id: str, *, lease_seconds: float, now: datetime
    ) -> set[str]:
        """Extend the leases ``worker_id`` still holds (one statement for all)."""
        if not task_ids:
            return set()
        now_ts = ts(now)
        sql = self._q("renew")
        db = await self._db()
        rows = await db.fetch(
            "renewing leases", sql, now_ts + lease_seconds, now_ts, list(task_ids), worker_id
        )
        return {row[0] for row in rows}

    async def ack_many(self, acks: Sequence[Ack], *, now: datetime) -> builtins.list[bool]:
        """Finish the tasks still held by their workers, in one statement."""
        if not acks:
            return []
        db = await self._db()
        rows = await db.fetch("acknowledging tasks", self._q("ack"), *_ack_arrays(acks), ts(now))
        return _ack_flags(acks, rows)

    def _on_my_pool(self, storage: BaseStorage | None) -> bool:
        return isinstance(storage, _PostgresComponent) and storage._pg is self._pg

    def finish_logs_events(self, event_storage: BaseEventStorage) -> bool:
        """True when the event log is in this queue's schema, on its pool."""
        return isinstance(event_storage, AsyncPostgresEventStorage) and self._on_my_pool(
            event_storage
        )

    async def finish(
        self,
        items: Sequence[Finish],
        result_storage: BaseResultStorage,
        event_storage: BaseEventStorage | None = None,
        *,
        now: datetime,
    ) -> tuple[builtins.list[bool], dict[str, builtins.list[Task]]]:
        """Acks with the results and events of the tasks they finished, in one statement,
        when the results share this pool; then the dependents of the finished tasks."""
        if not (
            isinstance(result_storage, AsyncPostgresResultStorage)
            and self._on_my_pool(result_storage)
        ):
            return await super().finish(items, result_storage, event_storage, now=now)
        if not items:
            return [], {}
        await result_storage.connect()
        acks = [item.ack for item in items]
        events = [e for item in items for e in item.events] if event_storage is not None else []
        db = await self._db()
        rows = await db.fetch(
            "finishing tasks",
            self._q("finish"),
            *_ack_arrays(acks),
            ts(now),
            *_result_arrays([item.result for item in items]),
            [event.task_id for event in events],
            [ts(event.timestamp) for event in events],
            [_ENCODER.encode(event) for event in events],
            db.results_channel,
        )
        flags = _ack_flags(acks, [row for row in rows if row[0] is not None])
        done = [ack.task_id for ack, ok in zip(acks, flags, strict=True) if ok]
        return flags, (await self.dependents_many(done) if done else {})

    async def retry(self, task_id: str, worker_id: str, *, due_at: datetime, now: datetime) -> bool:
        """Move a held task to ``RETRYING``, due at ``due_at``."""
        sql = self._q("retry")
        db = await self._db()
        rows = await db.fetch(
            "retrying", sql, ts(due_at), ts(now), task_id, worker_id, db.work_channel
        )
        return bool(rows)

    async def release(self, task_ids: Collection[str], worker_id: str, *, now: datetime) -> int:
        """Hand back held tasks, giving back the attempt their claim counted."""
        if not task_ids:
            return 0
        sql = self._q("release")
        db = await self._db()
        rows = await db.fetch("releasing", sql, ts(now), list(task_ids), worker_id, db.work_channel)
        return len(rows)

    async def transition(
        self,
        task_id: str,
        *,
        from_statuses: Collection[TaskStatus],
        to_status: TaskStatus,
        now: datetime,
        due_at: datetime | None = None,
    ) -> Task | None:
        """Compare-and-set the status of one task; clears its lease."""
        to_status = TaskStatus(to_status)
        # A task taken from its worker (a cancel) is announced on the cancel channel, as
        # "worker\nid", so that worker stops it at once (see watch_cancels). The worker of
        # a task's last run stays on its row: a waiting task's old worker hears too, and
        # finds nothing of it running.
        sql = self._q("transition")
        statuses = {TaskStatus(s) for s in from_statuses}
        db = await self._db()
        row = await db.fetchrow(
            "changing a task's status",
            sql,
            to_status.value,
            None if due_at is None else ts(due_at),
            ts(now),
            task_id,
            [status.value for status in statuses],
            to_status in _CLAIMABLE_TARGETS,
            db.work_channel,
            TaskStatus.RUNNING in statuses,
            db.cancel_channel,
        )
        return None if row is None else _task(tuple(row)[:_TASK_WIDTH])

    async def get(self, task_id: str) -> Task | None:
        """The task as stored, or None."""
        return (await self.get_many([task_id]))[0]

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task | None]:
        """Several tasks in one query, in order (None for unknown ids)."""
        if not task_ids:
            return []
        sql = self._q("get_tasks")
        db = await self._db()
        rows = await db.fetch("reading tasks", sql, list(task_ids))
        found = {row[1]: _task(row) for row in rows}
        return [found.get(task_id) for task_id in task_ids]

    async def list(
        self, *, queue: str | None = None, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Tasks, newest first, filtered by queue and status."""
        sql = self._q("list_tasks")
        db = await self._db()
        rows = await db.fetch(
            "listing tasks", sql, queue, None if status is None else TaskStatus(status).value, limit
        )
        return [await self._task_or_unreadable(db, row) for row in rows]

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts per queue and status."""
        sql = self._q("count_tasks")
        db = await self._db()
        counts: dict[str, dict[str, int]] = {}
        for queue, status, count in await db.fetch("counting tasks", sql):
            if count:
                counts.setdefault(queue, {})[status] = count
        return counts

    async def dependents(self, task_id: str) -> builtins.list[Task]:
        """Tasks whose ``depends_on`` names ``task_id``."""
        return (await self.dependents_many([task_id])).get(task_id, [])

    async def dependents_many(self, task_ids: Sequence[str]) -> dict[str, builtins.list[Task]]:
        """Dependents of several tasks in one query."""
        if not task_ids:
            return {}
        sql = self._q("dependents")
        db = await self._db()
        found: dict[str, builtins.list[Task]] = {}
        for row in await db.fetch("reading dependents", sql, list(task_ids)):
            found.setdefault(row[0], []).append(_task(tuple(row)[1:]))
        return found

    async def next_due_at(self, queues: Sequence[str]) -> datetime | None:
        """The earliest ready time (due time or lease expiry) in ``queues``."""
        if not queues:
            return None
        sql = self._q("next_due")
        db = await self._db()
        earliest = await db.fetchval("reading due times", sql, list(dict.fromkeys(queues)))
        return None if earliest is None else dt(earliest)

    async def delete_finished(self, before: datetime) -> int:
        """Delete finished tasks last updated before ``before`` (and their dependency rows).

        The events a task's enqueue stored in a group move to rows of their own first:
        the event log outlives the task (its retention is ``delete_before``'s).
        """
        sql = self._q("delete_finished")
        db = await self._db()
        return int(await db.fetchval("deleting finished tasks", sql, ts(before)))

    async def watch_cancels(
        self,
        worker_id: str,
        held: Callable[[], Collection[str]],
        notice: Callable[[str], None],
    ) -> None:
        """Hear cancels on the backend's listening connection: a transition that takes a
        running task from its worker sends a ``NOTIFY`` in the same statement. While the
        listener is down, the held tasks are read instead, and once more when it is back
        (what was announced meanwhile is lost)."""
        db = await self._db()
        db.cancel_watchers[worker_id] = notice
        try:
            # Until the listener is open, cancels are not heard: look once it is.
            missed = True
            while True:
                if await db.listening():
                    if missed:
                        await self._look_at_held(worker_id, held, notice)
                        missed = False
                    await db.listener_lost()
                    missed = True
                else:
                    await asyncio.sleep(self.cancel_poll_interval)
                    await self._look_at_held(worker_id, held, notice)
        finally:
            db.cancel_watchers.pop(worker_id, None)

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when work may have arrived (a ``NOTIFY``), or after ``timeout``."""
        if timeout <= 0:
            return
        await (await self._db()).wait_for_work(timeout)


def _ack_arrays(acks: Sequence[Ack]) -> tuple[list[str], list[str], list[str], list[int]]:
    return (
        [ack.task_id for ack in acks],
        [ack.worker_id for ack in acks],
        [TaskStatus(ack.status).value for ack in acks],
        [0 if ack.ran else 1 for ack in acks],
    )


def _ack_flags(acks: Sequence[Ack], rows: Sequence[Sequence[Any]]) -> builtins.list[bool]:
    """Per ack, whether it took effect; an ack repeated in one batch took effect once."""
    done = {(row[1], row[2], row[0]) for row in rows}
    flags = []
    for ack in acks:
        key = (ack.worker_id, TaskStatus(ack.status).value, ack.task_id)
        flags.append(key in done)
        done.discard(key)
    return flags


def _result_arrays(
    results: Sequence[TaskResult],
) -> tuple[list[str], list[float | None], list[bytes]]:
    """The result columns; a task's last result in the batch wins (one row per task)."""
    latest = {result.task_id: result for result in results}
    return (
        list(latest),
        [None if r.expires_at is None else ts(r.expires_at) for r in latest.values()],
        [_ENCODER.encode(r) for r in latest.values()],
    )


# -- results ---------------------------------------------------------------------------


class AsyncPostgresResultStorage(_PostgresComponent, BaseResultStorage):
    """Task results on PostgreSQL; ``wait`` is woken by the ``NOTIFY`` of the write."""

    async def put_many(self, results: Sequence[TaskResult]) -> None:
        """Store (or replace) results in one statement, announcing them."""
        if not results:
            return
        sql = self._q("put_results")
        db = await self._db()
        await db.execute("storing results", sql, *_result_arrays(results), db.results_channel)

    async def get(self, task_id: str) -> TaskResult | None:
        """The stored result, or None (also once it expired)."""
        sql = self._q("get_result")
        db = await self._db()
        row = await db.fetchrow("reading a result", sql, task_id)
        if row is None:
            return None
        expires_ts, data = row
        if expires_ts is not None and expires_ts <= time.time():
            return None
        try:
            return _RESULT_DECODER.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StorageError(f"postgres: result of task {task_id} is corrupt: {exc}") from exc

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Wait for a result: woken by its ``NOTIFY``, with a periodic look as backstop."""
        db = await self._db()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # Listen before looking, so a result stored in between is not missed.
            future = await db.result_future(task_id)
            try:
                result = await self.get(task_id)
                remaining = deadline - loop.time()
                if result is not None or remaining <= 0:
                    return result
                pause = min(remaining, _RESULT_BACKSTOP)
                if future is None:
                    await asyncio.sleep(min(pause, 0.05))
                else:
                    await asyncio.wait({future}, timeout=pause)
            finally:
                if future is not None:
                    db.drop_result_future(task_id, future)

    async def delete_expired(self, now: datetime) -> int:
        """Delete results past their ``expires_at``."""
        sql = self._q("delete_expired_results")
        db = await self._db()
        return await db.execute("deleting expired results", sql, ts(now))


# -- events ------------------------------------------------------------------------------


class AsyncPostgresEventStorage(_PostgresComponent, BaseEventStorage):
    """The task event log on PostgreSQL (append-only, ordered by insertion)."""

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Append events in one statement, in order."""
        if not events:
            return
        sql = self._q("append_events")
        db = await self._db()
        await db.execute(
            "appending events",
            sql,
            [event.task_id for event in events],
            [ts(event.timestamp) for event in events],
            [_ENCODER.encode(event) for event in events],
        )

    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first."""
        sql = self._q("events_of_task")
        db = await self._db()
        events = []
        for event_id, data in await db.fetch("reading events", sql, task_id):
            try:
                event = _EVENT_DECODER.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                where = f"event {event_id}" if event_id else "an event of the enqueue's group"
                raise StorageError(f"postgres: {where} of task {task_id} is corrupt") from exc
            # An enqueue logs its events without the task id (see enqueue_uniform_logged).
            events.append(
                event if event.task_id else msgspec.structs.replace(event, task_id=task_id)
            )
        # Rows come in the order logged, but a deleted task's grouped events moved to rows
        # logged after its later ones. The sort is stable: one time keeps the logged order.
        events.sort(key=lambda event: event.timestamp)
        return events

    async def delete_before(self, before: datetime) -> int:
        """Delete events older than ``before``; an event of a group counts once per task
        still pointing at it."""
        sql = self._q("delete_events_before")
        db = await self._db()
        return int(await db.fetchval("deleting events", sql, ts(before)))


# -- schedules ---------------------------------------------------------------------------


def _schedule_params(schedule: Schedule) -> tuple[Any, ...]:
    next_ts = None if schedule.next_run_at is None else ts(schedule.next_run_at)
    return (schedule.id, next_ts, schedule.paused, _ENCODER.encode(schedule))


def _schedule(schedule_id: str, data: bytes) -> Schedule:
    try:
        return _SCHEDULE_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"postgres: schedule {schedule_id} is corrupt: {exc}") from exc


class AsyncPostgresScheduleStorage(_PostgresComponent, BaseScheduleStorage):
    """Schedules on PostgreSQL; a tick is claimed under a row lock (``FOR UPDATE``)."""

    async def upsert(self, schedule: Schedule) -> None:
        """Insert or replace the schedule with this id."""
        db = await self._db()
        await db.execute(
            "storing a schedule", self._q("upsert_schedule"), *_schedule_params(schedule)
        )

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        sql = self._q("get_schedule")
        db = await self._db()
        data = await db.fetchval("reading a schedule", sql, schedule_id)
        return None if data is None else _schedule(schedule_id, data)

    async def list(self) -> builtins.list[Schedule]:
        """All schedules, by id."""
        sql = self._q("list_schedules")
        db = await self._db()
        return [_schedule(row[0], row[1]) for row in await db.fetch("listing schedules", sql)]

    async def delete(self, schedule_id: str) -> bool:
        """Remove a schedule; False if it did not exist."""
        sql = self._q("delete_schedule")
        db = await self._db()
        return await db.execute("deleting a schedule", sql, schedule_id) > 0

    async def update(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule | None:
        """Apply field changes under the row's lock; None if the schedule is unknown."""
        lock, put = self._q("lock_schedule"), self._q("upsert_schedule")

        async def update(conn: asyncpg.Connection) -> Schedule | None:
            data = await conn.fetchval(lock, schedule_id)
            if data is None:
                return None
            schedule = msgspec.structs.replace(_schedule(schedule_id, data), **dict(changes))
            await conn.execute(put, *_schedule_params(schedule))
            return schedule

        return await (await self._db()).transaction("updating a schedule", update)

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[Schedule]:
        """Unpaused schedules due at or before ``now``, earliest first."""
        sql = self._q("due_schedules")
        db = await self._db()
        rows = await db.fetch("reading due schedules", sql, ts(now), limit)
        return [_schedule(row[0], row[1]) for row in rows]

    async def advance(
        self,
        schedule_id: str,
        *,
        expected_next_run_at: datetime,
        next_run_at: datetime | None,
        last_run_at: datetime,
    ) -> bool:
        """Claim one tick: a compare-and-set on ``next_run_at`` under the row's lock."""
        lock, put = self._q("lock_schedule"), self._q("upsert_schedule")

        async def advance(conn: asyncpg.Connection) -> bool:
            data = await conn.fetchval(lock, schedule_id)
            if data is None:
                return False
            schedule = _schedule(schedule_id, data)
            if schedule.next_run_at is None or schedule.next_run_at != expected_next_run_at:
                return False
            new = msgspec.structs.replace(
                schedule, next_run_at=next_run_at, last_run_at=last_run_at, runs=schedule.runs + 1
            )
            await conn.execute(put, *_schedule_params(new))
            return True

        return await (await self._db()).transaction("advancing a schedule", advance)


PostgresQueue = sync_twin(AsyncPostgresQueue, "PostgresQueue")
PostgresResultStorage = sync_twin(AsyncPostgresResultStorage, "PostgresResultStorage")
PostgresEventStorage = sync_twin(AsyncPostgresEventStorage, "PostgresEventStorage")
PostgresScheduleStorage = sync_twin(AsyncPostgresScheduleStorage, "PostgresScheduleStorage")
