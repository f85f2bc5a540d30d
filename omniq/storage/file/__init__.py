"""The file backend: tasks, results, events and schedules as objects in a directory tree.

Runs on any fsspec filesystem: local disk (``file:///dir`` or a plain path),
``memory://name`` (process-local), ``s3://bucket/prefix``, ``az://``/``abfs://``,
``gs://``. Local disk is driven through ``os`` in worker threads; async drivers
(s3fs, adlfs, gcsfs) through fsspec's async API; ``memory://`` directly on the loop.

Layout under the backend's root (each component in its own subdirectory)::

    tasks/
      t/<id>                       one record per task: the Task, its enqueue order and
                                   the path of its index entry (msgpack)
      ready/<queue>/<entry>        empty index entries: waiting tasks
      held/<queue>/<entry>         SCHEDULED tasks waiting for dependencies
      running/<queue>/<entry>      claimed tasks (the name carries the lease expiry)
      done/<queue>/<entry>         tasks in a final state (the name carries the finish time)
      deps/<dependency>/<id>       who depends on whom
      .locks/NN                    local disk only: lock files for read-modify-write
      .wake                        local disk only: a FIFO an enqueue writes a byte into,
                                   so a worker waiting in another process wakes at once
                                   (elsewhere waiters poll, from 5 ms up to poll_interval)
    results/r/<id>                 one TaskResult per task
    results/x/<expiry>-<id>        expiry index, so cleanup reads only expired results
    events/e/<task id>/<time>-<seq>    one small object per event
    schedules/s/<id>               one Schedule per schedule

An entry name is ``<inverted priority>-<due time>-<enqueue seq>-<lease or finish
time>-<status><nonce>-<id>`` (fixed-width digits), so a plain listing of one directory
is already in claim order and says each task's status: a claim lists the ready and
running directories of its queues and updates the first records; ``stats``,
``next_due_at``, ``wait`` and cleanup read names only; ``get`` reads one object. Ids and
queue names that are not short ``[A-Za-z0-9_-]`` strings appear as a hash.

Every change to a task is one atomic read-modify-write of its record that also moves
its index entry. On local disk the entry is renamed (atomically), before the record is
written when its new place is one claims scan (ready/, running/) and after it otherwise,
so a crash at any moment leaves exactly one entry where a claim finds it; a claim that
meets an entry its record does not name moves it to where the record says. On object
stores the new entry is written before the record and the old one deleted after it; a
leftover entry is recognised by claims and removed once it is a minute old (younger
ones may belong to a change in flight). What makes the read-modify-write atomic, and
hence what is safe where:

- **Local disk**: safe for any number of worker processes on one host (and on network
  filesystems with working ``flock``). A kernel lock (``flock``, released by the kernel
  when a process dies) guards each read-modify-write, and the new record replaces the
  old with an atomic ``os.replace``: two claims never return the same task, and a
  worker killed at any moment loses nothing. Not crash-safe against power loss (no
  fsync).
- **memory://**: one process only (the filesystem is process-local); atomic across
  threads and event loops of that process.
- **S3** (``s3://``): every update is a conditional write: ``If-Match`` the ETag that
  was read (``If-None-Match: *`` to create), repeated from a fresh read when another
  writer won. On a server that honours these conditions (AWS S3 since 2024, MinIO,
  moto) claims are safe across processes and hosts. A server that ignores them makes
  it single-consumer safe only: several consumers may then run a task twice.
- **Other object stores** (Azure, GCS): no conditional write is used; updates are
  serialised within one event loop only. Safe with one consumer process; several
  consumers may run a task twice under a race.

Events are one object per event with a unique name, so concurrent writers never
overwrite each other on any filesystem.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from omniq._sync import sync_twin
from omniq.errors import StorageError
from omniq.models import Schedule, TaskEvent, TaskResult, utcnow
from omniq.storage.base import BaseEventStorage, BaseResultStorage, BaseScheduleStorage
from omniq.storage.file._layout import next_seq, to_us, token, wake, wake_ups
from omniq.storage.file._store import Change, Store
from omniq.storage.file.queue import AsyncFileQueue

if TYPE_CHECKING:
    from omniq.backend.file import FileBackend

__all__ = [
    "AsyncFileEventStorage",
    "AsyncFileQueue",
    "AsyncFileResultStorage",
    "AsyncFileScheduleStorage",
    "FileEventStorage",
    "FileQueue",
    "FileResultStorage",
    "FileScheduleStorage",
]

_encoder = msgspec.msgpack.Encoder()
_result_decoder = msgspec.msgpack.Decoder(TaskResult)
_event_decoder = msgspec.msgpack.Decoder(TaskEvent)
_schedule_decoder = msgspec.msgpack.Decoder(Schedule)


def _decode(decoder: msgspec.msgpack.Decoder[Any], data: bytes, what: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise StorageError(f"file backend: a stored {what} cannot be decoded: {exc}") from exc


class _Component:
    """Shared plumbing: a reference on the backend and the store of one subdirectory."""

    _subdir = ""

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        settings: Any = None,
        *,
        backend: FileBackend | None = None,
    ) -> None:
        if backend is None:
            if url is None:
                raise TypeError(f"{type(self).__name__} needs a url or a backend")
            from omniq.backend.file import FileBackend

            backend = FileBackend(url, settings)
        self.backend = backend
        self._store: Store | None = None

    async def connect(self) -> None:
        """Take a reference on the backend. Safe to call twice."""
        if self._store is None:
            await self.backend.connect()
            self._store = self.backend.store(self._subdir)

    async def close(self) -> None:
        """Release the backend reference. Safe to call twice."""
        if self._store is not None:
            self._store = None
            await self.backend.close()

    async def _s(self) -> Store:
        if self._store is None:
            await self.connect()
        assert self._store is not None
        return self._store


class AsyncFileResultStorage(_Component, BaseResultStorage):
    """Task results as one object each, with an expiry index for cleanup.

    Example::

        async with AsyncFileResultStorage("/tmp/omniq") as results:
            stored = await results.get(task_id)
    """

    _subdir = "results"

    async def put_many(self, results: Sequence[TaskResult]) -> None:
        """Store results, replacing any for the same task id."""
        store = await self._s()

        def put(result: TaskResult) -> Callable[[bytes | None], Change[None]]:
            add = []
            if result.expires_at is not None:
                add.append(f"x/{to_us(result.expires_at):017d}-{token(result.task_id)}")
            data = _encoder.encode(result)
            return lambda _current: Change(None, data, add=add)

        await store.update_many([(f"r/{token(r.task_id)}", put(r)) for r in results])
        if results:
            wake(store)

    async def get(self, task_id: str) -> TaskResult | None:
        """The stored result, or None (also once it expired)."""
        store = await self._s()
        data = await store.read(f"r/{token(task_id)}")
        if data is None:
            return None
        result: TaskResult = _decode(_result_decoder, data, "result")
        if result.expires_at is not None and result.expires_at <= utcnow():
            return None
        return result

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Wait for the result: a put wakes it at once (in this process, and from another
        on local disk); it also polls with a growing interval, up to 0.1 s."""
        store = await self._s()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.005
        with wake_ups(store) as woken:
            while True:
                woken.clear()
                result = await self.get(task_id)
                if result is not None:
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(woken.wait(), min(delay, remaining))
                except TimeoutError:
                    delay = min(delay * 2, 0.1)

    async def delete_expired(self, now: datetime) -> int:
        """Delete results whose ``expires_at`` has passed, found through the expiry index."""
        store = await self._s()
        now_us = to_us(now)
        expired = []
        for name in await store.list_dir("x"):
            stamp, _, tok = name.partition("-")
            if stamp.isdigit() and int(stamp) <= now_us and tok:
                expired.append((f"x/{name}", tok))

        def delete(entry: str) -> Callable[[bytes | None], Change[bool]]:
            def fn(current: bytes | None) -> Change[bool]:
                if current is None:
                    return Change(False, remove=[entry])
                result: TaskResult = _decode(_result_decoder, current, "result")
                if result.expires_at is None or result.expires_at > now:
                    # Replaced since: the new result has its own index entry.
                    return Change(False, remove=[entry])
                return Change(True, None, remove=[entry])

            return fn

        deleted = await store.update_many([(f"r/{tok}", delete(entry)) for entry, tok in expired])
        return sum(deleted)


