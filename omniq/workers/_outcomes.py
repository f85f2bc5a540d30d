"""What a worker pool writes as its tasks end: results, acks and events, in batches.

:class:`Outcomes` keeps the events of the tasks a pool holds and the finished tasks not
yet written. A task's events ride with its result (one write, never after it), unless it
runs long enough for its ``EXECUTING`` to be handed to the event logger meanwhile.
Finished tasks are written in batches (``BaseTaskQueue.finish``: results and events only
where the ack takes effect), then their dependents are released or cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from omniq.decisions import final_result
from omniq.errors import StorageError
from omniq.models import ErrorInfo, EventType, Task, TaskEvent, TaskResult, TaskStatus, utcnow
from omniq.storage.base import Ack, Finish

if TYPE_CHECKING:
    from omniq.engine import Engine
    from omniq.workers._metrics import PoolMetrics

__all__ = ["Outcomes"]

logger = logging.getLogger("omniq.worker")

_FINISH_BATCH = 500
#: Under load, write finished tasks at most once per this many seconds: one write then
#: carries a batch instead of one or two tasks (each write costs a round trip and a script
#: call whatever its size). An isolated completion is written at once.
_FINISH_INTERVAL = 0.002
_MAX_BACKOFF = 5.0


class Outcomes:
    """The events and the finished tasks of one worker pool, written in batches.

    ``counts``, ``held`` and ``stopping`` are the pool's: outcome counters, the ids it
    holds (a written task leaves them), and whether it is stopping (a write that keeps
    failing is then given up, leaving the tasks to their lease). ``on_written`` is called
    after each batch is written.
    """

    def __init__(
        self,
        engine: Engine,
        worker_id: str,
        *,
        counts: dict[str, int],
        held: set[str],
        stopping: Callable[[], bool],
        on_written: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.counts = counts
        self.held = held
        self.stopping = stopping
        self.on_written = on_written
        self.finished: list[Finish] = []
        #: The pool's Prometheus metrics while it serves them (``metrics_port``).
        self.metrics: PoolMetrics | None = None
        # Events of the held tasks not yet handed to the event logger: they are written
        # with the task's result (one write, never after it), or handed over once the task
        # has run for ``spill_after`` seconds, so a long run shows EXECUTING meanwhile.
        self._pending: dict[str, list[TaskEvent]] = {}
        # Per task, the event logger's count of events accepted when the task's last
        # event went to it: its finish waits until the logger has written that many.
        self._logged_upto: dict[str, int] = {}
        self.spill_after = max(0.01, engine.settings.event_flush_interval)
        self._wakeup: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        # The batch being written, and the attempts of those of its tasks this worker
        # claimed back meanwhile (applied if the write fails and is tried again).
        self._in_flight: Sequence[Finish] = ()
        self._reclaimed: dict[str, int] = {}
        # How many outcomes of each task are queued or in flight: a claim asks reclaimed()
        # about every task it takes, and almost none has one (a look-up, not a scan).
        self._unwritten: dict[str, int] = {}

    @property
    def busy(self) -> bool:
        """True while finished tasks wait to be written, or a write is under way."""
        return bool(self.finished) or (self._lock is not None and self._lock.locked())

    # -- events ------------------------------------------------------------------------

    def note(self, task: Task, kind: EventType, message: str = "", *, attempt: int = -1) -> None:
        """Note an event of a held task: the in-process handlers hear of it now; the
        event log gets it with the task's result (or when the task has run a while)."""
        events = self.engine.events
        if not (events.enabled or events.has_handlers):
            return
        event = TaskEvent(
            task_id=task.id,
            event_type=kind,
            attempt=task.attempts if attempt < 0 else attempt,
            worker_id=self.worker_id,
            message=message,
            queue=task.queue,
        )
        if events.has_handlers:
            events.announce((event,))
        if events.enabled:
            self._pending.setdefault(task.id, []).append(event)

    def spill(self, task_id: str) -> None:
        """Hand a held task's noted events to the event logger (written in the
        background): it has run for a while, or will not finish here."""
        events = self._pending.pop(task_id, None)
        if events:
            logger_ = self.engine.events
            logger_.log_many(events, announce=False)
            self._logged_upto[task_id] = logger_.accepted

    async def spill_loop(self, still_running: Callable[[str], bool]) -> None:
        """Every ``spill_after`` seconds, :meth:`spill` the events of the tasks that have
        run longer than that (the pool runs this in the background). One sweep for all:
        a timer per task would cost every short task its setting up and tearing down."""
        step = timedelta(seconds=self.spill_after)
        while True:
            await asyncio.sleep(self.spill_after)
            if not self._pending:
                continue
            cutoff = utcnow() - step
            for task_id in [
                task_id
                for task_id, events in self._pending.items()
                if events[0].timestamp <= cutoff and still_running(task_id)
            ]:
                self.spill(task_id)

    def take(self, task_id: str) -> list[TaskEvent]:
        """The task's noted events, taken (to be written now, by the caller)."""
        return self._pending.pop(task_id, [])

    async def write(self, events: Sequence[TaskEvent]) -> None:
        """Store events now; if the event log is failing, leave them to the logger."""
        storage = self.engine.events.storage
        if not events or storage is None:
            return
        try:
            await storage.append(events)
        except StorageError as exc:
            logger.warning("writing %d events failed (%s); retrying later", len(events), exc)
            self.engine.events.log_many(events, announce=False)

    # -- finished tasks ------------------------------------------------------------------

    def finish(
        self,
        task: Task,
        status: TaskStatus,
        *,
        value: bytes | None = None,
        error: ErrorInfo | None = None,
        started_at: datetime | None = None,
        ran: bool = True,
    ) -> None:
        """Queue a held task's outcome for the next write (with its noted events)."""
        attempts = task.attempts if ran else task.attempts - 1
        result = final_result(
            task,
            status,
            value=value,
            error=error,
            started_at=started_at,
            worker_id=self.worker_id,
            attempts=attempts,
            now=utcnow(),
        )
        events = self._pending.pop(task.id, ())
        if self.metrics is not None:
            self.metrics.finished(task, status)
        self.finished.append(Finish(Ack(task.id, self.worker_id, status, ran), result, events))
        unwritten = self._unwritten
        unwritten[task.id] = unwritten.get(task.id, 0) + 1
        if self._wakeup is not None:
            self._wakeup.set()

    def reclaimed(self, task: Task) -> bool:
        """This worker claimed ``task`` again while its finished run waits to be written
        (the lease ran out meanwhile): the outcome is written under the new claim, with
        its ``attempts``; True if there was one."""
        if task.id not in self._unwritten:
            return False
        for index, item in enumerate(self.finished):
            if item.ack.task_id == task.id:
                self.finished[index] = _with_attempts(item, task.attempts)
                return True
        if any(item.ack.task_id == task.id for item in self._in_flight):
            self._reclaimed[task.id] = task.attempts
            return True
        return False

    def _written(self, batch: Sequence[Finish]) -> None:
        """Count ``batch`` out of the unwritten outcomes (written, or given up on)."""
        unwritten = self._unwritten
        for item in batch:
            task_id = item.ack.task_id
            left = unwritten.pop(task_id, 1) - 1
            if left > 0:
                unwritten[task_id] = left

    async def write_loop(self) -> None:
        """Write finished tasks as they come (the pool runs this in the background)."""
        self._wakeup = wakeup = asyncio.Event()
        if self.finished:
            wakeup.set()
        loop = asyncio.get_running_loop()
        last = -_FINISH_INTERVAL
        while True:
            await wakeup.wait()
            wakeup.clear()
            wait = last + _FINISH_INTERVAL - loop.time()
            if wait > 0 and len(self.finished) < _FINISH_BATCH:
                await asyncio.sleep(wait)
            last = loop.time()
            await self.flush(everything=False)
            if self.finished:  # finished while that write was out: next round
                wakeup.set()

    async def flush(self, *, everything: bool = True) -> None:
        """Write finished tasks: one batch, or (``everything``) until none are left."""
        # One writer at a time: the background loop and the pool's shutdown both call
        # this, and a batch must be written and acknowledged exactly once.
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self._flush(everything)

    async def _flush(self, everything: bool) -> None:
        backoff = 0.0
        engine = self.engine
        event_log = engine.events.storage
        rides = event_log is not None and engine.finish_logs_events
        while self.finished:
            batch = self.finished[:_FINISH_BATCH]
            del self.finished[: len(batch)]
            await self._events_logged_before(batch)
            self._in_flight = batch
            try:
                acked, dependents = await engine.queue.finish(
                    batch, engine.results, event_log if rides else None, now=utcnow()
                )
            except StorageError as exc:
                batch = [
                    _with_attempts(item, self._reclaimed.pop(item.ack.task_id))
                    if item.ack.task_id in self._reclaimed
                    else item
                    for item in batch
                ]
                if self.stopping() and backoff >= _MAX_BACKOFF:
                    logger.error(
                        "giving up on %d results: %s (their leases will expire)", len(batch), exc
                    )
                    self._written(batch)
                    return
                self.finished[:0] = batch
                backoff = min(_MAX_BACKOFF, max(0.05, backoff * 2))
                logger.warning("writing results failed (%s); retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                continue
            finally:
                self._in_flight = ()
            self._written(batch)
            # A write that reached the store only after this worker's claim took the task
            # back was applied under that claim, with the old run's count: recount it.
            recounted = [
                _with_attempts(item, attempts).result
                for item, ok in zip(batch, acked, strict=True)
                if (attempts := self._reclaimed.pop(item.ack.task_id, None)) is not None and ok
            ]
            if recounted:
                await self._recount(recounted)
            done: list[tuple[str, TaskStatus]] = []
            later: list[TaskEvent] = []
            for item, ok in zip(batch, acked, strict=True):
                task_id = item.ack.task_id
                self.held.discard(task_id)
                self._logged_upto.pop(task_id, None)
                status = item.ack.status
                if ok:
                    self.counts[status.value] = self.counts.get(status.value, 0) + 1
                    done.append((task_id, status))
                    if not rides:
                        later += item.events
                else:
                    # Another outcome won (a cancel, or a worker that took over after the
                    # lease ran out): this run's result is dropped, its start stands.
                    later += (e for e in item.events if e.event_type is EventType.EXECUTING)
                    logger.warning(
                        "task %s: cancelled or its lease lost before its result was "
                        "acknowledged; result dropped",
                        task_id,
                    )
            await self.write(later)
            try:
                await engine.on_finished(done, dependents)
            except StorageError as exc:
                logger.warning("settling dependents failed: %s", exc)
            self.on_written()
            if not everything:
                return

    async def _recount(self, results: Sequence[TaskResult]) -> None:
        """Store again results first written with the attempts of a claim since replaced
        (by this worker's own claim back): the task counts the new claim's."""
        try:
            await self.engine.results.put_many(results)
        except StorageError as exc:
            logger.warning(
                "correcting the attempts of %d results failed (%s); they count one claim less "
                "than their tasks",
                len(results),
                exc,
            )

    async def _events_logged_before(self, batch: Sequence[Finish]) -> None:
        """Wait until the events the logger took for these tasks earlier (a long run's
        EXECUTING) are stored: a task's events are never stored after its result."""
        if not self._logged_upto:
            return
        needed = max((self._logged_upto.get(item.ack.task_id, 0) for item in batch), default=0)
        if needed > self.engine.events.written:
            await self.engine.events.flush()


def _with_attempts(item: Finish, attempts: int) -> Finish:
    """``item`` with its result counting ``attempts`` (one fewer if it did not run)."""
    counted = attempts if item.ack.ran else attempts - 1
    return item._replace(result=msgspec.structs.replace(item.result, attempts=counted))
