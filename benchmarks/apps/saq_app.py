"""SAQ worker settings for ``saq benchmarks.apps.saq_app.settings``.

The queue's URL (Redis DB 15, or the PostgreSQL benchmark database) and the concurrency come
from the environment the adapter sets, so one module serves both backends.
"""

from __future__ import annotations

import os
from typing import Any

from saq import Queue

from benchmarks.apps import bodies

queue = Queue.from_url(os.environ.get("BENCH_SAQ_URL", bodies.REDIS_URL))


async def noop(ctx: dict[str, Any]) -> None:
    """Do nothing."""


async def drain(ctx: dict[str, Any]) -> None:
    """Drain body."""
    await bodies.drain_async()


async def latency(ctx: dict[str, Any], *, index: int) -> None:
    """Latency body (SAQ passes keyword arguments)."""
    await bodies.latency_async(index)


async def sleep(ctx: dict[str, Any]) -> None:
    """Sleep body."""
    await bodies.sleep_async()


settings: dict[str, Any] = {
    "queue": queue,
    "functions": [noop, drain, latency, sleep],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "32")),
}
