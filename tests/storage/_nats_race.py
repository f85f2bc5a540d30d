"""Worker processes of the NATS race test: each claims and acknowledges from one queue
until it is empty, and reports what it took."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from omniq.models import TaskStatus, utcnow
from omniq.storage.base import Ack
from omniq.storage.nats import AsyncNATSQueue


async def _claim_all(url: str, worker_id: str, barrier: Any) -> list[str]:
    claimed: list[str] = []
    async with AsyncNATSQueue(url) as queue:
        await queue.stats()  # the index is read in before the race starts
        barrier.wait(timeout=60)
        while True:
            tasks = await queue.claim(
                ["default"], worker_id, limit=random.randint(1, 16), lease_seconds=300, now=utcnow()
            )
            if not tasks:
                if not (await queue.stats()).get("default", {}).get("pending"):
                    return claimed
                continue  # the others' claims were ahead of this index: look again
            claimed.extend(task.id for task in tasks)
            acks = [Ack(task.id, worker_id, TaskStatus.COMPLETE) for task in tasks]
            assert all(await queue.ack_many(acks, now=utcnow()))


def claim_all(url: str, worker_id: str, barrier: Any, out: Any) -> None:
    """Wait for the others, then claim and ack until the queue is empty."""
    out.put((worker_id, asyncio.run(_claim_all(url, worker_id, barrier))))
