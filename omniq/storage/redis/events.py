"""The task event log on Redis: a list per task, indexed by its oldest event."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.errors import StorageError
from omniq.models import TaskEvent
from omniq.storage.base import BaseEventStorage
from omniq.storage.redis._base import RedisComponent
from omniq.storage.redis._codec import _event_item, _sortkey, _us
from omniq.storage.redis._resp import ResponseError
from omniq.storage.redis.connection import Command

_EVENT_DECODER = msgspec.msgpack.Decoder(TaskEvent)


class AsyncRedisEventStorage(RedisComponent, BaseEventStorage):
    """The task event log on Redis: one list per task, indexed by its oldest event, plus
    the events an enqueue on the same connection stored once for a group of its tasks."""

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Append events atomically (``MULTI``/``EXEC``, one round trip)."""
        if not events:
            return
        client = await self._conn()
        prefix = self._prefix
        per_task: dict[str, builtins.list[bytes]] = {}
        oldest: dict[str, int] = {}
        for event in events:
            item = _event_item(event)
            stamp = int(item[:16])
            per_task.setdefault(event.task_id, []).append(item)
            if stamp < oldest.get(event.task_id, stamp + 1):
                oldest[event.task_id] = stamp
        commands: builtins.list[Command] = [("MULTI",)]
        commands.extend(("RPUSH", f"{prefix}e:{tid}", *items) for tid, items in per_task.items())
        index: builtins.list[Any] = [f"{prefix}events", "LT"]
        for tid, stamp in oldest.items():
            index += (stamp, tid)
        commands.append(("ZADD", *index))
        commands.append(("EXEC",))
        replies = await client.execute(commands)
        applied = replies[-1]
        failed = [reply for reply in replies if isinstance(reply, ResponseError)]
        if isinstance(applied, list):
            failed += [reply for reply in applied if isinstance(reply, ResponseError)]
        if failed or not isinstance(applied, list):
            raise StorageError(f"redis: appending events: {failed or applied}")

    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first."""
        client = await self._conn()
        grouped, own = await client.script("events_get", task_id)
        try:
            events = [_EVENT_DECODER.decode(memoryview(item)[16:]) for item in grouped + own]
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StorageError(f"redis: events of task {task_id} are corrupt: {exc}") from exc
        # Events an enqueue stored for a group of tasks leave the id out.
        events = [
            event if event.task_id else msgspec.structs.replace(event, task_id=task_id)
            for event in events
        ]
        # Lists keep append order; concurrent writers may append slightly out of time order.
        # The sort is stable: events of one time keep the order they were logged in.
        events.sort(key=lambda event: event.timestamp)
        return events

    async def delete_before(self, before: datetime) -> int:
        """Delete events older than ``before`` (in batches of 500 tasks)."""
        client = await self._conn()
        cutoff, total = _sortkey(_us(before)), 0
        while True:
            deleted, seen = await client.script("delete_events", cutoff, 500)
            total += int(deleted)
            if int(seen) < 500:
                return total


class RedisEventStorage(StorageTwin[AsyncRedisEventStorage]):
    """Blocking twin of :class:`AsyncRedisEventStorage`: the same methods, without ``await``."""

    async_class = AsyncRedisEventStorage
    append = blocking(AsyncRedisEventStorage.append)
    delete_before = blocking(AsyncRedisEventStorage.delete_before)
    get = blocking(AsyncRedisEventStorage.get)
