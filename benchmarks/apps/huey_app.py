"""Huey instance and tasks: ``BENCH_HUEY_BACKEND`` is ``redis`` (RedisHuey, DB 15) or
``sqlite`` (SqliteHuey at ``BENCH_HUEY_SQLITE``)."""

# The library ships no type information; its task decorators are untyped.
# mypy: disable-error-code="import-untyped,untyped-decorator"

from __future__ import annotations

import os

from huey import Huey, RedisHuey, SqliteHuey

from benchmarks.apps import bodies

huey: Huey = (
    SqliteHuey("bench", filename=os.environ.get("BENCH_HUEY_SQLITE", "huey-bench.db"))
    if os.environ.get("BENCH_HUEY_BACKEND", "redis") == "sqlite"
    else RedisHuey("bench", host="127.0.0.1", port=6379, db=15)
)


@huey.task()
def noop() -> None:
    """Do nothing."""


@huey.task()
def drain() -> None:
    """Drain body."""
    bodies.drain_sync()


@huey.task()
def latency(index: int) -> None:
    """Latency body."""
    bodies.latency_sync(index)


@huey.task()
def sleep() -> None:
    """Sleep body."""
    bodies.sleep_sync()
