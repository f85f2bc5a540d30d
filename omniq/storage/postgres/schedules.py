"""Schedules on PostgreSQL: a row each, changed under its row lock (``FOR UPDATE``), so
two workers never fire the same tick."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.models import Schedule
from omniq.storage._rows import decode_record, ts
from omniq.storage.base import BaseScheduleStorage
from omniq.storage.postgres._base import ENCODER, PostgresComponent

__all__ = ["AsyncPostgresScheduleStorage", "PostgresScheduleStorage"]

_SCHEDULE_DECODER = msgspec.msgpack.Decoder(Schedule)


def _schedule_params(schedule: Schedule) -> tuple[Any, ...]:
    next_ts = None if schedule.next_run_at is None else ts(schedule.next_run_at)
    return (schedule.id, next_ts, schedule.paused, ENCODER.encode(schedule))


def _schedule(schedule_id: str, data: bytes) -> Schedule:
    return decode_record(_SCHEDULE_DECODER, data, f"postgres: schedule {schedule_id}")


class AsyncPostgresScheduleStorage(PostgresComponent, BaseScheduleStorage):
    """Schedules on PostgreSQL; a tick is claimed under a row lock (``FOR UPDATE``)."""

    async def upsert(self, schedule: Schedule) -> None:
        """Insert or replace the schedule with this id."""
        db = await self._conn()
        await db.execute(
            "storing a schedule", db.sql["upsert_schedule"], *_schedule_params(schedule)
        )

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        db = await self._conn()
        sql = db.sql["get_schedule"]
        data = await db.fetchval("reading a schedule", sql, schedule_id)
        return None if data is None else _schedule(schedule_id, data)

    async def list(self) -> builtins.list[Schedule]:
        """All schedules, by id."""
        db = await self._conn()
        sql = db.sql["list_schedules"]
        return [_schedule(row[0], row[1]) for row in await db.fetch("listing schedules", sql)]

    async def delete(self, schedule_id: str) -> bool:
        """Remove a schedule; False if it did not exist."""
        db = await self._conn()
        sql = db.sql["delete_schedule"]
        return await db.execute("deleting a schedule", sql, schedule_id) > 0

    async def update(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule | None:
        """Apply field changes under the row's lock; None if the schedule is unknown."""
        db = await self._conn()
        lock, put = db.sql["lock_schedule"], db.sql["upsert_schedule"]

        async def update(conn: asyncpg.Connection) -> Schedule | None:
            data = await conn.fetchval(lock, schedule_id)
            if data is None:
                return None
            schedule = msgspec.structs.replace(_schedule(schedule_id, data), **dict(changes))
            await conn.execute(put, *_schedule_params(schedule))
            return schedule

        return await db.transaction("updating a schedule", update)

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[Schedule]:
        """Unpaused schedules due at or before ``now``, earliest first."""
        db = await self._conn()
        sql = db.sql["due_schedules"]
        rows = await db.fetch("reading due schedules", sql, ts(now), limit)
        return [_schedule(row[0], row[1]) for row in rows]

    async def advance(
        self,
        schedule_id: str,
        *,
        expected_next_run_at: datetime,
        next_run_at: datetime | None,
        last_run_at: datetime,
    ) -> bool:
        """Claim one tick: a compare-and-set on ``next_run_at`` under the row's lock."""
        db = await self._conn()
        lock, put = db.sql["lock_schedule"], db.sql["upsert_schedule"]

        async def advance(conn: asyncpg.Connection) -> bool:
            data = await conn.fetchval(lock, schedule_id)
            if data is None:
                return False
            schedule = _schedule(schedule_id, data)
            if schedule.next_run_at is None or schedule.next_run_at != expected_next_run_at:
                return False
            new = msgspec.structs.replace(
                schedule, next_run_at=next_run_at, last_run_at=last_run_at, runs=schedule.runs + 1
            )
            await conn.execute(put, *_schedule_params(new))
            return True

        return await db.transaction("advancing a schedule", advance)


class PostgresScheduleStorage(StorageTwin[AsyncPostgresScheduleStorage]):
    """Blocking twin of :class:`AsyncPostgresScheduleStorage` (its methods, without ``await``)."""

    async_class = AsyncPostgresScheduleStorage
    advance = blocking(AsyncPostgresScheduleStorage.advance)
    delete = blocking(AsyncPostgresScheduleStorage.delete)
    due = blocking(AsyncPostgresScheduleStorage.due)
    get = blocking(AsyncPostgresScheduleStorage.get)
    list = blocking(AsyncPostgresScheduleStorage.list)
    update = blocking(AsyncPostgresScheduleStorage.update)
    upsert = blocking(AsyncPostgresScheduleStorage.upsert)
