"""What changes a task once it is stored: every change a compare-and-set on its key's
revision, so of two writers racing for a task (a cancel and a finish, two workers after
a lease ran out) exactly one lands.

:class:`TaskRecords` is the part of :class:`~omniq.storage.nats.AsyncNATSQueue` that
reads and rewrites one task's record: renewals, acks, retries, releases, transitions,
the purge of finished tasks, and the finish of a batch. When the result storage is this
backend's on the same connection, a finished task's result rides in the compare-and-set
that ends it (:meth:`TaskRecords._finish_together`): the final status and the result are
one write, so a task is never final without its result, nor its result stored for a run
that lost its task; :class:`~omniq.storage.nats.AsyncNATSResultStorage` reads it there.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Collection, Sequence
from datetime import datetime

import msgspec

from omniq.decisions import cancelled_result
from omniq.errors import StorageError
from omniq.models import Task, TaskStatus, utcnow
from omniq.storage._component import Finished
from omniq.storage.base import (
    Ack,
    BaseEventStorage,
    BaseResultStorage,
    BaseTaskQueue,
    Finish,
    unreadable_task,
)
from omniq.storage.nats._base import (
    ENCODER,
    NATSComponent,
    Record,
    decode_record,
    dt_or_none,
    key_of,
    task_of,
    together,
    us,
)
from omniq.storage.nats._index import TaskIndex, index_of
from omniq.storage.nats._progress import purge_progress
from omniq.storage.nats.connection import NATSConnection
from omniq.storage.nats.events import (
    AsyncNATSEventStorage,
    decode_events,
    encode_events,
    groups_of,
    keep_events,
    publish_events,
)
from omniq.storage.nats.results import AsyncNATSResultStorage, keep_results

__all__ = ["CAS_TRIES", "FINAL", "RUNNING", "Change", "TaskRecords"]

FINAL = frozenset(
    {
        TaskStatus.COMPLETE.value,
        TaskStatus.FAILED.value,
        TaskStatus.CANCELLED.value,
        TaskStatus.EXPIRED.value,
    }
)
RUNNING = TaskStatus.RUNNING.value
#: Tries of one compare-and-set against other writers before giving up on it.
CAS_TRIES = 8
#: Bytes kept free under the server's max_payload for a record's other fields, the
#: subject and the headers, when judging whether a result fits in the task's record.
_HEADROOM = 1024

Change = Callable[[Record], Record | None]


class _Apart(Exception):
    """A result too large to ride in its task's record (see _finish_one)."""


