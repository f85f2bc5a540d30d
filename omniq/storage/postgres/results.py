"""Task results on PostgreSQL: stored with their expiry, announced by ``NOTIFY`` on the
results channel (``omniq:{namespace}:results``), so a waiter wakes within a round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.models import TaskResult
from omniq.storage._rows import result_from_row, ts
from omniq.storage.base import BaseResultStorage
from omniq.storage.postgres._base import ENCODER, PostgresComponent

__all__ = ["AsyncPostgresResultStorage", "PostgresResultStorage", "result_arrays"]

_RESULT_DECODER = msgspec.msgpack.Decoder(TaskResult)

# How long a result waiter trusts notifications before it looks again anyway.
_RESULT_BACKSTOP = 1.0


def result_arrays(
    results: Sequence[TaskResult],
) -> tuple[list[str], list[float | None], list[bytes]]:
    """The result columns; a task's last result in the batch wins (one row per task)."""
    latest = {result.task_id: result for result in results}
    return (
        list(latest),
        [None if r.expires_at is None else ts(r.expires_at) for r in latest.values()],
        [ENCODER.encode(r) for r in latest.values()],
    )


class AsyncPostgresResultStorage(PostgresComponent, BaseResultStorage):
    """Task results on PostgreSQL; ``wait`` is woken by the ``NOTIFY`` of the write."""

    async def put_many(self, results: Sequence[TaskResult]) -> None:
        """Store (or replace) results in one statement, announcing them."""
        if not results:
            return
        db = await self._conn()
        sql = db.sql["put_results"]
        await db.execute("storing results", sql, *result_arrays(results), db.results_channel)

    async def get(self, task_id: str) -> TaskResult | None:
        """The stored result, or None (also once it expired)."""
        db = await self._conn()
        sql = db.sql["get_result"]
        row = await db.fetchrow("reading a result", sql, task_id)
        return result_from_row(row, _RESULT_DECODER, f"postgres: result of task {task_id}")

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Wait for a result: woken by its ``NOTIFY``, with a periodic look as backstop."""
        db = await self._conn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # Listen before looking, so a result stored in between is not missed.
            future = await db.result_future(task_id)
            try:
                result = await self.get(task_id)
                remaining = deadline - loop.time()
                if result is not None or remaining <= 0:
                    return result
                pause = min(remaining, _RESULT_BACKSTOP)
                if future is None:
                    await asyncio.sleep(min(pause, 0.05))
                else:
                    await asyncio.wait({future}, timeout=pause)
            finally:
                if future is not None:
                    db.drop_result_future(task_id, future)

    async def delete_expired(self, now: datetime) -> int:
        """Delete results past their ``expires_at``."""
        db = await self._conn()
        sql = db.sql["delete_expired_results"]
        return await db.execute("deleting expired results", sql, ts(now))

    async def delete(self, task_ids: Sequence[str]) -> None:
        """Delete the results of ``task_ids`` in one statement."""
        if task_ids:
            db = await self._conn()
            await db.execute("deleting results", db.sql["delete_results"], list(task_ids))


class PostgresResultStorage(StorageTwin[AsyncPostgresResultStorage]):
    """Blocking twin of :class:`AsyncPostgresResultStorage`: the same methods, without ``await``."""

    async_class = AsyncPostgresResultStorage
    delete_expired = blocking(AsyncPostgresResultStorage.delete_expired)
    get = blocking(AsyncPostgresResultStorage.get)
    put = blocking(AsyncPostgresResultStorage.put)
    put_many = blocking(AsyncPostgresResultStorage.put_many)
    wait = blocking(AsyncPostgresResultStorage.wait)
    delete = blocking(AsyncPostgresResultStorage.delete)
