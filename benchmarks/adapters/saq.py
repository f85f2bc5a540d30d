"""SAQ 0.26 on Redis DB 15 and on PostgreSQL: ``Queue.enqueue``; worker via the ``saq`` CLI."""

from __future__ import annotations

from typing import Any

from benchmarks.adapters.base import POSTGRES_URL, REDIS_URL, Adapter, WorkerCommand, cli


class SaqAdapter(Adapter):
    """SAQ with ``concurrency`` set in its settings dict, one worker process."""

    library = "saq"
    dist = "saq"
    backends = ("redis", "postgres")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: Any = None

    def worker_setting(self, concurrency: int) -> str:
        """Concurrency and process count."""
        return f"saq --workers 1; concurrency={concurrency} (default 10)"

    def child_env(self) -> dict[str, str]:
        """The queue URL: SAQ picks ``RedisQueue`` or ``PostgresQueue`` from its scheme."""
        return {"BENCH_SAQ_URL": POSTGRES_URL if self.backend == "postgres" else REDIS_URL}

    async def open(self) -> None:
        """Connect SAQ's queue (on PostgreSQL, connecting also runs SAQ's migrations)."""
        from benchmarks.apps.saq_app import queue

        self._queue = queue
        await queue.connect()

    async def close(self) -> None:
        """Disconnect."""
        if self._queue is not None:
            await self._queue.disconnect()

    async def aenqueue(self, kind: str, index: int = 0) -> None:
        """``queue.enqueue(name, **kwargs)``."""
        if kind == "latency":
            await self._queue.enqueue("latency", index=index)
        else:
            await self._queue.enqueue(kind)

    def worker(self, concurrency: int) -> WorkerCommand:
        """``saq benchmarks.apps.saq_app.settings --workers 1``."""
        return WorkerCommand(
            [cli("saq"), "benchmarks.apps.saq_app.settings", "--workers", "1"],
            {"BENCH_CONCURRENCY": str(concurrency)},
        )
