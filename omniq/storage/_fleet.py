"""The task queue's primitives for running a fleet (SPEC §8): requeueing a finished task,
the registry of live worker pools, tasks' progress, and global limits.

:class:`FleetQueue` is a base of ``BaseTaskQueue`` (kept apart from ``omniq.storage.base``
so that module stays small); every backend implements these primitives. The
semantics above them (which statuses a requeue takes, the result it removes, the event
it logs; how often a pool beats and when it counts as gone) live in ``omniq._requeue``
and ``omniq.workers._presence``. :func:`encode_worker` and :func:`decode_worker` are the
one stored form of a :class:`~omniq.models.WorkerInfo` every backend keeps.
"""

from __future__ import annotations

import builtins
import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

import msgspec

from omniq._limits import Limit
from omniq.models import Progress, Task, TaskStatus, WorkerInfo

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
    """Requeue, the worker registry, progress and limits: what a task queue stores for them."""

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

    # -- progress (SPEC §8 "Task context", omniq.context) -------------------------------

    @abstractmethod
    async def set_progress(self, updates: Mapping[str, Progress]) -> None:
        """Store the latest progress of tasks, by id, in one round trip where the backend
        can, replacing what each had. Kept apart from the task records (their revisions
        and compare-and-set steps are untouched); an unknown or deleted task gets none
        (never resurrected); a deleted task's progress goes with it."""

    @abstractmethod
    async def get_progress(self, task_ids: Sequence[str]) -> dict[str, Progress]:
        """The stored progress of ``task_ids``, by id (tasks with none are absent)."""

    # -- limits (SPEC §8 "Limits", omniq._limits) ---------------------------------------

    @abstractmethod
    async def set_limit(self, key: str, limit: Limit | None) -> None:
        """Store the limit of ``key`` (``q:<queue>``; None removes it). From then on every
        :meth:`claim`, in any process, leaves a task waiting while taking it would break
        a limit of its queue or its name (:meth:`register_task_limits`): more starts in
        a window than the rate (a sliding log of start times), or more ``RUNNING`` tasks
        with a live lease than the cap. Such a claim returns a ``LimitedClaim`` saying
        until when. With no limit stored, the claim costs what it did without limits."""

    @abstractmethod
    async def get_limits(self) -> dict[str, Limit]:
        """Every limit stored (by :meth:`set_limit` and :meth:`register_task_limits`), by
        key; empty when none is. A read only: it logs no start and takes no slot."""

    @abstractmethod
    async def register_task_limits(self, limits: Mapping[str, Limit]) -> None:
        """Note, before tasks carrying them are stored, the limits of task names
        (``t:<func>``); claims enforce, for each task carrying a limit, the one last noted
        for its name."""
