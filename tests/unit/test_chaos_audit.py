"""The chaos runner's audit (``tests/chaos/audit.py``) on hand-made runs: what it counts
as a run of a task, and which repeated runs it takes for a broken promise."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from omniq import EventType, Task, TaskStatus
from omniq.models import TaskEvent, TaskResult
from tests.chaos.audit import STOP_TIMEOUT, Stored, audit
from tests.chaos.faults import Fault
from tests.chaos.ledger import Run
from tests.chaos.load import Planned

T0 = 1_800_000_000.0
KEY = "slow-000001-00000000"


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, tz=UTC)


def _stored(attempts: int, finished: float) -> Stored:
    task = Task(
        id=KEY,
        func="tests.chaos.bodies:slow",
        status=TaskStatus.COMPLETE,
        attempts=attempts,
        created_at=_at(0),
        updated_at=_at(finished),
    )
    result = TaskResult(
        task_id=KEY,
        status=TaskStatus.COMPLETE,
        result=KEY,
        attempts=attempts,
        finished_at=_at(finished),
    )
    events = [
        TaskEvent(task_id=KEY, event_type=kind, timestamp=_at(0))
        for kind in (EventType.ENQUEUED, EventType.EXECUTING, EventType.COMPLETE)
    ]
    return Stored(task, result, events)


@pytest.mark.parametrize(
    ("first_end", "violations"),
    [
        # Ended after the stop's timeout: abandoned in its thread, the task handed back.
        (5 + STOP_TIMEOUT + 1.5, []),
        # Ended within it: a finished run, which its attempt must count.
        (5 + STOP_TIMEOUT / 2, [f"{KEY}: 2 runs in the ledger, attempts=1"]),
    ],
    ids=["abandoned-by-the-stop", "finished-before-the-stop-timeout"],
)
def test_a_run_a_graceful_stop_abandoned_is_not_counted_even_if_its_thread_ends(
    first_end: float, violations: list[str]
) -> None:
    # Found by the NATS chaos run (seed 203): a thread worker stopped with SIGTERM handed
    # a slow task back (the attempt given back); the thread, which cannot be stopped, ran
    # its body to the end 1.3 s later, before the process exited. Another worker ran the
    # task again: two whole runs in the ledger, attempts=1, as the stop intends.
    runs = [
        Run(KEY, "r1", pid=10, ppid=1, start=T0 + 1, end=T0 + first_end, ok=True),
        Run(KEY, "r2", pid=20, ppid=1, start=T0 + 10, end=T0 + 16, ok=True),
    ]
    report = audit(
        {KEY: Planned(KEY, "slow", submitted=T0)},
        {KEY: _stored(attempts=1, finished=17)},
        {},
        {KEY: runs},
        [Fault("sigterm", T0 + 5, pid=10, detail="thread")],
        lease=5.0,
        listed=[KEY],
    )
    assert report.violations == violations
    assert report.duplicates == {"sigterm": 1}
