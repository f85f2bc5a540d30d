"""How a worker pool stores its tasks' progress: the latest report per task, written a
few times a second at most.

``TaskContext.progress`` (``omniq.context``) lands in :meth:`ProgressWriter.report`,
from the event loop, a worker thread, or (relayed) a child process; it only records the
latest value per task and never blocks. A flusher on the event loop, started by the
first report and ending once nothing is left, writes what is pending in one
``BaseTaskQueue.set_progress`` call at most every :attr:`ProgressWriter.interval`
seconds. When a run ends, :meth:`ProgressWriter.finish` writes its last report at once,
before the pool stores the outcome. A pool whose tasks never report writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from omniq.context import TaskContext
from omniq.errors import StorageError
from omniq.models import Progress, Task

if TYPE_CHECKING:
    from collections.abc import Callable

    from omniq.storage.base import BaseTaskQueue

__all__ = ["ProgressWriter"]

logger = logging.getLogger("omniq.worker")

_Report = tuple["int | float", "int | float | None", "str | None", float]


class ProgressWriter:
    """Coalesces the progress reports of one pool's tasks (see the module docstring).

    ``queue`` gives the task queue to write to; ``writes`` counts the ``set_progress``
    calls made (what a test or a log looks at).
    """

    #: The shortest time between two writes of the pool's pending reports, in seconds.
    interval: float = 0.25

    def __init__(self, queue: Callable[[], BaseTaskQueue], worker_id: str) -> None:
        self.queue = queue
        self.worker_id = worker_id
        self.writes = 0
        self._pending: dict[str, _Report] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._flusher: asyncio.Task[None] | None = None
        self._writing: asyncio.Lock | None = None
        self._last_write = float("-inf")

    def context(self, task: Task) -> TaskContext:
        """A context for a run of ``task`` that reports here (called on the event loop)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A pool may run again on another loop (the sync client's loop thread).
            self._loop, self._loop_thread = loop, threading.get_ident()
            self._flusher, self._writing = None, asyncio.Lock()
        return TaskContext(task.id, task.attempts, task.queue, self.worker_id, self.report)

    def report(
        self,
        task_id: str,
        done: int | float,
        total: int | float | None,
        message: str | None,
        at: float,
    ) -> None:
        """Keep the latest report of ``task_id`` (any thread; never blocks)."""
        with self._lock:
            first = not self._pending
            self._pending[task_id] = (done, total, message, at)
        if first:
            self._wake()

    def _wake(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._start_flusher()
        else:
            # RuntimeError: the loop closed under a thread left running.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._start_flusher)

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name="omniq-progress"
            )

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = self._last_write + self.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return
            await self._write(batch)

    async def close(self) -> None:
        """Stop the background flush and write what it still held (the pool stops;
        a flush left sleeping would be destroyed pending with its loop)."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
        with self._lock:
            batch, self._pending = self._pending, {}
        if batch and self._writing is not None:
            await self._write(batch)

    async def finish(self, task_id: str) -> None:
        """Write the last pending report of a run that ended (before its outcome)."""
        if task_id not in self._pending:
            if self._writing is not None and self._writing.locked():
                # Its last report may be in the write under way: let it land first.
                async with self._writing:
                    pass
            return
        with self._lock:
            report = self._pending.pop(task_id, None)
        if report is not None:
            await self._write({task_id: report})

    async def _write(self, batch: dict[str, _Report]) -> None:
        updates = {
            task_id: Progress(
                done=done,
                total=total,
                message=message,
                updated_at=datetime.fromtimestamp(at, UTC),
            )
            for task_id, (done, total, message, at) in batch.items()
        }
        assert self._writing is not None
        async with self._writing:
            try:
                await self.queue().set_progress(updates)
            except StorageError as exc:
                # Progress is advisory: a lost write is overtaken by the next one.
                logger.warning("worker %s: storing progress failed: %s", self.worker_id, exc)
            except Exception:
                # Never the task's failure (finish() runs inside its run): logged, dropped.
                logger.exception("worker %s: storing progress failed", self.worker_id)
            self.writes += 1
            self._last_write = asyncio.get_running_loop().time()
