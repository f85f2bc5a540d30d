"""The file backend's schedules: one object per schedule, fired by compare-and-set."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from omniq.models import Schedule
from omniq.storage.base import BaseScheduleStorage
from omniq.storage.file._base import FileComponent, decode, encoder
from omniq.storage.file._layout import token
from omniq.storage.file._store import Change

__all__ = ["AsyncFileScheduleStorage"]

_schedule_decoder = msgspec.msgpack.Decoder(Schedule)


class AsyncFileScheduleStorage(FileComponent, BaseScheduleStorage):
    """Schedules as one object each; firing a tick is a compare-and-set on the object.

    Example::

        async with AsyncFileScheduleStorage("/tmp/omniq") as schedules:
            due = await schedules.due(utcnow())
    """

    subdir = "schedules"

    async def upsert(self, schedule: Schedule) -> None:
        """Insert or replace the schedule with this id."""
        store = await self._s()
        data = encoder.encode(schedule)
        await store.update(f"s/{token(schedule.id)}", lambda _current: Change(None, data))

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        store = await self._s()
        data = await store.read(f"s/{token(schedule_id)}")
        return None if data is None else decode(_schedule_decoder, data, "schedule")

    async def list(self) -> builtins.list[Schedule]:
        """All schedules, by id."""
        store = await self._s()
        names = await store.list_dir("s")
        found = await store.read_many([f"s/{name}" for name in names])
        schedules: builtins.list[Schedule] = [
            decode(_schedule_decoder, data, "schedule") for data in found if data is not None
        ]
        return sorted(schedules, key=lambda schedule: schedule.id)

    async def delete(self, schedule_id: str) -> bool:
        """Remove a schedule; False if it did not exist."""
        store = await self._s()

        def fn(current: bytes | None) -> Change[bool]:
            return Change(False) if current is None else Change(True, None)

        return await store.update(f"s/{token(schedule_id)}", fn)

    async def _modify(
        self, schedule_id: str, modify: Callable[[Schedule], Schedule | None]
    ) -> Schedule | None:
        store = await self._s()

        def fn(current: bytes | None) -> Change[Schedule | None]:
            if current is None:
                return Change(None)
            new = modify(decode(_schedule_decoder, current, "schedule"))
            return Change(None) if new is None else Change(new, encoder.encode(new))

        return await store.update(f"s/{token(schedule_id)}", fn)

    async def update(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule | None:
        """Apply field changes; return the new schedule or None if unknown."""
        return await self._modify(
            schedule_id, lambda schedule: msgspec.structs.replace(schedule, **changes)
        )

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[Schedule]:
        """Unpaused schedules whose ``next_run_at`` is at or before ``now``, soonest first."""
        due = [
            schedule
            for schedule in await self.list()
            if not schedule.paused
            and schedule.next_run_at is not None
            and schedule.next_run_at <= now
        ]
        due.sort(key=lambda schedule: (schedule.next_run_at, schedule.id))
        return due[:limit]

    async def advance(
        self,
        schedule_id: str,
        *,
        expected_next_run_at: datetime,
        next_run_at: datetime | None,
        last_run_at: datetime,
    ) -> bool:
        """Claim one tick by compare-and-set on ``next_run_at``; True if this caller won."""

        def modify(schedule: Schedule) -> Schedule | None:
            if schedule.next_run_at != expected_next_run_at:
                return None
            return msgspec.structs.replace(
                schedule,
                next_run_at=next_run_at,
                last_run_at=last_run_at,
                runs=schedule.runs + 1,
            )

        return await self._modify(schedule_id, modify) is not None
