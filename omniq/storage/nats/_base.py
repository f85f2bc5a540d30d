"""What the four NATS components share: their connection, key encoding, time encoding
and the task record."""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import msgspec

from omniq.config import Settings
from omniq.errors import StorageError
from omniq.models import Task, TaskStatus
from omniq.storage._component import Component
from omniq.storage.nats.connection import NATSConnection

__all__ = [
    "ENCODER",
    "NATSComponent",
    "Record",
    "decode_record",
    "dt",
    "dt_or_none",
    "ident_of",
    "key_of",
    "task_of",
    "together",
    "us",
]

T = TypeVar("T")

ENCODER = msgspec.msgpack.Encoder()
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def key_of(ident: str) -> str:
    """``ident`` (a task or schedule id) as a bucket key and subject token: itself when
    made of ``[A-Za-z0-9_-]``, else ``=`` and its URL-safe base64 (never ambiguous:
    ``=`` is not in the plain alphabet)."""
    # The plain alphabet's test without a regex (this runs for every write).
    if ident.isascii() and ident.replace("-", "").replace("_", "").isalnum():
        return ident
    if _SAFE_KEY.match(ident):  # "-" or "_" alone
        return ident
    return "=" + base64.urlsafe_b64encode(ident.encode()).decode().rstrip("=")


def ident_of(key: str) -> str:
    """The id :func:`key_of` encoded."""
    if not key.startswith("="):
        return key
    body = key[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def us(moment: datetime) -> int:
    """Microseconds since the epoch (exact; a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _US


def dt(micros: int) -> datetime:
    """The aware UTC datetime of :func:`us`."""
    return _EPOCH + timedelta(microseconds=micros)


class Record(msgspec.Struct, array_like=True, frozen=True):
    """A task as the tasks bucket holds it: the fields that change and those the index
    orders by, beside ``body``, the msgpack ``Task`` as enqueued (never rewritten).

    Times are microseconds since the epoch (0: none). ``seq`` is the enqueue order: 0
    until the first change, which writes the revision the task was created at.
    ``result`` is the msgpack ``TaskResult`` of the run that ended the task and
    ``events`` the events its worker logged with it (as an event message holds them),
    written in the same compare-and-set as its final status when the results (the
    events) are this backend's on the same connection; empty otherwise. Both come last,
    with defaults, so records written before they were added still decode, and older
    readers skip them.
    """

    queue: str
    priority: int
    status: str
    attempts: int
    lost: int
    worker: str | None
    lease: int
    due: int
    created: int
    updated: int
    seq: int
    deps: tuple[str, ...]
    body: bytes
    result: bytes = b""
    events: bytes = b""


_RECORD_DECODER = msgspec.msgpack.Decoder(Record)
_TASK_DECODER = msgspec.msgpack.Decoder(Task)
_STATUSES = {status.value: status for status in TaskStatus}


def record_of(task: Task) -> Record:
    """The record of a task being enqueued."""
    return Record(
        queue=task.queue,
        priority=task.priority,
        status=TaskStatus(task.status).value,
        attempts=task.attempts,
        lost=task.lost_runs,
        worker=task.worker_id,
        lease=0 if task.lease_expires_at is None else us(task.lease_expires_at),
        due=0 if task.due_at is None else us(task.due_at),
        created=us(task.created_at),
        updated=0 if task.updated_at is None else us(task.updated_at),
        seq=0,
        deps=tuple(task.depends_on),
        body=ENCODER.encode(task),
    )


def decode_record(data: bytes) -> Record | None:
    """The record in ``data``, or None when it is damaged beyond its order fields."""
    try:
        record = _RECORD_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return record if record.status in _STATUSES else None


#: What a damaged record can raise while it is turned into a task: a wrong type or shape
#: (msgspec), a time out of range (OverflowError, ValueError), an unknown status.
_DAMAGE = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    ValueError,
    TypeError,
    KeyError,
    OverflowError,
    OSError,
)


def task_of(task_id: str, record: Record) -> Task:
    """The task a record holds, with its current fields. Raises StorageError (naming the
    task) when the body or a field is damaged, and nothing else."""
    try:
        base = _TASK_DECODER.decode(record.body)
        return msgspec.structs.replace(
            base,
            status=_STATUSES[record.status],
            attempts=record.attempts,
            lost_runs=record.lost,
            worker_id=record.worker,
            lease_expires_at=dt(record.lease) if record.lease else None,
            due_at=dt(record.due) if record.due else None,
            updated_at=dt(record.updated) if record.updated else base.updated_at,
        )
    except _DAMAGE as exc:
        raise StorageError(f"nats: task {task_id} is corrupt: {exc}") from exc


async def together(aws: Sequence[Awaitable[T]]) -> list[T]:
    """``asyncio.gather``'s results, without its task for a single awaitable (one
    enqueue, claim or finish: a quiet queue's common case), which costs a loop turn on
    the way from the call to its request."""
    if len(aws) == 1:
        return [await aws[0]]
    return list(await asyncio.gather(*aws))


def dt_or_none(micros: int) -> datetime | None:
    """:func:`dt`, or None for 0 or a time out of range (a damaged record)."""
    try:
        return dt(micros) if micros else None
    except (OverflowError, ValueError):
        return None


class NATSComponent(Component[NATSConnection]):
    """A component on a :class:`NATSConnection`.

    Built alone, ``AsyncNATSQueue(url, settings, namespace=None)`` opens its own client;
    ``namespace`` (when given) wins over the URL's ``?namespace=`` and
    ``settings.namespace``. Built by :class:`~omniq.storage.nats.NATSBackend`, it shares
    the bundle's connection.
    """

    connection_class = NATSConnection

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        *,
        namespace: str | None = None,
        connection: NATSConnection | None = None,
    ) -> None:
        if connection is None and namespace is not None:
            settings = settings if settings is not None else Settings()
            target = self.default_url(settings) if url is None else url
            connection = NATSConnection(target, settings, namespace=namespace)
        super().__init__(url, settings, connection=connection)

    @classmethod
    def default_url(cls, settings: Settings) -> str:
        """``settings.nats_url``."""
        return settings.nats_url

    @property
    def namespace(self) -> str:
        """The namespace (before :func:`~omniq.storage.nats.connection.sanitize`)."""
        return self.connection.namespace
