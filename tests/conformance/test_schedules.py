"""Schedules (SPEC §3) on every backend: ticks fire once each, however many workers run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from omniq import AsyncOmniQ, EventType, Task, TaskStatus
from omniq.errors import ScheduleError
from omniq.models import utcnow
from omniq.scheduling import tick_task_id
from tests.conformance import tasks
from tests.conformance.conftest import MakeOQ
from tests.conftest import REPO_ROOT


async def wait_until(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    """Poll ``check`` (state written by a worker has no event to await) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.05)


async def fired_tasks(oq: AsyncOmniQ, schedule_id: str) -> list[Task]:
    """The tasks a schedule has enqueued."""
    return [t for t in await oq.list_tasks(limit=1000) if t.schedule_id == schedule_id]


async def runs(oq: AsyncOmniQ, schedule_id: str) -> int:
    schedule = await oq.get_schedule(schedule_id)
    assert schedule is not None
    return schedule.runs


async def test_interval_schedule_fires_on_its_grid(oq: AsyncOmniQ) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    sid = await oq.schedule(tasks.add, (1, 2), interval=0.5, schedule_id="every-half-second")
    assert sid == "every-half-second"
    async with oq.worker(concurrency=4):
        await asyncio.sleep(max(0.0, 2.5 - (loop.time() - began)))
    fired = await fired_tasks(oq, sid)
    assert 4 <= len(fired) <= 6, len(fired)
    schedule = await oq.get_schedule(sid)
    assert schedule is not None
    assert schedule.runs == len(fired)
    # Every task has the id of a tick on the grid created_at + 0.5 s * k.
    anchor = schedule.created_at + timedelta(seconds=0.5)
    grid = {tick_task_id(sid, anchor + k * timedelta(seconds=0.5)): k for k in range(20)}
    assert {t.id for t in fired} <= set(grid)
    for task in fired:
        if task.status is TaskStatus.COMPLETE:
            result = await oq.get_result(task.id)
            assert result is not None
            assert result.result == 3
        events = await oq.get_events(task.id)
        assert [e.event_type for e in events].count(EventType.ENQUEUED) == 1


async def test_missed_ticks_fire_once_and_a_tick_is_claimed_once(make_oq: MakeOQ) -> None:
    first, second = await make_oq(), await make_oq()
    created = utcnow()
    sid = await first.schedule(tasks.add, (2, 2), interval=1.0, ttl=60)
    schedule = await first.get_schedule(sid)
    assert schedule is not None
    assert schedule.next_run_at == schedule.created_at + timedelta(seconds=1)
    # No worker ran for ~10 intervals; two schedulers race for the same moment.
    later = schedule.created_at + timedelta(seconds=10.3)
    one, two = await first.engine.open_schedules(), await second.engine.open_schedules()
    await asyncio.gather(one.fire_due(later), two.fire_due(later))
    fired = await fired_tasks(first, sid)
    assert len(fired) == 1
    task = fired[0]
    assert task.id == tick_task_id(sid, schedule.created_at + timedelta(seconds=1))
    assert task.status is TaskStatus.PENDING
    assert task.expires_at is not None
    assert task.expires_at - task.created_at == timedelta(seconds=60)
    after = await first.get_schedule(sid)
    assert after is not None
    assert after.runs == 1
    assert after.next_run_at == schedule.created_at + timedelta(seconds=11)
    assert after.last_run_at is not None
    assert after.last_run_at >= created
    # Nothing more is due at that moment.
    assert await one.fire_due(later) == after.next_run_at
    assert len(await fired_tasks(first, sid)) == 1


class _WorkerDied(Exception):
    """Stands for a worker process dying at one point of firing a tick."""


@pytest.mark.parametrize("dies", ["before_claiming", "after_claiming"])
async def test_a_worker_dying_as_it_fires_a_tick_loses_nothing(make_oq: MakeOQ, dies: str) -> None:
    dying_client, survivor_client = await make_oq(), await make_oq()
    sid = await dying_client.schedule(tasks.add, (2, 2), interval=1.0)
    schedule = await dying_client.get_schedule(sid)
    assert schedule is not None and schedule.next_run_at is not None
    tick = schedule.next_run_at
    moment = tick + timedelta(seconds=0.5)
    dying = await dying_client.engine.open_schedules()
    real_advance = dying.store.advance

    async def advance_and_die(*args: Any, **kwargs: Any) -> bool:
        if dies == "after_claiming":  # the tick is claimed, then the worker dies
            await real_advance(*args, **kwargs)
        raise _WorkerDied

    dying.store.advance = advance_and_die  # type: ignore[method-assign]
    with pytest.raises(_WorkerDied):
        await dying.fire_due(moment)

    survivor = await survivor_client.engine.open_schedules()
    await survivor.fire_due(moment)
    fired = await fired_tasks(survivor_client, sid)
    assert [t.id for t in fired] == [tick_task_id(sid, tick)]
    assert fired[0].status is TaskStatus.PENDING
    after = await survivor_client.get_schedule(sid)
    assert after is not None
    assert after.runs == 1
    assert after.next_run_at == tick + timedelta(seconds=1)
    await survivor_client.events.flush()
    kinds = [e.event_type for e in await survivor_client.get_events(fired[0].id)]
    if dies == "before_claiming" or survivor_client.queue.writes_events(
        survivor_client.events.storage  # type: ignore[arg-type]
    ):
        assert kinds.count(EventType.ENQUEUED) == 1
    else:
        # Logged in the background after the claim: the dead worker took it with it.
        assert kinds.count(EventType.ENQUEUED) <= 1


