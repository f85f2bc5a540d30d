"""Task events on NATS: a stream (``{namespace}_events``) with one subject per task,
``{namespace}.events.{task id}``, so a task's log is read by its subject alone."""

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
from omniq.storage.nats._base import ENCODER, NATSComponent, key_of, us

__all__ = ["AsyncNATSEventStorage", "NATSEventStorage"]

_EVENT_DECODER = msgspec.msgpack.Decoder(TaskEvent)
_HOST = secrets.token_hex(6)
_COUNTER = itertools.count()


def _batch_id() -> str:
    """An id no other append batch has, here or in another process (a random prefix,
    and the pid, which differs in a forked child that inherits the counter)."""
    return f"{_HOST}.{os.getpid()}.{next(_COUNTER)}"


def _event(data: bytes) -> TaskEvent:
    return decode_record(_EVENT_DECODER, data, "nats: an event")


class AsyncNATSEventStorage(NATSComponent, BaseEventStorage):
    """Task lifecycle events in a JetStream stream, a subject per task."""

    def _subject(self, task_id: str) -> str:
        return f"{self.connection.events_subject}.{key_of(task_id)}"

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Publish the events, all in flight at once (sent in order, stored in order)."""
        if not events:
            return
        conn = await self._conn()
        # Each event carries an id of its own (Nats-Msg-Id): one sent again after its
        # reply was lost (a server restart) is dropped by the stream, not logged twice.
        base = _batch_id()
        await asyncio.gather(
            *(
                conn.publish(
                    self._subject(event.task_id),
                    ENCODER.encode(event),
                    {"Nats-Msg-Id": f"{base}.{n}"},
                )
                for n, event in enumerate(events)
            )
        )

    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first (its subject, read to the end)."""
        conn = await self._conn()
        messages = await conn.scan(
            conn.events_stream, self._subject(task_id), last_per_subject=False
        )
        events = [_event(msg.data) for msg in messages]
        # Writers of one task's events may be several processes, each with its own
        # buffer: the time of each event orders them (the sort is stable: events of one
        # time keep the order they were stored in).
        events.sort(key=lambda event: event.timestamp)
        return events

    async def delete_before(self, before: datetime) -> int:
        """Delete the events older than ``before`` (a scan of the stream)."""
        conn = await self._conn()
        cutoff = us(before)
        messages = await conn.scan(
            conn.events_stream, f"{conn.events_subject}.>", last_per_subject=False
        )
        doomed = [
            msg.metadata.sequence.stream
            for msg in messages
            if us(_event(msg.data).timestamp) < cutoff
        ]
        js = await conn.jetstream()

        async def delete(seq: int) -> None:
            try:
                await js.delete_msg(conn.events_stream, seq)
            except Exception as exc:
                raise conn.error("deleting events", exc) from exc

        await asyncio.gather(*(delete(seq) for seq in doomed))
        return len(doomed)


class NATSEventStorage(StorageTwin[AsyncNATSEventStorage]):
    """Blocking twin of :class:`AsyncNATSEventStorage`: the same methods, without ``await``."""

    async_class = AsyncNATSEventStorage
    append = blocking(AsyncNATSEventStorage.append)
    delete_before = blocking(AsyncNATSEventStorage.delete_before)
    get = blocking(AsyncNATSEventStorage.get)
