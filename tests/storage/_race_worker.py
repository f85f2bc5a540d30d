"""Child-process side of the SQLite race tests (imported by ``spawn``ed processes)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from omniq.models import TaskStatus, utcnow
from omniq.storage.base import Ack
from omniq.storage.sqlite import AsyncSQLiteQueue


async def _claim_all(path: str, worker_id: str, barrier: Any) -> list[str]:
    claimed: list[str] = []
    async with AsyncSQLiteQueue(path) as queue:
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
    async with AsyncSQLiteQueue(path) as queue:
        return len(await queue.list())


def open_fresh(path: str, name: str, barrier: Any, out: Any) -> None:
    """Open (and so migrate) the database at the same moment as another process."""
    barrier.wait(timeout=60)
    try:
        out.put(("ok", asyncio.run(_open(path))))
    except Exception as exc:
        out.put(("error", repr(exc)))
