"""Requeue and the worker registry on SQLite (``omniq.storage._fleet``): a requeue is
one ``UPDATE … WHERE status IN …``; registrations are rows of the ``workers`` table."""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Collection
from datetime import datetime

from omniq.models import Task, TaskStatus, WorkerInfo
from omniq.storage._fleet import decode_worker, encode_worker
from omniq.storage._rows import task_from_row
from omniq.storage._rows import ts as _ts
from omniq.storage.sqlite._base import ENCODER, Row, SQLiteComponent
from omniq.storage.sqlite.connection import QUERIES as _Q

__all__ = ["SQLiteFleet"]

_CLAIMABLE = frozenset({TaskStatus.PENDING, TaskStatus.RETRYING, TaskStatus.SCHEDULED})


class SQLiteFleet(SQLiteComponent):
    """The SQLite task queue's requeue and worker registry (the primitives of
    ``omniq.storage._fleet.FleetQueue``)."""

    async def requeue(
        self, task: Task, *, from_statuses: Collection[TaskStatus], now: datetime
    ) -> Task | None:
        """Replace the task's row with ``task`` if its status is in ``from_statuses``."""
        params = {
            "id": task.id,
            "status": TaskStatus(task.status).value,
            "due": _ts(task.due_at or now),
            "now": _ts(now),
            "data": ENCODER.encode(task),
            "from_statuses": json.dumps([TaskStatus(s).value for s in from_statuses]),
        }
        sql = _Q["requeue"]

        def requeue(conn: sqlite3.Connection) -> Row | None:
            rows = conn.execute(sql, params).fetchall()
            return tuple(rows[0]) if rows else None

        db = await self._conn()
        row = await db.run(requeue, "requeueing a task")
        if row is None:
            return None
        if task.status in _CLAIMABLE:
            db.notify_work()
        return task_from_row(row, "sqlite")

    async def register_worker(self, info: WorkerInfo, *, expires_at: datetime) -> None:
        """Upsert the worker's row."""
        params = (info.id, _ts(expires_at), encode_worker(info))
        sql = _Q["register_worker"]
        db = await self._conn()
        await db.run(lambda conn: conn.execute(sql, params).close(), "registering a worker")

    async def deregister_worker(self, worker_id: str) -> None:
        """Delete the worker's row."""
        sql = _Q["deregister_worker"]
        db = await self._conn()
        await db.run(lambda conn: conn.execute(sql, (worker_id,)).close(), "deregistering")

    async def list_workers(self, *, now: datetime) -> builtins.list[WorkerInfo]:
        """Purge the lapsed rows, then read the live ones."""
        purge, listing, at = _Q["purge_workers"], _Q["list_workers"], _ts(now)

        def read(conn: sqlite3.Connection) -> builtins.list[bytes]:
            conn.execute(purge, (at,)).close()
            return [row[0] for row in conn.execute(listing, (at,)).fetchall()]

        db = await self._conn()
        found = (decode_worker(data) for data in await db.write(read, "listing workers"))
        return [info for info in found if info is not None]
