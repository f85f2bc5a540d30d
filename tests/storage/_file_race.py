"""Worker-process bodies for the file backend's multi-process tests (spawn-importable)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from omniq.config import Settings
from omniq.models import Task, TaskStatus, utcnow
from omniq.storage.base import Ack
from omniq.storage.file import AsyncFileQueue, FileBackend
from omniq.storage.file._store import Change


def _settings(options: dict[str, Any] | None) -> Settings:
    return Settings(storage_options=options or {})


def fill(root: str, count: int, options: dict[str, Any] | None = None) -> None:
    """Enqueue ``count`` tasks ``t00000``… into the queue at ``root`` (a directory or a
    URL; ``options`` are the fsspec driver's ``storage_options``)."""

    async def main() -> None:
        queue = AsyncFileQueue(root, _settings(options))
        try:
            await queue.enqueue([Task(id=f"t{i:05d}", func="m:f") for i in range(count)])
        finally:
            await queue.close()

    asyncio.run(main())


def claim_and_ack(
    root: str,
    worker_id: str,
    output: str,
    start: Any,
    options: dict[str, Any] | None = None,
    limit: int = 4,
) -> None:
    """Connect, wait on ``start`` (an Event the parent sets, or a Barrier of the racers),
    then claim (``limit`` at a time) and ack until nothing is left; write the ids claimed."""

    async def main() -> list[str]:
        queue = AsyncFileQueue(root, _settings(options))
        claimed: list[str] = []
        try:
            # Connected (imports done, client open) before the race starts, so the
            # racers' first claims overlap instead of one running ahead.
            await queue.stats()
            await asyncio.to_thread(start.wait)
            while True:
                tasks = await queue.claim(
                    ["default"], worker_id, limit=limit, lease_seconds=300, now=utcnow()
                )
                if not tasks:
                    return claimed
                claimed.extend(t.id for t in tasks)
                acks = [Ack(t.id, worker_id, TaskStatus.COMPLETE) for t in tasks]
                assert all(await queue.ack_many(acks, now=utcnow()))
        finally:
            await queue.close()

    claimed = asyncio.run(main())
    Path(output).write_text("\n".join(claimed) + "\n")


def claim_forever(root: str, ready: Any) -> None:
    """Claim one task at a time with short leases and never finish; signal once busy."""

    async def main() -> None:
        queue = AsyncFileQueue(root)
        claims = 0
        while True:
            tasks = await queue.claim(["default"], "doomed", limit=1, lease_seconds=1, now=utcnow())
            claims += 1
            if claims == 20:
                ready.set()
            if not tasks:
                await asyncio.sleep(0)

    asyncio.run(main())


def increment(root: str, times: int, start: Any, options: dict[str, Any] | None = None) -> None:
    """Connect, wait on ``start``, then add 1 to the counter object ``tasks/counter``
    ``times`` times, each an atomic :meth:`Store.update` (read, add, write)."""

    def add_one(current: bytes | None) -> Change[None]:
        return Change(None, data=str(int(current or b"0") + 1).encode())

    async def main() -> None:
        backend = FileBackend(root, _settings(options))
        await backend.connect()
        try:
            store = backend.store("tasks")
            await store.read("counter")
            await asyncio.to_thread(start.wait)
            for _ in range(times):
                await store.update("counter", add_one)
        finally:
            await backend.close()

    asyncio.run(main())
