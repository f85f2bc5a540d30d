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
from datetime import datetime
from typing import TYPE_CHECKING, Any

from omniq._limits import held_until, hold_wait
from omniq.config import Duration, parse_duration
from omniq.errors import ConfigError, OmniQError, StorageError
from omniq.models import Task, utcnow
from omniq.workers._leases import LeaseKeeper
from omniq.workers._metrics import serve_metrics
from omniq.workers._options import parse_queue_order, parse_queues
from omniq.workers._outcomes import Outcomes
from omniq.workers._presence import keep_registered
from omniq.workers._running import TaskRunner
from omniq.workers._waiting import InterruptibleWait, let_running_finish
from omniq.workers.executors import BaseExecutor, create_executor, executor_class

if TYPE_CHECKING:
    from omniq.engine import Engine

__all__ = ["AsyncWorkerPool"]

logger = logging.getLogger("omniq.worker")

_MAX_BACKOFF = 5.0


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
        self.queues = parse_queues(queues, settings.default_queue)
        self.queue_order = parse_queue_order(queue_order, settings.queue_order)
        # What every claim passes to the queue: take the queues in list order.
        self._strict = self.queue_order == "strict"
        self.worker_id = worker_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        self.lease_seconds: float = settings.lease_seconds
        #: Serve Prometheus metrics on this port while running (None: off); set before run.
        self.metrics_port: int | None = settings.metrics_port
        #: Counts of outcomes since start: complete, failed, retried, expired, and
        #: cancelled (runs stopped because the task was cancelled, or taken over).
        self.counts: dict[str, int] = dict.fromkeys(
            ("complete", "failed", "retried", "expired", "cancelled"), 0
        )
        self._executor: BaseExecutor | None = None
        # The executor of the last run, kept after it stops: its abandoned threads run on.
        self._last_executor: BaseExecutor | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._held: set[str] = set()
        self._outcomes = Outcomes(
            self.engine,
            self.worker_id,
            counts=self.counts,
            held=self._held,
            stopping=lambda: self._stopping,
            on_written=self._written,
        )
        self._runner = TaskRunner(
            self.engine,
            self.worker_id,
            self._outcomes,
            executor=lambda: self._executor,
            held=self._held,
            running=self._running,
            counts=self.counts,
        )
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
        self._wait = InterruptibleWait(self._stop_requested)
        self._leases = LeaseKeeper(
            self.engine,
            self.worker_id,
            self.lease_seconds,
            held=self._held,
            stop_run=self.cancel_local,
            on_settled=self._written,
        )
        self._next_schedule_check = 0.0
        self._schedules_off = False
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
        # Whether the last claim left tasks waiting on a limit, and until when (None: a cap).
        self._hold: tuple[bool, datetime | None] = (False, None)

    # -- public control ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the pool's loop runs."""
        return self._started

    @property
    def abandoned_threads(self) -> int:
        """Threads of this pool still running calls whose tasks already ended (a thread
        or async worker's plain function past its timeout, or stopped: Python cannot stop
        a thread). Each holds one of the pool's threads until it returns; a WARNING names
        the task when one is abandoned and when it ends. Counted after a stop too."""
        executor = self._last_executor
        return 0 if executor is None else executor.abandoned_threads

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
        await self.engine.connect()
        self._executor = self._last_executor = create_executor(self.worker_type, self.concurrency)
        await self._executor.start()
        self.engine.add_pool(self)
        finisher = asyncio.create_task(self._outcomes.write_loop(), name="omniq-finisher")
        renewer = asyncio.create_task(self._leases.renew_loop(), name="omniq-renewer")
        # Beside the finisher and the renewer: the cancel watcher, and the spiller that
        # hands long runs' EXECUTING to the event logger.
        helpers = [
            asyncio.create_task(
                self.engine.queue.watch_cancels(self.worker_id, self._held_ids, self._lost_notice),
                name="omniq-cancel-watcher",
            ),
            asyncio.create_task(
                self._outcomes.spill_loop(self._running.__contains__), name="omniq-spiller"
            ),
            asyncio.create_task(self._leases.sweep_loop(), name="omniq-dependents-sweeper"),
            asyncio.create_task(
                keep_registered(self.engine, self, self._running.__len__),
                name="omniq-registration",
            ),
        ]
        logger.info(
            "worker %s started: type=%s concurrency=%d queues=%s loop=%s",
            self.worker_id,
            self.worker_type,
            self.concurrency,
            ",".join(self.queues),
            type(asyncio.get_running_loop()).__module__.partition(".")[0],
        )
        try:
            if self.metrics_port is not None:  # a busy port fails the run, cleaned up below
                hooked = (self._outcomes, self._runner)
                helpers.append(serve_metrics(self.engine, self.queues, self.metrics_port, hooked))
            await self._claim_loop(burst)
        finally:
            try:
                await self._shutdown(finisher, renewer, helpers)
            finally:
                self.engine.discard_pool(self)
                logger.info(
                    "worker %s stopped: %s%s",
                    self.worker_id,
                    self.counts,
                    f" ({left} abandoned threads still running)"
                    if (left := self.abandoned_threads)
                    else "",
                )

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
            self._wait.interrupt()
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
        self._wait.interrupt()

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

    def _written(self) -> None:
        # A batch of outcomes was written: dependents may have been released.
        self._progress += 1

    def _lost_notice(self, task_id: str) -> None:
        """The queue says this worker no longer holds ``task_id`` (cancelled, or taken
        over after its lease ran out): stop running it."""
        if task_id in self._held and self.cancel_local(task_id):
            logger.info("task %s: cancelled (or its lease taken over); stopped", task_id)

    # -- claiming ----------------------------------------------------------------------

    @property
    def _stopping(self) -> bool:
        return self._stop_requested()

    def _stop_requested(self) -> bool:
        # A method as well as the property: the stop can come while the loop awaits,
        # which a narrowed ``while not self._stopping`` would hide from the checker.
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
                    self._hold = held_until(tasks)
                    backoff = 0.0
                except StorageError as exc:
                    backoff = min(_MAX_BACKOFF, max(0.05, backoff * 2))
                    logger.warning("claim failed (%s); retrying in %.2f s", exc, backoff)
                    await self._wait.wait(backoff)
                    continue
            just_claimed = False
            if tasks and self._stop_requested():
                # A claim still out when the stop came (a slow store): its tasks go back
                # unstarted rather than begin a run the stop would cut short.
                await self._hand_back(tasks)
                break
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
                if self._outcomes.busy:
                    # Results not yet written may release dependents: write them, look again.
                    await self._outcomes.flush()
                    continue
                if self._progress != progress:
                    # A task settled while that claim was out (a retry due now, released
                    # dependents): the claim may have missed it.
                    continue
                if self._hold[0]:  # due tasks wait on a limit: a burst waits for them
                    await self._wait.wait(hold_wait(self._hold, settings.poll_interval, utcnow()))
                    continue
                return
            woke_with = await self._wait_for_work(settings.poll_interval, free)
            if woke_with is not None:
                self._hold = held_until(woke_with)
            if woke_with and self._stop_requested():
                await self._hand_back(woke_with)
                break
            if woke_with:
                self._start(woke_with)
                await asyncio.sleep(0)
            just_claimed = woke_with is not None and not woke_with

    async def _hand_back(self, tasks: list[Task]) -> None:
        """Release tasks claimed but never started (their attempt is not spent)."""
        try:
            count = await self.engine.queue.release(
                [task.id for task in tasks], self.worker_id, now=utcnow()
            )
            logger.info("handed back %d tasks claimed as the worker stopped", count)
        except StorageError as exc:
            logger.warning(
                "handing back %d tasks failed (%s); their leases will expire", len(tasks), exc
            )

    def _start(self, tasks: list[Task]) -> None:
        self._claimed += len(tasks)
        for task in tasks:
            self._held.add(task.id)
            if self._outcomes.reclaimed(task):
                continue  # its run had ended; the outcome now goes under this claim
            # This worker's own run may still hold the task: its renewals could not reach
            # the store, its lease ran out, and this claim took the task back. That run is
            # lost, as on any worker: it stops, then this claim runs the task afresh.
            lost = self._running.get(task.id)
            if lost is not None:
                lost.cancel()
            self._running[task.id] = asyncio.create_task(self._execute(task, after=lost))

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
        if self._hold[0]:
            # Claimable tasks wait on a limit: sleep until it frees (or a finish here).
            timeout = min(ceiling, hold_wait(self._hold, poll_interval, utcnow()))
            due = None
        else:
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
        claimed: list[Task] | None = await self._wait.wait(timeout, waiter)
        return claimed

    # -- running one task ----------------------------------------------------------------

    async def _execute(self, task: Task, after: asyncio.Task[None] | None = None) -> None:
        try:
            if after is not None:
                # The lost run's own clean-up first (its events, its place in the maps).
                await asyncio.gather(after, return_exceptions=True)
                self._held.add(task.id)
            if not await self._leases.still_leased(task):
                return
            await self._runner.run(task)
        except asyncio.CancelledError:
            # Stopped here: by a hard stop (the lease is handed back in _shutdown), or
            # because the task was cancelled or its lease lost (settled elsewhere). It did
            # start: its EXECUTING event stands.
            self._outcomes.spill(task.id)
        except Exception:
            logger.exception("worker %s: internal error on task %s", self.worker_id, task.id)
            self._outcomes.spill(task.id)
        finally:
            if self._running.get(task.id) is asyncio.current_task():
                del self._running[task.id]  # not a later claim's run of the same task
            self._progress += 1
            # Wake the claim loop only when it has something to do: it claims once
            # ``_claim_watermark`` slots are free (or the pool ran dry), and a wake-up per
            # finished task would cost a loop turn each for nothing.
            if self._slot_freed is not None and (
                not self._running or self.concurrency - len(self._running) >= self._claim_watermark
            ):
                self._slot_freed.set()
            if self._hold[0] and self._hold[1] is None:
                self._wait.interrupt()  # a concurrency slot of a limit may be free now

    # -- stopping ------------------------------------------------------------------------

    async def _shutdown(
        self,
        finisher: asyncio.Task[None],
        renewer: asyncio.Task[None],
        helpers: list[asyncio.Task[None]],
    ) -> None:
        assert self._stop_changed is not None
        await let_running_finish(
            self._running,
            self._stop_changed,
            lambda: (
                self.engine.settings.shutdown_timeout
                if self._stop_timeout is None
                else self._stop_timeout
            ),
        )
        leftover = dict(self._running)
        for task in leftover.values():
            task.cancel()
        if leftover:
            await asyncio.gather(*leftover.values(), return_exceptions=True)
        await self._runner.progress.close()
        renewer.cancel()
        for helper in helpers:
            helper.cancel()
        await self._outcomes.flush()
        # The finisher is idle now (the flush lock serialises it with the call above).
        finisher.cancel()
        await asyncio.gather(finisher, renewer, *helpers, return_exceptions=True)
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
