"""Durations: the one parser of every duration OmniQ reads, settings and API arguments alike.

A duration is a number of seconds, a ``timedelta``, or a string such as ``"30s"``,
``"5m"``, ``"1.5h"``, ``"1d"`` or ``"250ms"``.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

from omniq.errors import ConfigError

__all__ = ["DURATION_FORM", "Duration", "parse_duration", "seconds_in"]

#: A duration argument: seconds, a ``timedelta``, or a string like ``"30s"`` or ``"5m"``.
Duration = float | int | timedelta | str
#: How a duration is written, for error messages.
DURATION_FORM = "a number of seconds or a string like '30s', '5m', '2h', '1d', '250ms'"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds_in(value: Any) -> float:
    """The finite number of seconds ``value`` stands for (of any sign); ValueError when it
    is no duration at all."""
    try:
        if isinstance(value, timedelta):
            seconds = value.total_seconds()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
            seconds = float(match[1]) * _UNIT_SECONDS[(match[2] or "s").lower()]
        else:
            raise ValueError(value)
    except OverflowError:
        raise ValueError(value) from None
    if not math.isfinite(seconds):
        raise ValueError(value)
    return seconds


def parse_duration(value: Duration, *, field: str) -> float:
    """Seconds in ``value``: a number, ``timedelta`` or a string like ``"30s"`` or ``"1.5h"``.

    >>> parse_duration("5m", field="lease_seconds")
    300.0

    Raises ConfigError naming ``field`` for anything else (negative values included).
    The one parser of durations: settings, and every duration argument of the API.
    """
    # Most duration arguments are plain numbers: the enqueue path pays no more. (A NaN,
    # an infinity or an int too large for a float goes the long way, and is refused.)
    if (type(value) is int or type(value) is float) and 0 <= value < 1e300:
        return float(value)
    try:
        seconds = seconds_in(value)
    except ValueError:
        seconds = -1.0
    if seconds >= 0:
        return seconds
    raise ConfigError(f"{field}={value!r}: expected a duration >= 0 ({DURATION_FORM})")
