"""Requeue and the worker registry on PostgreSQL (``omniq.storage._fleet``): a requeue
is one ``UPDATE … WHERE status = ANY(…)`` that wakes workers in the same statement;
registrations are rows of the ``workers`` table."""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import datetime

from omniq.models import Task, TaskStatus, WorkerInfo
from omniq.storage._fleet import decode_worker, encode_worker
from omniq.storage._rows import ts
from omniq.storage.postgres._base import ENCODER, PostgresComponent, task_of_row

__all__ = ["PostgresFleet"]

_CLAIMABLE = frozenset({TaskStatus.PENDING, TaskStatus.RETRYING, TaskStatus.SCHEDULED})
# The columns of a task row (omniq/storage/_rows.py), which requeue's row starts with.
_TASK_WIDTH = 11


class PostgresFleet(PostgresComponent):
    """The PostgreSQL task queue's requeue and worker registry (the primitives of
    ``omniq.storage._fleet.FleetQueue``)."""

    async def requeue(
        self, task: Task, *, from_statuses: Collection[TaskStatus], now: datetime
    ) -> Task | None:
        """Replace the task's row with ``task`` if its status is in ``from_statuses``."""
        db = await self._conn()
        row = await db.fetchrow(
            "requeueing a task",
            db.sql["requeue"],
            TaskStatus(task.status).value,
            ts(task.due_at or now),
            ts(now),
            ENCODER.encode(task),
            task.id,
            [TaskStatus(s).value for s in from_statuses],
            task.status in _CLAIMABLE,
            db.work_channel,
        )
        return None if row is None else task_of_row(tuple(row)[:_TASK_WIDTH])

    async def register_worker(self, info: WorkerInfo, *, expires_at: datetime) -> None:
        """Upsert the worker's row."""
        db = await self._conn()
        await db.execute(
            "registering a worker",
            db.sql["register_worker"],
            info.id,
            ts(expires_at),
            encode_worker(info),
        )

    async def deregister_worker(self, worker_id: str) -> None:
        """Delete the worker's row."""
        db = await self._conn()
        await db.execute("deregistering a worker", db.sql["deregister_worker"], worker_id)

    async def list_workers(self, *, now: datetime) -> builtins.list[WorkerInfo]:
        """The live rows (the lapsed ones purged by the same statement)."""
        db = await self._conn()
        rows = await db.fetch("listing workers", db.sql["list_workers"], ts(now))
        found = (decode_worker(bytes(row[0])) for row in rows)
        return [info for info in found if info is not None]
