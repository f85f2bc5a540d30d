"""The task bodies every library runs, identical across libraries.

- drain: one Redis round trip (``INCR`` of the completion counter plus a ``SET`` of the
  first and last completion timestamps, pipelined), so completion is observed, not assumed;
- latency: ``time.time()`` as the first statement, then ``RPUSH "<index> <time>"``;
- sleep: sleep 10 ms (``asyncio.sleep`` or ``time.sleep`` in thread/process workers), then
  the drain body;
- noop: nothing (used by the enqueue workloads, which run no worker).

Async libraries use ``redis.asyncio``; thread/process libraries the sync client. All the
instrumentation keys live in Redis DB 15, whatever the queue's own backend is.
"""

from __future__ import annotations

import asyncio
import os
import time

import redis
import redis.asyncio as aredis

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
COUNT = "qbench:count"
FIRST = "qbench:first"
LAST = "qbench:last"
LAT = "qbench:lat"

_async_clients: dict[int, aredis.Redis] = {}
_sync_client: redis.Redis | None = None


def _aclient() -> aredis.Redis:
    # One client per event loop: a redis.asyncio connection is bound to the loop it was
    # opened on, and some workers (taskiq children, thread pools) run several loops.
    loop_id = id(asyncio.get_running_loop())
    client = _async_clients.get(loop_id)
    if client is None:
        client = aredis.Redis.from_url(REDIS_URL)
        _async_clients[loop_id] = client
    return client


async def close_async_client() -> None:
    """Close this loop's client (for callers that run bodies outside a worker)."""
    client = _async_clients.pop(id(asyncio.get_running_loop()), None)
    if client is not None:
        await client.aclose()


def _sclient() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(REDIS_URL)
    return _sync_client


async def drain_async() -> None:
    """Count one completion and record its time (one pipelined round trip)."""
    now = time.time()
    pipe = _aclient().pipeline(transaction=False)
    pipe.incr(COUNT)
    pipe.set(FIRST, repr(now), nx=True)
    pipe.set(LAST, repr(now))
    await pipe.execute()


def drain_sync() -> None:
    """Sync twin of :func:`drain_async`."""
    now = time.time()
    pipe = _sclient().pipeline(transaction=False)
    pipe.incr(COUNT)
    pipe.set(FIRST, repr(now), nx=True)
    pipe.set(LAST, repr(now))
    pipe.execute()


async def latency_async(index: int) -> None:
    """Record when the body started, tagged with the task's index."""
    now = time.time()
    # redis-py annotates its asyncio commands as ``Awaitable[int] | int``.
    await _aclient().rpush(LAT, f"{index} {now!r}")  # type: ignore[misc]


def latency_sync(index: int) -> None:
    """Sync twin of :func:`latency_async`."""
    now = time.time()
    _sclient().rpush(LAT, f"{index} {now!r}")


async def sleep_async() -> None:
    """Sleep 10 ms on the event loop, then the drain body."""
    await asyncio.sleep(0.01)
    await drain_async()


def sleep_sync() -> None:
    """Sleep 10 ms in the worker thread/process, then the drain body."""
    time.sleep(0.01)
    drain_sync()
