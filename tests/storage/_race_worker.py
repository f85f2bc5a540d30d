"""Both sides of the race tests of the SQL backends: :func:`spawn_pair` starts two
``spawn``ed processes that run a function of this module at the same moment.

A target is a SQLite path, or a PostgreSQL URL whose ``?namespace=`` names the schema.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from collections.abc import Callable
from typing import Any

from omniq.models import TaskStatus, utcnow
from omniq.storage.base import Ack, BaseTaskQueue
from omniq.storage.postgres import AsyncPostgresQueue
from omniq.storage.sqlite import AsyncSQLiteQueue


def spawn_pair(target: Callable[..., None], *args: object) -> list[tuple[str, Any]]:
    """Run ``target(*args, name, barrier, out)`` in two processes; what each put in ``out``."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, f"p{i}", barrier, out)) for i in range(2)]
    for proc in procs:
        proc.start()
    try:
        return [out.get(timeout=90) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            assert proc.exitcode == 0


def _queue(target: str) -> BaseTaskQueue:
    if target.startswith("postgresql://"):
        return AsyncPostgresQueue(target)
    return AsyncSQLiteQueue(target)


async def _claim_all(path: str, worker_id: str, barrier: Any) -> list[str]:
    claimed: list[str] = []
    async with _queue(path) as queue:
        # Both connected before either claims: the race is between claims, not start-ups.
        barrier.wait(timeout=60)
        while True:
            limit = random.randint(1, 8)
            tasks = await queue.claim(
                ["default"], worker_id, limit=limit, lease_seconds=300, now=utcnow()
            )
            if not tasks:
                return claimed
            claimed.extend(task.id for task in tasks)
            acks = [Ack(task.id, worker_id, TaskStatus.COMPLETE) for task in tasks]
            assert all(await queue.ack_many(acks, now=utcnow()))
            # Run the tasks, as a worker would: SQLite's lock is not fair, and a process
            # that claims again at once can hold it while the other's busy handler sleeps.
            await asyncio.sleep(0.001)


def claim_all(path: str, worker_id: str, barrier: Any, out: Any) -> None:
    """Wait for the other process, then claim and ack until the queue is empty."""
    out.put((worker_id, asyncio.run(_claim_all(path, worker_id, barrier))))


async def _open(path: str) -> int:
    async with _queue(path) as queue:
        return len(await queue.list())


def open_fresh(path: str, name: str, barrier: Any, out: Any) -> None:
    """Open (and so migrate) the database at the same moment as another process."""
    barrier.wait(timeout=60)
    try:
        out.put(("ok", asyncio.run(_open(path))))
    except Exception as exc:
        out.put(("error", repr(exc)))
