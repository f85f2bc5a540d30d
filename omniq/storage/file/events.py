"""The file backend's event log: one small object per event."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime

import msgspec

from omniq.models import TaskEvent
from omniq.storage.base import BaseEventStorage
from omniq.storage.file._base import FileComponent, decode, encoder
from omniq.storage.file._layout import next_seq, to_us, token

__all__ = ["AsyncFileEventStorage"]

_event_decoder = msgspec.msgpack.Decoder(TaskEvent)


class AsyncFileEventStorage(FileComponent, BaseEventStorage):
    """The event log: one small object per event, so writers never collide.

    Example::

        async with AsyncFileEventStorage("memory://app") as events:
            history = await events.get(task_id)
    """

    subdir = "events"

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Append events, each as its own object named by time and a unique sequence."""
        store = await self._s()
        items = []
        for event in events:
            name = f"{to_us(event.timestamp):017d}-{next_seq():020d}"
            items.append((f"e/{token(event.task_id)}/{name}", encoder.encode(event)))
        await store.write_many(items)

    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first."""
        store = await self._s()
        directory = f"e/{token(task_id)}"
        names = sorted(await store.list_dir(directory))
        found = await store.read_many([f"{directory}/{name}" for name in names])
        events: builtins.list[TaskEvent] = [
            decode(_event_decoder, data, "event") for data in found if data is not None
        ]
        return [event for event in events if event.task_id == task_id]

    async def delete_before(self, before: datetime) -> int:
        """Delete events older than ``before``, by their names alone."""
        store = await self._s()
        limit = to_us(before)
        old = []
        for path in await store.walk("e"):
            stamp = path.rsplit("/", 1)[-1].partition("-")[0]
            if stamp.isdigit() and int(stamp) < limit:
                old.append(path)
        await store.delete_many(old)
        return len(old)
