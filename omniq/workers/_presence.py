"""A running pool's registration in the worker registry (``list_workers()``).

:func:`keep_registered` runs beside the pool's other helpers: it registers the pool at
start, registers it again (a heartbeat: the same upsert, with ``last_seen`` and
``running`` updated) every third of ``lease_seconds`` (the lease renewal's pace), and
deregisters it when it is cancelled, which the pool does on a graceful stop. Each
registration lives ``lease_seconds``: a pool that died (SIGKILL, a lost host) drops out
of ``list_workers()`` once that has passed since its last heartbeat, and the next
listing purges it. The registry only informs: a pool whose registration cannot be
written keeps working (a warning says so, once until a write succeeds again).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import msgspec

from omniq.errors import StorageError
from omniq.models import WorkerInfo, utcnow

if TYPE_CHECKING:
    from omniq.engine import Engine

__all__ = ["Registered", "keep_registered"]

logger = logging.getLogger("omniq.worker")


class Registered(Protocol):
    """What a registration tells of its pool (an ``AsyncWorkerPool``)."""

    @property
    def worker_id(self) -> str: ...

    @property
    def queues(self) -> Sequence[str]: ...

    @property
    def worker_type(self) -> str: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def lease_seconds(self) -> float: ...


async def keep_registered(engine: Engine, pool: Registered, running: Callable[[], int]) -> None:
    """Register ``pool``, beat every third of its ``lease_seconds`` until cancelled, then
    deregister it (see the module docstring). ``running()`` counts its running tasks."""
    worker_id, lease_seconds = pool.worker_id, pool.lease_seconds
    now = utcnow()
    info = WorkerInfo(
        id=worker_id,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        queues=tuple(pool.queues),
        worker_type=pool.worker_type,
        concurrency=pool.concurrency,
        running=running(),
        started_at=now,
        last_seen=now,
    )
    lives = timedelta(seconds=lease_seconds)
    interval = max(0.05, lease_seconds / 3)
    failing = False
    try:
        while True:
            now = utcnow()
            info = msgspec.structs.replace(info, running=running(), last_seen=now)
            try:
                await engine.queue.register_worker(info, expires_at=now + lives)
            except StorageError as exc:
                if not failing:
                    logger.warning("worker %s: registering it failed (%s)", worker_id, exc)
                failing = True
            else:
                failing = False
            await asyncio.sleep(interval)
    finally:
        try:
            await engine.queue.deregister_worker(worker_id)
        except StorageError as exc:
            logger.warning(
                "worker %s: deregistering it failed (%s); it drops out in %s s",
                worker_id,
                exc,
                lease_seconds,
            )
