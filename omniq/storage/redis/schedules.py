"""Schedules on Redis: every write a compare-and-set on a version."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.models import Schedule
from omniq.storage._rows import decode_record
from omniq.storage.base import BaseScheduleStorage
from omniq.storage.redis._base import RedisComponent
from omniq.storage.redis._codec import _ENCODER, _us
from omniq.storage.redis.connection import MAX_BULK_BYTES, too_large

_SCHEDULE_DECODER = msgspec.msgpack.Decoder(Schedule)


def _decode_schedule(data: bytes) -> Schedule:
    return decode_record(_SCHEDULE_DECODER, data, "redis: a schedule record")


class AsyncRedisScheduleStorage(RedisComponent, BaseScheduleStorage):
    """Schedules on Redis; every write is a compare-and-set on a version (Lua)."""

    async def _put(self, schedule: Schedule, expected_version: bytes | str = "") -> bool:
        client = await self._conn()
        next_run = "" if schedule.next_run_at is None else _us(schedule.next_run_at)
        record = _ENCODER.encode(schedule)
        if len(record) > MAX_BULK_BYTES:
            raise too_large(f"schedule {schedule.id} (its task)", len(record))
        written = await client.script(
            "schedule_put",
            schedule.id,
            record,
            next_run,
            "1" if schedule.paused else "0",
            expected_version,
        )
        return bool(written)

    async def _read(self, schedule_id: str) -> tuple[Schedule, bytes] | None:
        client = await self._conn()
        data, version = await client.call("HMGET", f"{self._prefix}s:{schedule_id}", "d", "v")
        if data is None:
            return None
        return _decode_schedule(data), version

    async def upsert(self, schedule: Schedule) -> None:
        """Insert or replace the schedule with this id."""
        await self._put(schedule)

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        found = await self._read(schedule_id)
        return None if found is None else found[0]

    async def list(self) -> builtins.list[Schedule]:
        """All schedules, by id."""
        client = await self._conn()
        return [_decode_schedule(data) for data in await client.script("schedule_get", "all")]

    async def delete(self, schedule_id: str) -> bool:
        """Remove a schedule; False if it did not exist."""
        client = await self._conn()
        return bool(await client.script("schedule_delete", schedule_id))

    async def update(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule | None:
        """Apply field changes (retried if another writer got in between)."""
        while True:
            found = await self._read(schedule_id)
            if found is None:
                return None
            schedule = msgspec.structs.replace(found[0], **dict(changes))
            if await self._put(schedule, found[1]):
                return schedule

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[Schedule]:
        """Unpaused schedules due at or before ``now``, earliest first."""
        if limit <= 0:
            return []
        client = await self._conn()
        blobs = await client.script("schedule_get", "due", _us(now), limit)
        return [_decode_schedule(data) for data in blobs]

    async def advance(
        self,
        schedule_id: str,
        *,
        expected_next_run_at: datetime,
        next_run_at: datetime | None,
        last_run_at: datetime,
    ) -> bool:
        """Claim one tick: a compare-and-set on the schedule's version."""
        while True:
            found = await self._read(schedule_id)
            if found is None:
                return False
            schedule, version = found
            if schedule.next_run_at is None or schedule.next_run_at != expected_next_run_at:
                return False
            new = msgspec.structs.replace(
                schedule, next_run_at=next_run_at, last_run_at=last_run_at, runs=schedule.runs + 1
            )
            if await self._put(new, version):
                return True


class RedisScheduleStorage(StorageTwin[AsyncRedisScheduleStorage]):
    """Blocking twin of :class:`AsyncRedisScheduleStorage`: the same methods, without ``await``."""

    async_class = AsyncRedisScheduleStorage
    advance = blocking(AsyncRedisScheduleStorage.advance)
    delete = blocking(AsyncRedisScheduleStorage.delete)
    due = blocking(AsyncRedisScheduleStorage.due)
    get = blocking(AsyncRedisScheduleStorage.get)
    list = blocking(AsyncRedisScheduleStorage.list)
    update = blocking(AsyncRedisScheduleStorage.update)
    upsert = blocking(AsyncRedisScheduleStorage.upsert)
