"""SQLite event storage: the task event log, append-only."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.errors import StorageError
from omniq.models import TaskEvent
from omniq.storage._rows import ts as _ts
from omniq.storage.base import BaseEventStorage
from omniq.storage.sqlite._base import ENCODER, SQLiteComponent
from omniq.storage.sqlite.connection import QUERIES as _Q

__all__ = ["AsyncSQLiteEventStorage", "SQLiteEventStorage"]

_EVENT_DECODER = msgspec.msgpack.Decoder(TaskEvent)


def event_row(event: TaskEvent) -> tuple[Any, ...]:
    """The ``append_event`` row of ``event`` (a queue's finish writes them too)."""
    return (event.task_id, _ts(event.timestamp), ENCODER.encode(event))


class AsyncSQLiteEventStorage(SQLiteComponent, BaseEventStorage):
    """The task event log on SQLite (append-only; read back in time order)."""

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Append events in one transaction."""
        if not events:
            return
        rows = [event_row(event) for event in events]
        sql = _Q["append_event"]
        db = await self._conn()
        if len(rows) == 1:
            await db.run(lambda conn: conn.execute(sql, rows[0]).close(), "appending events")
        else:
            await db.write(lambda conn: conn.executemany(sql, rows).close(), "appending events")

    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first."""
        sql = _Q["get_events"]
        db = await self._conn()
        rows = await db.run(lambda conn: conn.execute(sql, (task_id,)).fetchall(), "reading")
        events = []
        for event_id, data in rows:
            try:
                events.append(_EVENT_DECODER.decode(data))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise StorageError(
                    f"sqlite: event {event_id} of task {task_id} is corrupt"
                ) from exc
        # Rows come in the order written, and a worker writes a task's last events with
        # its result, maybe before the producer's background writer stored ENQUEUED. The
        # sort is stable: events of one time keep the order they were logged in.
        events.sort(key=lambda event: event.timestamp)
        return events

    async def delete_before(self, before: datetime) -> int:
        """Delete events older than ``before``."""
        sql, before_ts = _Q["delete_events_before"], _ts(before)
        db = await self._conn()
        return int(await db.run(lambda conn: conn.execute(sql, (before_ts,)).rowcount, "deleting"))


class SQLiteEventStorage(StorageTwin[AsyncSQLiteEventStorage]):
    """Blocking twin of :class:`AsyncSQLiteEventStorage`: the same methods, without ``await``."""

    async_class = AsyncSQLiteEventStorage
    append = blocking(AsyncSQLiteEventStorage.append)
    delete_before = blocking(AsyncSQLiteEventStorage.delete_before)
    get = blocking(AsyncSQLiteEventStorage.get)
