"""arq worker settings; run as ``python -m benchmarks.apps.arq_app`` (arq's ``run_worker``).

arq's own CLI forces INFO logging (one line per job), so the documented ``run_worker()`` is
used instead, as in the reference benchmark. ``BENCH_CONCURRENCY`` sets ``max_jobs``;
``BENCH_ARQ_POLL_DELAY`` overrides the 0.5 s default poll delay (non-default variant only).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from arq.connections import RedisSettings
from arq.worker import run_worker

from benchmarks.apps import bodies

REDIS = RedisSettings(host="127.0.0.1", port=6379, database=15)


async def noop(ctx: dict[str, Any]) -> None:
    """Do nothing."""


async def drain(ctx: dict[str, Any]) -> None:
    """Drain body."""
    await bodies.drain_async()


async def latency(ctx: dict[str, Any], index: int) -> None:
    """Latency body."""
    await bodies.latency_async(index)


async def sleep(ctx: dict[str, Any]) -> None:
    """Sleep body."""
    await bodies.sleep_async()


class WorkerSettings:
    """arq's settings class: functions and Redis DB 15; max_jobs set at start."""

    functions = [noop, drain, latency, sleep]  # noqa: RUF012 (arq reads a class attribute)
    redis_settings = REDIS


def main() -> None:
    """Run one arq worker until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.WARNING)
    overrides: dict[str, Any] = {"max_jobs": int(os.environ.get("BENCH_CONCURRENCY", "32"))}
    if "BENCH_ARQ_POLL_DELAY" in os.environ:
        overrides["poll_delay"] = float(os.environ["BENCH_ARQ_POLL_DELAY"])
    run_worker(WorkerSettings, **overrides)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
