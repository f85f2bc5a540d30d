"""The worker registry on NATS (``omniq.storage._fleet``): one key per registered pool
in the namespace's workers bucket (``{namespace}_workers``), each holding when it lapses
and the msgpack ``WorkerInfo``. (Requeue is the queue's: a compare-and-set of the task's
record, in ``queue.py``.)"""

from __future__ import annotations

import builtins
from datetime import datetime

import msgspec

from omniq.models import WorkerInfo
from omniq.storage._fleet import decode_worker, encode_worker
from omniq.storage.nats._base import NATSComponent, key_of, together, us

__all__ = ["NATSFleet"]


class _Registration(msgspec.Struct, array_like=True):
    """A stored registration: when it lapses (microseconds), and the encoded info."""

    expires: int
    info: bytes


_REGISTRATION = msgspec.msgpack.Decoder(_Registration)
_ENCODER = msgspec.msgpack.Encoder()


class NATSFleet(NATSComponent):
    """The NATS task queue's worker registry (primitives of
    ``omniq.storage._fleet.FleetQueue``)."""

    async def register_worker(self, info: WorkerInfo, *, expires_at: datetime) -> None:
        """Write the worker's key."""
        conn = await self._conn()
        data = _ENCODER.encode(_Registration(us(expires_at), encode_worker(info)))
        await conn.publish(f"$KV.{conn.workers_bucket}.{key_of(info.id)}", data)

    async def deregister_worker(self, worker_id: str) -> None:
        """Purge the worker's key."""
        conn = await self._conn()
        await conn.purge_key(conn.workers_bucket, key_of(worker_id))

    async def list_workers(self, *, now: datetime) -> builtins.list[WorkerInfo]:
        """Read the bucket; purge the lapsed keys."""
        conn = await self._conn()
        bucket = conn.workers_bucket
        pre, at = len(f"$KV.{bucket}."), us(now)
        found, lapsed = [], []
        for msg in await conn.scan(f"KV_{bucket}", f"$KV.{bucket}.>", last_per_subject=True):
            if msg.headers and msg.headers.get("KV-Operation"):
                continue  # deregistered
            try:
                stored = _REGISTRATION.decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                lapsed.append(msg.subject[pre:])
                continue
            if stored.expires <= at:
                lapsed.append(msg.subject[pre:])
            elif (info := decode_worker(stored.info)) is not None:
                found.append(info)
        if lapsed:
            await together([conn.purge_key(bucket, key) for key in lapsed])
        return sorted(found, key=lambda w: w.id)
