"""The task event log on PostgreSQL: a row per event, or, for the tasks of one uniform
enqueue, one event group they all point at (see ``sql/0003_event_groups.sql``)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime

import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.errors import StorageError
from omniq.models import TaskEvent
from omniq.storage._rows import ts
from omniq.storage.base import BaseEventStorage
from omniq.storage.postgres._base import ENCODER, PostgresComponent

__all__ = ["AsyncPostgresEventStorage", "PostgresEventStorage"]

_EVENT_DECODER = msgspec.msgpack.Decoder(TaskEvent)


class AsyncPostgresEventStorage(PostgresComponent, BaseEventStorage):
    """The task event log on PostgreSQL (append-only, ordered by insertion)."""

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Append events in one statement, in order."""
        if not events:
            return
        db = await self._conn()
        sql = db.sql["append_events"]
        await db.execute(
            "appending events",
            sql,
            [event.task_id for event in events],
            [ts(event.timestamp) for event in events],
            [ENCODER.encode(event) for event in events],
        )

    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first."""
        db = await self._conn()
        sql = db.sql["events_of_task"]
        events = []
        for event_id, data in await db.fetch("reading events", sql, task_id):
            try:
                event = _EVENT_DECODER.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                where = f"event {event_id}" if event_id else "an event of the enqueue's group"
                raise StorageError(f"postgres: {where} of task {task_id} is corrupt") from exc
            # An enqueue logs its events without the task id (see enqueue_uniform_logged).
            events.append(
                event if event.task_id else msgspec.structs.replace(event, task_id=task_id)
            )
        # Rows come in the order logged, but a deleted task's grouped events moved to rows
        # logged after its later ones. The sort is stable: one time keeps the logged order.
        events.sort(key=lambda event: event.timestamp)
        return events

    async def delete_before(self, before: datetime) -> int:
        """Delete events older than ``before``; an event of a group counts once per task
        still pointing at it."""
        db = await self._conn()
        sql = db.sql["delete_events_before"]
        return int(await db.fetchval("deleting events", sql, ts(before)))


class PostgresEventStorage(StorageTwin[AsyncPostgresEventStorage]):
    """Blocking twin of :class:`AsyncPostgresEventStorage`: the same methods, without ``await``."""

    async_class = AsyncPostgresEventStorage
    append = blocking(AsyncPostgresEventStorage.append)
    delete_before = blocking(AsyncPostgresEventStorage.delete_before)
    get = blocking(AsyncPostgresEventStorage.get)