class TaskRecords(NATSComponent, BaseTaskQueue):
    """The reads and compare-and-set writes of single task records (see the module)."""

    def _subject(self, task_id: str) -> str:
        return f"$KV.{self.connection.tasks_bucket}.{key_of(task_id)}"

    @property
    def _stream(self) -> str:
        return f"KV_{self.connection.tasks_bucket}"

    async def _index(self) -> TaskIndex:
        return await index_of(await self._conn())

    def _known_index(self) -> TaskIndex | None:
        """The index if this process already keeps one (a producer never starts it)."""
        index = self.connection.state.get("index")
        return index if isinstance(index, TaskIndex) and index.starting is not None else None

    async def _read(self, task_id: str) -> tuple[int, Record] | None:
        """The task's current revision and record, from the server."""
        conn = await self._conn()
        revision, data = await conn.get_last(self._stream, self._subject(task_id))
        if data is None:
            return None
        record = decode_record(data)
        if record is None:
            raise StorageError(f"nats: task {task_id} is corrupt: its record cannot be read")
        return revision, record

    def _task(self, task_id: str, record: Record) -> Task:
        try:
            return task_of(task_id, record)
        except StorageError as exc:
            return unreadable_task(
                task_id,
                str(exc),
                queue=record.queue,
                attempts=record.attempts,
                worker_id=record.worker,
                lease_expires_at=dt_or_none(record.lease),
                now=dt_or_none(record.updated or record.created) or utcnow(),
                status=TaskStatus(record.status),
            )

    async def _change(self, task_id: str, change: Change) -> tuple[int, Record] | None:
        """Apply ``change`` to the task with a compare-and-set (retried against other
        writers); the new revision and record, or None when ``change`` refuses the
        current record (None) or the task is unknown.

        Starts from the index when it knows the task; a refusal there is checked against
        the server before it counts (the index may not have heard of a change yet).
        """
        conn = await self._conn()
        index = self._known_index()
        current = index.records.get(task_id) if index is not None else None
        if current is not None and not current[1].body:
            current = None  # a finished task's slim copy: never written back
        fresh = current is None
        if current is None:
            current = await self._read(task_id)
        for _ in range(CAS_TRIES):
            if current is None:
                return None
            new = change(current[1])
            if new is None:
                if fresh:
                    return None
                current, fresh = await self._read(task_id), True
                continue
            data = ENCODER.encode(new)
            revision = await conn.cas(self._subject(task_id), self._stream, data, current[0])
            if revision is not None:
                if index is not None:
                    index.apply(task_id, revision, new)
                return revision, new
            current, fresh = await self._read(task_id), True
        raise StorageError(f"nats: task {task_id}: too many concurrent changes")

    async def renew(
        self, task_ids: Collection[str], worker_id: str, *, lease_seconds: float, now: datetime
    ) -> set[str]:
        """Extend the leases ``worker_id`` holds (a compare-and-set each, all at once)."""
        lease = us(now) + round(lease_seconds * 1_000_000)

        def renew(record: Record) -> Record | None:
            if record.status != RUNNING or record.worker != worker_id:
                return None
            return msgspec.structs.replace(record, lease=lease)

        ids = builtins.list(dict.fromkeys(task_ids))
        done = await asyncio.gather(*(self._change(task_id, renew) for task_id in ids))
        return {task_id for task_id, ok in zip(ids, done, strict=True) if ok is not None}

    async def ack_many(self, acks: Sequence[Ack], *, now: datetime) -> builtins.list[bool]:
        """Move each held task to its final status (a compare-and-set each, all at once)."""
        now_us = us(now)
        done = await together([self._change(ack.task_id, _ended(ack, now_us)) for ack in acks])
        return [outcome is not None for outcome in done]

    # -- finishing -----------------------------------------------------------------------

    def finishes_together(self, result_storage: BaseResultStorage) -> bool:
        """True when ``result_storage`` is this backend's on this same connection: a
        finished task's result then rides in the compare-and-set that ends it."""
        return isinstance(result_storage, AsyncNATSResultStorage) and self.shares_connection(
            result_storage
        )

    def finish_logs_events(self, event_storage: BaseEventStorage) -> bool:
        """True when ``event_storage`` is this backend's on this same connection: the
        events a worker logs as it finishes a task then ride in the same write."""
        return isinstance(event_storage, AsyncNATSEventStorage) and self.shares_connection(
            event_storage
        )

    async def _finish_together(
        self, items: Sequence[Finish], log_events: bool, now: datetime
    ) -> Finished:
        """End each task its worker still holds with one compare-and-set that writes its
        final status, its result and (``log_events``) its events together, all in flight
        at once; then the dependents of those that ended.

        One write per task instead of three (a result, the ack, the events), with the
        guarantees of a transaction: of a cancel and a finish racing, the one whose
        compare-and-set lands wins, with its result and events; a worker that dies
        before the write leaves the task running, and its lease hands it to another.
        A result too large to share the record with the task is stored first, then the
        task acknowledged, then its events logged, as for components elsewhere.
        """
        conn = await self._conn()
        now_us = us(now)
        room = conn.max_payload - _HEADROOM
        acked = await together(
            [self._finish_one(conn, item, now_us, room, log_events) for item in items]
        )
        ids = [item.ack.task_id for item, ok in zip(items, acked, strict=True) if ok]
        return acked, (await self.dependents_many(ids) if ids else {})

    async def _finish_one(
        self, conn: NATSConnection, item: Finish, now_us: int, room: int, log_events: bool
    ) -> bool:
        result = ENCODER.encode(item.result)
        events = encode_events(item.events) if log_events and item.events else b""
        try:
            ended = await self._change(
                item.ack.task_id, _ended(item.ack, now_us, result, events, room)
            )
        except _Apart:
            return await self._finish_apart(conn, item, now_us, log_events)
        return ended is not None

    async def _finish_apart(
        self, conn: NATSConnection, item: Finish, now_us: int, log_events: bool
    ) -> bool:
        """The result in the results bucket, then the ack, then the events; a cancel
        that won meanwhile gets its own result written back (what BaseTaskQueue.finish
        does for components elsewhere)."""
        subject = f"$KV.{conn.results_bucket}.{key_of(item.ack.task_id)}"
        await conn.publish(subject, ENCODER.encode(item.result))
        ended = await self._change(item.ack.task_id, _ended(item.ack, now_us))
        if ended is None:
            task = await self.get(item.ack.task_id)
            if task is not None and task.status is TaskStatus.CANCELLED:
                verdict = cancelled_result(task, now=task.updated_at or task.created_at)
                await conn.publish(subject, ENCODER.encode(verdict))
        elif log_events and item.events:
            await publish_events(conn, groups_of(item.events))
        return ended is not None

    async def retry(self, task_id: str, worker_id: str, *, due_at: datetime, now: datetime) -> bool:
        """Move a held task to ``RETRYING``, due at ``due_at``."""
        due, now_us = us(due_at), us(now)

        def retry(record: Record) -> Record | None:
            if record.status != RUNNING or record.worker != worker_id:
                return None
            return msgspec.structs.replace(
                record, status=TaskStatus.RETRYING.value, due=due, lease=0, updated=now_us
            )

        return await self._change(task_id, retry) is not None

    async def release(self, task_ids: Collection[str], worker_id: str, *, now: datetime) -> int:
        """Hand back held tasks, giving back the attempt their claim counted."""
        now_us = us(now)

        def release(record: Record) -> Record | None:
            if record.status != RUNNING or record.worker != worker_id:
                return None
            status = TaskStatus.RETRYING if record.attempts > 1 else TaskStatus.PENDING
            return msgspec.structs.replace(
                record,
                status=status.value,
                attempts=max(record.attempts - 1, 0),
                lease=0,
                worker=None,
                updated=now_us,
            )

        ids = builtins.list(dict.fromkeys(task_ids))
        done = await asyncio.gather(*(self._change(task_id, release) for task_id in ids))
        return sum(outcome is not None for outcome in done)

    async def transition(
        self,
        task_id: str,
        *,
        from_statuses: Collection[TaskStatus],
        to_status: TaskStatus,
        now: datetime,
        due_at: datetime | None = None,
    ) -> Task | None:
        """Compare-and-set the task's status (the lease cleared; ``due_at`` replaces the
        due time when given)."""
        allowed = {TaskStatus(status).value for status in from_statuses}
        target, now_us = TaskStatus(to_status).value, us(now)
        due = None if due_at is None else us(due_at)

        def move(record: Record) -> Record | None:
            if record.status not in allowed:
                return None
            return msgspec.structs.replace(
                record,
                status=target,
                lease=0,
                updated=now_us,
                due=record.due if due is None else due,
            )

        outcome = await self._change(task_id, move)
        return None if outcome is None else self._task(task_id, outcome[1])

    async def delete_finished(self, before: datetime) -> int:
        """Purge the tasks in a final state last changed before ``before``. A result
        and events that rode in a purged task's record are first moved to the results
        bucket (unless expired) and the event stream: they outlive their tasks, as on
        every backend."""
        index = await self._index()
        await index.catch_up()
        cutoff = us(before)
        doomed = [
            (ident, bool(record.result or record.events))
            for ident, (_, record) in index.records.items()
            if record.status in FINAL and (record.updated or record.created) < cutoff
        ]
        conn = await self._conn()
        carrying = [ident for ident, carries in doomed if carries]
        riding = [
            (ident, found)
            for ident, found in zip(
                carrying, await together([self._read(ident) for ident in carrying]), strict=True
            )
            if found is not None
        ]
        await keep_results(
            conn, [(ident, record.result) for ident, (_, record) in riding if record.result]
        )
        await keep_events(
            conn,
            [
                (key_of(ident), revision, record.events)
                for ident, (revision, record) in riding
                if record.events
            ],
        )
        bucket = conn.tasks_bucket
        await asyncio.gather(*(conn.purge_key(bucket, key_of(ident)) for ident, _ in doomed))
        await purge_progress(conn, [ident for ident, _ in doomed])
        await index.catch_up()  # the purge markers, heard back, take the tasks out
        return len(doomed)


