"""Latency floors: how fast a bare driver hands a message to another process on this
machine, with the latency workload's idle gaps between messages.

The latency workload (:func:`benchmarks.workloads.run_latency`) sends a task every 50 ms
on average, so every enqueue meets an idle machine: the producer, the server and the
worker each wake from sleep, and a round trip after an idle gap costs several times a
back-to-back one. These figures are that floor for any library on the backend:

- ``redis_idle_ping_p50_ms``: one ``PING`` round trip (redis-py asyncio) after each gap;
- ``redis_push_pop_p50_ms`` / ``_p99_ms``: ``LPUSH`` in this process to the return of a
  ``BLPOP`` waiting in another (redis-py asyncio on both sides), the shortest path from an
  enqueue to a worker that a push/blocking-pop queue can have;
- ``postgres_notify_p50_ms`` / ``_p99_ms``: ``pg_notify`` in this process to the
  ``LISTEN`` callback in another (asyncpg on both sides).

Each: 5 warm-up + :data:`SAMPLES` messages, exponential gaps (mean
:data:`~benchmarks.workloads.LATENCY_MEAN_GAP`, seeded), ``time.time()`` on both sides.
The consumer runs as ``python -m benchmarks.floors redis|postgres`` and reports each
arrival with an ``RPUSH`` of ``"<index> <time>"`` after taking its time.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

import redis.asyncio as aredis

from benchmarks.adapters.base import POSTGRES_URL, REDIS_URL, REPO_ROOT

SAMPLES = 100
_WARMUP = 5
_MEAN_GAP = 0.05  # the latency workload's (benchmarks.workloads.LATENCY_MEAN_GAP)
_PUSHED = "qbench:floor:in"
_SEEN = "qbench:floor:seen"
_READY = "qbench:floor:ready"
_CHANNEL = "qbench_floor"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q / 100))]


async def _gaps() -> list[float]:
    rng = random.Random(7)
    return [rng.expovariate(1 / _MEAN_GAP) for _ in range(_WARMUP + SAMPLES)]


async def _idle_ping(client: aredis.Redis) -> float:
    took = []
    for gap in await _gaps():
        await asyncio.sleep(gap)
        start = time.perf_counter()
        await client.ping()
        took.append(time.perf_counter() - start)
    return _percentile(took[_WARMUP:], 50) * 1000


async def _handoff(client: aredis.Redis, backend: str) -> tuple[float, float]:
    """p50 and p99 (ms) from a send here to its arrival in a consumer process."""
    await client.delete(_PUSHED, _SEEN, _READY)
    consumer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.floors", backend, cwd=REPO_ROOT
    )
    try:
        if await client.blpop([_READY], timeout=30) is None:  # type: ignore[misc]
            raise RuntimeError(f"the {backend} latency-floor consumer did not start")
        sent: list[float] = []
        notify = None
        if backend == "postgres":
            import asyncpg

            notify = await asyncpg.connect(POSTGRES_URL)
        try:
            for index, gap in enumerate(await _gaps()):
                await asyncio.sleep(gap)
                sent.append(time.time())
                if notify is not None:
                    await notify.execute("SELECT pg_notify($1, $2)", _CHANNEL, str(index))
                else:
                    await client.lpush(_PUSHED, str(index))  # type: ignore[misc]
        finally:
            if notify is not None:
                await notify.close()
        seen: dict[int, float] = {}
        while len(seen) < len(sent):
            popped = await client.blpop([_SEEN], timeout=30)  # type: ignore[misc]
            if popped is None:
                break  # lost: said below
            index_text, _, when = popped[1].decode().partition(" ")
            seen[int(index_text)] = float(when)
    finally:
        consumer.terminate()
        await consumer.wait()
        await client.delete(_PUSHED, _SEEN, _READY)
    took = [(seen[i] - sent[i]) * 1000 for i in range(_WARMUP, len(sent)) if i in seen]
    if len(took) < SAMPLES:
        raise RuntimeError(f"{backend} latency floor: {SAMPLES - len(took)} messages lost")
    return _percentile(took, 50), _percentile(took, 99)


async def _floors(postgres: bool) -> dict[str, float]:
    client = aredis.Redis.from_url(REDIS_URL)
    try:
        out = {"redis_idle_ping_p50_ms": await _idle_ping(client)}
        p50, p99 = await _handoff(client, "redis")
        out |= {"redis_push_pop_p50_ms": p50, "redis_push_pop_p99_ms": p99}
        if postgres:
            p50, p99 = await _handoff(client, "postgres")
            out |= {"postgres_notify_p50_ms": p50, "postgres_notify_p99_ms": p99}
    finally:
        await client.aclose()
    return out


def latency_floors(postgres: bool = False) -> dict[str, float]:
    """The floors of the module docstring (no event loop may be running)."""
    return asyncio.run(_floors(postgres))


# -- the consumer process ----------------------------------------------------------------
async def _consume_redis(report: aredis.Redis) -> None:
    source = aredis.Redis.from_url(REDIS_URL)
    await report.rpush(_READY, b"1")  # type: ignore[misc]
    while True:
        popped = await source.blpop([_PUSHED], timeout=0)
        arrived = time.time()
        if popped is not None:
            await report.rpush(_SEEN, f"{popped[1].decode()} {arrived}")  # type: ignore[misc]


async def _consume_postgres(report: aredis.Redis) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL)
    arrivals: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

    def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        arrivals.put_nowait((payload, time.time()))

    await conn.add_listener(_CHANNEL, heard)
    await report.rpush(_READY, b"1")  # type: ignore[misc]
    while True:
        payload, arrived = await arrivals.get()
        await report.rpush(_SEEN, f"{payload} {arrived}")  # type: ignore[misc]


async def _consume(backend: str) -> None:
    report = aredis.Redis.from_url(REDIS_URL)
    if backend == "postgres":
        await _consume_postgres(report)
    else:
        await _consume_redis(report)


if __name__ == "__main__":
    asyncio.run(_consume(sys.argv[1]))
