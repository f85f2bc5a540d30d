"""arq 0.28 on Redis DB 15: ``ArqRedis.enqueue_job``; worker via ``run_worker()``."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from benchmarks.adapters.base import Adapter, WorkerCommand


class ArqAdapter(Adapter):
    """arq with its defaults except ``max_jobs`` (and ``poll_delay`` in the fast variant)."""

    library = "arq"
    dist = "arq"
    poll_delay: ClassVar[float | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: Any = None

    def worker_setting(self, concurrency: int) -> str:
        """``max_jobs`` and the poll delay."""
        poll = (
            "poll_delay=0.5s default"
            if self.poll_delay is None
            else f"poll_delay={self.poll_delay}s (non-default)"
        )
        return f"run_worker(max_jobs={concurrency}) (default 10); {poll}"

    async def open(self) -> None:
        """Create arq's Redis pool."""
        from arq import create_pool

        from benchmarks.apps.arq_app import REDIS

        self._pool = await create_pool(REDIS)

    async def close(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            await self._pool.aclose()

    async def aenqueue(self, kind: str, index: int = 0) -> None:
        """``enqueue_job(name, *args)``."""
        if kind == "latency":
            await self._pool.enqueue_job("latency", index)
        else:
            await self._pool.enqueue_job(kind)

    def worker(self, concurrency: int) -> WorkerCommand:
        """``python -m benchmarks.apps.arq_app`` (arq's ``run_worker``)."""
        env = {"BENCH_CONCURRENCY": str(concurrency)}
        if self.poll_delay is not None:
            env["BENCH_ARQ_POLL_DELAY"] = str(self.poll_delay)
        return WorkerCommand([sys.executable, "-m", "benchmarks.apps.arq_app"], env)


class ArqFastPollAdapter(ArqAdapter):
    """Non-default variant: ``poll_delay=0.01``."""

    poll_delay = 0.01
