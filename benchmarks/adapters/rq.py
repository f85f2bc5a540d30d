"""RQ 3.0 on Redis DB 15: sync ``Queue.enqueue`` / ``enqueue_many``; ``rq worker`` CLI."""

from __future__ import annotations

from typing import Any, ClassVar

from benchmarks.adapters.base import REDIS_URL, Adapter, WorkerCommand, cli


class RqAdapter(Adapter):
    """RQ's default forking ``Worker``: one job at a time, no in-process concurrency."""

    library = "rq"
    dist = "rq"
    is_async = False
    has_bulk = True
    worker_class: ClassVar[str | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: Any = None
        self._funcs: dict[str, Any] = {}

    def worker_setting(self, concurrency: int) -> str:
        """RQ has no concurrency knob."""
        if self.worker_class:
            return f"1 process, 1 job at a time; --worker-class {self.worker_class} (non-default)"
        return "1 process, 1 job at a time (no in-process concurrency); forks a work-horse per job"

    async def open(self) -> None:
        """Create the queue on a sync Redis client."""
        from redis import Redis
        from rq import Queue

        from benchmarks.apps import sync_tasks

        self._queue = Queue("default", connection=Redis.from_url(REDIS_URL))
        self._funcs = {k: getattr(sync_tasks, k) for k in ("noop", "drain", "latency", "sleep")}

    async def close(self) -> None:
        """Close the connection."""
        if self._queue is not None:
            self._queue.connection.close()

    def enqueue(self, kind: str, index: int = 0) -> None:
        """``queue.enqueue(func, *args)``."""
        if kind == "latency":
            self._queue.enqueue(self._funcs[kind], index)
        else:
            self._queue.enqueue(self._funcs[kind])

    def enqueue_bulk(self, kind: str, count: int) -> None:
        """``queue.enqueue_many([Queue.prepare_data(func) ...])`` (one pipeline)."""
        from rq import Queue

        func = self._funcs[kind]
        self._queue.enqueue_many([Queue.prepare_data(func, args=()) for _ in range(count)])

    def worker(self, concurrency: int) -> WorkerCommand:
        """``rq worker --url ... --logging_level WARNING default``."""
        argv = [cli("rq"), "worker", "--url", REDIS_URL, "--logging_level", "WARNING"]
        if self.worker_class:
            argv += ["--worker-class", self.worker_class]
        return WorkerCommand([*argv, "default"])


class RqSimpleWorkerAdapter(RqAdapter):
    """Non-default variant: ``rq.SimpleWorker`` (no fork per job)."""

    worker_class = "rq.SimpleWorker"
