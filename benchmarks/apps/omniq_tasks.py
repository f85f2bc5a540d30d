"""OmniQ's task functions: the shared bodies as importable module-level coroutines."""

from __future__ import annotations

from benchmarks.apps import bodies


async def noop() -> None:
    """Do nothing (enqueue workloads)."""


async def drain() -> None:
    """One Redis INCR + SET of the first/last completion time."""
    await bodies.drain_async()


async def ratelimit() -> None:
    """The drain body, enqueued with a rate limit (the ratelimit workload)."""
    await bodies.drain_async()


async def latency(index: int) -> None:
    """``time.time()`` first, then RPUSH it with the index."""
    await bodies.latency_async(index)


async def sleep() -> None:
    """``asyncio.sleep(0.01)`` then the drain body."""
    await bodies.sleep_async()
