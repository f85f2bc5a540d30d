"""Requeue and the worker registry on Redis (``omniq.storage._fleet``): a requeue is one
script (``lua/requeue.lua``); registrations are the hash ``workers`` (id → msgpack
``WorkerInfo``) beside the sorted set ``workers:exp`` (id by expiry time)."""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import datetime

import msgspec

from omniq.errors import StorageError
from omniq.models import Task, TaskStatus, WorkerInfo
from omniq.storage._fleet import decode_worker, encode_worker
from omniq.storage.redis._base import RedisComponent
from omniq.storage.redis._codec import _ENCODER, _decode_tasks, _sortms, _us
from omniq.storage.redis._resp import ResponseError
from omniq.storage.redis.connection import MAX_BULK_BYTES, Command, RedisConnection, too_large

__all__ = ["RedisFleet", "transaction"]


async def transaction(client: RedisConnection, *commands: Command) -> None:
    """Run ``commands`` in one ``MULTI``/``EXEC``, in one round trip; an error reply
    raises StorageError."""
    replies = await client.execute([("MULTI",), *commands, ("EXEC",)])
    for reply in (*replies, *(replies[-1] or ())):
        if isinstance(reply, ResponseError):
            raise StorageError(f"redis: {reply}") from reply


class RedisFleet(RedisComponent):
    """The Redis task queue's requeue and worker registry (the primitives of
    ``omniq.storage._fleet.FleetQueue``)."""

    async def requeue(
        self, task: Task, *, from_statuses: Collection[TaskStatus], now: datetime
    ) -> Task | None:
        """Replace the task with ``task`` if its status is in ``from_statuses``."""
        if not from_statuses:
            return None
        due = _us(task.due_at or now)
        # Stored as enqueue stores it: the id left out (the key holds it).
        record = _ENCODER.encode(msgspec.structs.replace(task, id=""))
        if len(record) > MAX_BULK_BYTES:
            raise too_large(f"task {task.id} (its arguments)", len(record))
        client = await self._conn()
        flat = await client.script(
            "requeue",
            _us(now),
            task.id,
            TaskStatus(task.status).value,
            due,
            _sortms(due),
            record,
            *(TaskStatus(status).value for status in from_statuses),
        )
        return _decode_tasks(flat)[0] if flat else None

    async def register_worker(self, info: WorkerInfo, *, expires_at: datetime) -> None:
        """Set the worker's entry and its expiry, in one transaction."""
        client = await self._conn()
        prefix = self._prefix
        await transaction(
            client,
            ("HSET", f"{prefix}workers", info.id, encode_worker(info)),
            ("ZADD", f"{prefix}workers:exp", _us(expires_at), info.id),
        )

    async def deregister_worker(self, worker_id: str) -> None:
        """Remove the worker's entry and expiry, in one transaction."""
        client = await self._conn()
        prefix = self._prefix
        await transaction(
            client,
            ("HDEL", f"{prefix}workers", worker_id),
            ("ZREM", f"{prefix}workers:exp", worker_id),
        )

    async def list_workers(self, *, now: datetime) -> builtins.list[WorkerInfo]:
        """Purge the lapsed entries, then read the rest."""
        client = await self._conn()
        prefix = self._prefix
        lapsed = await client.call("ZRANGE", f"{prefix}workers:exp", "-inf", _us(now), "BYSCORE")
        if lapsed:
            await transaction(
                client,
                ("HDEL", f"{prefix}workers", *lapsed),
                ("ZREM", f"{prefix}workers:exp", *lapsed),
            )
        flat = await client.call("HGETALL", f"{prefix}workers") or []
        found = (decode_worker(flat[i + 1]) for i in range(0, len(flat), 2))
        return sorted((info for info in found if info is not None), key=lambda w: w.id)
