"""Retry decisions as pure functions, and the ``Retry`` signal task authors raise."""

from __future__ import annotations

import random

from omniq.config import Duration, parse_duration

__all__ = [
    "Retry",
    "backoff_delay",
    "failed_runs",
    "has_attempts_left",
    "lost_too_often",
    "to_seconds",
]


class Retry(Exception):
    """Raise inside a task to ask for another run, after ``delay`` if given: seconds, a
    ``timedelta`` or a string like ``"30s"`` or ``"5m"``.

    The run still counts as an attempt; when none are left the task ends ``FAILED``.

    Example::

        raise Retry(delay="5s")
    """

    def __init__(self, delay: Duration | None = None, message: str = "") -> None:
        super().__init__(message or "retry requested")
        self.delay = None if delay is None else to_seconds(delay, "delay")


def to_seconds(value: Duration, name: str = "duration") -> float:
    """Seconds from a number, a ``timedelta`` or a duration string (``"30s"``);
    ``ConfigError`` naming ``name`` for anything else."""
    return parse_duration(value, field=f"argument {name}")


def has_attempts_left(attempts: int, max_retries: int) -> bool:
    """True if a task whose runs have failed ``attempts`` times may run again."""
    return attempts < 1 + max_retries


def failed_runs(attempts: int, lost_runs: int) -> int:
    """How many of a task's ``attempts`` runs failed (or asked to retry), counting the
    one under way as failed: the runs lost with their worker are not the task's failures.
    """
    return attempts - lost_runs


def lost_too_often(lost_runs: int, max_lost_runs: int) -> bool:
    """True when a task was lost with its worker more often than ``max_lost_runs``: it
    likely kills its worker (a poison pill), so it must not run again."""
    return lost_runs > max_lost_runs


def backoff_delay(
    retry_number: int,
    *,
    base: float,
    cap: float,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> float:
    """Delay before the ``retry_number``-th retry (1-based): ``base * 2**(n-1)``, capped.

    Jitter only adds (up to ``jitter`` of the delay), so a retry never comes early;
    the cap bounds the result including jitter.
    """
    if retry_number < 1:
        raise ValueError("retry_number starts at 1")
    delay = min(cap, base * 2.0 ** (retry_number - 1))
    spread = float((rng or random).random()) * jitter * delay
    return min(cap, delay + spread) if cap >= delay else delay
