"""Task events on NATS: a stream (``{namespace}_events``) with one subject per task,
``{namespace}.events.{task id}``, so a task's log is read by its subject alone.

One append writes one message per task: its event, or the list of its events in that
batch (a delayed task's ``ENQUEUED`` and ``SCHEDULED``, a retry's ``ERROR`` and
``RETRY``), so a batch costs a JetStream write per task, not per event.

The events a worker logs as it finishes a task (its ``EXECUTING`` and final event) ride
in the compare-and-set that ends the task when this log and the queue share a connection
(the record's ``events``, see :mod:`omniq.storage.nats._changes`): no write of their
own, and stored if and only if that outcome won. A read merges them with the stream's;
purging a finished task moves them to the stream first (:func:`keep_events`)."""

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
from omniq.storage.nats._base import decode_record as decode_task_record
from omniq.storage.nats.connection import NATSConnection

__all__ = [
    "AsyncNATSEventStorage",
    "NATSEventStorage",
    "decode_events",
    "encode_events",
    "groups_of",
    "keep_events",
    "publish_events",
]

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


def decode_events(data: bytes) -> builtins.list[TaskEvent]:
    """The event or events a message (or a task record's ``events``) holds."""
    if not data:
        return []
    found = decode_record(_EVENT_DECODER, data, "nats: an event")
    return found if isinstance(found, list) else [found]


def encode_events(events: Sequence[TaskEvent]) -> bytes:
    """``events`` (of one task) as one message holds them."""
    return ENCODER.encode(events[0] if len(events) == 1 else builtins.list(events))


def groups_of(events: Sequence[TaskEvent]) -> builtins.list[builtins.list[TaskEvent]]:
    """``events`` as the messages that hold them: per task, in order, at most ``_GROUP``
    a message."""
    by_task: dict[str, builtins.list[TaskEvent]] = {}
    for event in events:
        by_task.setdefault(event.task_id, []).append(event)
    return [
        group[start : start + _GROUP]
        for group in by_task.values()
        for start in range(0, len(group), _GROUP)
    ]


async def publish_events(
    conn: NATSConnection, groups: Sequence[Sequence[TaskEvent]], ids: Sequence[str] = ()
) -> None:
    """One message per group (the events of one task), all in flight at once. Each
    carries an id (Nats-Msg-Id; ``ids`` when given, else fresh ones): one sent again
    after its reply was lost (a server restart) is dropped by the stream, not logged
    twice."""
    base = _batch_id()
    await together(
        [
            conn.publish(
                f"{conn.events_subject}.{key_of(group[0].task_id)}",
                encode_events(group),
                {"Nats-Msg-Id": ids[n] if ids else f"{base}.{n}"},
            )
            for n, group in enumerate(groups)
        ]
    )


async def keep_events(conn: NATSConnection, riding: Sequence[tuple[str, int, bytes]]) -> None:
    """Publish to the stream the events (``(task key, record revision, events)``) that
    rode in task records about to be purged; the ids are the record's, so a second
    try of the same purge within the stream's duplicate window logs them once."""
    groups = [decode_events(data) for _, _, data in riding]
    ids = [f"kept.{key}.{revision}" for key, revision, _ in riding]
    chosen = [n for n, group in enumerate(groups) if group]
    await publish_events(conn, [groups[n] for n in chosen], [ids[n] for n in chosen])


class AsyncNATSEventStorage(NATSComponent, BaseEventStorage):
    """Task lifecycle events in a JetStream stream, a subject per task."""

    def _subject(self, task_id: str) -> str:
        return f"{self.connection.events_subject}.{key_of(task_id)}"

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Publish the events, a message per task (its events in order), all in flight
        at once."""
        if not events:
            return
        await self._publish(groups_of(events))

    async def _publish(self, groups: Sequence[Sequence[TaskEvent]]) -> None:
        """One message per group (the events of one task)."""
        await publish_events(await self._conn(), groups)

    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first (its subject, read to the end, and those that
        rode in its record)."""
        conn = await self._conn()
        key = key_of(task_id)
        messages, (_, data) = await asyncio.gather(
            conn.scan(conn.events_stream, self._subject(task_id), last_per_subject=False),
            conn.get_last(f"KV_{conn.tasks_bucket}", f"$KV.{conn.tasks_bucket}.{key}"),
        )
        events = [event for msg in messages for event in decode_events(msg.data)]
        record = None if data is None else decode_task_record(data)
        if record is not None:
            events += decode_events(record.events)
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
            held = decode_events(msg.data)
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
        return deleted + await self._drop_riding(conn, cutoff)

    async def _drop_riding(self, conn: NATSConnection, cutoff: int) -> int:
        """Take the events older than ``cutoff`` out of the task records they rode in
        (a compare-and-set each; a record changed meanwhile keeps them until the next
        call); how many were taken out."""
        stream = f"KV_{conn.tasks_bucket}"
        writes = []
        counts = []
        for msg in await conn.scan(stream, f"$KV.{conn.tasks_bucket}.>", last_per_subject=True):
            if msg.headers and msg.headers.get("KV-Operation"):
                continue
            record = decode_task_record(msg.data)
            if record is None or not record.events:
                continue
            held = decode_events(record.events)
            newer = [event for event in held if us(event.timestamp) >= cutoff]
            if len(newer) == len(held):
                continue
            kept = encode_events(newer) if newer else b""
            data = ENCODER.encode(msgspec.structs.replace(record, events=kept))
            writes.append(conn.cas(msg.subject, stream, data, msg.metadata.sequence.stream))
            counts.append(len(held) - len(newer))
        done = await together(writes) if writes else []
        return sum(n for n, revision in zip(counts, done, strict=True) if revision is not None)


class NATSEventStorage(StorageTwin[AsyncNATSEventStorage]):
    """Blocking twin of :class:`AsyncNATSEventStorage`: the same methods, without ``await``."""

    async_class = AsyncNATSEventStorage
    append = blocking(AsyncNATSEventStorage.append)
    delete_before = blocking(AsyncNATSEventStorage.delete_before)
    get = blocking(AsyncNATSEventStorage.get)
