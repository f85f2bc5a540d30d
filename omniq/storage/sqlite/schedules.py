"""SQLite schedule storage: a tick is claimed with a compare-and-set."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.models import Schedule
from omniq.storage._rows import decode_record
from omniq.storage._rows import ts as _ts
from omniq.storage.base import BaseScheduleStorage
from omniq.storage.sqlite._base import ENCODER, Row, SQLiteComponent
from omniq.storage.sqlite.connection import QUERIES as _Q

__all__ = ["AsyncSQLiteScheduleStorage", "SQLiteScheduleStorage"]

_SCHEDULE_DECODER = msgspec.msgpack.Decoder(Schedule)


def _schedule_row(schedule: Schedule) -> tuple[Any, ...]:
    next_ts = None if schedule.next_run_at is None else _ts(schedule.next_run_at)
    return (schedule.id, next_ts, 1 if schedule.paused else 0, ENCODER.encode(schedule))


def _schedule_from_row(row: Row) -> Schedule:
    schedule_id, data = row
    return decode_record(_SCHEDULE_DECODER, data, f"sqlite: schedule {schedule_id}")


class AsyncSQLiteScheduleStorage(SQLiteComponent, BaseScheduleStorage):
    """Schedules on SQLite; a tick is claimed with a compare-and-set on ``next_run_at``."""

    async def upsert(self, schedule: Schedule) -> None:
        """Insert or replace the schedule with this id."""
        sql, row = _Q["upsert_schedule"], _schedule_row(schedule)
        await (await self._conn()).run(lambda conn: conn.execute(sql, row).close(), "storing")

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        sql = _Q["get_schedule"]
        db = await self._conn()
        row = await db.run(lambda conn: conn.execute(sql, (schedule_id,)).fetchone(), "reading")
        return None if row is None else _schedule_from_row(row)

    async def list(self) -> builtins.list[Schedule]:
        """All schedules, by id."""
        sql = _Q["list_schedules"]
        db = await self._conn()
        rows = await db.run(lambda conn: conn.execute(sql).fetchall(), "listing schedules")
        return [_schedule_from_row(row) for row in rows]

    async def delete(self, schedule_id: str) -> bool:
        """Remove a schedule; False if it did not exist."""
        sql = _Q["delete_schedule"]
        db = await self._conn()
        count = await db.run(lambda conn: conn.execute(sql, (schedule_id,)).rowcount, "deleting")
        return count > 0

    async def update(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule | None:
        """Apply field changes in one transaction; None if the schedule is unknown."""
        get_sql, put_sql = _Q["get_schedule"], _Q["upsert_schedule"]

        def update(conn: sqlite3.Connection) -> Schedule | None:
            row = conn.execute(get_sql, (schedule_id,)).fetchone()
            if row is None:
                return None
            schedule = msgspec.structs.replace(_schedule_from_row(row), **dict(changes))
            conn.execute(put_sql, _schedule_row(schedule))
            return schedule

        return await (await self._conn()).write(update, "updating a schedule")

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[Schedule]:
        """Unpaused schedules due at or before ``now``, earliest first."""
        sql, now_ts = _Q["due_schedules"], _ts(now)
        db = await self._conn()
        rows = await db.run(lambda conn: conn.execute(sql, (now_ts, limit)).fetchall(), "reading")
        return [_schedule_from_row(row) for row in rows]

    async def advance(
        self,
        schedule_id: str,
        *,
        expected_next_run_at: datetime,
        next_run_at: datetime | None,
        last_run_at: datetime,
    ) -> bool:
        """Claim one tick: a compare-and-set on ``next_run_at`` under the write lock."""
        get_sql, set_sql = _Q["get_schedule"], _Q["advance_schedule"]

        def advance(conn: sqlite3.Connection) -> bool:
            row = conn.execute(get_sql, (schedule_id,)).fetchone()
            if row is None:
                return False
            schedule = _schedule_from_row(row)
            if schedule.next_run_at is None or schedule.next_run_at != expected_next_run_at:
                return False
            new = msgspec.structs.replace(
                schedule, next_run_at=next_run_at, last_run_at=last_run_at, runs=schedule.runs + 1
            )
            new_row = _schedule_row(new)
            old_ts = _ts(schedule.next_run_at)
            return conn.execute(set_sql, (new_row[1], new_row[3], schedule_id, old_ts)).rowcount > 0

        return await (await self._conn()).write(advance, "advancing a schedule")


class SQLiteScheduleStorage(StorageTwin[AsyncSQLiteScheduleStorage]):
    """Blocking twin of :class:`AsyncSQLiteScheduleStorage`: the same methods, without ``await``."""

    async_class = AsyncSQLiteScheduleStorage
    advance = blocking(AsyncSQLiteScheduleStorage.advance)
    delete = blocking(AsyncSQLiteScheduleStorage.delete)
    due = blocking(AsyncSQLiteScheduleStorage.due)
    get = blocking(AsyncSQLiteScheduleStorage.get)
    list = blocking(AsyncSQLiteScheduleStorage.list)
    update = blocking(AsyncSQLiteScheduleStorage.update)
    upsert = blocking(AsyncSQLiteScheduleStorage.upsert)