class AsyncFileEventStorage(_Component, BaseEventStorage):
    """The event log: one small object per event, so writers never collide.

    Example::

        async with AsyncFileEventStorage("memory://app") as events:
            history = await events.get(task_id)
    """

    _subdir = "events"

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Append events, each as its own object named by time and a unique sequence."""
        store = await self._s()
        items = []
        for event in events:
            name = f"{to_us(event.timestamp):017d}-{next_seq():020d}"
            items.append((f"e/{token(event.task_id)}/{name}", _encoder.encode(event)))
        await store.write_many(items)

    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first."""
        store = await self._s()
        directory = f"e/{token(task_id)}"
        names = sorted(await store.list_dir(directory))
        found = await store.read_many([f"{directory}/{name}" for name in names])
        events: builtins.list[TaskEvent] = [
            _decode(_event_decoder, data, "event") for data in found if data is not None
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


class AsyncFileScheduleStorage(_Component, BaseScheduleStorage):
    """Schedules as one object each; firing a tick is a compare-and-set on the object.

    Example::

        async with AsyncFileScheduleStorage("/tmp/omniq") as schedules:
            due = await schedules.due(utcnow())
    """

    _subdir = "schedules"

    async def upsert(self, schedule: Schedule) -> None:
        """Insert or replace the schedule with this id."""
        store = await self._s()
        data = _encoder.encode(schedule)
        await store.update(f"s/{token(schedule.id)}", lambda _current: Change(None, data))

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        store = await self._s()
        data = await store.read(f"s/{token(schedule_id)}")
        return None if data is None else _decode(_schedule_decoder, data, "schedule")

    async def list(self) -> builtins.list[Schedule]:
        """All schedules, by id."""
        store = await self._s()
        names = await store.list_dir("s")
        found = await store.read_many([f"s/{name}" for name in names])
        schedules: builtins.list[Schedule] = [
            _decode(_schedule_decoder, data, "schedule") for data in found if data is not None
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
            new = modify(_decode(_schedule_decoder, current, "schedule"))
            return Change(None) if new is None else Change(new, _encoder.encode(new))

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


FileQueue = sync_twin(AsyncFileQueue, "FileQueue")
FileResultStorage = sync_twin(AsyncFileResultStorage, "FileResultStorage")
FileEventStorage = sync_twin(AsyncFileEventStorage, "FileEventStorage")
FileScheduleStorage = sync_twin(AsyncFileScheduleStorage, "FileScheduleStorage")
