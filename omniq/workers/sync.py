"""``WorkerPool``: the blocking face of :class:`AsyncWorkerPool`."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from omniq._sync import LoopThread, blocking
from omniq.workers.pool import AsyncWorkerPool

__all__ = ["WorkerPool"]

T = TypeVar("T")


class WorkerPool:
    """A worker pool driven from blocking code, on its client's event loop (``start``
    moves that loop to its own thread, so the pool keeps running between calls).

    Example::

        with OmniQ() as oq:
            oq.worker(concurrency=4).run(burst=True)

            with oq.worker():             # in the background for the block
                ...
    """

    def __init__(self, pool: AsyncWorkerPool, runner: LoopThread) -> None:
        self._async = pool
        self._runner = runner
        self._background: Future[None] | None = None

    @property
    def async_pool(self) -> AsyncWorkerPool:
        """The async pool this one drives."""
        return self._async

    @property
    def worker_id(self) -> str:
        """This worker's id, as recorded in events and leases."""
        return self._async.worker_id

    @property
    def queue_order(self) -> str:
        """How several queues are claimed from: ``"merged"`` or ``"strict"``."""
        return self._async.queue_order

    @property
    def metrics_port(self) -> int | None:
        """The port it serves Prometheus metrics on while it runs (None: none; default:
        the ``metrics_port`` setting). Set it before the pool starts."""
        return self._async.metrics_port

    @metrics_port.setter
    def metrics_port(self, port: int | None) -> None:
        self._async.metrics_port = port

    @property
    def counts(self) -> dict[str, int]:
        """Outcome counts since start."""
        return self._async.counts

    @property
    def abandoned_threads(self) -> int:
        """Threads still running calls whose tasks already ended (see
        :attr:`AsyncWorkerPool.abandoned_threads`)."""
        return self._async.abandoned_threads

    run = blocking(AsyncWorkerPool.run)
    process_tasks = blocking(AsyncWorkerPool.process_tasks)
    start = blocking(AsyncWorkerPool.start)
    stop = blocking(AsyncWorkerPool.stop)

    def cancel_local(self, task_id: str) -> bool:
        """Stop a task this pool is running."""
        return self._runner.run(self._call(self._async.cancel_local, task_id))

    def wake(self) -> None:
        """Re-check schedules and the queue now."""
        self._runner.run(self._call(self._async.wake))

    @staticmethod
    async def _call(func: Callable[..., T], *args: Any) -> T:
        # Pool state belongs to the loop thread: touch it only from there.
        return func(*args)

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
