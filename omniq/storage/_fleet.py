"""The task queue's primitives for running a fleet: requeueing a finished task, and the
registry of live worker pools.

:class:`FleetQueue` is a base of ``BaseTaskQueue`` (kept apart from ``omniq.storage.base``
so that module stays small); every backend implements its four primitives. The
semantics above them (which statuses a requeue takes, the result it removes, the event
it logs; how often a pool beats and when it counts as gone) live in ``omniq._requeue``
and ``omniq.workers._presence``. :func:`encode_worker` and :func:`decode_worker` are the
one stored form of a :class:`~omniq.models.WorkerInfo` every backend keeps.
"""

from __future__ import annotations

import builtins
import logging
from abc import ABC, abstractmethod
from collections.abc import Collection
from datetime import datetime

import msgspec

from omniq.models import Task, TaskStatus, WorkerInfo

__all__ = ["FleetQueue", "decode_worker", "encode_worker"]

logger = logging.getLogger("omniq")

_WORKER_ENCODER = msgspec.msgpack.Encoder()
_WORKER_DECODER = msgspec.msgpack.Decoder(WorkerInfo)


def encode_worker(info: WorkerInfo) -> bytes:
    """A worker's registration as stored (msgpack)."""
    return _WORKER_ENCODER.encode(info)


def decode_worker(data: bytes) -> WorkerInfo | None:
    """A stored registration, or None when it cannot be read (a damaged record, or one
    written by a newer OmniQ): ``list_workers`` leaves it out rather than failing."""
    try:
        return _WORKER_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        logger.warning("a worker registration cannot be read (%s); left out", exc)
        return None


class FleetQueue(ABC):
    """Requeue and the worker registry: what a task queue stores for them."""

    @abstractmethod
    async def requeue(
        self, task: Task, *, from_statuses: Collection[TaskStatus], now: datetime
    ) -> Task | None:
        """Compare-and-set: if the stored task ``task.id`` has a status in
        ``from_statuses``, replace its record with ``task`` as given and return it; else
        (another status, or no such task) change nothing and return None.

        ``task`` is the stored one made new by the caller (``omniq._requeue``): its
        status, ``attempts``, ``lost_runs``, ``due_at`` and ``expires_at`` are written as
        given, its lease and worker cleared. Two racing calls never both win. Wakes
        waiting workers when ``task`` is claimable.
        """

    @abstractmethod
    async def register_worker(self, info: WorkerInfo, *, expires_at: datetime) -> None:
        """Store (or replace) the registration of worker ``info.id``, live until
        ``expires_at`` unless registered again: registering and each heartbeat are this
        one upsert."""

    @abstractmethod
    async def deregister_worker(self, worker_id: str) -> None:
        """Remove a worker's registration (nothing happens for an unknown id)."""

    @abstractmethod
    async def list_workers(self, *, now: datetime) -> builtins.list[WorkerInfo]:
        """The registrations live at ``now``, by worker id; those past their
        ``expires_at`` are left out (and may be purged on the way)."""
