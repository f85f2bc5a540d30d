"""Task events on NATS: a stream (``{namespace}_events``) with one subject per task,
``{namespace}.events.{task id}``, so a task's log is read by its subject alone.

One append writes one message per task: its event, or the list of its events in that
batch (a delayed task's ``ENQUEUED`` and ``SCHEDULED``, a retry's ``ERROR`` and
``RETRY``), so a batch costs a JetStream write per task, not per event."""

from __future__ import annotations

import asyncio
import builtins
import itertools
import os
import secrets
from collections.abc import Sequence
from datetime import datetime

import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.models import TaskEvent
from omniq.storage._rows import decode_record
from omniq.storage.base import BaseEventStorage
from omniq.storage.nats._base import ENCODER, NATSComponent, key_of, together, us

__all__ = ["AsyncNATSEventStorage", "NATSEventStorage"]

#: A message holds one event (a map), or several of one task (an array of them).
_EVENT_DECODER = msgspec.msgpack.Decoder(TaskEvent | list[TaskEvent])
#: The most events of one task one message holds (far under a server's max_payload).
_GROUP = 64
_HOST = secrets.token_hex(6)
_COUNTER = itertools.count()


def _batch_id() -> str:
    """An id no other append batch has, here or in another process (a random prefix,
    and the pid, which differs in a forked child that inherits the counter)."""
    return f"{_HOST}.{os.getpid()}.{next(_COUNTER)}"


def _events(data: bytes) -> builtins.list[TaskEvent]:
    """The event or events a message holds."""
    found = decode_record(_EVENT_DECODER, data, "nats: an event")
    return found if isinstance(found, list) else [found]


def _encoded(events: Sequence[TaskEvent]) -> bytes:
    return ENCODER.encode(events[0] if len(events) == 1 else builtins.list(events))


class AsyncNATSEventStorage(NATSComponent, BaseEventStorage):
    """Task lifecycle events in a JetStream stream, a subject per task."""

    def _subject(self, task_id: str) -> str:
        return f"{self.connection.events_subject}.{key_of(task_id)}"

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Publish the events, a message per task (its events in order), all in flight
        at once."""
        if not events:
            return
        by_task: dict[str, builtins.list[TaskEvent]] = {}
        for event in events:
            by_task.setdefault(event.task_id, []).append(event)
        groups = [
            group[start : start + _GROUP]
            for group in by_task.values()
            for start in range(0, len(group), _GROUP)
        ]
        await self._publish(groups)

    async def _publish(self, groups: Sequence[Sequence[TaskEvent]]) -> None:
        """One message per group (the events of one task)."""
        conn = await self._conn()
        # Each message carries an id of its own (Nats-Msg-Id): one sent again after its
        # reply was lost (a server restart) is dropped by the stream, not logged twice.
        base = _batch_id()
        await together(
            [
                conn.publish(
                    self._subject(group[0].task_id),
                    _encoded(group),
                    {"Nats-Msg-Id": f"{base}.{n}"},
                )
                for n, group in enumerate(groups)
            ]
        )

    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first (its subject, read to the end)."""
        conn = await self._conn()
        messages = await conn.scan(
            conn.events_stream, self._subject(task_id), last_per_subject=False
        )
        events = [event for msg in messages for event in _events(msg.data)]
        # Writers of one task's events may be several processes, each with its own
        # buffer: the time of each event orders them (the sort is stable: events of one
        # time keep the order they were stored in).
        events.sort(key=lambda event: event.timestamp)
        return events

    async def delete_before(self, before: datetime) -> int:
        """Delete the events older than ``before`` (a scan of the stream). A message
        holding older and newer events is written again with the newer ones first, then
        deleted (a crash in between keeps them twice, never loses them)."""
        conn = await self._conn()
        cutoff = us(before)
        messages = await conn.scan(
            conn.events_stream, f"{conn.events_subject}.>", last_per_subject=False
        )
        doomed: builtins.list[int] = []
        kept: builtins.list[builtins.list[TaskEvent]] = []
        deleted = 0
        for msg in messages:
            held = _events(msg.data)
            newer = [event for event in held if us(event.timestamp) >= cutoff]
            if len(newer) == len(held):
                continue
            deleted += len(held) - len(newer)
            doomed.append(msg.metadata.sequence.stream)
            if newer:
                kept.append(newer)
        if kept:
            await self._publish(kept)
        js = await conn.jetstream()

        async def delete(seq: int) -> None:
            try:
                await js.delete_msg(conn.events_stream, seq)
            except Exception as exc:
                raise conn.error("deleting events", exc) from exc

        await asyncio.gather(*(delete(seq) for seq in doomed))
        return deleted


class NATSEventStorage(StorageTwin[AsyncNATSEventStorage]):
    """Blocking twin of :class:`AsyncNATSEventStorage`: the same methods, without ``await``."""

    async_class = AsyncNATSEventStorage
    append = blocking(AsyncNATSEventStorage.append)
    delete_before = blocking(AsyncNATSEventStorage.delete_before)
    get = blocking(AsyncNATSEventStorage.get)
