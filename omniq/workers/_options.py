"""Checking a worker pool's arguments: its queues and the order they are claimed in."""

from __future__ import annotations

from collections.abc import Sequence

from omniq.config import QUEUE_ORDERS
from omniq.errors import ConfigError

__all__ = ["parse_queue_order", "parse_queues"]


def parse_queues(queues: Sequence[str] | str | None, default: str) -> tuple[str, ...]:
    """The queue names of a ``queues`` argument (a list, or a comma-separated string),
    in order, without repeats; ``default`` alone when None."""
    if queues is None:
        return (default,)
    names = queues.split(",") if isinstance(queues, str) else list(queues)
    cleaned = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
    if not cleaned:
        raise ConfigError(f"queues={queues!r}: expected at least one queue name")
    return cleaned


def parse_queue_order(queue_order: str | None, default: str) -> str:
    """The normalised ``queue_order`` (``default`` when None)."""
    if queue_order is None:
        return default
    if isinstance(queue_order, str) and queue_order.strip().lower() in QUEUE_ORDERS:
        return queue_order.strip().lower()
    choices = ", ".join(repr(order) for order in QUEUE_ORDERS)
    raise ConfigError(f"queue_order={queue_order!r}: expected one of {choices}")
