"""The task queue on NATS: one record per task in the tasks bucket, every change a
compare-and-set on the key's revision (:mod:`omniq.storage.nats._changes`), claims
ordered by the process's task index (:mod:`omniq.storage.nats._index`), idle workers
woken by the bucket's watch."""

from __future__ import annotations

import asyncio
import builtins
import heapq
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime

import msgspec

from omniq._limits import Limit, LimitedClaim
from omniq._sync import StorageTwin, blocking
from omniq.models import Progress, Task, TaskStatus
from omniq.storage.base import Finish
from omniq.storage.nats._base import ENCODER, Record, dt, record_of, together, us
from omniq.storage.nats._changes import CAS_TRIES, RUNNING, TaskRecords
from omniq.storage.nats._fleet import NATSFleet
from omniq.storage.nats._index import TaskIndex
from omniq.storage.nats._limits import claim_limited, read_limits, write_limits
from omniq.storage.nats._progress import read_progress, write_progress

__all__ = ["AsyncNATSQueue", "NATSQueue"]

Picked = tuple[str, int, Record]  # id, revision, record
#: The most a contended claim spreads over: eight times the tasks it wants.
_MAX_WIDTH = 8


class AsyncNATSQueue(NATSFleet, TaskRecords):
    """Tasks in a JetStream key-value bucket (``{namespace}_tasks``), claimed in
    priority order with compare-and-set writes; see :mod:`omniq.storage.nats`.

    Example::

        async with AsyncNATSQueue("nats://127.0.0.1:4222", namespace="app") as queue:
            await queue.enqueue([task])
    """

    notifies = True
    #: How far a claim spreads over the head of the queue (see _spread): 1 alone.
    _width = 1

    # -- enqueue -----------------------------------------------------------------------

    async def enqueue(self, tasks: Sequence[Task]) -> builtins.list[str]:
        """Store the tasks whose ids are new: a create each (expected revision 0), all in
        flight at once; an id that exists is left as it is."""
        records: dict[str, Record] = {}
        for task in tasks:  # in order: the creates' revisions are the enqueue order
            if task.id not in records:  # the first of an id wins
                records[task.id] = record_of(task)
        made = await together([self._create(i, record) for i, record in records.items()])
        index = self._known_index()
        if index is not None:
            for (task_id, record), revision in zip(records.items(), made, strict=True):
                if revision:
                    index.apply(task_id, revision, record)
        return [task.id for task in tasks]

    async def _create(self, task_id: str, record: Record) -> int | None:
        """Create the task's key; its revision, or None when the id exists."""
        conn = await self._conn()
        subject, data = self._subject(task_id), ENCODER.encode(record)
        last = 0
        for _ in range(CAS_TRIES):
            revision = await conn.cas(subject, self._stream, data, last)
            if revision is not None:
                return revision
            # Taken, or a delete marker left by delete_finished: create over that.
            last, current = await conn.get_last(self._stream, subject)
            if current is not None:
                return None
        return None

    # -- reading -------------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """The task as the server holds it now, or None."""
        found = await self._read(task_id)
        return None if found is None else self._task(task_id, found[1])

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task | None]:
        """Several tasks, read at once."""
        return list(await asyncio.gather(*(self.get(task_id) for task_id in task_ids)))

    async def list(
        self, *, queue: str | None = None, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Tasks, newest first (by enqueue order), from the index caught up with the server."""
        index = await self._index()
        await index.catch_up()
        wanted = None if status is None else TaskStatus(status).value
        matching = (
            (record.seq or revision, ident, record)
            for ident, (revision, record) in index.records.items()
            if (queue is None or record.queue == queue)
            and (wanted is None or record.status == wanted)
        )
        newest = heapq.nlargest(limit, matching, key=lambda item: item[0])
        return await self._tasks([(ident, record) for _, ident, record in newest])

    async def _tasks(self, found: Sequence[tuple[str, Record]]) -> builtins.list[Task]:
        """The tasks of index records; a finished task's body (which the index drops) is
        read from the server."""
        missing = [ident for ident, record in found if not record.body]
        fetched = dict(zip(missing, await self.get_many(missing), strict=True))
        tasks = []
        for ident, record in found:
            task = fetched.get(ident) if not record.body else self._task(ident, record)
            if task is not None:
                tasks.append(task)
        return tasks

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts per queue and status, from the index caught up with the server."""
        index = await self._index()
        await index.catch_up()
        return {
            queue: {status: count for status, count in counts.items() if count > 0}
            for queue, counts in sorted(index.counts.items())
            if any(count > 0 for count in counts.values())
        }

    async def dependents_many(self, task_ids: Sequence[str]) -> dict[str, builtins.list[Task]]:
        """The dependents of several tasks, from the index once it has heard back this
        process's last write: a dependent stored before the ack that finished its parent
        is then in it (one stored after reads its parent itself, see ``Engine.submit``)."""
        if not task_ids:
            return {}
        index = await self._index()
        await index.caught_up_with_own_writes()
        found: dict[str, builtins.list[Task]] = {}
        for task_id in task_ids:
            idents = index.dependents.get(task_id)
            if idents:
                found[task_id] = await self._tasks(
                    [
                        (ident, index.records[ident][1])
                        for ident in sorted(idents)
                        if ident in index.records
                    ]
                )
        return found

    async def _still_held(self, items: Sequence[Finish]) -> builtins.list[bool]:
        """Whether each worker still holds its task, from the index (no read of the
        server): a cancel the index has not heard of yet fails the ack's
        compare-and-set, and the cancel's result is written back."""
        index = self._known_index()
        if index is None:
            return await super()._still_held(items)
        return [index.holds(item.ack.task_id, item.ack.worker_id) for item in items]

    async def next_due_at(self, queues: Sequence[str]) -> datetime | None:
        """The earliest time something in ``queues`` is claimable, from the index."""
        index = await self._index()
        due = index.next_due(dict.fromkeys(queues))
        return None if due is None else dt(due)

    # -- claims ----------------------------------------------------------------------------

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
        """Lease up to ``limit`` tasks in claim order: picked from the index, each taken
        with a compare-and-set (a task another worker took first is skipped)."""
        if limit <= 0:
            return []
        index = await self._index()
        conn = await self._conn()
        names = builtins.list(dict.fromkeys(queues))
        now_us = us(now)
        lease = now_us + round(lease_seconds * 1_000_000)
        won: builtins.list[tuple[str, Record]] = []
        take, gate = index.take, None
        if index.limits[1]:  # limits are stored: only what they let start (_limits.py)
            chosen, gate = await claim_limited(
                conn, index, names, limit=limit, now_us=now_us, strict=strict
            )
            take = _handing_out(chosen)
        while len(won) < limit:
            picked = self._spread(index, take, names, limit - len(won), now_us, strict)
            if not picked:
                break
            changed = [
                msgspec.structs.replace(
                    record,
                    status=RUNNING,
                    attempts=record.attempts + 1,
                    lost=record.lost + (record.status == RUNNING),
                    worker=worker_id,
                    lease=lease,
                    updated=now_us,
                    seq=record.seq or revision,
                )
                for _, revision, record in picked
            ]
            writes = [
                conn.cas(self._subject(ident), self._stream, ENCODER.encode(new), revision)
                for (ident, revision, _), new in zip(picked, changed, strict=True)
            ]
            outcomes: builtins.list[int | BaseException | None]
            if len(writes) == 1:  # no gather task: the claim goes out in this loop turn
                try:
                    outcomes = [await writes[0]]
                except Exception as exc:
                    outcomes = [exc]
            else:
                outcomes = await asyncio.gather(*writes, return_exceptions=True)
            failure: BaseException | None = None
            lost = 0
            for (ident, revision, record), new, outcome in zip(
                picked, changed, outcomes, strict=True
            ):
                if isinstance(outcome, BaseException):
                    index.place(ident, revision, record)  # unchanged: claimable again
                    failure = outcome
                elif outcome is not None:
                    index.apply(ident, outcome, new)
                    won.append((ident, new))
                else:
                    lost += 1
            # Other processes claim the same head of the queue: spread out over more of
            # it while they do, come back to the head when they stop.
            self._width = min(self._width * 2, _MAX_WIDTH) if lost else max(self._width // 2, 1)
            if failure is not None:
                if won:
                    break  # what was taken is held: hand it out, the error shows next time
                raise failure
        claimed = [self._task(ident, record) for ident, record in won]
        if gate is not None and gate.held:
            return LimitedClaim(
                claimed, None if gate.until is None else dt(round(gate.until * 1e6))
            )
        return claimed

    def _spread(
        self,
        index: TaskIndex,
        take: Callable[..., builtins.list[Picked]],
        names: Sequence[str],
        want: int,
        now: int,
        strict: bool,
    ) -> builtins.list[Picked]:
        """``want`` tasks from the head of the queues, in claim order.

        Alone, the first ``want``. While other processes claim too (the last claim lost
        compare-and-sets), every index offers them the same head, and all but one of
        them would lose each task: then ``want`` are drawn at random among the first
        ``want * width`` of the same queue and priority as the head (priority and queue
        order kept; due and enqueue order loosened only among those), the rest put back.
        """
        picked = take(names, want * self._width, now, strict=strict)
        if len(picked) <= want:
            return picked
        head = picked[0][2]
        alike = [
            position
            for position, (_, _, record) in enumerate(picked)
            if (record.queue, record.priority) == (head.queue, head.priority)
        ]
        spread = random.sample(alike, want) if len(alike) > want else range(want)  # nosec B311 # a spread, not a secret
        chosen = set(spread)
        for position, (ident, revision, record) in enumerate(picked):
            if position not in chosen:
                index.place(ident, revision, record)
        return [entry for position, entry in enumerate(picked) if position in chosen]

    # -- waiting ---------------------------------------------------------------------------

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when the bucket's watch brings a claimable task of ``queues``, or
        after ``timeout``."""
        if timeout <= 0:
            return
        index = await self._index()
        await index.wait(queues, timeout)

    async def watch_cancels(
        self,
        worker_id: str,
        held: Callable[[], Collection[str]],
        notice: Callable[[str], None],
    ) -> None:
        """Hear, through the bucket's watch, each held task that another process took
        from ``worker_id`` (a cancel, a lease taken over), as the change arrives."""
        index = await self._index()
        index.watch_cancels(worker_id, held, notice)
        try:
            await self._look_at_held(worker_id, held, notice)
            await asyncio.Event().wait()
        finally:
            current = self._known_index()
            if current is not None:
                current.unwatch_cancels(worker_id)

    async def requeue(
        self, task: Task, *, from_statuses: Collection[TaskStatus], now: datetime
    ) -> Task | None:
        """Replace the task's record with ``task`` if its status is in ``from_statuses``
        (a compare-and-set on the key's revision); its enqueue order stays, and so do
        the events an earlier run's finish left in the record (the result it left goes:
        the caller deletes the old result)."""
        allowed = {TaskStatus(status).value for status in from_statuses}
        fresh = record_of(task)

        def renew(record: Record) -> Record | None:
            if record.status not in allowed:
                return None
            return msgspec.structs.replace(
                fresh, seq=record.seq, updated=us(now), events=record.events
            )

        outcome = await self._change(task.id, renew)
        return None if outcome is None else self._task(task.id, outcome[1])

    async def set_progress(self, updates: Mapping[str, Progress]) -> None:
        """Store tasks' progress in the progress bucket (``omniq.storage.nats._progress``)."""
        if updates:
            await write_progress(await self._conn(), updates)

    async def get_progress(self, task_ids: Sequence[str]) -> dict[str, Progress]:
        """The progress of ``task_ids`` (one direct get each, together)."""
        return await read_progress(await self._conn(), task_ids) if task_ids else {}

    # -- limits (nats/_limits.py) -------------------------------------------------------

    async def set_limit(self, key: str, limit: Limit | None) -> None:
        """Store (None: remove) the limit of ``key``; claims apply it from now on."""
        await write_limits(await self._conn(), {key: limit}, self._known_index())

    async def get_limits(self) -> dict[str, Limit]:
        """The limits stored, by key."""
        return await read_limits(await self._conn())

    async def register_task_limits(self, limits: Mapping[str, Limit]) -> None:
        """Note the limits of task names before tasks carrying them are stored."""
        await write_limits(await self._conn(), dict(limits), self._known_index())


def _handing_out(chosen: builtins.list[Picked]) -> Callable[..., builtins.list[Picked]]:
    """A ``take`` for :meth:`AsyncNATSQueue._spread` that hands out the tasks a claim
    under limits chose, once."""
    left = [chosen]

    def take(*_: object, **__: object) -> builtins.list[Picked]:
        return left.pop() if left else []

    return take


class NATSQueue(StorageTwin[AsyncNATSQueue]):
    """Blocking twin of :class:`AsyncNATSQueue`: the same methods, without ``await``."""

    async_class = AsyncNATSQueue
    ack = blocking(AsyncNATSQueue.ack)
    ack_many = blocking(AsyncNATSQueue.ack_many)
    claim = blocking(AsyncNATSQueue.claim)
    delete_finished = blocking(AsyncNATSQueue.delete_finished)
    dependents = blocking(AsyncNATSQueue.dependents)
    dependents_many = blocking(AsyncNATSQueue.dependents_many)
    enqueue = blocking(AsyncNATSQueue.enqueue)
    enqueue_logged = blocking(AsyncNATSQueue.enqueue_logged)
    finish = blocking(AsyncNATSQueue.finish)
    get = blocking(AsyncNATSQueue.get)
    get_many = blocking(AsyncNATSQueue.get_many)
    list = blocking(AsyncNATSQueue.list)
    next_due_at = blocking(AsyncNATSQueue.next_due_at)
    release = blocking(AsyncNATSQueue.release)
    renew = blocking(AsyncNATSQueue.renew)
    retry = blocking(AsyncNATSQueue.retry)
    stats = blocking(AsyncNATSQueue.stats)
    transition = blocking(AsyncNATSQueue.transition)
    wait = blocking(AsyncNATSQueue.wait)
    wait_and_claim = blocking(AsyncNATSQueue.wait_and_claim)
    watch_cancels = blocking(AsyncNATSQueue.watch_cancels)
    requeue = blocking(AsyncNATSQueue.requeue)
    register_worker = blocking(AsyncNATSQueue.register_worker)
    deregister_worker = blocking(AsyncNATSQueue.deregister_worker)
    list_workers = blocking(AsyncNATSQueue.list_workers)
    set_progress = blocking(AsyncNATSQueue.set_progress)
    get_progress = blocking(AsyncNATSQueue.get_progress)
    set_limit = blocking(AsyncNATSQueue.set_limit)
    register_task_limits = blocking(AsyncNATSQueue.register_task_limits)
    get_limits = blocking(AsyncNATSQueue.get_limits)
