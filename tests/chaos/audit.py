"""The audit of a chaos run: the store's final state checked against the plan, the
ledger and the faults (pure: everything is read before it starts).

A violation is anything OmniQ promises that did not hold; ``lost`` and ``wrong_states``
are counted apart because they are the headline figures (both must be 0).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from omniq import EventType, Task, TaskEvent, TaskResult, TaskStatus
from tests.chaos.faults import Fault
from tests.chaos.ledger import Run
from tests.chaos.load import SCHEDULES, Planned

__all__ = ["STOP_TIMEOUT", "Audit", "Stored", "audit"]

FINAL = {TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}
#: Clock slack between processes' ``time.time()`` and the stored timestamps.
SLACK = 0.05
#: How long after a run began a fault can still have cut it short (a slow body's length).
LEASE_SPAN = 60.0
#: The workers' ``shutdown_timeout``: how long a graceful stop waits for running tasks.
STOP_TIMEOUT = 2.0


@dataclass
class Stored:
    """One task as the store holds it at the end."""

    task: Task | None
    result: TaskResult | None
    events: list[TaskEvent]


@dataclass
class Audit:
    """The figures and the violations of one run."""

    tasks: int = 0
    ticks: int = 0
    lost: list[str] = field(default_factory=list)
    wrong_states: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    duplicates: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    lost_runs: int = 0
    missing_executing: int = 0
    ticks_without_enqueued: int = 0
    events_lost_with_worker: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.wrong_states or self.violations)


def _ts(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else float("inf")


def _causes(run: Run, until: float, faults: list[Fault]) -> list[str]:
    """The faults between ``run``'s start and ``until`` that could make it repeat: its
    worker (the process or, for a process worker's child, its parent) killed or stopped,
    or the connections cut or the server restarted."""
    found = []
    for fault in faults:
        if not run.start - SLACK <= fault.at <= until + SLACK:
            continue
        if fault.pid is None:
            if fault.kind != "latency":
                found.append(fault.kind)
        elif fault.pid in (run.pid, run.ppid):
            found.append(fault.kind)
    return found


def _killed_after(runs: list[Run], faults: list[Fault]) -> bool:
    """Whether the worker of a successful run was killed after the body returned (while
    it wrote the outcome)."""
    for run in runs:
        if not run.ok or run.end is None:
            continue
        for fault in faults:
            if (
                fault.kind in ("sigkill", "kill_in_write")
                and fault.pid in (run.pid, run.ppid)
                and run.end - SLACK <= fault.at <= run.end + LEASE_SPAN
            ):
                return True
    return False


def _check_task(
    key: str, stored: Stored, runs: list[Run] | None, faults: list[Fault], report: Audit
) -> None:
    """The checks of one task; ``runs`` None for a schedule tick (its runs are not
    told apart in the ledger)."""
    task, result = stored.task, stored.result
    if task is None or task.status not in FINAL or result is None:
        state = "missing" if task is None else task.status.value
        report.lost.append(f"{key}: {state}, result {'present' if result else 'missing'}")
        return
    if task.status is not TaskStatus.COMPLETE or result.status is not TaskStatus.COMPLETE:
        error = result.error.message if result.error else ""
        report.wrong_states.append(f"{key}: {task.status.value}/{result.status.value} {error}")
    if result.attempts != task.attempts:
        report.violations.append(
            f"{key}: attempts {task.attempts} on Task, {result.attempts} on its result"
        )
    if task.status is TaskStatus.COMPLETE and result.result != _ledger_key(key, task):
        report.violations.append(f"{key}: result {result.result!r}")
    failed_runs = task.attempts - task.lost_runs
    errors = sum(1 for e in stored.events if e.event_type is EventType.ERROR)
    if errors > task.max_attempts or failed_runs > task.max_attempts:
        report.violations.append(
            f"{key}: {errors} errors, {task.attempts} attempts ({task.lost_runs} lost), "
            f"max_retries={task.max_retries}"
        )
    kinds = [e.event_type for e in stored.events]
    if EventType.ENQUEUED not in kinds:
        if task.schedule_id is None:
            report.violations.append(f"{key}: no ENQUEUED event")
        else:
            # A tick is stored by the worker that fires it, and its ENQUEUED logged in the
            # background: a worker killed in between loses the event (counted, not failed).
            report.ticks_without_enqueued += 1
    complete_events = kinds.count(EventType.COMPLETE)
    if task.status is TaskStatus.COMPLETE and complete_events != 1:
        if complete_events == 0 and runs is not None and _killed_after(runs, faults):
            # Where the events are not written with the ack (the file backend), a worker
            # killed between the two loses them: documented, counted, not failed.
            report.events_lost_with_worker += 1
        elif complete_events == 0 and runs is None:
            report.events_lost_with_worker += 1  # a tick: its runs are not told apart
        else:
            report.violations.append(f"{key}: {complete_events} COMPLETE events")
    if EventType.EXECUTING not in kinds:
        report.missing_executing += 1
    report.lost_runs += task.lost_runs
    if runs is None:
        return
    ok_runs = [run for run in runs if run.ok]
    if task.status is TaskStatus.COMPLETE and not ok_runs:
        report.violations.append(f"{key}: COMPLETE but its body never returned")
    finished = _ts(result.finished_at)
    for run in runs:
        if run.start > finished + SLACK:
            report.violations.append(
                f"{key}: a run started {run.start - finished:.3f} s after its final state"
            )
    counted = [run for run in runs if not _cut_by_stop(run, faults)]
    if len(counted) > task.attempts:
        report.violations.append(
            f"{key}: {len(counted)} runs in the ledger, attempts={task.attempts}"
        )
    report.runs += len(runs)
    _duplicates(key, runs, faults, report)


def _cut_by_stop(run: Run, faults: list[Fault]) -> bool:
    """Whether a graceful stop (SIGTERM) of its worker cut ``run`` short.

    The stop waits ``STOP_TIMEOUT`` for running tasks, then hands the others back without
    spending their attempt (``BaseTaskQueue.release``): their runs are not counted. A body
    in a thread cannot be stopped and may still reach its end after that, abandoned (its
    outcome dropped, the task already handed back): not counted either.
    """
    for fault in faults:
        if fault.kind != "sigterm" or fault.pid not in (run.pid, run.ppid):
            continue
        if not run.start - SLACK <= fault.at <= run.start + LEASE_SPAN:
            continue
        if run.end is None or run.end > fault.at + STOP_TIMEOUT + SLACK:
            return True
    return False


def _ledger_key(key: str, task: Task) -> str:
    if task.schedule_id is None:
        return key
    return next(k for s, k, _ in SCHEDULES if s == task.schedule_id)


def _duplicates(key: str, runs: list[Run], faults: list[Fault], report: Audit) -> None:
    """Every run after one that did not fail as planned is a duplicate: it needs a fault
    that could cause it."""
    for before, after in itertools.pairwise(runs):
        if before.ok is False:
            continue  # a planned failure, then its retry
        causes = _causes(before, after.start, faults)
        if not causes:
            report.violations.append(
                f"{key}: ran again at {after.start:.3f} (pid {after.pid}) after a run "
                f"{'ending' if before.end else 'never ending'} (pid {before.pid}) "
                "with no fault to cause it"
            )
            report.duplicates["unexplained"] += 1
        else:
            report.duplicates[causes[0]] += 1


def audit(
    plan: dict[str, Planned],
    stored: dict[str, Stored],
    ticks: dict[str, list[Task]],
    runs: dict[str, list[Run]],
    faults: list[Fault],
    *,
    lease: float,
    listed: list[str],
) -> Audit:
    """Check the run. ``stored`` holds every planned task and every schedule tick;
    ``ticks`` the tick tasks by schedule id; ``listed`` the ids ``list_tasks`` shows."""
    report = Audit(tasks=len(plan))
    for key in sorted(set(listed) - set(stored)):
        report.violations.append(f"{key}: in the store, never submitted")
    # A task whose record lost its index entry is still read by id but listed nowhere
    # (an orphan); one listed twice has a stale entry beside its own.
    for key in sorted(set(stored) - set(listed)):
        report.violations.append(f"{key}: missing from list_tasks (orphaned)")
    seen = Counter(listed)
    for key in sorted(k for k, n in seen.items() if n > 1):
        report.violations.append(f"{key}: listed {seen[key]} times by list_tasks")
    for key, planned in plan.items():
        found = stored[key]
        key_runs = runs.get(key, [])
        _check_task(key, found, key_runs, faults, report)
        if not key_runs or found.task is None:
            continue
        first = key_runs[0].start
        if planned.delay and first < planned.submitted + planned.delay - SLACK:
            report.violations.append(
                f"{key}: ran {planned.submitted + planned.delay - first:.3f} s before its delay"
            )
        for parent in planned.depends_on:
            parent_result = stored[parent].result
            if parent_result is None or first < _ts(parent_result.finished_at) - SLACK:
                report.violations.append(f"{key}: ran before its dependency {parent} completed")
        if planned.failures and found.task.status is TaskStatus.COMPLETE:
            failed = sum(1 for run in key_runs if run.ok is False)
            if failed > planned.failures:
                report.violations.append(
                    f"{key}: failed {failed} times, planned {planned.failures}"
                )
    for schedule_id, key, _ in SCHEDULES:
        tick_tasks = ticks.get(schedule_id, [])
        report.ticks += len(tick_tasks)
        for tick in tick_tasks:
            _check_task(tick.id, stored[tick.id], None, faults, report)
        # A body cannot see its task id, so ticks are matched to runs by count: every
        # tick ran, and a run beyond one per tick must have a fault that could cause it.
        key_runs = runs.get(key, [])
        done = [run for run in key_runs if run.ok]
        hit = [run for run in key_runs if _causes(run, (run.end or run.start) + lease + 1, faults)]
        report.runs += len(key_runs)
        if len(done) < len(tick_tasks):
            report.violations.append(f"{schedule_id}: {len(tick_tasks)} ticks, {len(done)} runs")
        extra = len(done) - len(tick_tasks)
        if extra > len(hit):
            report.violations.append(
                f"{schedule_id}: {extra} runs more than ticks, only {len(hit)} hit by a fault"
            )
        if extra > 0:
            report.duplicates["tick"] += extra
    return report