async def test_max_runs_and_end_at_stop_a_schedule(oq: AsyncOmniQ) -> None:
    scheduler = await oq.engine.open_schedules()
    sid = await oq.schedule(tasks.add, (1, 1), interval=1.0, max_runs=2)
    schedule = await oq.get_schedule(sid)
    assert schedule is not None
    base = schedule.created_at
    for seconds in (1.1, 2.1, 3.1, 4.1):
        await scheduler.fire_due(base + timedelta(seconds=seconds))
    done = await oq.get_schedule(sid)
    assert done is not None
    assert done.runs == 2
    assert done.next_run_at is None
    assert len(await fired_tasks(oq, sid)) == 2

    start = utcnow() + timedelta(hours=1)
    ended = await oq.schedule(
        tasks.add, (1, 1), interval=60, start_at=start, end_at=start + timedelta(seconds=90)
    )
    for minutes in (0, 1, 2, 3):
        await scheduler.fire_due(start + timedelta(minutes=minutes, seconds=1))
    gone = await oq.get_schedule(ended)
    assert gone is not None
    assert gone.runs == 2  # start and start + 60 s; start + 120 s is past end_at
    assert gone.next_run_at is None


async def test_pause_stops_firing_and_resume_restarts_it(oq: AsyncOmniQ) -> None:
    sid = await oq.schedule(tasks.add, (1, 1), interval=0.2)
    async with oq.worker(concurrency=2):
        await wait_until(lambda: _at_least(oq, sid, 2))
        assert await oq.pause_schedule(sid) is True
        await asyncio.sleep(0.3)  # a fire already under way when pausing may still land
        paused_runs = await runs(oq, sid)
        paused = await oq.get_schedule(sid)
        assert paused is not None
        assert paused.paused is True
        await asyncio.sleep(1.0)  # five intervals
        assert await runs(oq, sid) == paused_runs
        assert len(await fired_tasks(oq, sid)) == paused_runs

        resumed_at = utcnow()
        assert await oq.resume_schedule(sid) is True
        returned_at = utcnow()  # resume reads its own clock somewhere in between
        resumed = await oq.get_schedule(sid)
        assert resumed is not None
        assert resumed.paused is False
        # The ticks missed during the pause are skipped, not fired as a burst.
        assert resumed.next_run_at is not None
        assert resumed.next_run_at > resumed_at
        assert resumed.next_run_at - returned_at <= timedelta(seconds=0.2)
        await wait_until(lambda: _at_least(oq, sid, paused_runs + 2))
    assert await oq.pause_schedule("no-such-schedule") is False
    assert await oq.resume_schedule("no-such-schedule") is False


async def _at_least(oq: AsyncOmniQ, sid: str, count: int) -> bool:
    return await runs(oq, sid) >= count


async def test_schedule_id_makes_schedule_an_idempotent_upsert(oq: AsyncOmniQ) -> None:
    sid = await oq.schedule(tasks.add, (1, 2), interval=0.2, schedule_id="nightly")
    async with oq.worker():
        await wait_until(lambda: _at_least(oq, sid, 1))
    before = await oq.get_schedule(sid)
    assert before is not None

    again = await oq.schedule(tasks.add, (1, 2), interval=0.2, schedule_id="nightly")
    assert again == "nightly"
    same = await oq.get_schedule(sid)
    assert same is not None
    assert (same.runs, same.next_run_at, same.created_at) == (
        before.runs,
        before.next_run_at,
        before.created_at,
    )
    assert [s.id for s in await oq.list_schedules()] == ["nightly"]

    changed = await oq.schedule(tasks.add, (1, 2), interval=30, schedule_id="nightly")
    assert changed == "nightly"
    replaced = await oq.get_schedule(sid)
    assert replaced is not None
    assert replaced.interval == 30
    assert replaced.runs == before.runs
    assert [s.id for s in await oq.list_schedules()] == ["nightly"]


