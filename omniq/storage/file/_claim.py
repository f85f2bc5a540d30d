"""How a claim of the file backend picks and takes tasks.

A claim lists the ready and running directories of its queues (names only: a name says
a task's order, due time and lease), then updates the records of the first candidates,
one atomic update each. What is here: the listing a claim shares with the claims that
overlap it, the sorted ready listing it reuses for a moment, the update that leases one
task, and what it does with an entry its record does not name (a leftover of a crash or
of a change in flight) or with a record that cannot be decoded.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import msgspec

from omniq.errors import StorageError
from omniq.models import Task, TaskStatus
from omniq.storage.base import UnreadableTask, unreadable_task
from omniq.storage.file._layout import (
    LEASE_SLICE,
    WAKEUPS,
    Entry,
    Record,
    decode_record,
    from_us,
    moved,
    parse_entry,
    record_path,
    to_us,
    token,
)
from omniq.storage.file._store import Change, Store

__all__ = [
    "INFLIGHT",
    "STALE",
    "LeaseClock",
    "Leased",
    "ReadyCache",
    "Unreadable",
    "candidates",
    "claim_fn",
    "claimable",
    "recheck_stale",
    "shared_listing",
    "unreadable_entry",
]

# On an optimistic store an entry that its record does not name may belong to a change
# still in flight (entries are written before the record); only older ones are stale.
_STALE_GRACE_MS = 60_000
# How long a claim may reuse the previous claim's listing of the ready directories.
_LIST_TTL = 0.05
STALE = "stale"  # claim result: the entry was stale and has been dealt with

# store key -> entries some claim of this process is trying right now
INFLIGHT: dict[str, set[str]] = {}


_Listing = list[list[str]]
_PENDING_LISTINGS: dict[
    tuple[asyncio.AbstractEventLoop, str, tuple[str, ...]], asyncio.Future[_Listing]
] = {}


async def shared_listing(store: Store, dirs: Sequence[str]) -> _Listing:
    """``store.list_many(dirs)``, shared by the calls of this loop that overlap in time.

    Many concurrent claims would otherwise each list the same directories (on an object
    store, a slow request each). Callers must not modify the lists.
    """
    # The loop itself, not its id: a listing left pending by a loop closed by hand must
    # not be awaited by a later loop that happens to reuse that id.
    key = (asyncio.get_running_loop(), store.key, tuple(dirs))
    pending = _PENDING_LISTINGS.get(key)
    if pending is None:
        pending = asyncio.ensure_future(store.list_many(dirs))
        _PENDING_LISTINGS[key] = pending

        def done(future: asyncio.Future[_Listing]) -> None:
            if _PENDING_LISTINGS.get(key) is future:
                del _PENDING_LISTINGS[key]
            if not future.cancelled():
                future.exception()  # retrieved here; every waiter re-raises it

        pending.add_done_callback(done)
    return await asyncio.shield(pending)


class LeaseClock:
    """The caller's ``now``, moved on by the time spent since this clock was made.

    A lease is counted from when the update that writes it decides, right after its read
    and right before its write, not from a ``now`` taken before the listings and reads
    that come first: on a slow store (an object store under load) those can take longer
    than the lease itself, which would then be short, or over before it was written.
    Measured on the monotonic clock and added to the caller's ``now``, so a caller that
    passes a ``now`` of its own (a test, a replay) keeps its frame of time.
    """

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._started = time.monotonic()

    def __call__(self) -> datetime:
        """``now`` plus the time elapsed since the clock was made."""
        return self._now + timedelta(seconds=time.monotonic() - self._started)

    def lease(self, lease_seconds: float) -> tuple[datetime, datetime]:
        """The time now and the end of a lease of ``lease_seconds`` that starts now."""
        now = self()
        return now, now + timedelta(seconds=lease_seconds)


@dataclass
class ReadyCache:
    """A sorted listing of ready entries, reused by the next claims for a moment."""

    queues: tuple[str, ...]
    strict: bool  # names in (queue position, name) order rather than by name alone
    generation: int
    listed_at: float
    names: list[tuple[str, str]]  # (name, directory), in claim order
    tried: set[str]


def _order(entry: Entry) -> str:
    return entry.key


class Leased(NamedTuple):
    """Claim result: the leased task and the path of its new running entry."""

    task: Task
    entry: str


@dataclass(frozen=True)
class Unreadable:
    """Claim result: a record that could not be decoded, now replaced by a stand-in."""

    task: UnreadableTask
    data: bytes


def _unreadable_change(
    entry: Entry,
    data: bytes,
    exc: StorageError,
    queue_names: Mapping[str, str],
    worker_id: str,
    lease: datetime,
    now: datetime,
) -> Change[Unreadable]:
    """Lease a task whose record cannot be decoded under a stand-in record (what its
    entry's name says), so that the worker can fail it and every later operation reads
    a valid record."""
    stand_in = msgspec.structs.replace(
        unreadable_entry(entry, exc, queue_names),
        status=TaskStatus.RUNNING,
        attempts=1,
        worker_id=worker_id,
        lease_expires_at=lease,
        created_at=now,
        updated_at=now,
    )
    plain = Task(**{f: getattr(stand_in, f) for f in Task.__struct_fields__})
    old = Record(task=plain, seq=entry.seq, entry=entry.path)
    return moved(Unreadable(stand_in, data), plain, old)


def unreadable_entry(
    entry: Entry, exc: StorageError, queue_names: Mapping[str, str]
) -> UnreadableTask:
    """A task whose record cannot be decoded, as far as its entry's name tells. The id is
    the entry's token: the id itself, unless the id was too long or odd for a file name
    (then a hash); so is the queue, unless ``queue_names`` maps its token back."""
    queue_token = entry.path.split("/", 2)[1]
    reason = f"file backend: task {entry.token}: its stored record is corrupt: "
    return unreadable_task(
        entry.token,
        reason + str(exc.__cause__ or exc),
        queue=queue_names.get(queue_token, queue_token),
        status=entry.status,
        attempts=0,
        worker_id=None,
        lease_expires_at=from_us(entry.extra_us) if entry.status is TaskStatus.RUNNING else None,
        now=from_us(entry.created_ms * 1000),
    )


def claimable(task: Task, now: datetime) -> bool:
    if task.due_at is not None and task.due_at > now:
        return False
    status = task.status
    if status in (TaskStatus.PENDING, TaskStatus.RETRYING):
        return True
    if status is TaskStatus.SCHEDULED:
        return not task.depends_on
    if status is TaskStatus.RUNNING:
        return task.lease_expires_at is None or task.lease_expires_at <= now
    return False


async def candidates(
    store: Store,
    queues: Sequence[str],
    now: datetime,
    strict: bool,
    cache: ReadyCache | None,
    also: Sequence[str] = (),
    seen: list[list[str]] | None = None,
) -> tuple[Iterator[Entry], ReadyCache | None]:
    """Claimable-looking entries in claim order, parsed lazily (names sort in order), and
    the new ready listing they come from (None when ``cache`` could be reused).

    Merged, the entries of all ``queues`` sort together by name; ``strict``, by
    (position of their queue in ``queues``, name). The sorted ready listing is
    reused for up to ``_LIST_TTL`` seconds while it has untried names and no enqueue
    in this process has happened since, so a claim against a long backlog does not
    list and sort it each time; entries another process took in the meantime fail
    their update and are skipped.

    The directories ``also`` are listed with the others (the limits record's); their
    listings are appended to ``seen``.
    """
    now_us = to_us(now)
    if strict:
        queues = list(dict.fromkeys(queues))  # a name listed again keeps its place
    key = tuple(queues)
    ready_dirs = [f"ready/{token(q)}" for q in queues]
    running_dirs = [f"running/{token(q)}" for q in queues]
    generation = WAKEUPS.generation(store.key)
    clock = time.monotonic()
    fresh = None
    if (
        cache is None
        or cache.queues != key
        or cache.strict != strict
        or cache.generation != generation
        or clock - cache.listed_at > _LIST_TTL
        or len(cache.tried) >= len(cache.names)
    ):
        listings = await shared_listing(store, [*ready_dirs, *running_dirs, *also])
        if also:
            listings, extra = listings[: -len(also)], listings[-len(also) :]
            if seen is not None:
                seen.extend(extra)
        found_ready = zip(ready_dirs, listings[: len(queues)], strict=True)
        if strict:
            names = [(name, d) for d, found in found_ready for name in sorted(found)]
        else:
            names = sorted((name, d) for d, found in found_ready for name in found)
        cache = fresh = ReadyCache(key, strict, generation, clock, names, set())
        running = listings[len(queues) :]
    else:
        running = await shared_listing(store, [*running_dirs, *also])
        if also:
            running, extra = running[: -len(also)], running[-len(also) :]
            if seen is not None:
                seen.extend(extra)

    def ready(cache: ReadyCache) -> Iterator[Entry]:
        for name, directory in cache.names:
            if name in cache.tried:
                continue
            entry = parse_entry(directory, name)
            if entry is not None and (not entry.has_due or entry.due_us <= now_us):
                yield entry

    expired = []
    # A running entry's lease expiry sits at a fixed place in its name (fixed-width
    # digits, see entry_name): comparing that slice skips parsing every live lease,
    # which a worker holding many tasks would otherwise pay on each claim.
    now_digits = f"{now_us:017d}"
    for directory, in_running in zip(running_dirs, running, strict=True):
        for name in in_running:
            if name[LEASE_SLICE] > now_digits:
                continue
            entry = parse_entry(directory, name)
            if entry is not None and entry.extra_us <= now_us:
                expired.append(entry)
    order: Callable[[Entry], Any] = _order
    if strict:
        rank = {d: i for dirs in (ready_dirs, running_dirs) for i, d in enumerate(dirs)}

        def order(entry: Entry) -> tuple[int, str]:
            return rank[entry.path.rpartition("/")[0]], entry.key

    expired.sort(key=order)
    return heapq.merge(ready(cache), iter(expired), key=order), fresh


def _stale_change(store: Store, entry: Entry, record: Record | None) -> Change[Any]:
    """An entry its record does not name: a leftover of a crash or of a change.

    Under a lock (local disk, memory) nothing is in flight, so the record is the
    truth: the entry is moved to where the record says (which also heals a crash
    between moving an entry and writing the record) or, without a record, deleted.
    """
    if not store.optimistic:
        if record is None or not record.entry:
            return Change(STALE, remove=[entry.path])
        return Change(STALE, move=(entry.path, record.entry), move_first=True)
    if time.time() * 1000 - entry.created_ms < _STALE_GRACE_MS:
        return Change(None)
    return Change(STALE, remove=[entry.path])


def claim_fn(
    store: Store,
    entry: Entry,
    queue_names: Mapping[str, str],
    worker_id: str,
    lease_seconds: float,
    clock: LeaseClock,
) -> Callable[[bytes | None], Change[Any]]:
    """The update that leases ``entry``'s task to ``worker_id`` if it is claimable: its
    result is a :class:`Leased` (the task and its new entry), an :class:`Unreadable`,
    :data:`STALE` or None. The lease runs ``lease_seconds`` from when the update decides
    (``clock``), after its read."""

    def fn(current: bytes | None) -> Change[Any]:
        now, lease = clock.lease(lease_seconds)
        if current is None:
            return _stale_change(store, entry, None)
        try:
            record = decode_record(current)
        except StorageError as exc:
            return _unreadable_change(entry, current, exc, queue_names, worker_id, lease, now)
        if record.entry != entry.path:
            return _stale_change(store, entry, record)
        task = record.task
        if not claimable(task, now):
            return Change(None)
        new = msgspec.structs.replace(
            task,
            status=TaskStatus.RUNNING,
            worker_id=worker_id,
            lease_expires_at=lease,
            attempts=task.attempts + 1,
            # A running task is claimable only once its lease ran out: a lost run.
            lost_runs=task.lost_runs + (task.status is TaskStatus.RUNNING),
            updated_at=now,
        )
        change = moved(None, new, record)
        assert change.move is not None
        change.result = Leased(new, change.move[1])
        return change

    return fn


async def recheck_stale(store: Store, entry: Entry) -> None:
    """Put back a stale-looking entry a change named meanwhile."""
    # Optimistic stores: a change may have named this entry between our read and the
    # delete. Put it back if so (entries are empty; recreating one is harmless).
    current = await store.read(record_path(entry.token))
    if current is not None and decode_record(current).entry == entry.path:
        await store.write_many([(entry.path, b"")])
