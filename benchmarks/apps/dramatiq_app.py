"""Dramatiq broker (Redis DB 15) and actors; thread-based, so sync bodies."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks.apps import bodies

broker = RedisBroker(url="redis://127.0.0.1:6379/15")  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor
def noop() -> None:
    """Do nothing."""


@dramatiq.actor
def drain() -> None:
    """Drain body."""
    bodies.drain_sync()


@dramatiq.actor
def latency(index: int) -> None:
    """Latency body."""
    bodies.latency_sync(index)


@dramatiq.actor
def sleep() -> None:
    """Sleep body."""
    bodies.sleep_sync()
