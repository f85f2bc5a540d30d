"""Names, records and wake-ups of the file backend (see ``omniq.storage.file`` for the layout)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec

from omniq.errors import StorageError
from omniq.models import FINAL_STATUSES, Task, TaskStatus
from omniq.storage.file._store import Change, Store

__all__ = [
    "LEASE_SLICE",
    "STATUS_CODES",
    "Entry",
    "Record",
    "WakeUps",
    "decode_record",
    "encode_record",
    "entry_dir",
    "entry_name",
    "from_us",
    "moved",
    "next_seq",
    "parse_entry",
    "record_path",
    "to_us",
    "token",
    "wake",
    "wake_ups",
    "with_entry",
]

_SAFE = re.compile(r"[A-Za-z0-9_\-]{1,100}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_US = 10**17 - 1
_PRIORITY_BIAS = 10**15

#: One digit per status, stored in entry names so listings can count without reading.
STATUS_CODES: dict[TaskStatus, str] = {
    TaskStatus.PENDING: "0",
    TaskStatus.SCHEDULED: "1",
    TaskStatus.RUNNING: "2",
    TaskStatus.RETRYING: "3",
    TaskStatus.COMPLETE: "4",
    TaskStatus.FAILED: "5",
    TaskStatus.CANCELLED: "6",
    TaskStatus.EXPIRED: "7",
}
STATUS_BY_CODE = {code: status for status, code in STATUS_CODES.items()}


def token(value: str) -> str:
    """A file-name-safe, deterministic stand-in for an id or a queue name.

    Short names of letters, digits, ``_`` and ``-`` stay as they are; anything else
    becomes ``~`` and a hash (the real value lives in the record).
    """
    if _SAFE.fullmatch(value):
        return value
    return "~" + hashlib.sha256(value.encode()).hexdigest()[:40]


def to_us(value: datetime) -> int:
    """Microseconds since the epoch, clamped to the 17 digits names hold."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return min(max(us, 0), _MAX_US)


def from_us(us: int) -> datetime:
    """The aware UTC datetime of ``us`` microseconds since the epoch."""
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


_seq_lock = threading.Lock()
_last_seq = 0


def next_seq() -> int:
    """Enqueue order: nanoseconds since the epoch, strictly increasing in this process."""
    global _last_seq
    with _seq_lock:
        _last_seq = max(time.time_ns(), _last_seq + 1)
        return _last_seq


class Record(msgspec.Struct, array_like=True):
    """A task as stored: the task, its enqueue order and the path of its index entry."""

    task: Task
    seq: int
    entry: str


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


def encode_record(record: Record) -> bytes:
    """The bytes of a record."""
    return _encoder.encode(record)


def decode_record(data: bytes) -> Record:
    """A record from its bytes; a damaged one raises StorageError."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise StorageError(f"file backend: a task record cannot be decoded: {exc}") from exc


def entry_dir(task: Task) -> str:
    """The index directory of a task in its current state."""
    status = task.status
    if status is TaskStatus.RUNNING:
        state = "running"
    elif status in FINAL_STATUSES:
        state = "done"
    elif status is TaskStatus.SCHEDULED and task.depends_on:
        state = "held"
    else:
        state = "ready"
    return f"{state}/{token(task.queue)}"


def entry_name(task: Task, seq: int) -> str:
    """The index entry's name: it sorts by priority, due time and enqueue order.

    ``<inverted priority>-<due us>-<seq>-<extra us>-<status><has due><nonce>-<id token>``,
    where extra is the lease expiry of a running task and the finish time of a final one.
    The nonce (creation time and random bits) makes every entry name unique, so an entry
    that went stale is never mistaken for a fresh one.
    """
    priority = _PRIORITY_BIAS - max(min(task.priority, _PRIORITY_BIAS - 1), 1 - _PRIORITY_BIAS)
    due = task.due_at or task.created_at
    if task.status is TaskStatus.RUNNING:
        extra = to_us(task.lease_expires_at) if task.lease_expires_at else 0
    elif task.status in FINAL_STATUSES:
        extra = to_us(task.updated_at or task.created_at)
    else:
        extra = 0
    nonce = f"{time.time_ns() // 1_000_000:011x}{int.from_bytes(os.urandom(3), 'big'):06x}"
    flags = STATUS_CODES[task.status] + ("1" if task.due_at is not None else "0")
    return (
        f"{priority:016d}-{to_us(due):017d}-{seq:020d}-{extra:017d}-{flags}{nonce}-{token(task.id)}"
    )


#: Where the extra time (lease expiry, finish time) sits in an entry name: after the
#: priority (16 digits), the due time (17) and the sequence (20), each with its dash.
LEASE_SLICE = slice(56, 73)


class Entry(NamedTuple):
    """What an index entry's name says about its task."""

    path: str
    key: str  # priority, due and seq: the claim order
    due_us: int
    has_due: bool
    seq: int
    extra_us: int
    status: TaskStatus
    created_ms: int
    token: str


