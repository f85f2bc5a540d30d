"""Plain sync task functions for RQ (imported by dotted path in its work horse)."""

from __future__ import annotations

from benchmarks.apps import bodies


def noop() -> None:
    """Do nothing."""


def drain() -> None:
    """Drain body (sync client)."""
    bodies.drain_sync()


def latency(index: int) -> None:
    """Latency body (sync client)."""
    bodies.latency_sync(index)


def sleep() -> None:
    """``time.sleep(0.01)`` then the drain body."""
    bodies.sleep_sync()
