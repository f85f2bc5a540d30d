"""Recurring work: when a schedule's ticks fall, and how running workers fire them.

The decisions are plain functions with the clock passed in (``validate_cron``,
``first_run``, ``next_run``); :class:`AsyncScheduler` applies them to a
``BaseScheduleStorage``. There is no beat process: every running worker pool calls
:meth:`AsyncScheduler.fire_due`. A due tick's task has an id derived from the schedule id
and the tick time, so storing it twice stores it once; it is stored first, then the tick
is claimed with a compare-and-set on the schedule's ``next_run_at``
(``BaseScheduleStorage.advance``), so exactly one worker counts it. A worker that dies
between the two leaves the tick due, and the next one completes it: a tick is never
lost. The price is at the other edge: a schedule changed by hand at the very moment its
tick is stored may keep that one task.

Tick rules:

- cron: the matches of the crontab string in the schedule's time zone (croniter),
  returned as aware UTC datetimes; at or after ``start_at`` when given.
- interval: the fixed grid ``anchor + k * interval`` (k = 0, 1, ...), where the anchor is
  ``start_at`` or one interval after creation. The grid never drifts: it is never built
  by adding up sleeps.
- After firing, the next tick is the first one strictly after the firing time, so ticks
  missed while no worker ran fire once, not as a burst.
- Nothing falls at or after ``end_at``, and nothing after ``max_runs`` fired ticks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import CroniterError, croniter

from omniq._building import TaskBuilder
from omniq._ids import new_task_id
from omniq.config import Duration, parse_duration
from omniq.errors import ConfigError, ScheduleError
from omniq.models import Schedule, Task, TaskStatus, utcnow
from omniq.storage.base import BaseScheduleStorage

__all__ = [
    "AsyncScheduler",
    "first_run",
    "next_run",
    "tick_task_id",
    "validate_cron",
]

logger = logging.getLogger("omniq")

#: Task options a schedule's template accepts (passed to ``TaskBuilder.build``).
TASK_OPTIONS = frozenset(
    {"queue", "priority", "ttl", "max_retries", "retry_delay", "timeout", "result_ttl"}
)
#: Namespace of the deterministic per-tick task ids.
_TICK_NAMESPACE = uuid.UUID("5a3c1f0e-8d0b-4a8e-9f4e-0f1b2c3d4e5f")
#: How long the scheduler trusts its own view of the other schedules' next ticks.
_REFRESH = timedelta(seconds=5)
_ONE_MICROSECOND = timedelta(microseconds=1)


# -- decisions (no I/O) --------------------------------------------------------------------


def _zone(timezone: str) -> ZoneInfo:
    if not isinstance(timezone, str) or not timezone:
        raise ScheduleError(f"timezone={timezone!r}: expected an IANA time zone name")
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise ScheduleError(
            f"timezone={timezone!r}: unknown time zone (expected an IANA name such as "
            "'Europe/Berlin')"
        ) from None


def validate_cron(expr: str, timezone: str = "UTC") -> None:
    """Raise ``ScheduleError`` (a ``ValueError``) for a bad cron string or time zone.

    Example::

        validate_cron("0 7 * * mon-fri", "Europe/Paris")   # fine
        validate_cron("61 * * * *", "UTC")                 # ScheduleError
    """
    _zone(timezone)
    if not isinstance(expr, str) or not expr.strip():
        raise ScheduleError(f"cron={expr!r}: expected a crontab string such as '*/5 * * * *'")
    try:
        valid = croniter.is_valid(expr)
    except Exception:  # croniter raises assorted errors on odd input
        valid = False
    if not valid:
        raise ScheduleError(f"cron={expr!r}: not a valid crontab string")


def _cron_after(expr: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first match of ``expr`` strictly after ``after``, as aware UTC."""
    # Evaluated on the wall clock of ``zone``: converting from UTC sets the fold, so
    # croniter walks DST changes correctly (a skipped hour, a repeated hour).
    try:
        found = croniter(expr, after.astimezone(zone)).get_next(datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ScheduleError(
            f"cron={expr!r}: no run time after {after.isoformat()} ({exc})"
        ) from exc
    assert isinstance(found, datetime)
    return found.astimezone(UTC)


def _cron_at_or_after(expr: str, zone: ZoneInfo, at: datetime) -> datetime:
    found = _cron_after(expr, zone, at - _ONE_MICROSECOND)
    while found < at:  # croniter floors sub-second start times
        found = _cron_after(expr, zone, found)
    return found


def _interval_anchor(interval: float, start_at: datetime | None, created_at: datetime) -> datetime:
    if start_at is not None:
        return start_at.astimezone(UTC)
    return created_at.astimezone(UTC) + timedelta(seconds=interval)


def _within(tick: datetime | None, end_at: datetime | None) -> datetime | None:
    if tick is None or (end_at is not None and tick >= end_at):
        return None
    return tick


def first_run(
    *,
    cron: str | None = None,
    interval: float | None = None,
    timezone: str = "UTC",
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    max_runs: int | None = None,
    now: datetime,
) -> datetime | None:
    """The first tick of a schedule created at ``now`` (aware UTC), or None if it has none.

    Interval: exactly ``start_at`` if given (even when past: it then fires once at
    once), else one interval after ``now``. Cron: the first match at or after
    ``start_at`` if given, else the first match strictly after ``now``.
    """
    if max_runs is not None and max_runs <= 0:
        return None
    if interval is not None:
        return _within(_interval_anchor(interval, start_at, now), end_at)
    if cron is None:
        raise ScheduleError("give cron or interval")
    zone = _zone(timezone)
    if start_at is not None:
        return _within(_cron_at_or_after(cron, zone, start_at), end_at)
    return _within(_cron_after(cron, zone, now), end_at)


def next_run(schedule: Schedule, after: datetime) -> datetime | None:
    """The schedule's first tick strictly after ``after`` (aware UTC), or None.

    None once ``schedule.runs`` reached ``max_runs`` or when the tick would fall at or
    after ``end_at``. Interval ticks stay on the grid ``anchor + k * interval``; cron
    ticks are croniter's matches in the schedule's time zone.
    """
    if schedule.max_runs is not None and schedule.runs >= schedule.max_runs:
        return None
    after = after.astimezone(UTC)
    if schedule.interval is not None:
        step = timedelta(seconds=schedule.interval)
        anchor = _interval_anchor(schedule.interval, schedule.start_at, schedule.created_at)
        # Integer arithmetic on timedeltas (microseconds): no drift, no float error.
        tick = anchor if after < anchor else anchor + ((after - anchor) // step + 1) * step
        return _within(tick, schedule.end_at)
    if schedule.cron is None:
        raise ScheduleError(f"schedule {schedule.id} has neither cron nor interval")
    zone = _zone(schedule.timezone)
    if schedule.start_at is not None and after < schedule.start_at:
        return _within(_cron_at_or_after(schedule.cron, zone, schedule.start_at), schedule.end_at)
    return _within(_cron_after(schedule.cron, zone, after), schedule.end_at)


def tick_task_id(schedule_id: str, tick: datetime) -> str:
    """The deterministic id of the task a schedule enqueues for ``tick``."""
    stamp = tick.astimezone(UTC).isoformat()
    return str(uuid.uuid5(_TICK_NAMESPACE, f"{schedule_id}@{stamp}"))


def _interval_seconds(interval: Any) -> float:
    try:
        seconds = parse_duration(interval, field="interval")
    except ConfigError as exc:
        raise ScheduleError(str(exc)) from None
    if not seconds > 0:
        raise ScheduleError(f"interval={interval!r}: expected a duration > 0")
    return seconds


def _aware(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ScheduleError(f"{name}={value!r}: expected an aware datetime")
    return value.astimezone(UTC)


def _definition(schedule: Schedule) -> tuple[Any, ...]:
    """What a schedule does and when, without its state, ids or creation time."""
    task = schedule.task
    ttl = None if task.expires_at is None else task.expires_at - task.created_at
    fields = msgspec.structs.asdict(task)
    for volatile in ("id", "created_at", "expires_at", "updated_at", "status"):
        fields.pop(volatile, None)
    return (
        tuple(sorted(fields.items())),
        ttl,
        schedule.cron,
        schedule.interval,
        schedule.timezone,
        schedule.start_at,
        schedule.end_at,
        schedule.max_runs,
    )


def _tick_task(schedule: Schedule, tick: datetime, now: datetime) -> Task:
    """The task one tick of ``schedule`` enqueues, built from its template."""
    template = schedule.task
    ttl = None if template.expires_at is None else template.expires_at - template.created_at
    return msgspec.structs.replace(
        template,
        id=tick_task_id(schedule.id, tick),
        schedule_id=schedule.id,
        status=TaskStatus.PENDING,
        attempts=0,
        due_at=None,
        expires_at=None if ttl is None else now + ttl,
        depends_on=(),
        created_at=now,
        updated_at=None,
        worker_id=None,
        lease_expires_at=None,
    )


# -- the scheduler ------------------------------------------------------------------------


class ScheduleHost(Protocol):
    """What a scheduler needs of the client it fires tasks for (its engine)."""

    builder: TaskBuilder

    async def store_new(
        self, tasks: Sequence[Task], now: datetime, *, log_later: bool = False
    ) -> list[str]:
        """Store new tasks (with their events unless ``log_later``)."""

    def log_stored(self, tasks: Sequence[Task], now: datetime) -> None:
        """Log the events of tasks stored with ``log_later``."""

    def wake_pools(self) -> None:
        """Have the running worker pools look at the schedules again now."""


class AsyncScheduler:
    """Creates, changes and fires schedules on one schedule store.

    A client's engine builds one (``Engine.open_schedules``); the client's schedule
    methods delegate here, and running worker pools call :meth:`fire_due`.
    """

    def __init__(self, host: ScheduleHost, store: BaseScheduleStorage) -> None:
        self.host = host
        self.store = store
        # Next ticks of unpaused schedules as last seen: a hint for how long pools may
        # sleep, never a decision (due() decides). Refreshed from the store now and then.
        self._hints: dict[str, datetime] = {}
        self._listed_at: datetime | None = None

    def _wake_pools(self) -> None:
        self.host.wake_pools()

    async def schedule(
        self,
        func: Callable[..., Any] | str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        cron: str | None = None,
        interval: Duration | None = None,
        timezone: str = "UTC",
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        max_runs: int | None = None,
        schedule_id: str | None = None,
        now: datetime | None = None,
        **task_options: Any,
    ) -> str:
        """Create a schedule, or upsert the one with ``schedule_id``; return its id.

        With an existing ``schedule_id`` the same definition leaves the schedule as it
        is (runs and next tick kept); a changed one replaces it, keeping ``runs``,
        ``last_run_at`` and ``paused``, and its ticks start over from now.
        """
        now = utcnow() if now is None else now
        if (cron is None) == (interval is None):
            raise ScheduleError("give exactly one of cron= or interval=")
        seconds: float | None = None
        if cron is not None:
            validate_cron(cron, timezone)
        else:
            seconds = _interval_seconds(interval)
            _zone(timezone)
        start = _aware(start_at, "start_at")
        end = _aware(end_at, "end_at")
        if start is not None and end is not None and end <= start:
            raise ScheduleError(f"end_at={end_at!r}: expected a time after start_at={start_at!r}")
        if max_runs is not None and (
            not isinstance(max_runs, int) or isinstance(max_runs, bool) or max_runs < 1
        ):
            raise ScheduleError(f"max_runs={max_runs!r}: expected an integer >= 1")
        if schedule_id is not None and (not isinstance(schedule_id, str) or not schedule_id):
            raise ScheduleError(f"schedule_id={schedule_id!r}: expected a non-empty string")
        unknown = sorted(set(task_options) - TASK_OPTIONS)
        if unknown:
            raise ScheduleError(
                f"schedule() does not take {', '.join(unknown)}; task options are "
                f"{', '.join(sorted(TASK_OPTIONS))}"
            )
        template = self.host.builder.build(func, args, kwargs, now=now, **task_options)
        schedule = Schedule(
            id=schedule_id or new_task_id(),
            task=template,
            cron=cron,
            interval=seconds,
            timezone=timezone,
            start_at=start,
            end_at=end,
            max_runs=max_runs,
            created_at=now,
            next_run_at=first_run(
                cron=cron,
                interval=seconds,
                timezone=timezone,
                start_at=start,
                end_at=end,
                max_runs=max_runs,
                now=now,
            ),
        )
        if schedule_id is not None:
            existing = await self.store.get(schedule_id)
            if existing is not None:
                if _definition(existing) == _definition(schedule):
                    return schedule_id
                schedule = msgspec.structs.replace(
                    schedule,
                    runs=existing.runs,
                    last_run_at=existing.last_run_at,
                    paused=existing.paused,
                )
                if max_runs is not None and existing.runs >= max_runs:
                    schedule = msgspec.structs.replace(schedule, next_run_at=None)
        await self.store.upsert(schedule)
        self._note(schedule)
        self._wake_pools()
        return schedule.id

    def _note(self, schedule: Schedule) -> None:
        if schedule.paused or schedule.next_run_at is None:
            self._hints.pop(schedule.id, None)
        else:
            self._hints[schedule.id] = schedule.next_run_at

    async def pause(self, schedule_id: str) -> bool:
        """Stop a schedule from firing until resumed; False if unknown."""
        changed = await self.store.update(schedule_id, {"paused": True})
        self._hints.pop(schedule_id, None)
        return changed is not None

    async def resume(self, schedule_id: str, *, now: datetime | None = None) -> bool:
        """Let a paused schedule fire again from its first tick after now; False if unknown.

        Ticks that fell during the pause are skipped, so a long pause causes no burst.
        Resuming a schedule that is not paused changes nothing.
        """
        schedule = await self.store.get(schedule_id)
        if schedule is None:
            return False
        if not schedule.paused:
            return True
        following = next_run(schedule, utcnow() if now is None else now)
        changed = await self.store.update(schedule_id, {"paused": False, "next_run_at": following})
        if changed is None:
            return False
        self._note(changed)
        self._wake_pools()
        return True

    async def remove(self, schedule_id: str) -> bool:
        """Delete a schedule; False if unknown. Tasks it already enqueued stay."""
        self._hints.pop(schedule_id, None)
        return await self.store.delete(schedule_id)

    async def list(self) -> list[Schedule]:
        """All schedules, by id."""
        return await self.store.list()

    async def get(self, schedule_id: str) -> Schedule | None:
        """One schedule, or None."""
        return await self.store.get(schedule_id)

    async def fire_due(self, now: datetime, *, limit: int = 100) -> datetime | None:
        """Fire every tick due at ``now``; return when the next one falls (or None).

        Each due tick's task (its id derived from the schedule id and the tick time, so
        storing it twice stores it once) is stored first, then the tick is claimed with
        ``store.advance`` (compare-and-set on ``next_run_at``); only the winner logs the
        task's events where they did not go in with it. The returned time is a hint for
        how long a pool may sleep; pools poll anyway, so a schedule changed by another
        process is noticed within the poll interval.
        """
        due = await self.store.due(now, limit=limit)
        if self._listed_at is None or now - self._listed_at >= _REFRESH:
            self._hints = {
                s.id: s.next_run_at
                for s in await self.store.list()
                if not s.paused and s.next_run_at is not None
            }
            self._listed_at = now
        # Each due tick's task is stored before its tick is claimed: a worker that dies
        # between the two leaves the tick due, the next worker stores the same task id
        # again (a no-op) and claims it. Claiming first would lose the tick in that gap.
        ticks: list[tuple[Schedule, datetime, datetime | None, Task]] = []
        for schedule in due:
            tick = schedule.next_run_at
            if tick is None or schedule.paused:  # a store filters these; be safe anyway
                continue
            if schedule.end_at is not None and now >= schedule.end_at:
                # Fired too late to count: nothing fires at or after end_at.
                await self.store.update(schedule.id, {"next_run_at": None})
                self._hints.pop(schedule.id, None)
                continue
            try:
                # This tick counts as a run: max_runs is checked against the new count.
                fired_count = msgspec.structs.replace(schedule, runs=schedule.runs + 1)
                following = next_run(fired_count, max(now, tick))
            except ScheduleError as exc:
                logger.error(
                    "schedule %s cannot compute its next run (%s): paused", schedule.id, exc
                )
                await self.store.update(schedule.id, {"paused": True})
                self._hints.pop(schedule.id, None)
                continue
            ticks.append((schedule, tick, following, _tick_task(schedule, tick, now)))
        if ticks:
            await self.host.store_new([task for *_, task in ticks], now, log_later=True)
        fired: list[Task] = []
        for schedule, tick, following, task in ticks:
            won = await self.store.advance(
                schedule.id, expected_next_run_at=tick, next_run_at=following, last_run_at=now
            )
            if following is None:
                self._hints.pop(schedule.id, None)
            else:
                self._hints[schedule.id] = following
            if won:
                fired.append(task)
        if fired:
            self.host.log_stored(fired, now)
            for task in fired:
                logger.debug("schedule %s fired task %s", task.schedule_id, task.id)
        if len(due) >= limit:
            return now  # more may be due: look again at once
        # Hints at or before now are stale (another worker fired them): drop them, so a
        # pool never spins on a time that has passed.
        self._hints = {key: when for key, when in self._hints.items() if when > now}
        return min(self._hints.values(), default=None)
