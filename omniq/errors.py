"""Errors raised by OmniQ.

Every error OmniQ raises derives from :class:`OmniQError`::

    OmniQError
    ├── ConfigError            (also ValueError) bad setting, naming source, field, expected form
    │   └── TaskArgumentError  (also TypeError) arguments the task function cannot take,
    │                          found at enqueue (``enqueue(send, "hi", eta=...)``)
    ├── SerializationError     (also ValueError) a value that cannot be encoded or a payload
    │   │                      that cannot be decoded
    │   └── PayloadSignatureError   a dill payload that is unsigned or altered
    ├── StorageError           a backend failed
    │   ├── StorageConnectionError  the backend cannot be reached
    │   ├── TaskNotFoundError       (also LookupError) an id that does not exist
    │   └── ValueTooLargeError      (also ValueError) a value over the backend's size limit
    │                               or ``max_payload_bytes``
    ├── ScheduleError          (also ValueError) a bad cron string, interval or schedule id
    ├── TaskImportError        a ``module:qualname`` that cannot be imported at the worker
    ├── TaskTimeoutError       (also TimeoutError) a task ran past its timeout
    ├── ResultTimeoutError     (also TimeoutError) ``get_result(wait=True)`` gave up waiting
    ├── DependencyFailedError  a dependency ended FAILED, CANCELLED or EXPIRED
    ├── TaskFailedError        a task whose value was asked for (``handle.result()``) ended
    │                          FAILED, CANCELLED or EXPIRED
    ├── WorkerError            a worker could not run or stop as asked
    ├── SyncInAsyncError       (also RuntimeError) the sync API called inside a running loop
    └── EventLoopError         (also RuntimeError) a client used from two running loops at once

Control flow for task authors (``omniq.Retry``) is deliberately not an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omniq.models import ErrorInfo, TaskResult

__all__ = [
    "ConfigError",
    "DependencyFailedError",
    "EventLoopError",
    "OmniQError",
    "PayloadSignatureError",
    "ResultTimeoutError",
    "ScheduleError",
    "SerializationError",
    "StorageConnectionError",
    "StorageError",
    "SyncInAsyncError",
    "TaskArgumentError",
    "TaskFailedError",
    "TaskImportError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "ValueTooLargeError",
    "WorkerError",
]


class OmniQError(Exception):
    """Base class of every error OmniQ raises."""


class ConfigError(OmniQError, ValueError):
    """A configuration value is invalid; the message names source, field and expected form."""


class TaskArgumentError(ConfigError, TypeError):
    """The arguments given at enqueue do not fit the task function's signature.

    Raised by ``enqueue``, ``submit``, ``enqueue_many``, ``schedule`` and ``.delay()``
    when the function is known where the task is enqueued (a callable, a registered
    name, or an import path the producer can import), so the mistake surfaces there and
    not as a failed task at the worker. The message names the argument, and says
    ``did you mean submit(..., eta=...)?`` when it is one of ``submit``'s options.
    A ``TypeError`` too, as the same call made directly would raise.
    """


class SerializationError(OmniQError, ValueError):
    """A value could not be encoded, or stored bytes could not be decoded."""


class PayloadSignatureError(SerializationError):
    """A dill payload is unsigned or its HMAC does not match: it is never unpickled."""


class StorageError(OmniQError):
    """A storage backend failed."""


class StorageConnectionError(StorageError):
    """A storage backend cannot be reached."""


class TaskNotFoundError(StorageError, LookupError):
    """A task id does not exist."""


class ValueTooLargeError(StorageError, ValueError):
    """A value (a task's arguments, a result) is larger than the backend stores in one
    piece, such as Redis's 512 MB per value, or than the ``max_payload_bytes`` setting
    allows; nothing was written. A worker fails a stored task whose payload is over
    ``max_payload_bytes`` with this error, without decoding it."""


class ScheduleError(OmniQError, ValueError):
    """A schedule is invalid (bad cron string, interval, time zone) or unknown."""


class TaskImportError(OmniQError):
    """A task's ``module:qualname`` could not be imported where it was to run."""


class TaskTimeoutError(OmniQError, TimeoutError):
    """A task ran longer than its timeout and was stopped."""


class ResultTimeoutError(OmniQError, TimeoutError):
    """``get_result(wait=True, timeout=...)`` found no final result in time."""


class DependencyFailedError(OmniQError):
    """A dependency of a task ended FAILED, CANCELLED or EXPIRED.

    Attributes:
        dependency_id: the id of the dependency that did not complete.
        dependency_status: its final status (a ``TaskStatus`` value).
    """

    def __init__(self, dependency_id: str, dependency_status: str) -> None:
        super().__init__(f"dependency {dependency_id} ended {dependency_status}")
        self.dependency_id = dependency_id
        self.dependency_status = dependency_status

    def __reduce__(self) -> tuple[type[DependencyFailedError], tuple[str, str]]:
        return (type(self), (self.dependency_id, self.dependency_status))


class TaskFailedError(OmniQError):
    """A task ended ``FAILED``, ``CANCELLED`` or ``EXPIRED`` where its return value was
    asked for: ``handle.result()`` of a ``.delay()`` or ``.submit()`` handle.

    ``get_result`` never raises this: it returns the :class:`~omniq.TaskResult`, whose
    ``error`` this error carries too.

    Attributes:
        task_id: the task's id.
        status: its final status (a ``TaskStatus``).
        error: the stored error (an ``ErrorInfo`` with the exception's qualified
            ``type``, ``message`` and ``traceback``), or None.
        result: the whole ``TaskResult``.
    """

    def __init__(self, result: TaskResult) -> None:
        error = result.error
        detail = f": {error.type}: {error.message}" if error is not None else ""
        super().__init__(f"task {result.task_id} ended {result.status.value}{detail}")
        self.result = result
        self.task_id: str = result.task_id
        self.status = result.status
        self.error: ErrorInfo | None = error

    def __reduce__(self) -> tuple[type[TaskFailedError], tuple[TaskResult]]:
        return (type(self), (self.result,))


class WorkerError(OmniQError):
    """A worker pool could not start, run or stop as asked."""


class SyncInAsyncError(OmniQError, RuntimeError):
    """The blocking API was called from inside a running event loop (a Jupyter cell,
    whose kernel runs one, is let through)."""


class EventLoopError(OmniQError, RuntimeError):
    """A client (or a storage) was used from an event loop while the loop it runs on is
    still running in another thread. One object serves one loop at a time: it follows its
    caller to a new loop once the old one has finished (``asyncio.run`` twice), never two
    at once."""
