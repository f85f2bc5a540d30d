"""OmniQ: an async-first Python task queue with a native sync API.

One API over SQLite (the embedded default), files via fsspec, Redis, PostgreSQL and NATS
(JetStream); the task queue, results and event log can each live on their own backend.

Example::

    from omniq import OmniQ

    with OmniQ() as oq:
        task_id = oq.enqueue("mypkg.tasks:resize", "cat.png")
        oq.worker().run(burst=True)
        print(oq.get_result(task_id).result)
"""

from omniq.config import Settings
from omniq.context import TaskContext, current_task
from omniq.core import AsyncOmniQ, AsyncTaskFunction, AsyncTaskHandle
from omniq.errors import OmniQError
from omniq.models import (
    ErrorInfo,
    EventType,
    LimitInfo,
    Progress,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    WorkerInfo,
)
from omniq.retry import Retry
from omniq.sync import OmniQ, TaskFunction, TaskHandle
from omniq.workers import AsyncWorkerPool, WorkerPool

# The one place the version is written: the build reads this line (pyproject.toml's
# [tool.setuptools.dynamic]), `omniq --version` prints it. Keep it a plain string literal.
__version__ = "0.1.0"

__all__ = [
    "AsyncOmniQ",
    "AsyncTaskFunction",
    "AsyncTaskHandle",
    "AsyncWorkerPool",
    "ErrorInfo",
    "EventType",
    "LimitInfo",
    "OmniQ",
    "OmniQError",
    "Progress",
    "Retry",
    "Schedule",
    "Settings",
    "Task",
    "TaskContext",
    "TaskEvent",
    "TaskFunction",
    "TaskHandle",
    "TaskResult",
    "TaskStatus",
    "WorkerInfo",
    "WorkerPool",
    "__version__",
    "current_task",
]
