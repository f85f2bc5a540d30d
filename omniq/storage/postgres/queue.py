"""The task queue on PostgreSQL.

Each operation is one statement, so one round trip and its own transaction: batches travel
as arrays (``unnest``), the writes that belong together are data-modifying CTEs of one
statement, and the ``NOTIFY`` that wakes workers commits with the write it announces.
Claims lock their rows with ``FOR UPDATE SKIP LOCKED``: concurrent workers never wait on
each other and never take the same task. The events of a batch whose tasks log the same
ones (an ``enqueue_many`` on the same connection) are stored once, as an event group its
tasks point at (see ``sql/0003_event_groups.sql``). The statements are in
``sql/queries.sql``, by name.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import operator
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from omniq._limits import Gate, Limit, LimitedClaim
from omniq._sync import StorageTwin, blocking
from omniq.errors import StorageError
from omniq.models import Progress, Task, TaskEvent, TaskStatus
from omniq.storage._component import Finished, QueueComponent
from omniq.storage._rows import (
    counts_by_queue,
    decode_progress,
    dt,
    encode_progress,
    ts,
    unreadable_from_row,
)
from omniq.storage.base import Ack, Finish, UnreadableTask, event_fields_but_task_id, event_of
from omniq.storage.postgres._base import ENCODER, task_of_row
from omniq.storage.postgres._fleet import PostgresFleet
from omniq.storage.postgres._limits import (
    claim_limited,
    guarded_claims,
    limit_statements,
    name_limited_tasks,
)
from omniq.storage.postgres.connection import PostgresConnection
from omniq.storage.postgres.events import AsyncPostgresEventStorage
from omniq.storage.postgres.results import AsyncPostgresResultStorage, result_arrays

__all__ = ["AsyncPostgresQueue", "PostgresQueue"]

logger = logging.getLogger("omniq")

_CLAIMABLE_TARGETS = frozenset({TaskStatus.PENDING, TaskStatus.RETRYING, TaskStatus.SCHEDULED})
# The columns of a task row (omniq/storage/_rows.py), which transition's row starts with.
_TASK_WIDTH = 11


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
    encode = ENCODER.encode
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
    encode = ENCODER.encode
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


class AsyncPostgresQueue(PostgresFleet, QueueComponent[PostgresConnection]):
    """The task queue on PostgreSQL.

    ``wait`` is woken by ``NOTIFY`` from any client of the database, within a
    round trip of the enqueue's commit.

    Example::

        async with AsyncPostgresQueue("postgresql://postgres@127.0.0.1/app") as queue:
            await queue.enqueue([Task(id="t1", func="app.tasks:send")])
            tasks = await queue.claim(["default"], "w1", limit=8, lease_seconds=30, now=utcnow())
    """

    notifies = True
    result_storage_class = AsyncPostgresResultStorage
    event_storage_class = AsyncPostgresEventStorage
    enqueues_with_events = True

    async def enqueue(self, tasks: Sequence[Task]) -> builtins.list[str]:
        """Store ``tasks`` (existing ids are left unchanged): one statement, one
        transaction, whatever the batch size."""
        return await self._enqueue_with_events(tasks, None)

    async def _enqueue_with_events(
        self, tasks: Sequence[Task], events: Sequence[Sequence[TaskEvent]] | None
    ) -> builtins.list[str]:
        """Tasks and the events of the new ones in the same statement."""
        if not tasks:
            return []
        db = await self._conn()
        # An id repeated in the batch is stored (and logged) as its first occurrence.
        first: dict[str, int] = {}
        for index, task in enumerate(tasks):
            first.setdefault(task.id, index)
        unique = [tasks[index] for index in first.values()]
        logged = [events[index] for index in first.values()] if events else None
        execute: Callable[..., Awaitable[Any]] = db.execute
        if (named := name_limited_tasks(unique)) is not None:
            execute = self._enqueuing_limited(db, named)
        uniform = _uniform_args(unique, logged)
        if uniform is not None:
            name, args = uniform
            await execute("enqueueing", db.sql[name], *args, db.work_channel)
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
                event_data.append(ENCODER.encode(event))
        await execute(
            "enqueueing",
            db.sql["enqueue"],
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
        db = await self._conn()
        name = "claim_one" if one else "claim_in_list_order" if strict else "claim_any"
        rows = await db.fetch(
            "claiming tasks",
            guarded_claims(db.schema, db.sql)[name],
            names[0] if one else names,
            now_ts,
            limit,
            worker_id,
            now_ts + lease_seconds,
        )
        gate = None
        if rows and rows[-1][0] is None:  # limits are stored: claim under them
            rows, gate = await self._claim_limited(db, names, strict, limit, now_ts,
                                                   worker_id, now_ts + lease_seconds)  # fmt: skip
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
        if gate is not None and gate.held:
            return LimitedClaim(claimed, None if gate.until is None else dt(gate.until))
        return claimed

    async def _task_or_unreadable(self, db: PostgresConnection, row: Sequence[Any]) -> Task:
        """The row's task, or, when its record cannot be decoded, an UnreadableTask of
        what the columns say: one bad record must neither block claims nor hide a
        listing."""
        try:
            return task_of_row(row)
        except StorageError as exc:
            queue = await db.fetchval(
                "reading a corrupt task's queue", db.sql["queue_of_task"], row[0]
            )
            return unreadable_from_row(row, str(exc), queue)

    async def renew(
        self, task_ids: Collection[str], worker_id: str, *, lease_seconds: float, now: datetime
    ) -> set[str]:
        """Extend the leases ``worker_id`` still holds (one statement for all)."""
        if not task_ids:
            return set()
        now_ts = ts(now)
        db = await self._conn()
        sql = db.sql["renew"]
        rows = await db.fetch(
            "renewing leases", sql, now_ts + lease_seconds, now_ts, list(task_ids), worker_id
        )
        return {row[0] for row in rows}

    async def ack_many(self, acks: Sequence[Ack], *, now: datetime) -> builtins.list[bool]:
        """Finish the tasks still held by their workers, in one statement."""
        if not acks:
            return []
        db = await self._conn()
        rows = await db.fetch("acknowledging tasks", db.sql["ack"], *_ack_arrays(acks), ts(now))
        return _ack_flags(acks, rows)

    async def _finish_together(
        self, items: Sequence[Finish], log_events: bool, now: datetime
    ) -> Finished:
        """Acks with the results and events of the tasks they finished, in one statement;
        then the dependents of the finished tasks."""
        acks = [item.ack for item in items]
        events = [e for item in items for e in item.events] if log_events else []
        db = await self._conn()
        rows = await db.fetch(
            "finishing tasks",
            db.sql["finish"],
            *_ack_arrays(acks),
            ts(now),
            *result_arrays([item.result for item in items]),
            [event.task_id for event in events],
            [ts(event.timestamp) for event in events],
            [ENCODER.encode(event) for event in events],
            db.results_channel,
        )
        flags = _ack_flags(acks, [row for row in rows if row[0] is not None])
        done = [ack.task_id for ack, ok in zip(acks, flags, strict=True) if ok]
        return flags, (await self.dependents_many(done) if done else {})

    async def retry(self, task_id: str, worker_id: str, *, due_at: datetime, now: datetime) -> bool:
        """Move a held task to ``RETRYING``, due at ``due_at``."""
        db = await self._conn()
        sql = db.sql["retry"]
        rows = await db.fetch(
            "retrying", sql, ts(due_at), ts(now), task_id, worker_id, db.work_channel
        )
        return bool(rows)

    async def release(self, task_ids: Collection[str], worker_id: str, *, now: datetime) -> int:
        """Hand back held tasks, giving back the attempt their claim counted."""
        if not task_ids:
            return 0
        db = await self._conn()
        sql = db.sql["release"]
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
        statuses = {TaskStatus(s) for s in from_statuses}
        db = await self._conn()
        # A task taken from its worker (a cancel) is announced on the cancel channel, so
        # that worker stops it at once (see watch_cancels).
        row = await db.fetchrow(
            "changing a task's status",
            db.sql["transition"],
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
        return None if row is None else task_of_row(tuple(row)[:_TASK_WIDTH])

    async def get(self, task_id: str) -> Task | None:
        """The task as stored, or None."""
        return (await self.get_many([task_id]))[0]

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task | None]:
        """Several tasks in one query, in order (None for unknown ids)."""
        if not task_ids:
            return []
        db = await self._conn()
        sql = db.sql["get_tasks"]
        rows = await db.fetch("reading tasks", sql, list(task_ids))
        found = {row[1]: task_of_row(row) for row in rows}
        return [found.get(task_id) for task_id in task_ids]

    async def list(
        self, *, queue: str | None = None, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Tasks, newest first, filtered by queue and status."""
        db = await self._conn()
        sql = db.sql["list_tasks"]
        rows = await db.fetch(
            "listing tasks", sql, queue, None if status is None else TaskStatus(status).value, limit
        )
        return [await self._task_or_unreadable(db, row) for row in rows]

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts per queue and status."""
        db = await self._conn()
        sql = db.sql["count_tasks"]
        return counts_by_queue(await db.fetch("counting tasks", sql))

    async def dependents_many(self, task_ids: Sequence[str]) -> dict[str, builtins.list[Task]]:
        """Dependents of several tasks in one query."""
        if not task_ids:
            return {}
        db = await self._conn()
        sql = db.sql["dependents"]
        found: dict[str, builtins.list[Task]] = {}
        for row in await db.fetch("reading dependents", sql, list(task_ids)):
            found.setdefault(row[0], []).append(task_of_row(tuple(row)[1:]))
        return found

    async def next_due_at(self, queues: Sequence[str]) -> datetime | None:
        """The earliest ready time (due time or lease expiry) in ``queues``."""
        if not queues:
            return None
        db = await self._conn()
        sql = db.sql["next_due"]
        earliest = await db.fetchval("reading due times", sql, list(dict.fromkeys(queues)))
        return None if earliest is None else dt(earliest)

    async def delete_finished(self, before: datetime) -> int:
        """Delete finished tasks last updated before ``before`` (and their dependency rows).

        The events a task's enqueue stored in a group move to rows of their own first:
        the event log outlives the task (its retention is ``delete_before``'s).
        """
        db = await self._conn()
        sql = db.sql["delete_finished"]
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
        db = await self._conn()
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
        await (await self._conn()).wait_for_work(timeout)

    async def set_progress(self, updates: Mapping[str, Progress]) -> None:
        """Store tasks' progress (table ``task_progress``) in one statement."""
        if not updates:
            return
        db = await self._conn()
        data = [encode_progress(progress) for progress in updates.values()]
        await db.execute("storing progress", db.sql["set_progress"], list(updates), data)

    async def get_progress(self, task_ids: Sequence[str]) -> dict[str, Progress]:
        """The progress of ``task_ids`` in one query."""
        if not task_ids:
            return {}
        db = await self._conn()
        rows = await db.fetch("reading progress", db.sql["get_progress"], list(task_ids))
        found = {row[0]: decode_progress(row[1]) for row in rows}
        return {task_id: progress for task_id, progress in found.items() if progress is not None}

    # -- limits (postgres/_limits.py) --------------------------------------------------

    async def set_limit(self, key: str, limit: Limit | None) -> None:
        """Store (None: remove) the limit of ``key``; claims apply it from now on."""
        db = await self._conn()
        lq = limit_statements(db.schema)
        if limit is None:
            await db.execute("removing a limit", lq["drop_limit"], key)
        else:
            await db.execute("storing a limit", lq["set_limit"], key, limit.encode())
        await db.execute("waking workers", "SELECT pg_notify($1, '')", db.work_channel)

    async def get_limits(self) -> dict[str, Limit]:
        """The limits stored, by key."""
        db = await self._conn()
        rows = await db.fetch("reading limits", limit_statements(db.schema)["limits"])
        return {row[0]: Limit.decode(row[1]) for row in rows}

    async def register_task_limits(self, limits: Mapping[str, Limit]) -> None:
        """Note the limits of task names before tasks carrying them are stored."""
        db = await self._conn()
        keys, lq = list(limits), limit_statements(db.schema)
        specs = [limits[key].encode() for key in keys]
        await db.execute("storing task limits", lq["set_limits"], keys, specs)

    def _enqueuing_limited(
        self, db: PostgresConnection, named: tuple[builtins.list[str], builtins.list[str]]
    ) -> Callable[..., Awaitable[Any]]:
        """An ``execute`` for an enqueue of tasks carrying limits: the enqueue statement,
        then their names on their rows, in one transaction (no claim sees them unnamed)."""
        lq = limit_statements(db.schema)
        naming = lq["name_tasks"]

        async def execute(doing: str, sql: str, *args: Any) -> None:
            async def both(conn: asyncpg.Connection) -> None:
                await conn.execute(sql, *args)
                await conn.execute(naming, *named)

            await db.transaction(doing, both)

        return execute

    async def _claim_limited(
        self,
        db: PostgresConnection,
        names: Sequence[str],
        strict: bool,
        limit: int,
        now: float,
        worker_id: str,
        lease_until: float,
    ) -> tuple[builtins.list[Any], Gate]:
        """The claim under limits, in one transaction (postgres/_limits.py)."""
        lq = limit_statements(db.schema)

        async def claim(conn: asyncpg.Connection) -> tuple[builtins.list[Any], Gate]:
            return await claim_limited(
                conn, lq, db.schema, names, strict=strict, limit=limit, now=now,
                worker_id=worker_id, lease_until=lease_until,
            )  # fmt: skip

        return await db.transaction("claiming tasks under limits", claim)


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


class PostgresQueue(StorageTwin[AsyncPostgresQueue]):
    """Blocking twin of :class:`AsyncPostgresQueue`: the same methods, without ``await``."""

    async_class = AsyncPostgresQueue
    ack = blocking(AsyncPostgresQueue.ack)
    ack_many = blocking(AsyncPostgresQueue.ack_many)
    claim = blocking(AsyncPostgresQueue.claim)
    delete_finished = blocking(AsyncPostgresQueue.delete_finished)
    dependents = blocking(AsyncPostgresQueue.dependents)
    dependents_many = blocking(AsyncPostgresQueue.dependents_many)
    enqueue = blocking(AsyncPostgresQueue.enqueue)
    enqueue_logged = blocking(AsyncPostgresQueue.enqueue_logged)
    finish = blocking(AsyncPostgresQueue.finish)
    get = blocking(AsyncPostgresQueue.get)
    get_many = blocking(AsyncPostgresQueue.get_many)
    list = blocking(AsyncPostgresQueue.list)
    next_due_at = blocking(AsyncPostgresQueue.next_due_at)
    release = blocking(AsyncPostgresQueue.release)
    renew = blocking(AsyncPostgresQueue.renew)
    retry = blocking(AsyncPostgresQueue.retry)
    stats = blocking(AsyncPostgresQueue.stats)
    transition = blocking(AsyncPostgresQueue.transition)
    wait = blocking(AsyncPostgresQueue.wait)
    wait_and_claim = blocking(AsyncPostgresQueue.wait_and_claim)
    watch_cancels = blocking(AsyncPostgresQueue.watch_cancels)
    requeue = blocking(AsyncPostgresQueue.requeue)
    register_worker = blocking(AsyncPostgresQueue.register_worker)
    deregister_worker = blocking(AsyncPostgresQueue.deregister_worker)
    list_workers = blocking(AsyncPostgresQueue.list_workers)
    set_progress = blocking(AsyncPostgresQueue.set_progress)
    get_progress = blocking(AsyncPostgresQueue.get_progress)
    set_limit = blocking(AsyncPostgresQueue.set_limit)
    register_task_limits = blocking(AsyncPostgresQueue.register_task_limits)
    get_limits = blocking(AsyncPostgresQueue.get_limits)