async def test_list_get_and_remove_schedules(oq: AsyncOmniQ) -> None:
    assert await oq.list_schedules() == []
    b = await oq.schedule(tasks.add, (1, 1), interval=60, schedule_id="b")
    a = await oq.schedule("tests.conformance.tasks:add", (2, 2), cron="0 7 * * *", schedule_id="a")
    listed = await oq.list_schedules()
    assert [s.id for s in listed] == ["a", "b"]
    assert listed[0].cron == "0 7 * * *"
    assert listed[0].task.func == "tests.conformance.tasks:add"
    assert listed[1].interval == 60
    assert all(not s.paused for s in listed)
    assert await oq.remove_schedule(a) is True
    assert await oq.remove_schedule(a) is False
    assert await oq.get_schedule(a) is None
    assert [s.id for s in await oq.list_schedules()] == [b]


@pytest.mark.parametrize(
    "options",
    [
        {"cron": "61 * * * *"},
        {"cron": "not a cron"},
        {"cron": "0 0 30 2 *"},
        {"cron": "0 * * * *", "timezone": "Mars/Olympus_Mons"},
        {"cron": "0 * * * *", "interval": 10},
        {},
        {"interval": 0},
        {"interval": -1},
        {"interval": timedelta(0)},
    ],
)
async def test_bad_schedule_raises_schedule_error(oq: AsyncOmniQ, options: dict[str, Any]) -> None:
    with pytest.raises(ScheduleError):
        await oq.schedule(tasks.add, (1, 1), **options)
    assert await oq.list_schedules() == []


async def test_cron_next_run_matches_croniter_across_dst(oq: AsyncOmniQ) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 2030-03-31: clocks in Berlin jump from 02:00 to 03:00, so 02:30 does not exist.
    start = datetime(2030, 3, 30, 12, 0, tzinfo=UTC)
    sid = await oq.schedule(
        tasks.add, (1, 1), cron="30 2 * * *", timezone="Europe/Berlin", start_at=start
    )
    schedule = await oq.get_schedule(sid)
    assert schedule is not None
    expected = croniter("30 2 * * *", start.astimezone(berlin)).get_next(datetime)
    assert schedule.next_run_at == expected.astimezone(UTC)
    assert schedule.timezone == "Europe/Berlin"
    # Firing that tick moves to croniter's following one, across the change.
    scheduler = await oq.engine.open_schedules()
    assert schedule.next_run_at is not None
    await scheduler.fire_due(schedule.next_run_at)
    after = await oq.get_schedule(sid)
    assert after is not None
    following = croniter("30 2 * * *", expected).get_next(datetime)
    assert after.next_run_at == following.astimezone(UTC)


_APP = """
from omniq import AsyncOmniQ

oq = AsyncOmniQ(
    task_queue={url!r},
    result_storage={url!r},
    event_storage={url!r},
    namespace={namespace!r},
    base_dir={base_dir!r},
    poll_interval=0.1,
)
"""


@pytest.mark.cross_process
async def test_three_worker_processes_fire_each_tick_once(
    oq: AsyncOmniQ, backend_name: str, store_url: str, namespace: str, tmp_path: Path
) -> None:
    app = tmp_path / "sched_app.py"
    app.write_text(
        _APP.format(url=store_url, namespace=namespace, base_dir=str(tmp_path / ".omniq")),
        encoding="utf-8",
    )
    out = tmp_path / "runs.txt"
    sid = await oq.schedule(tasks.append_line, (str(out), "tick"), interval=0.25)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = []
    for n in range(3):
        log = (tmp_path / f"worker{n}.log").open("wb")
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "omniq",
                "worker",
                "--app",
                "sched_app:oq",
                "--concurrency",
                "2",
                "--log-level",
                "INFO",
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=log,
            )
        )
        log.close()
    try:
        # Count ticks only once all three run (a SIGTERM before start-up would kill one).
        await wait_until(lambda: _all_started(tmp_path, 3), within=60)
        started_runs = await runs(oq, sid)
        await wait_until(lambda: _at_least(oq, sid, started_runs + 8), within=60)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(proc.wait(), timeout=60) for proc in procs]
    logs = _read_logs(tmp_path)
    assert codes == [0, 0, 0], logs

    fired = await fired_tasks(oq, sid)
    schedule = await oq.get_schedule(sid)
    assert schedule is not None
    # One task per claimed tick, each enqueued once, each run once.
    assert len(fired) == schedule.runs
    assert len({t.id for t in fired}) == len(fired)
    for task in fired:
        events = await oq.get_events(task.id)
        assert [e.event_type for e in events].count(EventType.ENQUEUED) == 1
    complete = [t for t in fired if t.status is TaskStatus.COMPLETE]
    assert all(t.attempts == 1 for t in complete)
    assert _count_lines(out) == len(complete)


async def _all_started(directory: Path, count: int) -> bool:
    logs = _read_logs(directory)
    return logs.count(" started: type=") >= count


def _read_logs(directory: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(directory.glob("worker*.log")))


def _count_lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0