def parse_entry(directory: str, name: str) -> Entry | None:
    """Read an entry name (None for a name that is not one)."""
    parts = name.split("-", 5)
    if len(parts) != 6:
        return None
    try:
        flags = parts[4]
        return Entry(
            path=f"{directory}/{name}",
            key=name[:55],
            due_us=int(parts[1]),
            has_due=flags[1] == "1",
            seq=int(parts[2]),
            extra_us=int(parts[3]),
            status=STATUS_BY_CODE[flags[0]],
            created_ms=int(flags[2:13], 16),
            token=parts[5],
        )
    except (ValueError, KeyError, IndexError):
        return None


def record_path(task_token: str) -> str:
    """Where a task's record lives, by its id's token."""
    return f"t/{task_token}"


def with_entry(task: Task, seq: int) -> tuple[bytes, str]:
    """The bytes of ``task``'s record and the path of the index entry it names."""
    entry = f"{entry_dir(task)}/{entry_name(task, seq)}"
    return encode_record(Record(task=task, seq=seq, entry=entry)), entry


def _scanned(entry: str) -> bool:
    return entry.startswith(("ready/", "running/"))


def moved(result: Any, task: Task, record: Record) -> Change[Any]:
    """The change that stores ``task`` and moves its entry from the record's old one.

    The entry moves before the record is written when its new place is one claims scan
    (ready/, running/), else after: either way a crash in between leaves the surviving
    entry where a claim finds it, and the claim then puts it where the record says.
    """
    data, entry = with_entry(task, record.seq)
    return Change(result, data, move=(record.entry, entry), move_first=_scanned(entry))


class WakeUps:
    """In-process wake-ups: enqueues on a tree wake every waiter on that tree.

    Waiters may sit on different event loops (sync twins run their own), so a wake-up
    is delivered with ``call_soon_threadsafe``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._generations: dict[str, int] = {}

    def generation(self, key: str) -> int:
        """How many wake-ups ``key`` has had (changes with every enqueue in this process)."""
        return self._generations.get(key, 0)

    def register(self, key: str) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        """A new waiter on ``key`` (remove it with :meth:`unregister`)."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(key, set()).add(waiter)
        return waiter

    def unregister(self, key: str, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        """Forget a waiter."""
        with self._lock:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[key]

    def notify(self, key: str) -> None:
        """Wake every waiter on ``key``."""
        with self._lock:
            self._generations[key] = self._generations.get(key, 0) + 1
            waiters = list(self._waiters.get(key, ()))
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(event.set)


WAKEUPS = WakeUps()


def wake(store: Store) -> None:
    """Wake the waiters on the store's tree: in this process, and in others where the
    store can signal them (local disk)."""
    WAKEUPS.notify(store.key)
    store.signal()


def _drain(fd: int) -> None:
    """Read every pending byte of a non-blocking descriptor."""
    with contextlib.suppress(OSError):  # BlockingIOError: empty
        while os.read(fd, 65536):
            pass


def _on_signal(fd: int, key: str) -> None:
    _drain(fd)
    # As an enqueue in this process would: also marks cached ready listings stale.
    WAKEUPS.notify(key)


@contextlib.contextmanager
def wake_ups(store: Store) -> Iterator[asyncio.Event]:
    """An event set when the store's tree changes: by :meth:`WakeUps.notify` in this
    process, and by :meth:`Store.signal` in another where the store can listen (local
    disk). Wake-ups from before the wait are dropped: the caller checks for work after
    entering, and only then waits on the event.
    """
    waiter = WAKEUPS.register(store.key)
    loop, event = waiter
    fd = store.listen()
    if fd is not None:
        _drain(fd)
        loop.add_reader(fd, _on_signal, fd, store.key)
    try:
        yield event
    finally:
        if fd is not None:
            loop.remove_reader(fd)
            os.close(fd)
        WAKEUPS.unregister(store.key, waiter)
