"""The file backend's result storage: one object per result, and an expiry index."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

import msgspec

from omniq.models import TaskResult, utcnow
from omniq.storage.base import BaseResultStorage
from omniq.storage.file._base import FileComponent, decode, encoder
from omniq.storage.file._layout import to_us, token, wake, wake_ups
from omniq.storage.file._store import Change

__all__ = ["AsyncFileResultStorage"]

_result_decoder = msgspec.msgpack.Decoder(TaskResult)


class AsyncFileResultStorage(FileComponent, BaseResultStorage):
    """Task results as one object each, with an expiry index for cleanup.

    Example::

        async with AsyncFileResultStorage("/tmp/omniq") as results:
            stored = await results.get(task_id)
    """

    subdir = "results"

    async def put_many(self, results: Sequence[TaskResult]) -> None:
        """Store results, replacing any for the same task id."""
        store = await self._s()

        def put(result: TaskResult) -> Callable[[bytes | None], Change[None]]:
            add = []
            if result.expires_at is not None:
                add.append(f"x/{to_us(result.expires_at):017d}-{token(result.task_id)}")
            data = encoder.encode(result)
            return lambda _current: Change(None, data, add=add)

        await store.update_many([(f"r/{token(r.task_id)}", put(r)) for r in results])
        if results:
            wake(store)

    async def get(self, task_id: str) -> TaskResult | None:
        """The stored result, or None (also once it expired)."""
        store = await self._s()
        data = await store.read(f"r/{token(task_id)}")
        if data is None:
            return None
        result: TaskResult = decode(_result_decoder, data, "result")
        if result.expires_at is not None and result.expires_at <= utcnow():
            return None
        return result

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Wait for the result: a put wakes it at once (in this process, and from another
        on local disk); it also polls with a growing interval, up to 0.1 s."""
        store = await self._s()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.005
        with wake_ups(store) as woken:
            while True:
                woken.clear()
                result = await self.get(task_id)
                if result is not None:
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(woken.wait(), min(delay, remaining))
                except TimeoutError:
                    delay = min(delay * 2, 0.1)

    async def delete_expired(self, now: datetime) -> int:
        """Delete results whose ``expires_at`` has passed, found through the expiry index."""
        store = await self._s()
        now_us = to_us(now)
        expired = []
        for name in await store.list_dir("x"):
            stamp, _, tok = name.partition("-")
            if stamp.isdigit() and int(stamp) <= now_us and tok:
                expired.append((f"x/{name}", tok))

        def delete(entry: str) -> Callable[[bytes | None], Change[bool]]:
            def fn(current: bytes | None) -> Change[bool]:
                if current is None:
                    return Change(False, remove=[entry])
                result: TaskResult = decode(_result_decoder, current, "result")
                if result.expires_at is None or result.expires_at > now:
                    # Replaced since: the new result has its own index entry.
                    return Change(False, remove=[entry])
                return Change(True, None, remove=[entry])

            return fn

        deleted = await store.update_many([(f"r/{tok}", delete(entry)) for entry, tok in expired])
        return sum(deleted)

    async def delete(self, task_ids: Sequence[str]) -> None:
        """Delete the results' objects (an expiry entry left behind is dropped by
        :meth:`delete_expired`, which finds no result under it)."""
        store = await self._s()
        await store.delete_many([f"r/{token(task_id)}" for task_id in task_ids])
