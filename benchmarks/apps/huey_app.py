"""Huey instance and tasks: ``BENCH_HUEY_BACKEND`` is ``redis`` (RedisHuey, DB 15),
``sqlite`` (SqliteHuey at ``BENCH_HUEY_SQLITE``) or ``file`` (FileHuey in the directory
``BENCH_HUEY_FILE``)."""

# The library ships no type information; its task decorators are untyped.
# mypy: disable-error-code="import-untyped,untyped-decorator"

from __future__ import annotations

import os

from huey import FileHuey, Huey, RedisHuey, SqliteHuey

from benchmarks.apps import bodies


def _make() -> Huey:
    backend = os.environ.get("BENCH_HUEY_BACKEND", "redis")
    if backend == "sqlite":
        return SqliteHuey("bench", filename=os.environ.get("BENCH_HUEY_SQLITE", "huey-bench.db"))
    if backend == "file":
        # FileStorage's defaults: results two directory levels deep, and an flock on
        # <path>/.lock around every operation, so the producer and the consumer's threads
        # (separate processes) exclude each other.
        return FileHuey("bench", path=os.environ.get("BENCH_HUEY_FILE", "huey-bench"))
    return RedisHuey("bench", host="127.0.0.1", port=6379, db=15)


huey: Huey = _make()


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
