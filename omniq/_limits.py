"""Global limits (SPEC §8 "Limits"): their parsing, their keys, and what a claim reports.

A limit caps how often tasks of a key start (``rate_limit="20/s"``: at most 20 starts in
any one-second window, a sliding log of start times, never a token bucket that would let
about twice that into one window) and how many run at once (``max_concurrency``: the
``RUNNING`` tasks of the key whose lease has not lapsed). A key is a queue (``q:<name>``,
set with ``limit_queue``) or a task name (``t:<func>``, from ``@oq.task(rate_limit=…)``,
carried by each task). The backends enforce them inside their claim (a Lua script, the
claim's transaction, a compare-and-set on one ledger record: ``omniq._limit_ledger``);
this module has no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import msgspec

from omniq.errors import ConfigError
from omniq.models import Task

__all__ = [
    "Gate",
    "KeyWindow",
    "Limit",
    "LimitedClaim",
    "check_concurrency",
    "held_until",
    "hold_wait",
    "limit_of_task",
    "parse_rate",
    "queue_key",
    "task_key",
    "task_limits",
]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: object, *, field: str = "rate_limit") -> tuple[int, float]:
    """``"N/s"``, ``"N/m"`` or ``"N/h"`` as (N, window in seconds); ConfigError (also a
    ValueError) naming ``field`` and the value otherwise."""
    match = _RATE.match(value) if isinstance(value, str) else None
    count = int(match.group(1)) if match else 0
    if match is None or count < 1:
        raise ConfigError(
            f"{field}={value!r}: expected a rate like '100/s', '30/m' or '500/h' "
            "(a whole number >= 1 of starts per second, minute or hour)"
        )
    return count, _PER[match.group(2)]


def check_concurrency(value: object, *, field: str = "max_concurrency") -> int:
    """``value`` as a concurrency cap (an integer >= 1); ConfigError naming ``field``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{field}={value!r}: expected an integer >= 1")
    return value


class Limit(msgspec.Struct, frozen=True, kw_only=True):
    """One key's limits: at most ``rate`` starts in any ``per`` seconds (None: no rate
    limit), at most ``concurrency`` running at once (None: no cap)."""

    rate: int | None = None
    per: float = 1.0
    concurrency: int | None = None

    @classmethod
    def of(cls, rate_limit: str | None, max_concurrency: int | None) -> Limit | None:
        """The limit of these settings (checked), or None when both are None."""
        if rate_limit is None and max_concurrency is None:
            return None
        rate, per = (None, 1.0) if rate_limit is None else parse_rate(rate_limit)
        concurrency = None if max_concurrency is None else check_concurrency(max_concurrency)
        return cls(rate=rate, per=per, concurrency=concurrency)

    @property
    def rate_limit(self) -> str | None:
        """The rate as ``rate_limit=`` takes it (``"100/m"``), or None."""
        if self.rate is None:
            return None
        unit = {seconds: unit for unit, seconds in _PER.items()}.get(self.per)
        return f"{self.rate}/{unit}" if unit else f"{self.rate}/{self.per:g}s"

    def encode(self) -> str:
        """``"rate|per|concurrency"`` (empty for None): how SQL rows and Redis keep it."""
        rate = "" if self.rate is None else str(self.rate)
        conc = "" if self.concurrency is None else str(self.concurrency)
        return f"{rate}|{self.per:g}|{conc}"

    @classmethod
    def decode(cls, text: str) -> Limit:
        """The limit :meth:`encode` wrote."""
        rate, per, conc = text.split("|")
        return cls(
            rate=int(rate) if rate else None,
            per=float(per),
            concurrency=int(conc) if conc else None,
        )


def queue_key(queue: str) -> str:
    """The limit key of a queue."""
    return f"q:{queue}"


def task_key(func: str) -> str:
    """The limit key of a task name."""
    return f"t:{func}"


def limit_of_task(task: Task) -> Limit | None:
    """The limit a task carries (from ``@oq.task(rate_limit=…, max_concurrency=…)``)."""
    if task.rate_limit is None and task.max_concurrency is None:
        return None
    return Limit.of(task.rate_limit, task.max_concurrency)


def task_limits(tasks: Sequence[Task]) -> dict[str, Limit]:
    """The limits the tasks carry, by key (the last task of a name wins)."""
    found: dict[str, Limit] = {}
    for task in tasks:
        if task.rate_limit is not None or task.max_concurrency is not None:
            limit = limit_of_task(task)
            assert limit is not None
            found[task_key(task.func)] = limit
    return found


