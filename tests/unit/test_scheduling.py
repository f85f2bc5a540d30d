"""Schedule decisions: when ticks fall (cron across DST, the interval grid), no I/O."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from omniq.errors import OmniQError, ScheduleError
from omniq.models import Schedule, Task
from omniq.scheduling import first_run, next_run, tick_task_id, validate_cron

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def make(**fields: Any) -> Schedule:
    """A schedule with a throwaway template task."""
    fields.setdefault("created_at", T0)
    return Schedule(id="s1", task=Task(id="template", func="pkg.mod:func"), **fields)


def chain(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    """``count`` successive ticks, each computed from the previous one."""
    ticks: list[datetime] = []
    after = start
    for _ in range(count):
        tick = next_run(schedule, after)
        assert tick is not None
        ticks.append(tick)
        after = tick
    return ticks


def croniter_ticks(expr: str, zone: str, start: datetime, count: int) -> list[datetime]:
    """croniter's own answers for the tz-aware start time, as UTC."""
    it = croniter(expr, start.astimezone(ZoneInfo(zone)))
    return [it.get_next(datetime).astimezone(UTC) for _ in range(count)]


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("expr", ["61 * * * *", "not a cron", "", "* * *", "0 25 * * *"])
def test_bad_cron_raises_schedule_error_naming_it(expr: str) -> None:
    with pytest.raises(ScheduleError) as info:
        validate_cron(expr, "UTC")
    assert repr(expr) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, OmniQError)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../etc/passwd"])
def test_unknown_time_zone_raises_schedule_error_naming_it(zone: str) -> None:
    with pytest.raises(ScheduleError) as info:
        validate_cron("* * * * *", zone)
    assert repr(zone) in str(info.value)


@pytest.mark.parametrize("expr", ["* * * * *", "0 7 * * mon-fri", "*/5 * * * * *", "@daily"])
def test_valid_cron_passes(expr: str) -> None:
    validate_cron(expr, "Europe/Berlin")


def test_cron_that_never_matches_raises_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="0 0 30 2"):
        first_run(cron="0 0 30 2 *", now=T0)  # February 30th


# -- cron ---------------------------------------------------------------------------------


def test_cron_ticks_are_aware_utc_and_strictly_after() -> None:
    schedule = make(cron="*/15 * * * *")
    tick = next_run(schedule, T0)
    assert tick == T0 + timedelta(minutes=15)
    assert tick is not None
    assert tick.utcoffset() == timedelta(0)


def test_cron_in_time_zone_is_read_on_that_wall_clock() -> None:
    schedule = make(cron="0 9 * * *", timezone="Europe/Berlin")
    tick = next_run(schedule, T0)  # 12:00 UTC = 14:00 in Berlin (CEST)
    assert tick == datetime(2024, 5, 2, 7, 0, tzinfo=UTC)


def test_cron_on_spring_forward_day_matches_croniter() -> None:
    # 2024-03-31 02:30 does not exist in Berlin (clocks jump 02:00 -> 03:00).
    schedule = make(cron="30 2 * * *", timezone="Europe/Berlin")
    start = datetime(2024, 3, 30, 12, 0, tzinfo=UTC)
    ticks = chain(schedule, start, 4)
    assert ticks == croniter_ticks("30 2 * * *", "Europe/Berlin", start, 4)
    # One tick per day, and from the next day on at 02:30 local time again.
    assert [t.astimezone(BERLIN).date().day for t in ticks] == [31, 1, 2, 3]
    assert all(
        (t.astimezone(BERLIN).hour, t.astimezone(BERLIN).minute) == (2, 30) for t in ticks[1:]
    )


def test_hourly_cron_across_fall_back_matches_croniter_and_skips_nothing() -> None:
    # 2024-10-27 03:00 CEST -> 02:00 CET: the 02:xx hour happens twice in Berlin.
    schedule = make(cron="0 * * * *", timezone="Europe/Berlin")
    start = datetime(2024, 10, 26, 22, 30, tzinfo=UTC)
    ticks = chain(schedule, start, 6)
    assert ticks == croniter_ticks("0 * * * *", "Europe/Berlin", start, 6)
    # Every real hour fires exactly once: ticks are one hour apart in UTC.
    assert [b - a for a, b in itertools.pairwise(ticks)] == [timedelta(hours=1)] * 5


