"""Task results on NATS: a key-value bucket (``{namespace}_results``), one key per task.

``result_ttl`` is kept as the result's ``expires_at`` and applied at read time (and by
``delete_expired``), as on the other backends: nats-server 2.9 has no per-key expiry.
A waiter subscribes to the result's key subject before it looks, so the write wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import datetime

import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.models import TaskResult
from omniq.storage._rows import decode_record
from omniq.storage.base import BaseResultStorage
from omniq.storage.nats._base import ENCODER, NATSComponent, ident_of, key_of, together, us

__all__ = ["AsyncNATSResultStorage", "NATSResultStorage"]

_RESULT_DECODER = msgspec.msgpack.Decoder(TaskResult)


def _result(task_id: str, data: bytes) -> TaskResult:
    return decode_record(_RESULT_DECODER, data, f"nats: result of task {task_id}")


def _expired(result: TaskResult, now: float) -> bool:
    return result.expires_at is not None and result.expires_at.timestamp() <= now


class AsyncNATSResultStorage(NATSComponent, BaseResultStorage):
    """Task results in a JetStream key-value bucket; ``wait`` is woken by the write."""

    def _subject(self, task_id: str) -> str:
        return f"$KV.{self.connection.results_bucket}.{key_of(task_id)}"

    @property
    def _stream(self) -> str:
        return f"KV_{self.connection.results_bucket}"

    async def put_many(self, results: Sequence[TaskResult]) -> None:
        """Store (or replace) results, all writes in flight at once."""
        if not results:
            return
        conn = await self._conn()
        latest = {result.task_id: result for result in results}
        await together(
            [
                conn.publish(self._subject(task_id), ENCODER.encode(result))
                for task_id, result in latest.items()
            ]
        )

    async def get(self, task_id: str) -> TaskResult | None:
        """The stored result, or None (also once it expired)."""
        conn = await self._conn()
        _, data = await conn.get_last(self._stream, self._subject(task_id))
        if data is None:
            return None
        result = _result(task_id, data)
        return None if _expired(result, time.time()) else result

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Wait for a result: subscribed to its key, then looking, so no write is missed."""
        conn = await self._conn()
        client = await conn.client()
        arrived = asyncio.Event()

        async def heard(_: object) -> None:
            arrived.set()

        try:
            sub = await client.subscribe(self._subject(task_id), cb=heard)
        except Exception as exc:
            raise conn.error("waiting for a result", exc) from exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                arrived.clear()
                result = await self.get(task_id)
                remaining = deadline - loop.time()
                if result is not None or remaining <= 0:
                    return result
                # A look every second anyway: a write made while reconnecting is not
                # announced to a subscription being restored.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), min(remaining, 1.0))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def delete_expired(self, now: datetime) -> int:
        """Purge the results past their ``expires_at`` (a scan of the bucket)."""
        conn = await self._conn()
        cutoff = us(now)
        pre = len(f"$KV.{conn.results_bucket}.")
        doomed = []
        for msg in await conn.scan(
            self._stream, f"$KV.{conn.results_bucket}.>", last_per_subject=True
        ):
            if msg.headers and msg.headers.get("KV-Operation"):
                continue
            key = msg.subject[pre:]
            result = _result(ident_of(key), msg.data)
            if result.expires_at is not None and us(result.expires_at) <= cutoff:
                doomed.append(key)
        await asyncio.gather(*(conn.purge_key(conn.results_bucket, key) for key in doomed))
        return len(doomed)

    async def delete(self, task_ids: Sequence[str]) -> None:
        """Purge the results' keys, all at once."""
        conn = await self._conn()
        bucket = conn.results_bucket
        await together([conn.purge_key(bucket, key_of(task_id)) for task_id in task_ids])


class NATSResultStorage(StorageTwin[AsyncNATSResultStorage]):
    """Blocking twin of :class:`AsyncNATSResultStorage`: the same methods, without ``await``."""

    async_class = AsyncNATSResultStorage
    delete_expired = blocking(AsyncNATSResultStorage.delete_expired)
    get = blocking(AsyncNATSResultStorage.get)
    put = blocking(AsyncNATSResultStorage.put)
    put_many = blocking(AsyncNATSResultStorage.put_many)
    wait = blocking(AsyncNATSResultStorage.wait)
    delete = blocking(AsyncNATSResultStorage.delete)
