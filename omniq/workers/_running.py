"""How a worker pool runs one claimed task: decide, run, then finish, fail or retry.

:class:`TaskRunner` takes a task the pool has claimed: a task that must not run (past
its ttl, lost with its workers too often, unreadable) is finished at once; otherwise its
call is decoded and run by the executor of the worker type, and its outcome is queued
for the pool's next write (:class:`~omniq.workers._outcomes.Outcomes`), or, for a
failure with retries left, stored as a retry after its backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Container
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from omniq._building import payload_too_large
from omniq.context import reset_current_task, set_current_task
from omniq.decisions import Verdict, before_run
from omniq.errors import OmniQError, SerializationError, StorageError, TaskTimeoutError
from omniq.models import ErrorInfo, EventType, Task, TaskStatus, utcnow
from omniq.retry import Retry, backoff_delay, failed_runs, has_attempts_left
from omniq.storage.base import UnreadableTask
from omniq.workers._outcomes import Outcomes
from omniq.workers._progress import ProgressWriter
from omniq.workers.executors import BaseExecutor

if TYPE_CHECKING:
    from omniq.engine import Engine
    from omniq.workers._metrics import PoolMetrics

__all__ = ["TaskRunner"]

logger = logging.getLogger("omniq.worker")


class TaskRunner:
    """Runs a pool's claimed tasks (see the module docstring).

    ``executor`` gives the pool's executor (it starts and stops with the pool);
    ``held``, ``running`` and ``counts`` are the pool's.
    """

    def __init__(
        self,
        engine: Engine,
        worker_id: str,
        outcomes: Outcomes,
        *,
        executor: Callable[[], BaseExecutor | None],
        held: set[str],
        running: Container[str],
        counts: dict[str, int],
    ) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.outcomes = outcomes
        self.executor = executor
        self.held = held
        self.running = running
        self.counts = counts
        self.progress = ProgressWriter(lambda: engine.queue, worker_id)
        #: The pool's Prometheus metrics while it serves them (``metrics_port``).
        self.metrics: PoolMetrics | None = None

    async def run(self, task: Task) -> None:
        """Run a claimed task once and queue its outcome (or store its retry)."""
        if isinstance(task, UnreadableTask):
            # Nothing can run it, and no retry can mend it: fail it with the reason.
            self.outcomes.note(task, EventType.ERROR, task.reason)
            error = ErrorInfo(type="omniq.UnreadableTask", message=task.reason)
            self.outcomes.finish(task, TaskStatus.FAILED, error=error)
            return
        verdict, why = before_run(
            task, now=utcnow(), max_lost_runs=self.engine.settings.max_lost_runs
        )
        if verdict is not Verdict.RUN:
            # This claim does not run it: the attempt it counted is taken back.
            assert why is not None
            expired = verdict is Verdict.EXPIRE
            kind = EventType.EXPIRED if expired else EventType.ERROR
            self.outcomes.note(task, kind, why.message, attempt=task.attempts - 1)
            if not expired:
                logger.warning("task %s (%s): %s", task.id, task.func, why.message)
            status = TaskStatus.EXPIRED if expired else TaskStatus.FAILED
            self.outcomes.finish(task, status, error=why, ran=False)
            return
        self.outcomes.note(task, EventType.EXECUTING)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("task %s (%s): attempt %d started", task.id, task.func, task.attempts)
        try:
            limit = self.engine.settings.max_payload_bytes
            if limit is not None and len(task.payload) > limit:
                # Someone wrote this record past the producers' check: never decoded.
                raise payload_too_large("its stored arguments", len(task.payload), limit)
            carried, args, kwargs = self.engine.serializer.loads_call(task.payload)
            func = carried if carried is not None else self.engine.builder.resolve(task.func)
        except OmniQError as exc:
            # Retrying cannot fix a payload or an import: fail now with the reason.
            self._log_failure(task, exc, final=True)
            self.outcomes.note(task, EventType.ERROR, str(exc))
            self.outcomes.finish(task, TaskStatus.FAILED, error=ErrorInfo.from_exception(exc))
            return
        started_at = utcnow()
        executor = self.executor()
        assert executor is not None
        # The run inside the task's context (``current_task()``); its last progress
        # report is stored before its outcome. Written here, not in a coroutine of its
        # own: every resume of the task's coroutine passes through each layer above it.
        context = self.progress.context(task)
        token = set_current_task(context)
        try:
            try:
                if self.metrics is None and self.engine.tracing is None:
                    value = await executor.run(task, func, args, kwargs, task.timeout)
                else:
                    value = await self._observed(executor, task, func, args, kwargs)
            except asyncio.CancelledError:
                context.close()
                raise  # stopped: a pending report is left to the background flush
            finally:
                reset_current_task(token)
                if not context.closed:
                    context.close()
                    await self.progress.finish(task.id)
        except Retry as request:
            await self._retry(task, request, request.delay)
            return
        except TaskTimeoutError as exc:
            logger.warning("task %s (%s): attempt %d timed out", task.id, task.func, task.attempts)
            self.outcomes.note(task, EventType.TIMEOUT, str(exc))
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
        self.outcomes.note(task, EventType.COMPLETE)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("task %s (%s): attempt %d complete", task.id, task.func, task.attempts)
        self.outcomes.finish(task, TaskStatus.COMPLETE, value=encoded, started_at=started_at)

    async def _observed(
        self,
        executor: BaseExecutor,
        task: Task,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The executor's run of the call in its span (``tracing=True``) and with its
        metrics (``metrics_port``)."""
        with contextlib.ExitStack() as observed:
            if self.engine.tracing is not None:
                observed.enter_context(self.engine.tracing.processing(task, self.worker_id))
            if self.metrics is not None:
                observed.enter_context(self.metrics.attempt(task, self.held))
            return await executor.run(task, func, args, kwargs, task.timeout)

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
        self.outcomes.note(task, EventType.ERROR, f"{type(exc).__name__}: {exc}")
        self.outcomes.finish(
            task, TaskStatus.FAILED, error=ErrorInfo.from_exception(exc), started_at=started_at
        )

    async def _retry(self, task: Task, exc: BaseException, delay: float | None) -> None:
        if not self._retries_left(task):
            self._log_failure(task, exc, final=True)
            self.outcomes.note(task, EventType.ERROR, f"{type(exc).__name__}: {exc}")
            self.outcomes.finish(task, TaskStatus.FAILED, error=ErrorInfo.from_exception(exc))
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
        self.outcomes.note(task, EventType.ERROR, f"{type(exc).__name__}: {exc}")
        self.outcomes.note(task, EventType.RETRY, f"attempt {task.attempts + 1} in {delay:.3f} s")
        # The run is over: a stop arriving now must not cut the storing of its retry short,
        # or the stop would hand the task back as unfinished, giving back the attempt
        # this failed run spent (a retry more than ``max_retries`` allows).
        storing = asyncio.ensure_future(self._store_retry(task, delay))
        try:
            await asyncio.shield(storing)
        except asyncio.CancelledError:
            await storing
            raise

    async def _store_retry(self, task: Task, delay: float) -> None:
        """The events of a failed run, then its retry, ``delay`` seconds from now."""
        # Written before the retry is stored: the next attempt (on any worker) logs after.
        await self.outcomes.write(self.outcomes.take(task.id))
        now = utcnow()
        due = now + timedelta(seconds=delay)
        try:
            moved = await self.engine.queue.retry(task.id, self.worker_id, due_at=due, now=now)
        except StorageError as err:
            # The lease runs out and the task is claimed again: nothing is lost.
            logger.warning("could not schedule retry of %s: %s", task.id, err)
            return
        finally:
            self.held.discard(task.id)
        if moved:
            self.counts["retried"] += 1
            if self.metrics is not None:
                self.metrics.finished(task, TaskStatus.RETRYING)
