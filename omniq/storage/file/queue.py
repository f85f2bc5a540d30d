"""The file backend's task queue (public as ``omniq.storage.file.AsyncFileQueue``)."""

from __future__ import annotations

import asyncio
import builtins
import itertools
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from omniq._limits import LimitedClaim
from omniq.config import Settings
from omniq.errors import StorageError
from omniq.models import FINAL_STATUSES, Task, TaskStatus, utcnow
from omniq.storage.base import Ack, BaseTaskQueue
from omniq.storage.file._claim import (
    INFLIGHT,
    STALE,
    LeaseClock,
    Leased,
    ReadyCache,
    Unreadable,
    candidates,
    claim_fn,
    claimable,
    recheck_stale,
    shared_listing,
    unreadable_entry,
)
from omniq.storage.file._fleet import FileFleet
from omniq.storage.file._layout import (
    Entry,
    decode_record,
    from_us,
    moved,
    next_seq,
    parse_entry,
    record_path,
    to_us,
    token,
    wake,
    wake_ups,
    with_entry,
)
from omniq.storage.file._limits import LIMITS_DIR, claim_limited
from omniq.storage.file._progress import delete_progress
from omniq.storage.file._store import Change, Store
from omniq.storage.file.connection import FileConnection
from omniq.storage.file.schedules import AsyncFileScheduleStorage

__all__ = ["AsyncFileQueue"]

_STATES = ("ready", "held", "running", "done")

_STATES_OF: dict[TaskStatus, tuple[str, ...]] = {
    TaskStatus.PENDING: ("ready",),
    TaskStatus.RETRYING: ("ready",),
    TaskStatus.SCHEDULED: ("ready", "held"),
    TaskStatus.RUNNING: ("running",),
    **{status: ("done",) for status in FINAL_STATUSES},
}


def _holds(task: Task, worker_id: str) -> bool:
    return task.status is TaskStatus.RUNNING and task.worker_id == worker_id


