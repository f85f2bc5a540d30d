"""The steady mixed load of a chaos run, and the plan the audit checks it against.

Every task is submitted with ``task_id`` = its key, retried with the same id when the
store is unreachable (a server restart): an idempotent submit makes the retry safe.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from omniq import AsyncOmniQ
from omniq.errors import OmniQError
from tests.chaos import bodies

__all__ = ["Load", "Planned", "SCHEDULES"]

#: The interval schedules of a run: (schedule id, ledger key, interval in seconds).
SCHEDULES: tuple[tuple[str, str, float], ...] = (
    ("chaos-every-2s", "tick-2s", 2.0),
    ("chaos-every-3s", "tick-3s", 3.0),
    ("chaos-every-5s", "tick-5s", 5.0),
)

#: The kinds of task in the load, with their relative weights.
KINDS = {"quick": 40, "slow": 8, "flaky": 15, "deps": 15, "delayed": 15}


@dataclass
class Planned:
    """What the runner submitted for one task."""

    key: str
    kind: str
    submitted: float
    delay: float = 0.0
    max_retries: int = 0
    failures: int = 0
    depends_on: tuple[str, ...] = ()


@dataclass
class Load:
    """Submits the load at ``rate`` tasks a second until stopped."""

    client: AsyncOmniQ
    rng: random.Random
    rate: float
    lease: float
    plan: dict[str, Planned] = field(default_factory=dict)
    submit_retries: int = 0
    kinds: Counter[str] = field(default_factory=Counter)

    async def _submit(self, planned: Planned, func: object, args: tuple[object, ...]) -> None:
        while True:
            try:
                await self.client.submit(
                    func,  # type: ignore[arg-type]
                    args=args,
                    task_id=planned.key,
                    delay=planned.delay or None,
                    max_retries=planned.max_retries,
                    retry_delay=0.2,
                    depends_on=planned.depends_on,
                )
            except (OmniQError, OSError):
                self.submit_retries += 1
                await asyncio.sleep(0.2)
                continue
            self.plan[planned.key] = planned
            self.kinds[planned.kind] += 1
            return

    def _key(self, kind: str) -> str:
        return f"{kind}-{len(self.plan):06d}-{self.rng.getrandbits(32):08x}"

    async def one(self) -> None:
        """Submit one unit of the load (a dependency pair counts as one)."""
        rng = self.rng
        names = sorted(KINDS)
        kind = rng.choices(names, weights=[KINDS[k] for k in names])[0]
        now = time.time()
        quick = rng.choice((bodies.quick, bodies.quick_async))
        if kind == "quick":
            key = self._key(kind)
            await self._submit(Planned(key, kind, now), quick, (key,))
        elif kind == "slow":
            key = self._key(kind)
            seconds = round(rng.uniform(self.lease + 0.5, self.lease + 2.5), 2)
            body = rng.choice((bodies.slow, bodies.slow_async))
            await self._submit(Planned(key, kind, now), body, (key, seconds))
        elif kind == "flaky":
            key = self._key(kind)
            failures = rng.randint(1, 2)
            planned = Planned(key, kind, now, max_retries=3, failures=failures)
            await self._submit(planned, bodies.flaky, (key, failures))
        elif kind == "delayed":
            key = self._key(kind)
            delay = round(rng.uniform(0.5, 4), 2)
            await self._submit(Planned(key, kind, now, delay=delay), quick, (key,))
        else:
            parents = []
            for _ in range(rng.randint(1, 2)):
                key = self._key("parent")
                if rng.random() < 0.3:
                    planned = Planned(key, "parent", now, max_retries=2, failures=1)
                    await self._submit(planned, bodies.flaky, (key, 1))
                else:
                    await self._submit(Planned(key, "parent", now), quick, (key,))
                parents.append(key)
            key = self._key("child")
            planned = Planned(key, "child", time.time(), depends_on=tuple(parents))
            await self._submit(planned, quick, (key,))

    async def run(self, seconds: float) -> None:
        """Submit at ``rate`` a second for ``seconds``."""
        deadline = time.monotonic() + seconds
        gap = 1 / self.rate
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            await self.one()
            next_at += gap
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def add_schedules(self) -> None:
        """Create the run's interval schedules."""
        for schedule_id, key, interval in SCHEDULES:
            await retrying(
                lambda s=schedule_id, k=key, i=interval: self.client.schedule(
                    bodies.quick, args=(k,), interval=i, schedule_id=s
                )
            )

    async def remove_schedules(self) -> None:
        """Remove them (before the run settles: no tick after that)."""
        for schedule_id, _, _ in SCHEDULES:
            await retrying(lambda s=schedule_id: self.client.remove_schedule(s))


async def retrying(call: object, within: float = 60.0) -> object:
    """``await call()``, again while the store is unreachable, for at most ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()  # type: ignore[operator]
        except (OmniQError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
