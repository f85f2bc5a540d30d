"""The records a task queue hands across its interface besides the models: a worker's
acknowledgement and finish of a task it holds, and a claimed task that cannot be read."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from msgspec.structs import replace

from omniq.models import Task, TaskEvent, TaskResult, TaskStatus

__all__ = [
    "Ack",
    "Finish",
    "UnreadableTask",
    "event_fields_but_task_id",
    "event_of",
    "unreadable_task",
]

#: An event's fields but its task id, as a tuple: the events of a batch's tasks that match
#: on these can be stored once for the batch (``enqueue_logged`` on Redis and PostgreSQL).
event_fields_but_task_id = operator.attrgetter(
    "event_type", "timestamp", "attempt", "worker_id", "message", "queue"
)


def event_of(task_id: str, event: TaskEvent) -> TaskEvent:
    """``event`` as ``task_id``'s: an event ``enqueue_logged`` got without a task id."""
    return event if event.task_id else replace(event, task_id=task_id)


class Ack(NamedTuple):
    """The final status a worker reports for a task it holds.

    ``ran`` is False when the claim being acknowledged did not run the task (it found the
    task past its ttl, or lost with its workers too often): the attempt that claim
    counted is taken back, so ``attempts`` counts the runs that started.
    """

    task_id: str
    worker_id: str
    status: TaskStatus
    ran: bool = True


class Finish(NamedTuple):
    """A task its worker holds, ended: the ack, the result, and the events that go with
    them (stored only if the ack takes effect)."""

    ack: Ack
    result: TaskResult
    events: Sequence[TaskEvent] = ()


class UnreadableTask(Task, frozen=True, kw_only=True):
    """A claimed task whose stored record cannot be decoded (damaged, or written by an
    incompatible version), with ``reason`` saying why.

    A claim leases it like any other task and hands it out so that the worker fails it:
    a ``FAILED`` result naming the reason, an ``ERROR`` event and dependents cancelled.
    Left in the queue it would block claims or be retried at every lease expiry; failed
    quietly by the storage, nobody waiting on its result would ever hear of it.
    """

    reason: str


def unreadable_task(
    task_id: str,
    reason: str,
    *,
    queue: str,
    attempts: int,
    worker_id: str | None,
    lease_expires_at: datetime | None,
    now: datetime,
    status: TaskStatus = TaskStatus.RUNNING,
) -> UnreadableTask:
    """A record that could not be decoded, as far as the storage's own fields tell:
    what a claim that leased it returns (``RUNNING``), or a listing that met it."""
    return UnreadableTask(
        id=task_id,
        func="",
        queue=queue,
        status=status,
        attempts=attempts,
        worker_id=worker_id,
        lease_expires_at=lease_expires_at,
        created_at=now,
        updated_at=now,
        reason=reason,
    )
