"""Requeue, the worker registry, progress and limits on the file backend
(``omniq.storage._fleet``): a requeue is one atomic update of the task's record (its
index entry moved with it); each registration is an object ``w/<token>`` of the task
store, written whole; progress is ``p/<token>`` (``_progress``), limits one record
(``_limits``)."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

import msgspec

from omniq._limits import Limit
from omniq.models import Progress, Task, TaskStatus, WorkerInfo
from omniq.storage._fleet import decode_worker, encode_worker
from omniq.storage.file._base import FileComponent
from omniq.storage.file._claim import claimable
from omniq.storage.file._layout import decode_record, moved, record_path, to_us, token, wake
from omniq.storage.file._limits import read_limits, write_limits
from omniq.storage.file._progress import read_progress, write_progress
from omniq.storage.file._store import Change

__all__ = ["FileFleet"]


class _Registration(msgspec.Struct, array_like=True):
    """A stored registration: when it lapses (microseconds), and the encoded info."""

    expires: int
    info: bytes


_REGISTRATION = msgspec.msgpack.Decoder(_Registration)
_ENCODER = msgspec.msgpack.Encoder()


class FileFleet(FileComponent):
    """The file task queue's requeue, worker registry, progress and limits (the
    primitives of ``omniq.storage._fleet.FleetQueue``)."""

    async def requeue(
        self, task: Task, *, from_statuses: Collection[TaskStatus], now: datetime
    ) -> Task | None:
        """Replace the task's record with ``task`` if its status is in ``from_statuses``."""
        store = await self._s()
        allowed = frozenset(TaskStatus(s) for s in from_statuses)

        def change(current: bytes | None) -> Change[Task | None]:
            if current is None:
                return Change(None)
            record = decode_record(current)
            if record.task.status not in allowed:
                return Change(None)
            return moved(task, task, record)

        result: Task | None = await store.update(record_path(token(task.id)), change)
        if result is not None and claimable(result, now):
            wake(store)
        return result

    async def register_worker(self, info: WorkerInfo, *, expires_at: datetime) -> None:
        """Write the worker's object whole."""
        store = await self._s()
        data = _ENCODER.encode(_Registration(to_us(expires_at), encode_worker(info)))
        await store.write_many([(f"w/{token(info.id)}", data)])

    async def deregister_worker(self, worker_id: str) -> None:
        """Delete the worker's object."""
        store = await self._s()
        await store.delete_many([f"w/{token(worker_id)}"])

    async def list_workers(self, *, now: datetime) -> builtins.list[WorkerInfo]:
        """Read every registration; delete the lapsed ones."""
        store = await self._s()
        paths = [f"w/{name}" for name in await store.list_dir("w")]
        found, lapsed, at = [], [], to_us(now)
        for path, data in zip(paths, await store.read_many(paths), strict=True):
            if data is None:
                continue  # deregistered meanwhile
            try:
                stored = _REGISTRATION.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                lapsed.append(path)  # a damaged object can never become live
                continue
            if stored.expires <= at:
                lapsed.append(path)
            elif (info := decode_worker(stored.info)) is not None:
                found.append(info)
        if lapsed:
            await store.delete_many(lapsed)
        return sorted(found, key=lambda w: w.id)

    # -- progress (file/_progress.py) ------------------------------------------------------

    async def set_progress(self, updates: Mapping[str, Progress]) -> None:
        """Store tasks' progress, one object each (``omniq.storage.file._progress``)."""
        if updates:
            await write_progress(await self._s(), updates)

    async def get_progress(self, task_ids: Sequence[str]) -> dict[str, Progress]:
        """The progress of ``task_ids`` (one read each, together)."""
        return await read_progress(await self._s(), task_ids) if task_ids else {}

    # -- limits (file/_limits.py) ----------------------------------------------------------

    async def set_limit(self, key: str, limit: Limit | None) -> None:
        """Store (None: remove) the limit of ``key``; claims apply it from now on."""
        store = await self._s()
        await write_limits(store, {key: limit})
        wake(store)

    async def get_limits(self) -> dict[str, Limit]:
        """The limits stored, by key."""
        return await read_limits(await self._s())

    async def register_task_limits(self, limits: Mapping[str, Limit]) -> None:
        """Note the limits of task names before tasks carrying them are stored."""
        await write_limits(await self._s(), dict(limits))
