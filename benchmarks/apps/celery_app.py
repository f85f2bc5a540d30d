"""Celery app (Redis DB 15 broker, no result backend) and tasks; run with ``-P threads``."""

# The library ships no type information; its task decorators are untyped.
# mypy: disable-error-code="import-untyped,untyped-decorator"

from __future__ import annotations

from celery import Celery

from benchmarks.apps import bodies

app = Celery("bench", broker="redis://127.0.0.1:6379/15")


@app.task(name="noop")
def noop() -> None:
    """Do nothing."""


@app.task(name="drain")
def drain() -> None:
    """Drain body."""
    bodies.drain_sync()


@app.task(name="latency")
def latency(index: int) -> None:
    """Latency body."""
    bodies.latency_sync(index)


@app.task(name="sleep")
def sleep() -> None:
    """Sleep body."""
    bodies.sleep_sync()
