"""Task results on Redis: one key each, with native expiry."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from omniq._sync import StorageTwin, blocking
from omniq.models import TaskResult
from omniq.storage._rows import decode_record
from omniq.storage.base import BaseResultStorage
from omniq.storage.redis._base import RedisComponent
from omniq.storage.redis._codec import _ENCODER, _RESULT_TOKEN_MS, _us
from omniq.storage.redis._fleet import transaction
from omniq.storage.redis._scripts import SHAS
from omniq.storage.redis.connection import MAX_BULK_BYTES, Command, too_large

_RESULT_DECODER = msgspec.msgpack.Decoder(TaskResult)


class AsyncRedisResultStorage(RedisComponent, BaseResultStorage):
    """Task results on Redis, one key each with native expiry from ``expires_at``.

    ``wait`` blocks on a per-result token list that ``put_many`` fills, so a waiter wakes
    within milliseconds of the result being stored.
    """

    def result_command(self, results: Sequence[TaskResult]) -> Command:
        """The one script call that stores ``results`` (sent alone or with an ack)."""
        args: builtins.list[Any] = [time.time_ns() // 1000]
        for result in results:
            expires = "" if result.expires_at is None else _us(result.expires_at)
            record = _ENCODER.encode(result)
            if len(record) > MAX_BULK_BYTES:
                raise too_large(f"the result of task {result.task_id}", len(record))
            args += (result.task_id, record, expires, _RESULT_TOKEN_MS)
        return ("EVALSHA", SHAS["put_results"], 0, self._prefix, *args)

    async def put_many(self, results: Sequence[TaskResult]) -> None:
        """Store (or replace) results in one round trip."""
        if not results:
            return
        client = await self._conn()
        command = self.result_command(results)
        await client.script("put_results", *command[4:])

    async def get(self, task_id: str) -> TaskResult | None:
        """The stored result, or None (also once it expired)."""
        client = await self._conn()
        data = await client.call("GET", f"{self._prefix}r:{task_id}")
        if data is None:
            return None
        return decode_record(_RESULT_DECODER, data, f"redis: result of task {task_id}")

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Block until the result exists (``BLMOVE`` on its token list) or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        client = await self._conn()
        token = f"{self._prefix}rw:{task_id}"
        rotate = True
        while True:
            result = await self.get(task_id)
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining < 0.001:
                return None
            # Rotating the token (source = destination) leaves it for every other waiter
            # on the same result; a token that outlived its result is consumed instead.
            command = ("BLMOVE", token, token, "LEFT", "LEFT") if rotate else ("BLPOP", token)
            try:
                woke = await client.block(remaining, *command, f"{remaining:.3f}")
            except TimeoutError:
                woke = None
            rotate = woke is None

    async def delete_expired(self, now: datetime) -> int:
        """Delete results whose ``expires_at`` is at or before ``now``."""
        client = await self._conn()
        total = 0
        while True:
            deleted = int(await client.script("delete_results", _us(now), 1000))
            total += deleted
            if deleted < 1000:
                return total

    async def delete(self, task_ids: Sequence[str]) -> None:
        """Delete the results of ``task_ids`` (and their wake-up tokens), in one
        transaction."""
        if not task_ids:
            return
        client, prefix = await self._conn(), self._prefix
        await transaction(
            client,
            ("DEL", *(f"{prefix}{kind}:{task_id}" for task_id in task_ids for kind in ("r", "rw"))),
            ("ZREM", f"{prefix}results:exp", *task_ids),
        )


class RedisResultStorage(StorageTwin[AsyncRedisResultStorage]):
    """Blocking twin of :class:`AsyncRedisResultStorage`: the same methods, without ``await``."""

    async_class = AsyncRedisResultStorage
    delete_expired = blocking(AsyncRedisResultStorage.delete_expired)
    get = blocking(AsyncRedisResultStorage.get)
    put = blocking(AsyncRedisResultStorage.put)
    put_many = blocking(AsyncRedisResultStorage.put_many)
    wait = blocking(AsyncRedisResultStorage.wait)
    delete = blocking(AsyncRedisResultStorage.delete)