def test_cron_across_us_spring_forward_matches_croniter() -> None:
    schedule = make(cron="15 * * * *", timezone="America/New_York")
    start = datetime(2024, 3, 10, 5, 0, tzinfo=UTC)
    assert chain(schedule, start, 5) == croniter_ticks("15 * * * *", "America/New_York", start, 5)


def test_cron_first_run_is_strictly_after_now() -> None:
    assert first_run(cron="0 * * * *", now=T0) == T0 + timedelta(hours=1)


def test_cron_first_run_includes_a_matching_start_at() -> None:
    start = T0 + timedelta(days=2)
    assert first_run(cron="0 * * * *", start_at=start, now=T0) == start
    later = start + timedelta(seconds=1)
    assert first_run(cron="0 * * * *", start_at=later, now=T0) == start + timedelta(hours=1)


def test_cron_next_run_respects_start_at() -> None:
    start = T0 + timedelta(days=1, minutes=7)
    schedule = make(cron="*/10 * * * *", start_at=start)
    assert next_run(schedule, T0) == T0 + timedelta(days=1, minutes=10)


# -- interval -----------------------------------------------------------------------------


def test_interval_first_tick_is_one_interval_after_creation() -> None:
    assert first_run(interval=10.0, now=T0) == T0 + timedelta(seconds=10)


def test_interval_first_tick_is_exactly_start_at() -> None:
    start = T0 + timedelta(minutes=3, microseconds=250)
    assert first_run(interval=10.0, start_at=start, now=T0) == start


def test_interval_ticks_stay_on_the_grid() -> None:
    schedule = make(interval=10.0)
    first = T0 + timedelta(seconds=10)
    assert next_run(schedule, T0) == first
    assert next_run(schedule, first) == first + timedelta(seconds=10)
    # Fired late: the next tick is still on the grid, not "late + interval".
    late = first + timedelta(seconds=3.7)
    assert next_run(schedule, late) == first + timedelta(seconds=10)


def test_interval_grid_does_not_drift_over_many_ticks() -> None:
    schedule = make(interval=0.1)
    ticks = chain(schedule, T0, 1000)
    assert ticks[-1] == T0 + timedelta(seconds=100.0)
    assert ticks[0] == T0 + timedelta(seconds=0.1)


def test_missed_interval_ticks_fire_once_not_as_a_burst() -> None:
    schedule = make(interval=10.0)
    # No worker ran for ~95 s: from "now" the next tick is the single next grid point.
    now = T0 + timedelta(seconds=95)
    assert next_run(schedule, now) == T0 + timedelta(seconds=100)


def test_interval_grid_is_anchored_at_start_at() -> None:
    start = T0 + timedelta(seconds=7)
    schedule = make(interval=5.0, start_at=start)
    assert next_run(schedule, T0) == start
    assert next_run(schedule, start) == start + timedelta(seconds=5)
    assert next_run(schedule, start + timedelta(seconds=61)) == start + timedelta(seconds=65)


# -- end_at and max_runs ------------------------------------------------------------------


def test_nothing_at_or_after_end_at() -> None:
    end = T0 + timedelta(seconds=30)
    schedule = make(interval=10.0, end_at=end)
    assert next_run(schedule, T0 + timedelta(seconds=15)) == T0 + timedelta(seconds=20)
    assert next_run(schedule, T0 + timedelta(seconds=20)) is None  # 30 s is end_at itself
    cron_schedule = make(cron="0 * * * *", end_at=T0 + timedelta(minutes=30))
    assert next_run(cron_schedule, T0) is None


def test_first_run_is_none_when_end_at_comes_first() -> None:
    assert first_run(interval=10.0, end_at=T0 + timedelta(seconds=10), now=T0) is None
    assert first_run(cron="0 * * * *", end_at=T0 + timedelta(minutes=59), now=T0) is None


def test_nothing_after_max_runs() -> None:
    assert next_run(make(interval=1.0, max_runs=3, runs=2), T0) is not None
    assert next_run(make(interval=1.0, max_runs=3, runs=3), T0) is None
    assert next_run(make(cron="* * * * *", max_runs=1, runs=1), T0) is None


# -- tick ids -----------------------------------------------------------------------------


def test_tick_task_id_is_deterministic_per_schedule_and_tick() -> None:
    tick = T0 + timedelta(seconds=10)
    same_instant = tick.astimezone(BERLIN)
    assert tick_task_id("s1", tick) == tick_task_id("s1", same_instant)
    assert tick_task_id("s1", tick) != tick_task_id("s2", tick)
    assert tick_task_id("s1", tick) != tick_task_id("s1", tick + timedelta(microseconds=1))
