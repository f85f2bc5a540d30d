"""Rows and records the backends share: the SQL backends' task and result rows, and the
decoding of a stored msgspec record.

The SQL backends (SQLite, PostgreSQL) keep a task as the msgspec record it was enqueued
as, plus columns for what changes while it lives. A task row is always selected as: seq,
id, status, priority, attempts, worker_id, lease_ts, due_ts, updated_ts, data, lost_runs;
a result row as: expires_ts, data. Times are epoch seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from omniq.errors import StorageError
from omniq.models import Progress, Task, TaskResult, TaskStatus
from omniq.storage.base import UnreadableTask, unreadable_task

__all__ = [
    "counts_by_queue",
    "decode_progress",
    "decode_record",
    "dt",
    "encode_progress",
    "result_from_row",
    "task_from_row",
    "ts",
    "unreadable_from_row",
]

R = TypeVar("R")

_TASK_DECODER = msgspec.msgpack.Decoder(Task)
_STATUSES = {status.value: status for status in TaskStatus}


def ts(moment: datetime) -> float:
    """Epoch seconds of ``moment`` (a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def dt(seconds: float) -> datetime:
    """The aware UTC datetime of epoch ``seconds``."""
    return datetime.fromtimestamp(seconds, UTC)


#: What a damaged record or column can raise while it is decoded: a wrong type or shape
#: (msgspec), a time out of range (ValueError, OverflowError, OSError from the C
#: library), an unknown status. Found by fuzzing (tests/unit/test_record_decoders.py).
_DAMAGE = (msgspec.DecodeError, ValueError, TypeError, KeyError, OverflowError, OSError)


def task_from_row(row: Sequence[Any], backend: str) -> Task:
    """A stored task: the record as enqueued, with the mutable columns applied.

    Raises StorageError (naming ``backend`` and the task) when the record or a column is
    damaged, and nothing else whatever the row holds.
    """
    _, task_id, status, _, attempts, worker_id, lease_ts, due_ts, updated_ts, data, lost = row
    try:
        base = _TASK_DECODER.decode(data)
        due_at = base.due_at
        if ts(due_at or base.created_at) != due_ts:
            due_at = dt(due_ts)
        updated_at = base.updated_at
        if ts(updated_at or base.created_at) != updated_ts:
            updated_at = dt(updated_ts)
        return msgspec.structs.replace(
            base,
            status=_STATUSES[status],
            attempts=attempts,
            lost_runs=lost,
            worker_id=worker_id,
            lease_expires_at=None if lease_ts is None else dt(lease_ts),
            due_at=due_at,
            updated_at=updated_at,
        )
    except _DAMAGE as exc:
        raise StorageError(
            f"{backend}: task {task_id}: its stored record is corrupt: {exc}"
        ) from exc


def unreadable_from_row(row: Sequence[Any], reason: str, queue: str) -> UnreadableTask:
    """A row whose record :func:`task_from_row` refused, as an :class:`UnreadableTask`
    (what a claim that leased it, or a listing, returns): the columns say the rest."""
    _, task_id, status, _, attempts, worker_id, lease_ts, _, updated_ts, _, _ = row
    return unreadable_task(
        task_id,
        reason,
        queue=queue,
        status=_STATUSES[status],
        attempts=attempts,
        worker_id=worker_id,
        lease_expires_at=None if lease_ts is None else dt(lease_ts),
        now=dt(updated_ts),
    )


def decode_record(decoder: msgspec.msgpack.Decoder[R], data: bytes, what: str) -> R:
    """A stored record decoded; StorageError ``"<what> is corrupt: <why>"`` when it cannot
    be (``what`` names the backend and the record)."""
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"{what} is corrupt: {exc}") from exc


def result_from_row(
    row: Sequence[Any] | None, decoder: msgspec.msgpack.Decoder[TaskResult], what: str
) -> TaskResult | None:
    """The result in a result row, or None for no row or a result past its ``expires_at``
    (``what`` names the backend and the result in the error for a corrupt record)."""
    if row is None:
        return None
    expires_ts, data = row
    if expires_ts is not None and expires_ts <= time.time():
        return None
    return decode_record(decoder, data, what)


def counts_by_queue(rows: Iterable[Sequence[Any]]) -> dict[str, dict[str, int]]:
    """``stats()`` from rows of (queue, status, count), zero counts left out."""
    counts: dict[str, dict[str, int]] = {}
    for queue, status, count in rows:
        if count:
            counts.setdefault(queue, {})[status] = count
    return counts


_PROGRESS_ENCODER = msgspec.msgpack.Encoder()
_PROGRESS_DECODER = msgspec.msgpack.Decoder(Progress)


def encode_progress(progress: Progress) -> bytes:
    """A task's progress as every backend stores it (msgpack)."""
    return _PROGRESS_ENCODER.encode(progress)


def decode_progress(data: bytes | bytearray | memoryview) -> Progress | None:
    """Stored progress decoded; None when it cannot be (progress is advisory: a damaged
    one must not make its task unreadable)."""
    try:
        return _PROGRESS_DECODER.decode(data)
    except (*_DAMAGE, msgspec.ValidationError):
        return None
