"""Decisions of a task's lifecycle as pure functions: no I/O, the clock passed in.

What a task's final result holds, which events an enqueue logs, and what a worker does
with a task it has just claimed before running it. The client, the worker pools, the
scheduler and the storage backends all decide through these, so each rule is written
once and unit-tested without an event loop (retry timing lives beside, in ``retry.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from omniq.models import ErrorInfo, EventType, Task, TaskEvent, TaskResult, TaskStatus
from omniq.retry import lost_too_often

__all__ = [
    "CANCELLED",
    "Claimed",
    "Verdict",
    "before_run",
    "cancelled_result",
    "enqueued_events",
    "final_result",
    "is_expired",
    "unnamed_events",
]

#: The error of a task cancelled by ``cancel()``.
CANCELLED = ErrorInfo(type="omniq.TaskCancelled", message="cancelled")


def final_result(
    task: Task,
    status: TaskStatus,
    *,
    value: bytes | None = None,
    error: ErrorInfo | None = None,
    started_at: datetime | None = None,
    worker_id: str | None = None,
    attempts: int | None = None,
    now: datetime,
) -> TaskResult:
    """The result of ``task`` ending in ``status`` at ``now``; ``attempts`` defaults to
    the task's (pass fewer when the last claim did not run it)."""
    ttl = task.result_ttl
    return TaskResult(
        task_id=task.id,
        status=status,
        result=value,
        error=error,
        attempts=task.attempts if attempts is None else attempts,
        started_at=started_at,
        finished_at=now,
        worker_id=worker_id,
        expires_at=now + timedelta(seconds=ttl) if ttl else None,
    )


def cancelled_result(task: Task, *, now: datetime) -> TaskResult:
    """The result of a task that ``cancel()`` ended at ``now``."""
    return final_result(task, TaskStatus.CANCELLED, error=CANCELLED, now=now)


def is_expired(task: Task, now: datetime) -> bool:
    """True for a task that never started and is past its ttl: it must not run."""
    return (
        task.expires_at is not None
        and now >= task.expires_at
        and task.attempts == 0
        and task.status in (TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RETRYING)
    )


def enqueued_events(task: Task, now: datetime, task_id: str | None = None) -> list[TaskEvent]:
    """The events of a task just stored: ``ENQUEUED``, and ``SCHEDULED`` when it waits;
    logged under ``task_id`` when given (``""``: unnamed, see ``enqueue_logged``)."""
    name = task.id if task_id is None else task_id
    events = [
        TaskEvent(task_id=name, event_type=EventType.ENQUEUED, timestamp=now, queue=task.queue)
    ]
    if task.status is TaskStatus.SCHEDULED:
        why = f"waiting for {', '.join(task.depends_on)}" if task.depends_on else "delayed"
        if task.due_at is not None:
            why += f" until {task.due_at.isoformat()}"
        events.append(
            TaskEvent(
                task_id=name,
                event_type=EventType.SCHEDULED,
                timestamp=now,
                queue=task.queue,
                message=why,
            )
        )
    return events


def unnamed_events(tasks: Sequence[Task], now: datetime) -> list[list[TaskEvent]]:
    """:func:`enqueued_events` of each task with an empty task id (the form
    ``enqueue_logged`` takes): one list for all the tasks that log the same events, so a
    bulk enqueue builds its events once, and the backend sees at a glance that they match."""
    made: dict[tuple[Any, ...], list[TaskEvent]] = {}
    logged = []
    for task in tasks:
        key = (task.queue, task.status, task.due_at, task.depends_on)
        events = made.get(key)
        if events is None:
            events = made[key] = enqueued_events(task, now, task_id="")
        logged.append(events)
    return logged


class Verdict(enum.Enum):
    """What a worker does with a task it has just claimed."""

    RUN = "run"
    #: Not started within its ttl: it ends ``EXPIRED`` without running.
    EXPIRE = "expire"
    #: Lost with its workers more often than allowed: it ends ``FAILED`` (``WorkerLost``).
    GIVE_UP = "give_up"


class Claimed(NamedTuple):
    """A claimed task's verdict, and the error to finish it with (None for ``RUN``)."""

    verdict: Verdict
    error: ErrorInfo | None = None


def before_run(task: Task, *, now: datetime, max_lost_runs: int) -> Claimed:
    """What to do with ``task``, claimed at ``now`` (its ``attempts`` count this claim).

    A first claim past the ttl expires it: it never started. A task lost with its worker
    more than ``max_lost_runs`` times is failed rather than run again: it most likely
    kills its worker (a poison pill), and would otherwise loop forever.
    """
    if task.expires_at is not None and now >= task.expires_at and task.attempts <= 1:
        message = f"not started within its ttl (expired at {task.expires_at.isoformat()})"
        return Claimed(Verdict.EXPIRE, ErrorInfo(type="omniq.TaskExpired", message=message))
    if lost_too_often(task.lost_runs, max_lost_runs):
        message = (
            f"its worker was lost while running it {task.lost_runs} times (lease expired; "
            f"max_lost_runs={max_lost_runs}); not run again"
        )
        return Claimed(Verdict.GIVE_UP, ErrorInfo(type="omniq.WorkerLost", message=message))
    return Claimed(Verdict.RUN)
