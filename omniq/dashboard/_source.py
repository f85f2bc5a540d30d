"""What the dashboard reads and does, as coroutines on the server's event loop.

An ``AsyncOmniQ`` is called directly. An ``OmniQ`` (blocking) keeps its own private loop,
which the rest of its program may be using from other threads, so its public blocking
methods are called in a worker thread instead of moving its async client onto the
server's loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import anyio.to_thread

from omniq.core import AsyncOmniQ
from omniq.errors import ConfigError
from omniq.models import LimitInfo, Schedule, Task, TaskEvent, TaskResult, TaskStatus, WorkerInfo
from omniq.serialization import SerializationManager
from omniq.sync import OmniQ

__all__ = ["Source"]

T = TypeVar("T")


class Source:
    """The client behind a dashboard, whichever kind it is."""

    def __init__(self, oq: AsyncOmniQ | OmniQ) -> None:
        if isinstance(oq, OmniQ):
            self._blocking: OmniQ | None = oq
            self._client = oq.async_client
        elif isinstance(oq, AsyncOmniQ):
            self._blocking = None
            self._client = oq
        else:
            raise ConfigError(
                f"create_app(oq): expected an OmniQ or AsyncOmniQ, got {type(oq).__name__}"
            )

    @property
    def serializer(self) -> SerializationManager:
        """The client's serializer (decoding arguments needs no I/O)."""
        return self._client.serializer

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._blocking is None:
            return await getattr(self._client, name)(*args, **kwargs)
        method: Callable[..., Any] = getattr(self._blocking, name)
        return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs))

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts per queue and status."""
        result: dict[str, dict[str, int]] = await self._call("stats")
        return result

    async def list_tasks(
        self, *, queue: str | None = None, status: TaskStatus | None = None, limit: int = 100
    ) -> list[Task]:
        """The newest ``limit`` tasks matching the filters."""
        result: list[Task] = await self._call("list_tasks", queue=queue, status=status, limit=limit)
        return result

    async def get_task(self, task_id: str) -> Task | None:
        """One task with its progress, or None."""
        result: Task | None = await self._call("get_task", task_id)
        return result

    async def get_result(self, task_id: str) -> TaskResult | None:
        """A finished task's result (decoded as the client decodes it), or None."""
        result: TaskResult | None = await self._call("get_result", task_id)
        return result

    async def get_events(self, task_id: str) -> list[TaskEvent]:
        """The task's events, oldest first."""
        result: list[TaskEvent] = await self._call("get_events", task_id)
        return result

    async def cancel(self, task_id: str) -> bool:
        """Cancel one task."""
        return bool(await self._call("cancel", task_id))

    async def requeue(self, task_id: str) -> bool:
        """Requeue one failed, cancelled or expired task."""
        return bool(await self._call("requeue", task_id))

    async def requeue_failed(self, queue: str) -> int:
        """Requeue every failed task of ``queue``; how many were."""
        return int(await self._call("requeue_all", status=TaskStatus.FAILED, queue=queue))

    async def list_schedules(self) -> list[Schedule]:
        """All schedules, by id."""
        result: list[Schedule] = await self._call("list_schedules")
        return result

    async def schedule_action(self, action: str, schedule_id: str) -> bool:
        """``pause``, ``resume`` or ``remove`` a schedule; False if unknown."""
        return bool(await self._call(f"{action}_schedule", schedule_id))

    async def list_workers(self) -> list[WorkerInfo]:
        """The worker pools alive now."""
        result: list[WorkerInfo] = await self._call("list_workers")
        return result

    async def list_limits(self) -> list[LimitInfo]:
        """The global limits stored in the backend (queues', then task names')."""
        result: list[LimitInfo] = await self._call("list_limits")
        return result

    async def oldest_due(self, queue: str, waiting: int) -> tuple[datetime | None, bool]:
        """When the longest-waiting due task of ``queue`` became due, and whether that is
        exact (False: a lower bound over the newest tasks only).

        An async client asks the queue (``next_due_at``: one cheap query); a blocking one
        looks at the newest waiting tasks, up to a bound, through its public API.
        """
        if self._blocking is None:
            return await self._client.queue.next_due_at([queue]), True
        window = 500
        tasks = await self.list_tasks(queue=queue, status=TaskStatus.PENDING, limit=window)
        dues = [task.due_at or task.created_at for task in tasks]
        return (min(dues) if dues else None), waiting <= window
