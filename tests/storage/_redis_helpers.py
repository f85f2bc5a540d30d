"""Helpers for tests that reach behind the Redis backend's API (see omniq.storage.redis)."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import msgspec
import redis

from omniq.models import Task


def tamper_redis_task(store_url: str, task_id: str, alter: Callable[[bytes], bytes]) -> None:
    """Rewrite a stored task's payload in place, in whichever namespace holds it.

    Task ids are unique across the test run, so the one ``{namespace}:d:{id}`` key (the
    encoded task) is found by ``SCAN``; the namespace of the store need not be known.
    """
    client = redis.Redis.from_url(store_url.split("?", 1)[0])
    try:
        keys = list(client.scan_iter(match=f"*:d:{task_id}", count=1000))
        if len(keys) != 1:
            raise LookupError(f"expected one stored task {task_id}, found {keys}")
        data = cast(bytes, client.get(keys[0]))
        task = msgspec.msgpack.decode(data, type=Task)
        altered = msgspec.structs.replace(task, payload=alter(task.payload))
        client.set(keys[0], msgspec.msgpack.encode(altered))
    finally:
        client.close()
