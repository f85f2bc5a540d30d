"""The records OmniQ stores: tasks, results, events and schedules.

All are frozen ``msgspec.Struct`` values: storage backends encode them with msgspec and
never hold references to storage themselves. A changed record is a new value
(``msgspec.structs.replace``).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = [
    "FINAL_STATUSES",
    "WAITING_STATUSES",
    "ErrorInfo",
    "EventType",
    "LimitInfo",
    "Progress",
    "Schedule",
    "Task",
    "TaskEvent",
    "TaskResult",
    "TaskStatus",
    "WorkerInfo",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class TaskStatus(str, enum.Enum):
    """Where a task is in its life. Values are the lower-case names."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        """True for the states a task never leaves."""
        return self in FINAL_STATUSES

    def __str__(self) -> str:
        return self.value


FINAL_STATUSES = frozenset(
    {TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}
)
#: States in which a task is waiting to be claimed (possibly not yet due).
WAITING_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RETRYING})


class EventType(str, enum.Enum):
    """Kinds of task lifecycle event. Values are the lower-case names."""

    ENQUEUED = "enqueued"
    SCHEDULED = "scheduled"
    EXECUTING = "executing"
    COMPLETE = "complete"
    ERROR = "error"
    RETRY = "retry"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REQUEUED = "requeued"

    def __str__(self) -> str:
        return self.value


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An exception as stored: ``type`` is its qualified name (``builtins.ValueError``)."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException, *, with_traceback: bool = True) -> ErrorInfo:
        """Describe ``exc``; the traceback is formatted only when asked for."""
        kind = type(exc)
        tb = ""
        if with_traceback and exc.__traceback__ is not None:
            import traceback

            tb = "".join(traceback.format_exception(exc))
        return cls(type=f"{kind.__module__}.{kind.__qualname__}", message=str(exc), traceback=tb)


# omit_defaults (Task, TaskEvent): encoded records leave out fields at their defaults, so a
# plain task stores in about 140 bytes instead of 320; decoding fills the defaults back in.
class Task(msgspec.Struct, frozen=True, kw_only=True, eq=False, omit_defaults=True):
    """One unit of work.

    ``func`` names the callable (``"package.module:qualname"``); when the callable cannot
    travel by import path, ``payload`` carries it too (see ``omniq.serialization``).
    ``payload`` holds the encoded ``(callable or None, args, kwargs)``. ``due_at`` is the
    earliest time the task may run (None: now); ``expires_at`` the time after which it
    must not start (from ``ttl``). Tasks hash and compare by ``id``.

    ``attempts`` counts the runs that started; ``lost_runs`` how many of them were lost
    with their worker (its lease ran out), which do not use up ``max_retries``.
    ``trace`` is the trace context of the span that submitted the task (W3C
    ``traceparent`` and ``tracestate``, with ``tracing=True``), which each run continues.
    """

    id: str
    func: str
    payload: bytes = b""
    queue: str = "default"
    priority: int = 0
    status: TaskStatus = TaskStatus.PENDING
    attempts: int = 0
    lost_runs: int = 0
    max_retries: int = 0
    retry_delay: float = 1.0
    timeout: float | None = None
    due_at: datetime | None = None
    expires_at: datetime | None = None
    result_ttl: float | None = None
    depends_on: tuple[str, ...] = ()
    schedule_id: str | None = None
    created_at: datetime = msgspec.field(default_factory=utcnow)
    updated_at: datetime | None = None
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    #: What the task last reported with ``current_task().progress(...)`` (None: nothing).
    #: Stored apart from the task record and merged in when a task is read.
    progress: Progress | None = None
    #: Global limits of this task's name (SPEC §8 "Limits"), from ``@oq.task``: at most
    #: ``rate_limit`` starts (``"N/s"``, ``"N/m"``, ``"N/h"``) and ``max_concurrency``
    #: running at once, across every worker that shares the backend. None: no limit.
    rate_limit: str | None = None
    max_concurrency: int | None = None
    #: The submitter's trace context (``tracing=True``), None without: left out of the
    #: stored record then (``omit_defaults``).
    trace: dict[str, str] | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def max_attempts(self) -> int:
        """How many runs of the task may fail: ``1 + max_retries`` (lost runs aside)."""
        return 1 + self.max_retries


class TaskResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a task in a final state.

    ``result`` is the decoded return value (on ``COMPLETE``), ``error`` an
    :class:`ErrorInfo` on any other final state.
    """

    task_id: str
    status: TaskStatus
    result: Any = None
    error: ErrorInfo | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime = msgspec.field(default_factory=utcnow)
    worker_id: str | None = None
    expires_at: datetime | None = None

    @property
    def ok(self) -> bool:
        """True when the task completed."""
        return self.status is TaskStatus.COMPLETE


class TaskEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One step of a task's lifecycle, as logged to the event storage."""

    task_id: str
    event_type: EventType
    timestamp: datetime = msgspec.field(default_factory=utcnow)
    attempt: int = 0
    worker_id: str | None = None
    message: str = ""
    queue: str = "default"


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """Recurring work: a task template fired on a cron expression or an interval.

    ``task`` is the template (its id is replaced per tick). ``next_run_at`` is the next
    due tick; ``runs`` how many ticks have fired.
    """

    id: str
    task: Task
    cron: str | None = None
    interval: float | None = None
    timezone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    max_runs: int | None = None
    runs: int = 0
    paused: bool = False
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    created_at: datetime = msgspec.field(default_factory=utcnow)


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A running worker pool as it registered itself (``list_workers()``).

    ``id`` is the pool's worker id (the ``worker_id`` on the tasks it runs), ``queues``
    the queues it serves, ``running`` how many tasks it was running at its last
    heartbeat, ``last_seen`` the time of that heartbeat.
    """

    id: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    worker_type: str
    concurrency: int
    running: int = 0
    started_at: datetime = msgspec.field(default_factory=utcnow)
    last_seen: datetime = msgspec.field(default_factory=utcnow)


class LimitInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A global limit stored in the backend (``list_limits()``).

    ``scope`` is ``"queue"`` (set with ``limit_queue(name, ...)``) or ``"task"`` (from
    ``@oq.task(rate_limit=..., max_concurrency=...)`` on the task named ``name``, its
    ``module:qualname``); ``rate_limit`` is ``"N/s"``, ``"N/m"`` or ``"N/h"`` or None;
    ``max_concurrency`` the cap on tasks running at once, or None.
    """

    scope: str
    name: str
    rate_limit: str | None = None
    max_concurrency: int | None = None


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """How far a running task says it got (``omniq.current_task().progress(...)``):
    ``done`` out of ``total`` (None: unknown), an optional ``message``, and when it was
    reported (``updated_at``)."""

    done: int | float
    total: int | float | None = None
    message: str | None = None
    updated_at: datetime = msgspec.field(default_factory=utcnow)
