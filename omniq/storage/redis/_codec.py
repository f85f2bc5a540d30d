"""How the Redis components encode records and script arguments, and decode the
scripts' replies (the key layout is described in :mod:`omniq.storage.redis`)."""

from __future__ import annotations

import builtins
import operator
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from omniq.errors import StorageError
from omniq.models import Task, TaskEvent, TaskStatus
from omniq.storage.base import Ack, Finish, event_fields_but_task_id

_ENCODER = msgspec.msgpack.Encoder()
_TASK_DECODER = msgspec.msgpack.Decoder(Task)
_STATUSES = {status.value.encode(): status for status in TaskStatus}
_ALL_STATUSES = tuple(status.value for status in TaskStatus)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

#: Results of ``wait`` keep their wake-up token this long at most (milliseconds).
_RESULT_TOKEN_MS = 60_000


def _us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_US


def _dt(us: bytes | str | int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def _sortkey(us: int) -> str:
    """A time as the fixed-width string that orders event entries."""
    return f"{max(us, 0):016d}"


def _sortms(us: int) -> str:
    """A time as the fixed-width millisecond prefix of a ready-set member."""
    return f"{max(us, 0) // 1000:013d}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ack_args(acks: Sequence[Ack], now: datetime) -> builtins.list[Any]:
    args: builtins.list[Any] = [_us(now)]
    for ack in acks:
        args += (ack.task_id, ack.worker_id, TaskStatus(ack.status).value, 1 if ack.ran else 0)
    return args


def _finish_args(items: Sequence[Finish], now: datetime, *, log_events: bool) -> builtins.list[Any]:
    """``finish.lua``'s arguments (after the prefix)."""
    args: builtins.list[Any] = [_us(now), _RESULT_TOKEN_MS, 1 if log_events else 0]
    for ack, result, events in items:
        expires = "" if result.expires_at is None else _us(result.expires_at)
        args += (
            ack.task_id,
            ack.worker_id,
            TaskStatus(ack.status).value,
            1 if ack.ran else 0,
            _ENCODER.encode(result),
            expires,
        )
        if log_events and events:
            args.append(len(events))
            args += map(_event_item, events)
        else:
            args.append(0)
    return args


#: What a damaged record or field can raise while it is decoded: a wrong type or shape
#: (msgspec), a number that is not one or out of range, an unknown status. Found by
#: fuzzing (tests/unit/test_record_decoders.py).
_DAMAGE = (msgspec.DecodeError, ValueError, TypeError, KeyError, OverflowError, OSError)


def _corrupt(task_id: bytes | str, exc: BaseException) -> StorageError:
    name = task_id.decode(errors="replace") if isinstance(task_id, bytes) else str(task_id)
    return StorageError(f"redis: task {name}: its stored record is corrupt: {exc}")


def _decode_task(
    task_id: bytes | str,
    data: bytes,
    status: bytes,
    attempts: bytes | int,
    worker: bytes,
    lease: bytes,
    due: bytes,
    updated: bytes,
    lost: bytes = b"",
) -> Task:
    """A stored task: the record as enqueued with the mutable fields applied.

    Whatever the hash holds, a damaged record or field raises StorageError, never
    anything else (anyone who can write to the server can write it).
    """
    try:
        base = _TASK_DECODER.decode(data)
        updated_at = base.updated_at
        # No `u` (a task as enqueued, since 0.2): the record's own time.
        if updated and int(updated) != _us(updated_at or base.created_at):
            updated_at = _dt(updated)
        return msgspec.structs.replace(
            base,
            id=_text(task_id),
            status=_STATUSES[status],
            attempts=int(attempts),
            lost_runs=int(lost or 0),
            worker_id=worker.decode() or None,
            lease_expires_at=_dt(lease) if lease else None,
            due_at=_dt(due) if due else None,
            updated_at=updated_at,
        )
    except _DAMAGE as exc:
        raise _corrupt(task_id, exc) from exc


def _claimed_task(
    task_id: bytes | str,
    data: bytes,
    attempts: bytes | int,
    due: bytes,
    lost: bytes | int,
    worker_id: str,
    now: datetime,
    lease_at: datetime,
) -> Task:
    """A task from a claim's reply, leased to ``worker_id``; a damaged record or field
    raises StorageError (the claim hands it out as an ``UnreadableTask``)."""
    try:
        base = _TASK_DECODER.decode(data)
        return msgspec.structs.replace(
            base,
            id=_text(task_id),
            status=TaskStatus.RUNNING,
            attempts=int(attempts),
            lost_runs=int(lost),
            worker_id=worker_id,
            lease_expires_at=lease_at,
            due_at=_dt(due) if due else None,
            updated_at=now,
        )
    except _DAMAGE as exc:
        raise _corrupt(task_id, exc) from exc


#: Items per task in the reply of a script that fetches tasks (``fetch()`` in common.lua).
_FETCHED = 9


def _decode_tasks(flat: Sequence[Any]) -> builtins.list[Task]:
    """Tasks from a script's flat reply of ``id, d, s, a, w, l, due, u, lr`` groups."""
    return [_decode_task(*flat[i : i + _FETCHED]) for i in range(0, len(flat), _FETCHED)]


#: The fields :func:`_shared_args` reads.
_shared_fields = operator.attrgetter(
    "queue", "priority", "status", "attempts", "worker_id", "lease_expires_at", "due_at",
    "updated_at", "created_at", "depends_on", "rate_limit", "max_concurrency", "func",
)  # fmt: skip


def _shared_args(task: Task) -> tuple[Any, ...]:
    """A task's ``enqueue.lua`` fields that the tasks after it may share (sent once)."""
    lease, due = task.lease_expires_at, task.due_at
    updated = task.updated_at or task.created_at
    return (
        task.queue,
        task.priority,
        task.status.value,
        task.attempts,
        task.worker_id or "",
        "" if lease is None else _us(lease),
        "" if due is None else _us(due),
        _us(updated),
        len(task.depends_on),
        *task.depends_on,
        # The name of a task carrying a limit (omniq._limits): its hash's `ln`.
        *((task.func,) if task.rate_limit is not None or task.max_concurrency is not None else ()),
    )


def _event_item(event: TaskEvent) -> bytes:
    """An event as stored in its task's list: a fixed-width time, then the record."""
    return b"%016d" % max(_us(event.timestamp), 0) + _ENCODER.encode(event)


class _EventGroups:
    """The events of one ``enqueue.lua`` call, stored once per group of tasks that log the
    same events apart from their ids (every task of a plain bulk enqueue: one group)."""

    def __init__(self) -> None:
        self.numbers: dict[tuple[Any, ...], int] = {}
        self.args: builtins.list[Any] = []
        # The list the task before logged, and its group: the tasks of a bulk enqueue
        # share one list (see ``enqueue_logged``), found here without building a key.
        self._last: tuple[Sequence[TaskEvent], int] = ((), 0)

    def number(self, events: Sequence[TaskEvent]) -> int:
        """The group of a task that logs ``events`` (0: none), added when new."""
        if not events:
            return 0
        last, found = self._last
        if events is last:
            return found
        key = tuple(map(event_fields_but_task_id, events))
        found = self.numbers.get(key) or 0
        if not found:
            found = self.numbers[key] = len(self.numbers) + 1
            self.args.append(len(events))
            self.args += [_event_item(msgspec.structs.replace(e, task_id="")) for e in events]
        self._last = (events, found)
        return found


def _parse_dependents(flat: Sequence[Any]) -> dict[str, builtins.list[Task]]:
    """The dependents script's reply: parents without dependents are omitted."""
    found: dict[str, builtins.list[Task]] = {}
    i = 0
    while i < len(flat):
        parent, count = _text(flat[i]), int(flat[i + 1])
        i += 2
        if count:
            found[parent] = _decode_tasks(flat[i : i + _FETCHED * count])
            i += _FETCHED * count
    return found