def _ended(
    ack: Ack, now_us: int, result: bytes | None = None, events: bytes = b"", room: int = 0
) -> Change:
    """The change that ends a task its worker still holds: its final status, and when
    given ``result`` (an encoded TaskResult) and ``events`` (encoded as an event message)
    riding in the record (added to the events an earlier run left there). Raises _Apart
    when the record would grow past ``room`` bytes with them."""
    status = TaskStatus(ack.status).value

    def change(record: Record) -> Record | None:
        if record.status != RUNNING or record.worker != ack.worker_id:
            return None
        attempts = record.attempts if ack.ran else max(record.attempts - 1, 0)
        if result is None:
            return msgspec.structs.replace(
                record, status=status, lease=0, updated=now_us, attempts=attempts
            )
        if len(result) + len(events) + _size(record) > room:
            raise _Apart
        riding = record.events
        if events:
            riding = (
                encode_events([*decode_events(record.events), *decode_events(events)])
                if record.events
                else events
            )
        return msgspec.structs.replace(
            record,
            status=status,
            lease=0,
            updated=now_us,
            attempts=attempts,
            result=result,
            events=riding,
        )

    return change


def _size(record: Record) -> int:
    """About the bytes of ``record`` encoded (over, never under, for its variable parts)."""
    return (
        len(record.body)
        + sum(len(dep) + 5 for dep in record.deps)
        + len(record.queue)
        + len(record.worker or "")
        + len(record.events)
        + 128
    )
