"""SQLite result storage: a result is one row, woken at once in-process."""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.models import TaskResult
from omniq.storage._rows import result_from_row
from omniq.storage._rows import ts as _ts
from omniq.storage.base import BaseResultStorage
from omniq.storage.sqlite._base import ENCODER, SQLiteComponent
from omniq.storage.sqlite.connection import QUERIES as _Q

__all__ = ["AsyncSQLiteResultStorage", "SQLiteResultStorage"]

_RESULT_DECODER = msgspec.msgpack.Decoder(TaskResult)


def result_rows(results: Sequence[TaskResult]) -> builtins.list[tuple[Any, ...]]:
    """The ``put_result`` rows of ``results`` (a queue's finish writes them too)."""
    return [
        (
            result.task_id,
            None if result.expires_at is None else _ts(result.expires_at),
            ENCODER.encode(result),
        )
        for result in results
    ]


class AsyncSQLiteResultStorage(SQLiteComponent, BaseResultStorage):
    """Task results on SQLite; ``wait`` is woken at once by a result stored in-process."""

    async def put_many(self, results: Sequence[TaskResult]) -> None:
        """Store (or replace) results in one transaction."""
        if not results:
            return
        rows = result_rows(results)
        sql = _Q["put_result"]
        db = await self._conn()
        if len(rows) == 1:
            await db.run(lambda conn: conn.execute(sql, rows[0]).close(), "storing results")
        else:
            await db.write(lambda conn: conn.executemany(sql, rows).close(), "storing results")
        db.notify_results([result.task_id for result in results])

    async def get(self, task_id: str) -> TaskResult | None:
        """The stored result, or None (also once it expired)."""
        sql = _Q["get_result"]
        db = await self._conn()
        row = await db.run(lambda conn: conn.execute(sql, (task_id,)).fetchone(), "reading")
        return result_from_row(row, _RESULT_DECODER, f"sqlite: result of task {task_id}")

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Wait for a result: woken in-process at once, else when the file changes."""
        db = await self._conn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        future = db.result_future(task_id)
        try:
            delay = 0.002
            while True:
                signature = db.file_signature()
                result = await self.get(task_id)
                if result is not None:
                    return result
                last_read = loop.time()
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return None
                    await asyncio.wait({future}, timeout=min(delay, remaining))
                    delay = min(delay * 1.5, 0.05)
                    if future.done():
                        future = db.result_future(task_id)
                        break
                    if signature is not None and db.file_signature() != signature:
                        break
                    if loop.time() - last_read >= 0.25:  # backstop, and :memory: elsewhere
                        break
        finally:
            db.drop_result_future(task_id, future)

    async def delete_expired(self, now: datetime) -> int:
        """Delete results past their ``expires_at``."""
        sql, now_ts = _Q["delete_expired_results"], _ts(now)
        db = await self._conn()
        return int(await db.run(lambda conn: conn.execute(sql, (now_ts,)).rowcount, "deleting"))

    async def delete(self, task_ids: Sequence[str]) -> None:
        """Delete the results of ``task_ids`` in one statement."""
        if not task_ids:
            return
        sql, ids = _Q["delete_results"], json.dumps(list(task_ids))
        db = await self._conn()
        await db.run(lambda conn: conn.execute(sql, (ids,)).close(), "deleting results")


class SQLiteResultStorage(StorageTwin[AsyncSQLiteResultStorage]):
    """Blocking twin of :class:`AsyncSQLiteResultStorage`: the same methods, without ``await``."""

    async_class = AsyncSQLiteResultStorage
    delete_expired = blocking(AsyncSQLiteResultStorage.delete_expired)
    get = blocking(AsyncSQLiteResultStorage.get)
    put = blocking(AsyncSQLiteResultStorage.put)
    put_many = blocking(AsyncSQLiteResultStorage.put_many)
    wait = blocking(AsyncSQLiteResultStorage.wait)
    delete = blocking(AsyncSQLiteResultStorage.delete)