class LimitedClaim(list[Task]):
    """What a claim returns when limits held some claimable tasks back: the tasks it
    took, and when a held-back task may be taken next (``held_until``: the time the
    oldest start leaves a full rate window; None when only a concurrency cap holds them,
    which frees when a running task ends, unknown ahead)."""

    held_until: datetime | None

    def __init__(self, tasks: Sequence[Task] = (), held_until: datetime | None = None) -> None:
        super().__init__(tasks)
        self.held_until = held_until


def held_until(claimed: Sequence[Task]) -> tuple[bool, datetime | None]:
    """Whether limits held tasks back in this claim, and until when (see LimitedClaim)."""
    if isinstance(claimed, LimitedClaim):
        return True, claimed.held_until
    return False, None


def hold_wait(hold: tuple[bool, datetime | None], poll_interval: float, now: datetime) -> float:
    """How long a worker whose last claim was held back (``held_until``'s answer) waits:
    until the rate window frees, at most ``poll_interval``; a concurrency cap (None) is
    freed by a finish, which may be in another process: a poll."""
    until = hold[1]
    if until is None:
        return poll_interval
    return min(poll_interval, max(0.001, (until - now).total_seconds()))


class KeyWindow:
    """One key's state inside a claim: its limit, the start times in its rate window
    (oldest first, epoch seconds) and how many of its tasks run with a live lease."""

    def __init__(self, limit: Limit, starts: list[float], running: int) -> None:
        self.limit = limit
        self.starts = starts
        self.running = running
        #: Starts this claim took (the store logs them).
        self.taken = 0

    def full(self) -> tuple[bool, float | None]:
        """Whether one more start breaks the limit, and when the rate window frees (None:
        not full by rate; a concurrency cap frees when a task ends, unknown ahead)."""
        limit = self.limit
        if limit.rate is not None and len(self.starts) >= limit.rate:
            # The window holds `rate` starts from the (len - rate)th oldest on: a start
            # fits once that one has left the window.
            return True, self.starts[len(self.starts) - limit.rate] + limit.per
        if limit.concurrency is not None and self.running >= limit.concurrency:
            return True, None
        return False, None

    def take(self, now: float) -> None:
        """Count a start at ``now``."""
        self.starts.append(now)
        self.running += 1
        self.taken += 1


class Gate:
    """The decisions of one claim under limits: which keys a task falls under, which are
    full, and until when the claim was held back. The backend loads each key's
    :class:`KeyWindow` (:meth:`needs`, :meth:`load`) from its store, inside the claim's
    transaction; this class does no I/O."""

    def __init__(self, specs: dict[str, Limit], now: float) -> None:
        self.specs = specs
        self.now = now
        self.windows: dict[str, KeyWindow] = {}
        self.blocked: set[str] = set()
        self.held = False
        self._until: float | None = None

    def keys(self, queue: str, name: str | None) -> list[str]:
        """The limited keys of a task of ``queue`` carrying the limit of ``name``."""
        found = [key for key in (queue_key(queue),) if key in self.specs]
        if name is not None and (key := task_key(name)) in self.specs:
            found.append(key)
        return found

    def needs(self, keys: Sequence[str]) -> list[str]:
        """Those of ``keys`` whose window is not loaded yet."""
        return [key for key in keys if key not in self.windows]

    def load(self, key: str, starts: list[float], running: int) -> None:
        """Give ``key``'s window: the starts after ``now - per``, oldest first, and its
        running tasks with a live lease."""
        self.windows[key] = KeyWindow(self.specs[key], starts, running)

    def admit(self, keys: Sequence[str]) -> bool:
        """Take one start under ``keys`` if none is full; else block the full ones."""
        ok = True
        for key in keys:
            full, free_at = self.windows[key].full()
            if full:
                ok = False
                self.blocked.add(key)
                self.held = True
                if free_at is not None and (self._until is None or free_at < self._until):
                    self._until = free_at
        if ok:
            for key in keys:
                self.windows[key].take(self.now)
        return ok

    @property
    def until(self) -> float | None:
        """When a rate window that held a task back frees (None: only caps held)."""
        return self._until

    def rated(self) -> list[str]:
        """The loaded keys with a rate limit (whose starts the store logs)."""
        return [key for key, w in self.windows.items() if w.limit.rate is not None]
