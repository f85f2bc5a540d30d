"""Helpers for tests that reach behind the Redis backend's API (see omniq.storage.redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import msgspec
import redis

from omniq.models import Task
from omniq.storage.redis import RedisConnection


def tamper_redis_task(
    store_url: str,
    task_id: str,
    alter: Callable[[bytes], bytes],
    *,
    replace_record: bytes | None = None,
) -> None:
    """Rewrite a stored task's payload in place (or its whole record with
    ``replace_record``), in whichever namespace holds it.

    Task ids are unique across the test run, so the one ``{namespace}:t:{id}`` key is found
    by ``SCAN``; the namespace of the store need not be known. The encoded task is stored
    in pieces (``d1``..``d8``) or whole (``d``); it is written back whole.
    """
    client = redis.Redis.from_url(store_url.split("?", 1)[0])
    try:
        # A set: SCAN may return a key twice while Redis resizes its keyspace.
        keys = sorted(set(client.scan_iter(match=f"*:t:{task_id}", count=1000)))
        if len(keys) != 1:
            raise LookupError(f"expected one stored task {task_id}, found {keys}")
        fields = ["d", *(f"d{i}" for i in range(1, 9))]
        values = cast(list[bytes | None], client.hmget(keys[0], fields))
        data = values[0] or b"".join(v for v in values[1:] if v is not None)
        if replace_record is None:
            task = msgspec.msgpack.decode(data, type=Task)
            altered = msgspec.structs.replace(task, payload=alter(task.payload))
            replace_record = msgspec.msgpack.encode(altered)
        client.hdel(keys[0], *fields)
        client.hset(keys[0], "d", replace_record)
    finally:
        client.close()


async def wait_for_blocked_client(
    client: RedisConnection, plain: redis.Redis, *, count: int = 1
) -> None:
    """Until ``count`` blocking connections of ``client`` are blocked in ``BLPOP`` on the
    server (a worker pool has two: its cancel watcher and its idle wait)."""
    for _ in range(1_000):
        await asyncio.sleep(0.005)
        blocked = 0
        for conn in client._blocking_busy:
            seen = plain.execute_command("CLIENT", "LIST", "ID", conn.client_id)
            if b"cmd=blpop" in seen and b"flags=b" in seen:
                blocked += 1
        if blocked >= count:
            return
    raise AssertionError(f"fewer than {count} waiters blocked in BLPOP")
