"""The worker pool: claim, run, renew leases, record the outcome, acknowledge.

One ``AsyncWorkerPool`` is one worker: a loop on one event loop that keeps up to
``concurrency`` tasks running. Per task: claim (with a lease, in batches that fill the
free slots), log ``EXECUTING``, run through the executor of the worker type, then write
the result and acknowledge (results before acks, both batched across tasks), or schedule
a retry. A background renewer extends the leases of everything held; a task whose lease
was lost (it was cancelled, or the worker stalled past its lease) is stopped here and
left to whoever holds it now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from omniq.config import QUEUE_ORDERS, Duration, parse_duration
from omniq.decisions import Verdict, before_run, final_result
from omniq.errors import ConfigError, OmniQError, SerializationError, StorageError, TaskTimeoutError
from omniq.models import ErrorInfo, EventType, Task, TaskEvent, TaskStatus, utcnow
from omniq.retry import Retry, backoff_delay, failed_runs, has_attempts_left
from omniq.storage.base import Ack, Finish, UnreadableTask
from omniq.workers.executors import BaseExecutor, create_executor, executor_class

if TYPE_CHECKING:
    from omniq.engine import Engine

__all__ = ["AsyncWorkerPool"]

logger = logging.getLogger("omniq.worker")

_FINISH_BATCH = 500
#: Under load, write finished tasks at most once per this many seconds: one write then
#: carries a batch instead of one or two tasks (each write costs a round trip and a script
#: call whatever its size). An isolated completion is written at once.
_FINISH_INTERVAL = 0.002
_MAX_BACKOFF = 5.0


def _parse_queues(queues: Sequence[str] | str | None, default: str) -> tuple[str, ...]:
    if queues is None:
        return (default,)
    names = queues.split(",") if isinstance(queues, str) else list(queues)
    cleaned = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
    if not cleaned:
        raise ConfigError(f"queues={queues!r}: expected at least one queue name")
    return cleaned


def _parse_queue_order(queue_order: str | None, default: str) -> str:
    if queue_order is None:
        return default
    if isinstance(queue_order, str) and queue_order.strip().lower() in QUEUE_ORDERS:
        return queue_order.strip().lower()
    choices = ", ".join(repr(order) for order in QUEUE_ORDERS)
    raise ConfigError(f"queue_order={queue_order!r}: expected one of {choices}")


class AsyncWorkerPool:
    """Runs tasks from ``queues`` with up to ``concurrency`` at a time.

    ``queue_order`` (default: the ``queue_order`` setting, ``"merged"``) is how several
    queues are claimed from: ``"merged"`` by priority, due time and enqueue order across
    them all, ``"strict"`` the first listed queue with claimable work first (see
    :meth:`omniq.AsyncOmniQ.worker`).

    Example::

        pool = oq.worker(concurrency=16)
        await pool.run(burst=True)        # everything due now, then return

        async with oq.worker():           # in the background for the block
            ...
    """

    def __init__(
        self,
        oq: Any,
        *,
        worker_type: str | None = None,
        concurrency: int | None = None,
        queues: Sequence[str] | str | None = None,
        worker_id: str | None = None,
        queue_order: str | None = None,
    ) -> None:
        #: The engine of the client this pool works for (``oq.worker()`` passes the client).
        self.engine: Engine = getattr(oq, "engine", oq)
        self.oq = oq
        settings = self.engine.settings
        self.worker_type = worker_type or settings.default_worker
        executor_class(self.worker_type)  # fail now on an unknown type
        self.concurrency = settings.max_workers if concurrency is None else concurrency
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigError(f"concurrency={concurrency!r}: expected an integer >= 1")
        self.queues = _parse_queues(queues, settings.default_queue)
        self.queue_order = _parse_queue_order(queue_order, settings.queue_order)
        # What every claim passes to the queue: take the queues in list order.
        self._strict = self.queue_order == "strict"
        self.worker_id = worker_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        self.lease_seconds: float = settings.lease_seconds
        #: Counts of outcomes since start: complete, failed, retried, expired, and
        #: cancelled (runs stopped because the task was cancelled, or taken over).
        self.counts: dict[str, int] = dict.fromkeys(
            ("complete", "failed", "retried", "expired", "cancelled"), 0
        )
        self._executor: BaseExecutor | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._held: set[str] = set()
        self._finished: list[Finish] = []
        # Events of the held tasks not yet handed to the event logger: they are written
        # with the task's result (one write, never after it), or handed over once the task
        # has run for ``_spill_after`` seconds, so a long run shows EXECUTING meanwhile.
        self._pending: dict[str, list[TaskEvent]] = {}
        # Per task, the event logger's count of events accepted when the task's last
        # event went to it: its finish waits until the logger has written that many.
        self._logged_upto: dict[str, int] = {}
        self._spill_after = max(0.01, settings.event_flush_interval)
        self._finish_wakeup: asyncio.Event | None = None
        self._slot_freed: asyncio.Event | None = None
        self._stop_event: asyncio.Event | None = None
        self._abandoned: set[str] = set()
        self._main: asyncio.Task[None] | None = None
        # The task inside run(), and set once run() has shut everything down.
        self._run_task: asyncio.Task[Any] | None = None
        self._run_done: asyncio.Event | None = None
        # The stop's timeout in seconds (None: not asked to stop), and an event set by
        # every stop(): a stop with a shorter timeout cuts a graceful wait short.
        self._stop_timeout: float | None = None
        self._stop_changed: asyncio.Event | None = None
        self._started = False
        # The task blocked in _idle (interruptible), and whether it was interrupted.
        self._waiting: asyncio.Task[Any] | None = None
        self._interrupted = False
        self._next_schedule_check = 0.0
        self._schedules_off = False
        self._flush_lock: asyncio.Lock | None = None
        #: Bumped whenever a task leaves a slot or a batch of outcomes is written: a burst
        #: run only ends after a claim that started after the last of these found nothing.
        self._progress = 0
        # Claim once this many slots are free: fewer round trips than one claim per slot,
        # but capped, so that with many slots (long sleeps) they do not idle waiting for
        # a big batch (measured: 8 beats 25 and 4 at concurrency 100).
        self._claim_watermark = max(1, min(8, self.concurrency // 4))
        # Tasks claimed since construction, and (during process_tasks) the count at which
        # claiming stops.
        self._claimed = 0
        self._claim_limit: int | None = None

    # -- public control ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the pool's loop runs."""
        return self._started

    async def run(self, *, burst: bool = False) -> None:
        """Process tasks until stopped; with ``burst=True`` return once nothing is left
        to claim and nothing is running (dependents released and retries due during the
        run included; a retry delayed past the end is left for the next run)."""
        if self._started:
            raise ConfigError("this worker pool is already running")
        self._started = True
        self._run_task = asyncio.current_task()
        self._run_done = done = asyncio.Event()
        try:
            await self._run(burst)
        finally:
            self._started = False
            done.set()

    async def _run(self, burst: bool) -> None:
        self._stop_event = asyncio.Event()
        self._stop_changed = asyncio.Event()
        self._stop_timeout = None
        self._slot_freed = asyncio.Event()
        self._finish_wakeup = asyncio.Event()
        await self.engine.connect()
        self._executor = create_executor(self.worker_type, self.concurrency)
        await self._executor.start()
        self.engine.add_pool(self)
        finisher = asyncio.create_task(self._finish_loop(), name="omniq-finisher")
        renewer = asyncio.create_task(self._renew_loop(), name="omniq-renewer")
        watcher = asyncio.create_task(
            self.engine.queue.watch_cancels(self.worker_id, self._held_ids, self._lost_notice),
            name="omniq-cancel-watcher",
        )
        logger.info(
            "worker %s started: type=%s concurrency=%d queues=%s loop=%s",
            self.worker_id,
            self.worker_type,
            self.concurrency,
            ",".join(self.queues),
            type(asyncio.get_running_loop()).__module__.partition(".")[0],
        )
        try:
            await self._claim_loop(burst)
        finally:
            try:
                await self._shutdown(finisher, renewer, watcher)
            finally:
                self.engine.discard_pool(self)
                logger.info("worker %s stopped: %s", self.worker_id, self.counts)

    async def process_tasks(self, limit: int | None = None) -> int:
        """Run at most ``limit`` tasks that are due now (every one with None), wait for
        them to finish, and return how many were run.

        A bounded burst: as ``run(burst=True)``, but claiming stops once ``limit`` tasks
        were claimed. Each claim counts, so a task that fails and is retried within the
        call counts again, and one found expired counts too. Useful to drain a queue in
        slices (a cron job, a test, a request handler)::

            while await pool.process_tasks(limit=100):
                ...                       # between slices
        """
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise ConfigError(f"limit={limit!r}: expected an integer >= 0 or None")
        if self._started:
            raise ConfigError("this worker pool is already running")
        if limit == 0:
            return 0
        before = self._claimed
        self._claim_limit = None if limit is None else before + limit
        try:
            await self.run(burst=True)
        finally:
            self._claim_limit = None
        return self._claimed - before

    async def start(self) -> None:
        """Run the pool in the background; returns at once."""
        if self._main is not None and not self._main.done():
            return
        self._main = asyncio.create_task(self.run(), name=f"omniq-worker-{self.worker_id}")
        # Let it get going so that stop() right after start() finds it started.
        await asyncio.sleep(0)

    async def stop(self, timeout: Duration | None = None) -> None:
        """Stop claiming, let running tasks finish within ``timeout`` (seconds, a
        ``timedelta`` or a string like ``"30s"``; default ``shutdown_timeout``), hand back
        the leases of the rest, flush, and return. ``timeout=0`` stops at once (leases
        are still handed back).

        Whether the pool was started with :meth:`start` or runs :meth:`run` in another
        task, this returns once it has stopped.
        """
        seconds = (
            self.engine.settings.shutdown_timeout
            if timeout is None
            else parse_duration(timeout, field="argument timeout")
        )
        if self._stop_timeout is None or seconds < self._stop_timeout:
            # The shorter wins: a second Ctrl-C (timeout 0) ends a graceful stop at once.
            self._stop_timeout = seconds
        if self._stop_changed is not None:
            self._stop_changed.set()
        if self._stop_event is not None:
            self._stop_event.set()
            if self._slot_freed is not None:
                self._slot_freed.set()
            self._interrupt_wait()
        current = asyncio.current_task()
        if current is self._run_task or current in self._running.values():
            return  # asked from inside the pool: waiting for the stop would wait for itself
        main = self._main
        if main is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await main
            self._main = None
        if self._run_done is not None:
            await self._run_done.wait()

    async def __aenter__(self) -> AsyncWorkerPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def wake(self) -> None:
        """Re-check schedules and the queue now (a schedule was created or changed)."""
        self._next_schedule_check = 0.0
        self._interrupt_wait()

    def cancel_local(self, task_id: str) -> bool:
        """Stop a task this pool is running (its state was already settled elsewhere)."""
        running = self._running.get(task_id)
        if running is None:
            return False
        self._abandoned.add(task_id)
        self._held.discard(task_id)  # no longer this worker's: not renewed nor handed back
        running.cancel()
        self.counts["cancelled"] += 1
        return True

    def _held_ids(self) -> set[str]:
        return self._held

    def _lost_notice(self, task_id: str) -> None:
        """The queue says this worker no longer holds ``task_id`` (cancelled, or taken
        over after its lease ran out): stop running it."""
        if task_id in self._held and self.cancel_local(task_id):
            logger.info("task %s: cancelled (or its lease taken over); stopped", task_id)

    # -- claiming ----------------------------------------------------------------------

    @property
    def _stopping(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    async def _claim_loop(self, burst: bool) -> None:
        assert self._slot_freed is not None
        queue = self.engine.queue
        settings = self.engine.settings
        backoff = 0.0
        loop = asyncio.get_running_loop()
        # True when the wait that just ended claimed (and found nothing) itself.
        just_claimed = False
        while not self._stopping:
            if not burst and loop.time() >= self._next_schedule_check:
                await self._fire_schedules(settings.poll_interval)
                just_claimed = False
            free = self.concurrency - len(self._running)
            capped = False
            if self._claim_limit is not None and free >= self._claim_limit - self._claimed:
                # process_tasks(limit): no more claims than the limit leaves (none at 0).
                free, capped = self._claim_limit - self._claimed, True
            if free < self._claim_watermark and self._running and not capped:
                # Claim in batches: one round trip per several free slots, not per slot.
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            tasks: list[Task] = []
            progress = self._progress
            if not just_claimed and free:
                try:
                    tasks = await queue.claim(
                        self.queues,
                        self.worker_id,
                        limit=free,
                        lease_seconds=self.lease_seconds,
                        now=utcnow(),
                        strict=self._strict,
                    )
                    backoff = 0.0
                except StorageError as exc:
                    backoff = min(_MAX_BACKOFF, max(0.05, backoff * 2))
                    logger.warning("claim failed (%s); retrying in %.2f s", exc, backoff)
                    await self._idle(backoff)
                    continue
            just_claimed = False
            if tasks:
                self._start(tasks)
                if len(tasks) < free:
                    # Let the claimed tasks start before asking again: the batch was short,
                    # so the queue is (nearly) empty.
                    await asyncio.sleep(0)
                continue
            if burst:
                if self._running:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                if self._finished or (self._flush_lock is not None and self._flush_lock.locked()):
                    # Results not yet written may release dependents: write them, look again.
                    await self._flush_finished()
                    continue
                if self._progress != progress:
                    # A task settled while that claim was out (a retry due now, released
                    # dependents): the claim may have missed it.
                    continue
                return
            woke_with = await self._wait_for_work(settings.poll_interval, free)
            if woke_with:
                self._start(woke_with)
                await asyncio.sleep(0)
            just_claimed = woke_with is not None and not woke_with

    def _start(self, tasks: list[Task]) -> None:
        self._claimed += len(tasks)
        for task in tasks:
            self._held.add(task.id)
            self._running[task.id] = asyncio.create_task(self._execute(task))

    async def _fire_schedules(self, poll_interval: float) -> None:
        """Fire due schedule ticks; note when to look again."""
        loop = asyncio.get_running_loop()
        self._next_schedule_check = loop.time() + poll_interval
        if self._schedules_off:
            return
        try:
            scheduler = await self.engine.open_schedules()
            next_due = await scheduler.fire_due(utcnow())
        except OmniQError as exc:
            if isinstance(exc, StorageError):
                logger.warning("firing schedules failed: %s", exc)
            else:  # this queue has no schedule store: nothing to fire, ever
                self._schedules_off = True
            return
        if next_due is not None:
            wait = max(0.0, (next_due - utcnow()).total_seconds())
            self._next_schedule_check = min(self._next_schedule_check, loop.time() + wait)

    async def _wait_for_work(self, poll_interval: float, free: int) -> list[Task] | None:
        """Wait for work and claim up to ``free`` tasks as the wait ends; None when
        no claim was made (nothing waited for, or woken by a stop or a nudge)."""
        queue = self.engine.queue
        ceiling = max(poll_interval, 5.0) if queue.notifies else poll_interval
        if not self._schedules_off:
            loop = asyncio.get_running_loop()
            ceiling = min(ceiling, max(0.0, self._next_schedule_check - loop.time()))
        timeout = ceiling
        try:
            due = await queue.next_due_at(self.queues)
        except StorageError:
            due = None
        if due is not None:
            timeout = min(ceiling, max(0.0, (due - utcnow()).total_seconds()))
        if timeout <= 0:
            return None
        waiter = queue.wait_and_claim(
            self.queues,
            self.worker_id,
            limit=free,
            lease_seconds=self.lease_seconds,
            timeout=timeout,
            strict=self._strict,
        )
        claimed: list[Task] | None = await self._idle(timeout, waiter)
        return claimed

    async def _idle(self, timeout: float, waiter: Any = None) -> Any:
        """Sleep for ``timeout`` or until ``waiter`` finishes, but wake on stop or a
        nudge; the waiter's value when it finished, else None.

        The waiter runs in this task, not a task of its own, and stop and nudge cancel
        this task (then take their cancel back): a wake-up costs no extra asyncio task
        and no extra loop turn. A waiter cut short may have claimed on the server as it
        was stopped: the queue hands those tasks back (Redis does so at once; a backend
        that cannot comes back to them when their lease runs out).
        """
        if waiter is None:
            waiter = asyncio.sleep(timeout)
        if self._stopping:
            waiter.close()
            return None
        current = asyncio.current_task()
        assert current is not None
        self._waiting = current
        try:
            return await waiter
        except asyncio.CancelledError:
            # Only our own interrupt is taken back: a cancel from anyone else stands.
            if not self._interrupted or current.uncancel() > 0:
                raise
            return None
        except Exception as exc:
            logger.warning("waiting for work failed: %s", exc)
            await asyncio.sleep(min(timeout, 0.5))
            return None
        finally:
            self._waiting = None
            self._interrupted = False

    def _interrupt_wait(self) -> None:
        if self._waiting is not None and not self._interrupted:
            self._interrupted = True
            self._waiting.cancel()

    # -- running one task ----------------------------------------------------------------

    def _event(self, task: Task, kind: EventType, message: str = "", *, attempt: int = -1) -> None:
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

    def _spill(self, task_id: str) -> None:
        """Hand a held task's noted events to the event logger (written in the
        background): it has run for a while, or will not finish here."""
        events = self._pending.pop(task_id, None)
        if events:
            logger_ = self.engine.events
            logger_.log_many(events, announce=False)
            self._logged_upto[task_id] = logger_.accepted

    def _spill_later(self, task: Task) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(self._spill_after, self._spill_if_running, task.id)

    def _spill_if_running(self, task_id: str) -> None:
        if task_id in self._running:
            self._spill(task_id)

    def _finish(
        self,
        task: Task,
        status: TaskStatus,
        *,
        value: bytes | None = None,
        error: ErrorInfo | None = None,
        started_at: datetime | None = None,
        ran: bool = True,
    ) -> None:
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
        self._finished.append(Finish(Ack(task.id, self.worker_id, status, ran), result, events))
        assert self._finish_wakeup is not None
        self._finish_wakeup.set()

    async def _execute(self, task: Task) -> None:
        try:
            await self._execute_inner(task)
        except asyncio.CancelledError:
            # Stopped here: by a hard stop (the lease is handed back in _shutdown), or
            # because the task was cancelled or its lease lost (settled elsewhere). It did
            # start: its EXECUTING event stands.
            self._spill(task.id)
        except Exception:
            logger.exception("worker %s: internal error on task %s", self.worker_id, task.id)
            self._spill(task.id)
        finally:
            self._running.pop(task.id, None)
            self._progress += 1
            # Wake the claim loop only when it has something to do: it claims once
            # ``_claim_watermark`` slots are free (or the pool ran dry), and a wake-up per
            # finished task would cost a loop turn each for nothing.
            if self._slot_freed is not None and (
                not self._running or self.concurrency - len(self._running) >= self._claim_watermark
            ):
                self._slot_freed.set()

    async def _execute_inner(self, task: Task) -> None:
        if isinstance(task, UnreadableTask):
            # Nothing can run it, and no retry can mend it: fail it with the reason.
            self._event(task, EventType.ERROR, task.reason)
            error = ErrorInfo(type="omniq.UnreadableTask", message=task.reason)
            self._finish(task, TaskStatus.FAILED, error=error)
            return
        verdict, why = before_run(
            task, now=utcnow(), max_lost_runs=self.engine.settings.max_lost_runs
        )
        if verdict is not Verdict.RUN:
            # This claim does not run it: the attempt it counted is taken back.
            assert why is not None
            expired = verdict is Verdict.EXPIRE
            kind = EventType.EXPIRED if expired else EventType.ERROR
            self._event(task, kind, why.message, attempt=task.attempts - 1)
            if not expired:
                logger.warning("task %s (%s): %s", task.id, task.func, why.message)
            status = TaskStatus.EXPIRED if expired else TaskStatus.FAILED
            self._finish(task, status, error=why, ran=False)
            return
        self._event(task, EventType.EXECUTING)
        if self._pending.get(task.id):
            self._spill_later(task)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("task %s (%s): attempt %d started", task.id, task.func, task.attempts)
        try:
            carried, args, kwargs = self.engine.serializer.loads_call(task.payload)
            func = carried if carried is not None else self.engine.builder.resolve(task.func)
        except OmniQError as exc:
            # Retrying cannot fix a payload or an import: fail now with the reason.
            self._log_failure(task, exc, final=True)
            self._event(task, EventType.ERROR, str(exc))
            self._finish(task, TaskStatus.FAILED, error=ErrorInfo.from_exception(exc))
            return
        started_at = utcnow()
        assert self._executor is not None
        try:
            value = await self._executor.run(task, func, args, kwargs, task.timeout)
        except Retry as request:
            await self._retry(task, request, request.delay)
            return
        except TaskTimeoutError as exc:
            logger.warning("task %s (%s): attempt %d timed out", task.id, task.func, task.attempts)
            self._event(task, EventType.TIMEOUT, str(exc))
            await self._failed(task, exc, started_at)
            return
        except Exception as exc:
            await self._failed(task, exc, started_at)
            return
        try:
            encoded = self.engine.serializer.dumps(value, what=f"the result of {task.func}")
        except SerializationError as exc:
            await self._failed(task, exc, started_at)
            return
        self._event(task, EventType.COMPLETE)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("task %s (%s): attempt %d complete", task.id, task.func, task.attempts)
        self._finish(task, TaskStatus.COMPLETE, value=encoded, started_at=started_at)

    def _retries_left(self, task: Task) -> bool:
        return has_attempts_left(failed_runs(task.attempts, task.lost_runs), task.max_retries)

    def _log_failure(self, task: Task, exc: BaseException, *, final: bool) -> None:
        """One WARNING line per failed attempt; its traceback at INFO."""
        outcome = "failed" if final else "failed, will retry"
        logger.warning(
            "task %s (%s): attempt %d %s: %s: %s",
            task.id,
            task.func,
            task.attempts,
            outcome,
            type(exc).__name__,
            exc,
        )
        if exc.__traceback__ is not None and logger.isEnabledFor(logging.INFO):
            logger.info("task %s traceback:", task.id, exc_info=exc)

    async def _failed(self, task: Task, exc: BaseException, started_at: datetime) -> None:
        if self._retries_left(task):
            await self._retry(task, exc, None)
            return
        self._log_failure(task, exc, final=True)
        self._event(task, EventType.ERROR, f"{type(exc).__name__}: {exc}")
        self._finish(
            task, TaskStatus.FAILED, error=ErrorInfo.from_exception(exc), started_at=started_at
        )

    async def _retry(self, task: Task, exc: BaseException, delay: float | None) -> None:
        if not self._retries_left(task):
            self._log_failure(task, exc, final=True)
            self._event(task, EventType.ERROR, f"{type(exc).__name__}: {exc}")
            self._finish(task, TaskStatus.FAILED, error=ErrorInfo.from_exception(exc))
            return
        if delay is None:
            delay = backoff_delay(
                failed_runs(task.attempts, task.lost_runs),
                base=task.retry_delay,
                cap=self.engine.settings.retry_max_delay,
            )
        if not isinstance(exc, Retry):
            self._log_failure(task, exc, final=False)
        logger.info("task %s (%s): retry %d in %.3f s", task.id, task.func, task.attempts, delay)
        self._event(task, EventType.ERROR, f"{type(exc).__name__}: {exc}")
        self._event(task, EventType.RETRY, f"attempt {task.attempts + 1} in {delay:.3f} s")
        # Written before the retry is stored: the next attempt (on any worker) logs after.
        await self._write_events(self._pending.pop(task.id, []))
        now = utcnow()
        due = now + timedelta(seconds=delay)
        try:
            moved = await self.engine.queue.retry(task.id, self.worker_id, due_at=due, now=now)
        except StorageError as err:
            # The lease runs out and the task is claimed again: nothing is lost.
            logger.warning("could not schedule retry of %s: %s", task.id, err)
            return
        finally:
            self._held.discard(task.id)
        if moved:
            self.counts["retried"] += 1

    async def _write_events(self, events: Sequence[TaskEvent]) -> None:
        """Store events now; if the event log is failing, leave them to the logger."""
        storage = self.engine.events.storage
        if not events or storage is None:
            return
        try:
            await storage.append(events)
        except StorageError as exc:
            logger.warning("writing %d events failed (%s); retrying later", len(events), exc)
            self.engine.events.log_many(events, announce=False)

    # -- finishing -----------------------------------------------------------------------

    async def _finish_loop(self) -> None:
        assert self._finish_wakeup is not None
        loop = asyncio.get_running_loop()
        last = -_FINISH_INTERVAL
        while True:
            await self._finish_wakeup.wait()
            self._finish_wakeup.clear()
            wait = last + _FINISH_INTERVAL - loop.time()
            if wait > 0 and len(self._finished) < _FINISH_BATCH:
                await asyncio.sleep(wait)
            last = loop.time()
            await self._flush_finished(everything=False)
            if self._finished:  # finished while that write was out: next round
                self._finish_wakeup.set()

    async def _flush_finished(self, *, everything: bool = True) -> None:
        # One flusher at a time: the background finisher and the shutdown path both call
        # this, and a batch must be written and acknowledged exactly once.
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            await self._flush_finished_locked(everything)

    async def _flush_finished_locked(self, everything: bool) -> None:
        """Write finished tasks: one batch, or (``everything``) until none are left."""
        backoff = 0.0
        engine = self.engine
        event_log = engine.events.storage
        rides = event_log is not None and engine.queue.finish_logs_events(event_log)
        while self._finished:
            batch = self._finished[:_FINISH_BATCH]
            del self._finished[: len(batch)]
            await self._events_logged_before(batch)
            try:
                acked, dependents = await engine.queue.finish(
                    batch, engine.results, event_log if rides else None, now=utcnow()
                )
            except StorageError as exc:
                if self._stopping and backoff >= _MAX_BACKOFF:
                    logger.error(
                        "giving up on %d results: %s (their leases will expire)", len(batch), exc
                    )
                    return
                self._finished[:0] = batch
                backoff = min(_MAX_BACKOFF, max(0.05, backoff * 2))
                logger.warning("writing results failed (%s); retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                continue
            done: list[tuple[str, TaskStatus]] = []
            later: list[TaskEvent] = []
            for item, ok in zip(batch, acked, strict=True):
                task_id = item.ack.task_id
                self._held.discard(task_id)
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
            await self._write_events(later)
            try:
                await engine.on_finished(done, dependents)
            except StorageError as exc:
                logger.warning("settling dependents failed: %s", exc)
            self._progress += 1
            if not everything:
                return

    async def _events_logged_before(self, batch: Sequence[Finish]) -> None:
        """Wait until the events the logger took for these tasks earlier (a long run's
        EXECUTING) are stored: a task's events are never stored after its result."""
        if not self._logged_upto:
            return
        needed = max((self._logged_upto.get(item.ack.task_id, 0) for item in batch), default=0)
        if needed > self.engine.events.written:
            await self.engine.events.flush()

    # -- leases --------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        interval = max(0.05, self.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            held = set(self._held)
            if not held:
                continue
            try:
                kept = await self.engine.queue.renew(
                    held, self.worker_id, lease_seconds=self.lease_seconds, now=utcnow()
                )
            except StorageError as exc:
                logger.warning("renewing %d leases failed: %s", len(held), exc)
                continue
            for task_id in held - kept:
                if task_id in self._held and self.cancel_local(task_id):
                    logger.warning(
                        "task %s: lease lost (cancelled or taken over); stopped", task_id
                    )

    # -- stopping ------------------------------------------------------------------------

    async def _let_running_finish(self) -> None:
        """Wait for the running tasks, up to the stop's timeout (``shutdown_timeout`` by
        default), counted from now; a later stop() with a shorter one takes over."""
        assert self._stop_changed is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            pending = [task for task in self._running.values() if not task.done()]
            timeout = self._stop_timeout
            if timeout is None:
                timeout = self.engine.settings.shutdown_timeout
            remaining = began + timeout - loop.time()
            if not pending or remaining <= 0:
                return
            self._stop_changed.clear()
            changed = asyncio.create_task(self._stop_changed.wait())
            try:
                await asyncio.wait(
                    [*pending, changed], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                changed.cancel()

    async def _shutdown(
        self,
        finisher: asyncio.Task[None],
        renewer: asyncio.Task[None],
        watcher: asyncio.Task[None],
    ) -> None:
        await self._let_running_finish()
        leftover = dict(self._running)
        for task in leftover.values():
            task.cancel()
        if leftover:
            await asyncio.gather(*leftover.values(), return_exceptions=True)
        renewer.cancel()
        watcher.cancel()
        await self._flush_finished()
        # The finisher is idle now (the flush lock serialises it with the call above).
        finisher.cancel()
        await asyncio.gather(finisher, renewer, watcher, return_exceptions=True)
        handback = [tid for tid in leftover if tid in self._held and tid not in self._abandoned]
        if handback:
            try:
                count = await self.engine.queue.release(handback, self.worker_id, now=utcnow())
                logger.info("handed back %d unfinished tasks", count)
            except StorageError as exc:
                logger.warning(
                    "handing back %d tasks failed (%s); their leases will expire",
                    len(handback),
                    exc,
                )
        self._held.clear()
        if self._executor is not None:
            await self._executor.stop(wait=not leftover)
            self._executor = None
        await self.engine.events.flush()
