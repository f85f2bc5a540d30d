"""SAQ worker settings for ``saq benchmarks.apps.saq_app.settings`` (concurrency from env)."""

from __future__ import annotations

import os
from typing import Any

from saq import Queue

from benchmarks.apps import bodies

queue = Queue.from_url("redis://127.0.0.1:6379/15")


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
