"""Schedules on NATS: a key-value bucket (``{namespace}_schedules``), one key each; a
tick is claimed with a compare-and-set on the key's revision, so however many workers
race, one fires it."""

from __future__ import annotations

import builtins
import heapq
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.errors import StorageError
from omniq.models import Schedule
from omniq.storage._rows import decode_record
from omniq.storage.base import BaseScheduleStorage
from omniq.storage.nats._base import ENCODER, NATSComponent, ident_of, key_of

__all__ = ["AsyncNATSScheduleStorage", "NATSScheduleStorage"]

_SCHEDULE_DECODER = msgspec.msgpack.Decoder(Schedule)
_TRIES = 16


def _schedule(schedule_id: str, data: bytes) -> Schedule:
    return decode_record(_SCHEDULE_DECODER, data, f"nats: schedule {schedule_id}")


class AsyncNATSScheduleStorage(NATSComponent, BaseScheduleStorage):
    """Schedules in a JetStream key-value bucket; ticks claimed by compare-and-set."""

    def _subject(self, schedule_id: str) -> str:
        return f"$KV.{self.connection.schedules_bucket}.{key_of(schedule_id)}"

    @property
    def _stream(self) -> str:
        return f"KV_{self.connection.schedules_bucket}"

    async def upsert(self, schedule: Schedule) -> None:
        """Insert or replace the schedule with this id."""
        conn = await self._conn()
        await conn.publish(self._subject(schedule.id), ENCODER.encode(schedule))

    async def _read(self, schedule_id: str) -> tuple[int, Schedule | None]:
        conn = await self._conn()
        revision, data = await conn.get_last(self._stream, self._subject(schedule_id))
        return revision, None if data is None else _schedule(schedule_id, data)

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        return (await self._read(schedule_id))[1]

    async def list(self) -> builtins.list[Schedule]:
        """All schedules, by id (a read of the bucket)."""
        conn = await self._conn()
        bucket = conn.schedules_bucket
        pre = len(f"$KV.{bucket}.")
        found = [
            _schedule(ident_of(msg.subject[pre:]), msg.data)
            for msg in await conn.scan(self._stream, f"$KV.{bucket}.>", last_per_subject=True)
            if not (msg.headers and msg.headers.get("KV-Operation"))
        ]
        return sorted(found, key=lambda schedule: schedule.id)

    async def delete(self, schedule_id: str) -> bool:
        """Remove a schedule; False if it did not exist."""
        _revision, schedule = await self._read(schedule_id)
        if schedule is None:
            return False
        conn = await self._conn()
        await conn.purge_key(conn.schedules_bucket, key_of(schedule_id))
        return True

    async def _change(
        self, schedule_id: str, change: Callable[[Schedule], Schedule | None]
    ) -> Schedule | None:
        """Apply ``change`` with a compare-and-set on the key's revision (retried when
        another writer came first); the new schedule, or None (unknown, or refused)."""
        conn = await self._conn()
        for _ in range(_TRIES):
            revision, schedule = await self._read(schedule_id)
            if schedule is None:
                return None
            new = change(schedule)
            if new is None:
                return None
            if await conn.cas(
                self._subject(schedule_id), self._stream, ENCODER.encode(new), revision
            ):
                return new
        raise StorageError(f"nats: schedule {schedule_id}: too many concurrent changes")

    async def update(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule | None:
        """Apply field changes; None if the schedule is unknown."""
        return await self._change(
            schedule_id, lambda schedule: msgspec.structs.replace(schedule, **dict(changes))
        )

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[Schedule]:
        """Unpaused schedules due at or before ``now``, earliest first."""
        ticks = [
            (schedule.next_run_at, schedule.id, schedule)
            for schedule in await self.list()
            if schedule.next_run_at is not None and schedule.next_run_at <= now
        ]
        ready = (tick for tick in ticks if not tick[2].paused)
        return [schedule for _, _, schedule in heapq.nsmallest(limit, ready, key=lambda t: t[:2])]

    async def advance(
        self,
        schedule_id: str,
        *,
        expected_next_run_at: datetime,
        next_run_at: datetime | None,
        last_run_at: datetime,
    ) -> bool:
        """Claim one tick: a compare-and-set on the schedule's revision."""

        def advance(schedule: Schedule) -> Schedule | None:
            if schedule.next_run_at is None or schedule.next_run_at != expected_next_run_at:
                return None
            return msgspec.structs.replace(
                schedule, next_run_at=next_run_at, last_run_at=last_run_at, runs=schedule.runs + 1
            )

        return await self._change(schedule_id, advance) is not None


class NATSScheduleStorage(StorageTwin[AsyncNATSScheduleStorage]):
    """Blocking twin of :class:`AsyncNATSScheduleStorage` (its methods, without ``await``)."""

    async_class = AsyncNATSScheduleStorage
    advance = blocking(AsyncNATSScheduleStorage.advance)
    delete = blocking(AsyncNATSScheduleStorage.delete)
    due = blocking(AsyncNATSScheduleStorage.due)
    get = blocking(AsyncNATSScheduleStorage.get)
    list = blocking(AsyncNATSScheduleStorage.list)
    update = blocking(AsyncNATSScheduleStorage.update)
    upsert = blocking(AsyncNATSScheduleStorage.upsert)