class AsyncFileQueue(FileFleet, BaseTaskQueue):
    """A task queue on a directory tree: local disk, ``memory://`` or an object store.

    Build it from a URL (``AsyncFileQueue("file:///var/omniq/tasks")``) or get it from a
    :class:`~omniq.storage.file.FileBackend`. See ``omniq.storage.file`` for the layout and
    for what is safe on which filesystem.

    Example::

        async with AsyncFileQueue("/tmp/q") as queue:
            await queue.enqueue([Task(id="t1", func="app:job")])
    """

    #: ``wait`` returns by itself when work appears: at once for an enqueue in this
    #: process, within ``poll_interval`` for one elsewhere (it polls the listings).
    notifies = True

    subdir = "tasks"

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        *,
        connection: FileConnection | None = None,
    ) -> None:
        super().__init__(url, settings, connection=connection)
        self._ready_cache: ReadyCache | None = None
        self._schedules: AsyncFileScheduleStorage | None = None
        # The queue lists whose last claim limits held back (their waits ignore the
        # claimable tasks already there: those are the ones held).
        self._held_back: set[tuple[str, ...]] = set()
        # Task id -> (worker id, running entry) of the leases this queue's claims took:
        # while that exact entry is listed, nothing changed the record since (every
        # change renames the entry, see _layout.moved), so a look at held tasks lists
        # the running directories instead of reading every record.
        self._leased: dict[str, tuple[str, str]] = {}

    async def connect(self) -> None:
        """Take a reference on the connection (opening it if first). Safe to call twice."""
        await super().connect()
        assert self._store is not None
        if self._store.optimistic:
            # Each look at a held task is a request to the object store.
            self.cancel_poll_interval = 1.0

    @property
    def schedule_storage(self) -> AsyncFileScheduleStorage:
        """The schedule store on the same connection (schedules follow the task queue)."""
        if self._schedules is None:
            self._schedules = AsyncFileScheduleStorage(
                self.url, self.settings, connection=self.connection
            )
        return self._schedules

    # -- writing ------------------------------------------------------------------------

    async def enqueue(self, tasks: Sequence[Task]) -> list[str]:
        """Store tasks (existing ids are left unchanged); one object per task."""
        store = await self._s()
        deps = [
            (f"deps/{token(dep)}/{token(task.id)}", b"")
            for task in tasks
            for dep in task.depends_on
        ]
        # The dependency index is written first: a stray entry is harmless (readers
        # check the record), a missing one would hide a dependent.
        await store.write_many(deps)

        def create(task: Task, seq: int) -> Callable[[bytes | None], Change[bool]]:
            def fn(current: bytes | None) -> Change[bool]:
                if current is not None:
                    return Change(False)
                data, entry = with_entry(task, seq)
                return Change(True, data, add=[entry])

            return fn

        # Sequence numbers are taken in batch order, before any concurrent write.
        created = await store.update_many(
            [(record_path(token(task.id)), create(task, next_seq())) for task in tasks],
            likely_absent=True,
        )
        if any(created):
            wake(store)
        return [task.id for task in tasks]

    async def _change(
        self,
        store: Store,
        task_ids: Iterable[str],
        decide: Callable[[Task], Task | None],
    ) -> list[Task | None]:
        """Apply ``decide`` atomically to each task; None means "leave it"."""

        def change(current: bytes | None) -> Change[Task | None]:
            if current is None:
                return Change(None)
            record = decode_record(current)
            new = decide(record.task)
            if new is None:
                return Change(None)
            return moved(new, new, record)

        return await store.update_many(
            [(record_path(token(task_id)), change) for task_id in task_ids]
        )

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
        """Lease up to ``limit`` claimable tasks, best first.

        Lists the ready and running directories of ``queues`` (names only), then claims
        candidates in name order (with ``strict``: queue by queue in list order, each in
        name order), each with one atomic update of its record. A lease runs
        ``lease_seconds`` from when that update reads the record and decides: ``now``
        plus the time the claim spent until then (listings, reads), so a slow store does
        not shorten it.
        """
        if limit <= 0 or not queues:
            return []
        clock = LeaseClock(now)
        store = await self._s()
        limits: list[list[str]] = []
        found, fresh = await candidates(
            store, queues, now, strict, self._ready_cache, (LIMITS_DIR,), limits
        )
        if fresh is not None:
            self._ready_cache = fresh
        claimed: list[Task] = []
        queue_names = {token(queue): queue for queue in queues}
        gate = None
        if limits and limits[0]:  # limits are stored: only what they let start (_limits.py)
            picks, gate = await claim_limited(
                store, found, queue_names, limit=limit, now_us=to_us(now)
            )
            found = iter(picks)
        # Entries another claim of this process is trying right now are skipped: racing
        # for them would only cost a failed update each.
        inflight = INFLIGHT.setdefault(store.key, set())
        untried = (entry for entry in found if entry.path not in inflight)
        while len(claimed) < limit:
            window = list(itertools.islice(untried, limit - len(claimed)))
            if not window:
                break
            paths = {entry.path for entry in window}
            inflight |= paths
            try:
                results = await store.update_many(
                    [
                        (
                            record_path(entry.token),
                            claim_fn(store, entry, queue_names, worker_id, lease_seconds, clock),
                        )
                        for entry in window
                    ]
                )
            finally:
                inflight -= paths
            cache = self._ready_cache
            for entry, result in zip(window, results, strict=True):
                if cache is not None and entry.path.startswith("ready/"):
                    cache.tried.add(entry.path.rsplit("/", 1)[1])
                if isinstance(result, Unreadable):
                    # Its bytes are kept beside the stand-in record that replaced them.
                    await store.write_many([(f"unreadable/{entry.token}", result.data)])
                    claimed.append(result.task)
                elif isinstance(result, Leased):
                    claimed.append(result.task)
                    self._leased[result.task.id] = (worker_id, result.entry)
                elif result == STALE and store.optimistic:
                    await recheck_stale(store, entry)
        if len(claimed) < limit:
            self._ready_cache = None  # exhausted: the next claim lists afresh
        if gate is not None and gate.held:
            self._held_back.add(tuple(queues))
            until = None if gate.until is None else from_us(round(gate.until * 1e6))
            return LimitedClaim(claimed, until)
        self._held_back.discard(tuple(queues))
        return claimed

    async def renew(
        self, task_ids: Collection[str], worker_id: str, *, lease_seconds: float, now: datetime
    ) -> set[str]:
        """Extend the leases ``worker_id`` holds; return the ids it still holds.

        Each new lease runs ``lease_seconds`` from when its update reads the record and
        decides (``now`` plus the time spent until then), as a claim's does.
        """
        clock = LeaseClock(now)
        store = await self._s()

        def decide(task: Task) -> Task | None:
            if not _holds(task, worker_id):
                return None
            at, lease = clock.lease(lease_seconds)
            return msgspec.structs.replace(task, lease_expires_at=lease, updated_at=at)

        ids = list(task_ids)
        for task_id in ids:
            self._leased.pop(task_id, None)  # renamed: looks read the record from now on
        results = await self._change(store, ids, decide)
        return {task.id for task in results if task is not None}

    async def ack_many(self, acks: Sequence[Ack], *, now: datetime) -> list[bool]:
        """Move each task its worker still holds to the given final status."""
        store = await self._s()

        def one(ack: Ack) -> Callable[[bytes | None], Change[bool]]:
            def decide(task: Task) -> Task | None:
                if not _holds(task, ack.worker_id):
                    return None
                return msgspec.structs.replace(
                    task,
                    status=ack.status,
                    lease_expires_at=None,
                    updated_at=now,
                    attempts=task.attempts if ack.ran else task.attempts - 1,
                )

            def fn(current: bytes | None) -> Change[bool]:
                if current is None:
                    return Change(False)
                record = decode_record(current)
                new = decide(record.task)
                if new is None:
                    return Change(False)
                return moved(True, new, record)

            return fn

        acked = await store.update_many(
            [(record_path(token(ack.task_id)), one(ack)) for ack in acks]
        )
        # Forgotten once acknowledged, not before: until then the worker still counts
        # them as held, and its looks find them from the listing.
        for ack in acks:
            self._leased.pop(ack.task_id, None)
        return acked

    async def retry(self, task_id: str, worker_id: str, *, due_at: datetime, now: datetime) -> bool:
        """Move a held task to ``RETRYING``, claimable again at ``due_at``."""
        store = await self._s()
        self._leased.pop(task_id, None)

        def decide(task: Task) -> Task | None:
            if not _holds(task, worker_id):
                return None
            return msgspec.structs.replace(
                task,
                status=TaskStatus.RETRYING,
                due_at=due_at,
                lease_expires_at=None,
                updated_at=now,
            )

        (result,) = await self._change(store, [task_id], decide)
        if result is not None:
            wake(store)
        return result is not None

    async def release(self, task_ids: Collection[str], worker_id: str, *, now: datetime) -> int:
        """Hand back held tasks without spending an attempt."""
        store = await self._s()
        for task_id in task_ids:
            self._leased.pop(task_id, None)

        def decide(task: Task) -> Task | None:
            if not _holds(task, worker_id):
                return None
            attempts = max(task.attempts - 1, 0)
            return msgspec.structs.replace(
                task,
                status=TaskStatus.RETRYING if attempts else TaskStatus.PENDING,
                attempts=attempts,
                lease_expires_at=None,
                worker_id=None,
                updated_at=now,
            )

        released = sum(r is not None for r in await self._change(store, list(task_ids), decide))
        if released:
            wake(store)
        return released

    async def transition(
        self,
        task_id: str,
        *,
        from_statuses: Collection[TaskStatus],
        to_status: TaskStatus,
        now: datetime,
        due_at: datetime | None = None,
    ) -> Task | None:
        """Compare-and-set a task's status; clears any lease."""
        store = await self._s()
        allowed = frozenset(TaskStatus(s) for s in from_statuses)

        def decide(task: Task) -> Task | None:
            if task.status not in allowed:
                return None
            changes: dict[str, Any] = {
                "status": to_status,
                "lease_expires_at": None,
                "updated_at": now,
            }
            if due_at is not None:
                changes["due_at"] = due_at
            return msgspec.structs.replace(task, **changes)

        (result,) = await self._change(store, [task_id], decide)
        if result is not None and claimable(result, now):
            wake(store)
        return result

    # -- what a worker still holds ---------------------------------------------------

    async def _holding(
        self, task_ids: Sequence[str], worker_ids: Sequence[str]
    ) -> builtins.list[bool]:
        """Per task, whether its worker still holds it: from one listing of the running
        directories for the leases this queue took (their entry still listed), from the
        record for the others. A wrong True for a moment is allowed (a cancel writes the
        record before it moves the entry); the ack and the lease renewal decide."""
        store = await self._s()
        known: dict[str, str] = {}
        for task_id, worker_id in zip(task_ids, worker_ids, strict=True):
            leased = self._leased.get(task_id)
            if leased is not None and leased[0] == worker_id:
                known[task_id] = leased[1]
        dirs = sorted({entry.rpartition("/")[0] for entry in known.values()})
        listed: set[str] = set()
        if dirs:
            listings = await store.list_many(dirs)
            for directory, names in zip(dirs, listings, strict=True):
                listed.update(f"{directory}/{name}" for name in names)
        unknown = [task_id for task_id in task_ids if task_id not in known]
        read = dict(zip(unknown, await self.get_many(unknown), strict=True)) if unknown else {}
        held = []
        for task_id, worker_id in zip(task_ids, worker_ids, strict=True):
            if task_id in known:
                held.append(known[task_id] in listed)
            else:
                task = read[task_id]
                held.append(task is not None and _holds(task, worker_id))
        return held

    async def _look_at_held(
        self,
        worker_id: str,
        held: Callable[[], Collection[str]],
        notice: Callable[[str], None],
    ) -> None:
        """One look of :meth:`watch_cancels` (see :meth:`_holding`), after forgetting
        the leases of tasks the worker no longer holds (taken over elsewhere, never
        acknowledged here) once they pile up."""
        if len(self._leased) > 2 * len(held()) + 1024:
            keep = set(held())
            self._leased = {k: v for k, v in self._leased.items() if k in keep}
        await super()._look_at_held(worker_id, held, notice)

    # -- reading ------------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """The task as stored, or None (one read, no listing)."""
        store = await self._s()
        data = await store.read(record_path(token(task_id)))
        return None if data is None else decode_record(data).task

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task | None]:
        """Several tasks, in order (None for unknown ids)."""
        store = await self._s()
        found = await store.read_many([record_path(token(task_id)) for task_id in task_ids])
        return [None if data is None else decode_record(data).task for data in found]

    async def _entries(self, store: Store, states: Sequence[str], queue: str | None) -> list[Entry]:
        if queue is not None:
            dirs = [f"{state}/{token(queue)}" for state in states]
        else:
            tops = await store.list_many(list(states))
            dirs = [
                f"{state}/{q}" for state, names in zip(states, tops, strict=True) for q in names
            ]
        listings = await store.list_many(dirs)
        entries = []
        for directory, names in zip(dirs, listings, strict=True):
            for name in names:
                entry = parse_entry(directory, name)
                if entry is not None:
                    entries.append(entry)
        return entries

    async def list(
        self, *, queue: str | None = None, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Tasks, newest first; reads only the records it returns (plus stale ones)."""
        store = await self._s()
        if status is None:
            states: Sequence[str] = _STATES
        else:
            status = TaskStatus(status)
            states = _STATES_OF[status]
        entries = [
            e
            for e in await self._entries(store, states, queue)
            if status is None or e.status is status
        ]
        entries.sort(key=lambda e: e.seq, reverse=True)
        tasks: builtins.list[Task] = []
        seen: set[str] = set()
        position = 0
        while position < len(entries) and len(tasks) < limit:
            batch: builtins.list[Entry] = []
            while position < len(entries) and len(batch) < limit - len(tasks):
                entry = entries[position]
                position += 1
                if entry.token not in seen:
                    seen.add(entry.token)
                    batch.append(entry)
            found = await store.read_many([record_path(e.token) for e in batch])
            for entry, data in zip(batch, found, strict=True):
                if data is None:
                    continue
                try:
                    task = decode_record(data).task
                except StorageError as exc:
                    # Listed as what its entry's name says: one bad record must not hide
                    # the rest.
                    task = unreadable_entry(
                        entry, exc, {} if queue is None else {token(queue): queue}
                    )
                if (status is None or task.status is status) and (
                    queue is None or task.queue == queue
                ):
                    tasks.append(task)
        return tasks[:limit]

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts per queue and status, from entry names (records read only to settle
        an id that has two entries while a change is in flight)."""
        store = await self._s()
        entries = await self._entries(store, _STATES, None)
        by_token: dict[str, builtins.list[Entry]] = {}
        for entry in entries:
            by_token.setdefault(entry.token, []).append(entry)
        counts: dict[str, dict[str, int]] = {}
        queue_names: dict[str, str] = {}
        unsure = [tok for tok, found in by_token.items() if len(found) > 1]
        settled: dict[str, Task] = {}
        if unsure:
            found = await store.read_many([record_path(tok) for tok in unsure])
            settled = {
                tok: decode_record(data).task
                for tok, data in zip(unsure, found, strict=True)
                if data is not None
            }
        for tok, found_entries in by_token.items():
            if tok in settled:
                task = settled[tok]
                queue, status = task.queue, task.status
            elif len(found_entries) == 1:
                entry = found_entries[0]
                queue_token = entry.path.split("/", 2)[1]
                queue = queue_names.get(queue_token, queue_token)
                if queue_token.startswith("~") and queue_token not in queue_names:
                    data = await store.read(record_path(tok))
                    if data is None:
                        continue
                    queue = queue_names[queue_token] = decode_record(data).task.queue
                status = entry.status
            else:
                continue
            per_queue = counts.setdefault(queue, {})
            per_queue[status.value] = per_queue.get(status.value, 0) + 1
        return counts

    async def dependents_many(self, task_ids: Sequence[str]) -> dict[str, builtins.list[Task]]:
        """``dependents`` for several ids: one listing each, then one read per dependent."""
        store = await self._s()
        listings = await store.list_many([f"deps/{token(task_id)}" for task_id in task_ids])
        wanted = sorted({name for names in listings for name in names})
        records = await store.read_many([record_path(name) for name in wanted])
        tasks = {
            name: decode_record(data).task
            for name, data in zip(wanted, records, strict=True)
            if data is not None
        }
        found: dict[str, builtins.list[Task]] = {}
        for task_id, names in zip(task_ids, listings, strict=True):
            matches = [
                tasks[name]
                for name in sorted(names)
                if name in tasks and task_id in tasks[name].depends_on
            ]
            if matches:
                found[task_id] = matches
        return found

    async def next_due_at(self, queues: Sequence[str]) -> datetime | None:
        """The earliest due time or lease expiry in ``queues``, from entry names only."""
        if not queues:
            return None
        store = await self._s()
        dirs = [f"ready/{token(q)}" for q in queues] + [f"running/{token(q)}" for q in queues]
        listings = await shared_listing(store, dirs)
        earliest: int | None = None
        for directory, names in zip(dirs, listings, strict=True):
            running = directory.startswith("running/")
            for name in names:
                entry = parse_entry(directory, name)
                if entry is None:
                    continue
                due = entry.extra_us if running else entry.due_us
                if earliest is None or due < earliest:
                    earliest = due
        return None if earliest is None else from_us(earliest)

    async def delete_finished(self, before: datetime) -> int:
        """Delete final tasks last updated before ``before``; finds them by entry name."""
        store = await self._s()
        limit_us = to_us(before)
        old = [
            e
            for e in await self._entries(store, ["done"], None)
            if e.status in FINAL_STATUSES and e.extra_us < limit_us
        ]

        def delete(entry: Entry) -> Callable[[bytes | None], Change[bool]]:
            def fn(current: bytes | None) -> Change[bool]:
                if current is None:
                    return Change(False, remove=[entry.path])
                record = decode_record(current)
                task = record.task
                finished = task.updated_at or task.created_at
                if task.status not in FINAL_STATUSES or finished >= before:
                    return Change(False)
                deps = [f"deps/{token(dep)}/{entry.token}" for dep in task.depends_on]
                return Change(True, None, remove=[record.entry, entry.path, *deps])

            return fn

        results = await store.update_many([(record_path(e.token), delete(e)) for e in old])
        await delete_progress(
            store, [e.token for e, gone in zip(old, results, strict=True) if gone]
        )
        return sum(results)

    # -- waiting ------------------------------------------------------------------------

    async def _has_work(self, queues: Sequence[str]) -> bool:
        due = await self.next_due_at(queues)
        return due is not None and due <= utcnow()

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Wait for work: an enqueue wakes it at once (in this process, and from another
        on local disk); the ready listings (names only) are also polled with a growing
        interval, from 5 ms up to ``poll_interval``, for other filesystems, due times and
        another process's work on a filesystem without FIFOs."""
        store = await self._s()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ceiling = max(self.settings.poll_interval, 0.005)
        delay = 0.005
        held = tuple(queues) in self._held_back
        with wake_ups(store) as woken:
            while True:
                if not held and await self._has_work(queues):
                    return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                try:
                    await asyncio.wait_for(woken.wait(), min(delay, remaining))
                    return
                except TimeoutError:
                    pass
                delay = min(delay * 2, ceiling)
