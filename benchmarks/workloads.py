"""The workloads, run inside one child process per repetition (see :mod:`benchmarks.harness`).

Each returns a flat dict of metrics. Method (same as the peer reference benchmark):

- enqueue: ``n`` no-op tasks, one call at a time, awaited (or called, for sync libraries)
  before the next, after 20 warm-up calls; no worker runs. Tasks/s; also the CPU per task
  of the producer process and of the server over the same stretch.
- bulk: the same through the library's bulk API, one call per 1,000 tasks.
- drain: ``n`` tasks enqueued first (bulk API where there is one; not timed), then ONE worker
  process spawned. rate = (n-1) / (last - first completion); startup = spawn -> first
  completion; total = n / (last completion - spawn). The same run records the memory
  figures: peak RSS (``VmHWM``) of the worker and its children when the queue is drained,
  and the storage growth per queued task (Redis ``used_memory``, ``pg_database_size``, or
  the size of the files). And the CPU per task from the first completion to the last:
  the worker's (its process tree) and the server's (Redis ``INFO cpu``, the PostgreSQL
  processes), figures a shared machine's noise moves far less than the rate.
- latency: worker spawned and proven alive with one task; 5 warm-up + ``n`` tasks enqueued
  open-loop with exponential gaps (mean 50 ms, seeded); latency = body ``time.time()`` -
  ``time.time()`` just before the enqueue call.
- sleep: ``n`` tasks that sleep 10 ms then do the drain body, concurrency 100.
- sync (OmniQ only): the enqueue workload through ``OmniQ`` and through ``AsyncOmniQ``.
- enqueue-concurrent: many producers at once, as a web application's requests enqueue:
  ``n`` no-op tasks from ``CONCURRENT_COROUTINES`` coroutines sharing one client (async
  libraries, ``async_rate``) or ``CONCURRENT_THREADS`` threads sharing one client
  (blocking libraries, ``blocking_rate``); each caller awaits (or calls) one enqueue at a
  time, taking the next task from a shared count until ``n`` are stored. Warm-up: one
  concurrent round of ``max(WARMUP, callers)`` calls; rate = n / (first start to last
  return); no worker runs. OmniQ reports both: ``AsyncOmniQ`` from the coroutines, then
  ``OmniQ`` from the threads on a store of its own.
- ratelimit (OmniQ only): the drain workload with every task under
  ``rate_limit=RATE_LIMIT`` (SPEC §8 "Limits"); reported beside the limit. Starts come in
  bursts: a window's worth as fast as the worker goes, then the next as the first leave
  the window, so ``rate`` (first to last completion) counts the first window's tasks in
  no time; ``steady_rate`` leaves them out: ``(n - limit) / (last - first)``, the rate
  the limit holds a long drain to.
- backlog: does a waiting backlog slow the rest down? In one child, on one store: first
  with an empty queue, ``BACKLOG_PROBE`` drain tasks enqueued one call at a time (timed:
  ``empty_enqueue_rate``) and drained by one worker process (``empty_drain_rate``, the drain
  formula); then ``n`` (the backlog, default 1,000,000) no-op tasks that must not run
  during the measurement: delayed a day (``BACKLOG_DELAY``) in bulk for OmniQ
  (``enqueue_many(..., delay=...)``) and PgQueuer (``execute_after``), one
  ``schedule(delay=...)`` call each for Huey, which has no bulk API (``fill_rate``, ``fill_s``;
  Huey stores a delayed task in its queue and its consumer moves it to the schedule when
  it dequeues it, so for Huey a worker runs until its queue is empty, ``settle_s``, not
  timed in the rates); then the same probe again with the backlog waiting (``backlog_enqueue_rate``,
  ``backlog_drain_rate``, a second worker process). ``enqueue_ratio`` and ``drain_ratio`` =
  with the backlog / empty (1.0 = flat). OmniQ also reports, with the backlog and the
  worker stopped, the median ms of ``READ_CALLS`` calls each of ``stats()``,
  ``list_tasks(limit=100)`` and ``get_task(id)`` of a backlog task (``stats_ms``,
  ``list_ms``, ``get_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aredis

from benchmarks.adapters.base import REDIS_URL, REPO_ROOT, Adapter
from benchmarks.apps import bodies

WARMUP = 20
BULK_CHUNK = 1000
LATENCY_WARMUP = 5
LATENCY_MEAN_GAP = 0.05
STALL_SECONDS = 60.0
#: A drain/sleep repetition stops measuring this long after the worker was spawned; a
#: worker that has not finished by then (RQ forks per job) is rated over what it completed.
MEASURE_CAP_SECONDS = 150.0
CONCURRENCY = {
    "drain": 32,
    "memory": 32,
    "latency": 32,
    "sleep": 100,
    "ratelimit": 32,
    "backlog": 32,
}
#: The limit of the ratelimit workload, in starts per second.
RATE_LIMIT = 1000
#: Callers of the enqueue-concurrent workload: coroutines for async libraries, threads for
#: blocking ones (a web application's requests in flight at once).
CONCURRENT_COROUTINES = 64
CONCURRENT_THREADS = 16
#: The backlog workload: tasks enqueued and drained with an empty queue and beside the
#: backlog, how far ahead the backlog is delayed, and how often each read is timed.
BACKLOG_PROBE = 10_000
BACKLOG_DELAY = 86_400
READ_CALLS = 5


@dataclass(frozen=True)
class Spec:
    """One repetition of one cell, as handed from the harness to its child."""

    label: str
    backend: str
    workload: str
    run: int
    n: int
    workdir: str
    log_path: str
    seed: int
    timeout: float


class WorkloadError(RuntimeError):
    """A repetition that did not complete (its message goes into the results)."""


# -- worker process ------------------------------------------------------------------
def spawn_worker(adapter: Adapter, concurrency: int, log_path: str) -> subprocess.Popen[bytes]:
    """Start exactly one worker process (same process group as this child)."""
    cmd = adapter.worker(concurrency)
    env = dict(os.environ)
    env.update(adapter.child_env())
    env.update(cmd.env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    log = open(log_path, "ab")  # noqa: SIM115 (handed to the child, closed by the OS)
    log.write(f"\n$ {' '.join(cmd.argv)}\n".encode())
    log.flush()
    return subprocess.Popen(cmd.argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_worker(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds (the harness also kills the group)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may hold spaces; the fields after its closing ")" do not.
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def tree_peak_rss_kib(pid: int) -> int:
    """Sum of ``VmHWM`` (peak resident set) of ``pid`` and all its live descendants."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
        pending.extend(_children(current))
    return total


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and all its live descendants."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        total += _cpu_seconds(current)
        pending.extend(_children(current))
    return total


def _postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as fh:
                if fh.read().strip() == "postgres":
                    pids.append(int(entry))
    return pids


async def server_cpu_seconds(adapter: Adapter, mon: aredis.Redis) -> float | None:
    """CPU seconds the backend's server has used so far: Redis ``INFO cpu``, or the
    PostgreSQL processes' (those alive now); None for an embedded backend. The Redis
    figure includes the task bodies' instrumentation commands, the same for every
    library."""
    if adapter.backend == "redis":
        info = await mon.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    if adapter.backend == "postgres":
        return sum(_cpu_seconds(pid) for pid in _postgres_pids())
    return None


# -- helpers -------------------------------------------------------------------------
async def _enqueue(adapter: Adapter, kind: str, index: int = 0) -> None:
    if adapter.is_async:
        await adapter.aenqueue(kind, index)
    else:
        adapter.enqueue(kind, index)


async def _bulk(adapter: Adapter, kind: str, count: int) -> None:
    if adapter.is_async:
        await adapter.aenqueue_bulk(kind, count)
    else:
        adapter.enqueue_bulk(kind, count)


async def fill(adapter: Adapter, kind: str, n: int) -> None:
    """Enqueue ``n`` tasks, in bulk where the library can (not timed)."""
    if adapter.has_bulk:
        for start in range(0, n, BULK_CHUNK):
            await _bulk(adapter, kind, min(BULK_CHUNK, n - start))
    else:
        for _ in range(n):
            await _enqueue(adapter, kind)


async def wait_for(
    probe: Any,
    target: int,
    deadline: float,
    what: str,
    proc: subprocess.Popen[bytes] | None,
    partial_ok: bool = False,
) -> int:
    """Poll ``await probe()`` until it reaches ``target`` and return the value reached.

    Fails on a stall (no progress for a minute) or a dead worker; at ``deadline`` it fails
    too, unless ``partial_ok`` and at least two tasks completed.
    """
    last_value, last_change = -1, time.monotonic()
    while True:
        value = int(await probe())
        now = time.monotonic()
        if value >= target:
            return value
        if value != last_value:
            last_value, last_change = value, now
        if proc is not None and proc.poll() is not None:
            raise WorkloadError(
                f"worker exited with code {proc.returncode}; {value}/{target} {what}"
            )
        if now > deadline and partial_ok and value >= 2:
            return value
        if now > deadline or now - last_change > STALL_SECONDS:
            stalled = now - last_change
            raise WorkloadError(
                f"{target - value} of {target} {what} missing ({stalled:.0f} s without progress)"
            )
        await asyncio.sleep(0.02)


def storage_dir_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while walking
                total += os.path.getsize(os.path.join(root, name))
    return total


async def storage_bytes(adapter: Adapter, mon: aredis.Redis) -> int:
    """Redis ``used_memory``, ``pg_database_size``, the JetStream streams' bytes, or the size
    of the working directory."""
    if adapter.backend == "redis":
        info = await mon.info("memory")
        return int(info["used_memory"])
    if adapter.backend == "postgres":
        from benchmarks import pg

        return await pg.database_bytes()
    if adapter.backend == "nats":
        from benchmarks import natsjs

        return await natsjs.jetstream_bytes()
    return storage_dir_bytes(adapter.workdir)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# -- workloads -----------------------------------------------------------------------
class _CpuMeter:
    """The CPU a measured stretch cost this process (the producer) and the backend's
    server, per task (see :func:`server_cpu_seconds`)."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.mon = aredis.Redis.from_url(REDIS_URL)
        self.client_0 = 0.0
        self.server_0: float | None = None

    async def start(self) -> None:
        self.server_0 = await server_cpu_seconds(self.adapter, self.mon)
        self.client_0 = time.process_time()

    async def per_task(self, n: int) -> dict[str, float]:
        client = time.process_time() - self.client_0
        server = await server_cpu_seconds(self.adapter, self.mon)
        await self.mon.aclose()
        out = {"client_cpu_us_per_task": client / n * 1e6}
        if server is not None and self.server_0 is not None:
            out["server_cpu_us_per_task"] = (server - self.server_0) / n * 1e6
        return out


async def run_enqueue(adapter: Adapter, spec: Spec) -> dict[str, Any]:
    """Single-call enqueue rate."""
    meter = _CpuMeter(adapter)
    await adapter.open()
    try:
        for _ in range(WARMUP):
            await _enqueue(adapter, "noop")
        await meter.start()
        if adapter.is_async:
            start = time.perf_counter()
            for _ in range(spec.n):
                await adapter.aenqueue("noop")
            elapsed = time.perf_counter() - start
        else:
            start = time.perf_counter()
            for _ in range(spec.n):
                adapter.enqueue("noop")
            elapsed = time.perf_counter() - start
        cpu = await meter.per_task(spec.n)
    finally:
        await adapter.close()
    return {"rate": spec.n / elapsed, "n": spec.n, **cpu}


async def run_bulk(adapter: Adapter, spec: Spec) -> dict[str, Any]:
    """Bulk enqueue rate, one bulk call per 1,000 tasks."""
    meter = _CpuMeter(adapter)
    await adapter.open()
    try:
        await _bulk(adapter, "noop", WARMUP)
        await meter.start()
        start = time.perf_counter()
        for first in range(0, spec.n, BULK_CHUNK):
            await _bulk(adapter, "noop", min(BULK_CHUNK, spec.n - first))
        elapsed = time.perf_counter() - start
        cpu = await meter.per_task(spec.n)
    finally:
        await adapter.close()
    return {"rate": spec.n / elapsed, "n": spec.n, **cpu}


async def _drain_like(adapter: Adapter, spec: Spec, kind: str) -> dict[str, Any]:
    concurrency = CONCURRENCY[spec.workload]
    mon = aredis.Redis.from_url(REDIS_URL)
    try:
        await adapter.open()
        try:
            before = await storage_bytes(adapter, mon)
            await fill(adapter, kind, spec.n)
        finally:
            await adapter.close()
        # After close: whatever the producer buffered (events, say) is in storage by now.
        after = await storage_bytes(adapter, mon)
        spawned = time.time()
        proc = spawn_worker(adapter, concurrency, spec.log_path)
        try:
            deadline = time.monotonic() + min(spec.timeout - 20, MEASURE_CAP_SECONDS)
            # CPU from the first completion on (the worker's start-up and imports left
            # out): what one task costs the worker and the server, a figure the
            # machine's noise moves far less than a rate.
            started = await wait_for(
                lambda: _count(mon), 1, deadline, "tasks not completed", proc, partial_ok=True
            )
            worker_cpu_0 = tree_cpu_seconds(proc.pid)
            server_cpu_0 = await server_cpu_seconds(adapter, mon)
            await wait_for(
                lambda: _count(mon), spec.n, deadline, "tasks not completed", proc, partial_ok=True
            )
            worker_cpu_1 = tree_cpu_seconds(proc.pid)
            server_cpu_1 = await server_cpu_seconds(adapter, mon)
            # Counter and timestamps read atomically: a partial drain goes on meanwhile.
            pipe = mon.pipeline(transaction=True)
            pipe.get(bodies.COUNT)
            pipe.get(bodies.FIRST)
            pipe.get(bodies.LAST)
            raw_count, raw_first, raw_last = await pipe.execute()
            rss_kib = tree_peak_rss_kib(proc.pid)
        finally:
            stop_worker(proc)
    finally:
        await mon.aclose()
    done = int(raw_count or 0)
    first, last = float(raw_first or 0), float(raw_last or 0)
    measured = max(1, done - started)
    cpu = {"worker_cpu_us_per_task": (worker_cpu_1 - worker_cpu_0) / measured * 1e6}
    if server_cpu_0 is not None and server_cpu_1 is not None:
        cpu["server_cpu_us_per_task"] = (server_cpu_1 - server_cpu_0) / measured * 1e6
    return {
        **cpu,
        "rate": (done - 1) / (last - first) if last > first else float("nan"),
        "startup_s": first - spawned,
        "total_rate": done / (last - spawned),
        "completed": done,
        "peak_rss_mib": rss_kib / 1024,
        "storage_bytes_per_task": (after - before) / spec.n,
        "n": spec.n,
        "concurrency": concurrency,
    }


async def _count(mon: aredis.Redis) -> int:
    return int(await mon.get(bodies.COUNT) or 0)


async def run_drain(adapter: Adapter, spec: Spec) -> dict[str, Any]:
    """Pre-filled queue drained by one worker process (also the memory figures)."""
    return await _drain_like(adapter, spec, "drain")


async def run_sleep(adapter: Adapter, spec: Spec) -> dict[str, Any]:
    """Pre-filled 10 ms-sleep tasks drained at concurrency 100."""
    return await _drain_like(adapter, spec, "sleep")


async def run_ratelimit(adapter: Adapter, spec: Spec) -> dict[str, Any]:
    """The drain under ``rate_limit=f"{RATE_LIMIT}/s"``, reported beside the limit."""
    found = await _drain_like(adapter, spec, "ratelimit")
    elapsed = (found["completed"] - 1) / found["rate"] if found["rate"] == found["rate"] else 0
    steady = (found["completed"] - RATE_LIMIT) / elapsed if elapsed else float("nan")
    return {**found, "limit_per_s": RATE_LIMIT, "steady_rate": steady}


async def run_latency(adapter: Adapter, spec: Spec) -> dict[str, Any]:
    """Open-loop Poisson arrivals at an idle worker; enqueue call -> task body."""
    concurrency = CONCURRENCY["latency"]
    mon = aredis.Redis.from_url(REDIS_URL)
    rng = random.Random(spec.seed)
    total = LATENCY_WARMUP + spec.n
    sent: dict[int, float] = {}
    try:
        await adapter.open()
        try:
            spawned = time.time()
            proc = spawn_worker(adapter, concurrency, spec.log_path)
            try:
                await _enqueue(adapter, "latency", -1)

                async def llen() -> int:
                    return int(await mon.llen(bodies.LAT))

                await wait_for(llen, 1, time.monotonic() + 90, "liveness task", proc)
                alive = time.time()
                next_at = time.monotonic()
                for index in range(total):
                    next_at += rng.expovariate(1 / LATENCY_MEAN_GAP)
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent[index] = time.time()
                    await _enqueue(adapter, "latency", index)
                await wait_for(
                    llen, total + 1, time.monotonic() + 60, "latency tasks not started", proc
                )
            finally:
                stop_worker(proc)
        finally:
            await adapter.close()
        raw = await mon.lrange(bodies.LAT, 0, -1)
    finally:
        await mon.aclose()
    started: dict[int, float] = {}
    for item in raw:
        index_text, _, when = item.decode().partition(" ")
        started.setdefault(int(index_text), float(when))
    lat_ms = [(started[i] - sent[i]) * 1000 for i in range(LATENCY_WARMUP, total)]
    return {
        "p50_ms": percentile(lat_ms, 50),
        "p95_ms": percentile(lat_ms, 95),
        "p99_ms": percentile(lat_ms, 99),
        "max_ms": max(lat_ms),
        "startup_s": alive - spawned,
        "n": spec.n,
        "concurrency": concurrency,
    }


def run_sync(adapter: Adapter, spec: Spec) -> dict[str, Any]:
    """OmniQ sync facade vs AsyncOmniQ, same enqueue workload, same process."""
    from benchmarks.adapters.omniq_adapter import OmniQAdapter

    if not isinstance(adapter, OmniQAdapter):
        raise WorkloadError("the sync workload is OmniQ's only")
    sync_rate = adapter.sync_enqueue_rate(spec.n, WARMUP)
    async_rate = asyncio.run(adapter.async_enqueue_rate(spec.n, WARMUP))
    return {
        "sync_rate": sync_rate,
        "async_rate": async_rate,
        "ratio": async_rate / sync_rate,
        "n": spec.n,
    }


async def coroutines_rate(call: Callable[[], Awaitable[Any]], n: int, width: int) -> float:
    """Calls/s of ``n`` calls of ``call`` from ``width`` coroutines at once, each awaiting
    one call at a time (one concurrent round of ``max(WARMUP, width)`` calls first)."""

    async def round_of(count: int) -> float:
        pending = iter(range(count))

        async def caller() -> None:
            for _ in pending:  # shared: every call is made once, by whichever is free
                await call()

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(width)))
        return time.perf_counter() - start

    await round_of(max(WARMUP, width))
    return n / await round_of(n)


def threads_rate(call: Callable[[], Any], n: int, width: int) -> float:
    """Calls/s of ``n`` blocking calls of ``call`` from ``width`` threads at once, each
    making one call at a time (one concurrent round of ``max(WARMUP, width)`` first).

    The threads start together on a barrier; the first error any of them meets is raised.
    """

    def round_of(count: int) -> float:
        pending = iter(range(count))  # next() on it is atomic under the GIL
        errors: list[BaseException] = []
        barrier = threading.Barrier(width + 1)

        def caller() -> None:
            barrier.wait()
            try:
                for _ in pending:
                    call()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=caller, daemon=True) for _ in range(width)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise errors[0]
        return elapsed

    round_of(max(WARMUP, width))
    return n / round_of(n)


def run_enqueue_concurrent(adapter: Adapter, spec: Spec) -> dict[str, Any]:
    """Enqueue rate from many callers at once sharing one client (see the module doc)."""
    from benchmarks.adapters.omniq_adapter import OmniQAdapter

    async def measure() -> float:
        await adapter.open()
        try:
            if adapter.is_async:
                return await coroutines_rate(
                    lambda: adapter.aenqueue("noop"), spec.n, CONCURRENT_COROUTINES
                )
            # Blocking calls from threads while this loop waits: the libraries that run
            # here (Huey, RQ...) do not touch asyncio.
            return await asyncio.to_thread(
                threads_rate, lambda: adapter.enqueue("noop"), spec.n, CONCURRENT_THREADS
            )
        finally:
            await adapter.close()

    rate = asyncio.run(measure())
    found: dict[str, Any] = {"n": spec.n}
    if adapter.is_async:
        found.update(async_rate=rate, coroutines=CONCURRENT_COROUTINES)
    else:
        found.update(blocking_rate=rate, threads=CONCURRENT_THREADS)
    if isinstance(adapter, OmniQAdapter):
        # The blocking OmniQ, outside any running loop (it refuses to block inside one).
        found["blocking_rate"] = adapter.sync_concurrent_rate(spec.n, CONCURRENT_THREADS)
        found["threads"] = CONCURRENT_THREADS
    return found


async def _probe(
    adapter: Adapter, spec: Spec, mon: aredis.Redis, count: int
) -> tuple[float, float]:
    """Enqueue ``count`` drain tasks one call at a time (timed), then drain them with one
    worker process; return (enqueue rate, drain rate). The completion counters are reset
    first, so a second probe in the same child starts from zero."""
    await mon.delete(bodies.COUNT, bodies.FIRST, bodies.LAST)
    if adapter.is_async:
        start = time.perf_counter()
        for _ in range(count):
            await adapter.aenqueue("drain")
        elapsed = time.perf_counter() - start
    else:
        start = time.perf_counter()
        for _ in range(count):
            adapter.enqueue("drain")
        elapsed = time.perf_counter() - start
    proc = spawn_worker(adapter, CONCURRENCY["backlog"], spec.log_path)
    try:
        deadline = time.monotonic() + MEASURE_CAP_SECONDS
        await wait_for(lambda: _count(mon), count, deadline, "probe tasks not completed", proc)
        pipe = mon.pipeline(transaction=True)
        pipe.get(bodies.COUNT)
        pipe.get(bodies.FIRST)
        pipe.get(bodies.LAST)
        raw_count, raw_first, raw_last = await pipe.execute()
    finally:
        stop_worker(proc)
    done, first, last = int(raw_count or 0), float(raw_first or 0), float(raw_last or 0)
    drain_rate = (done - 1) / (last - first) if last > first else float("nan")
    return count / elapsed, drain_rate


async def _settle(adapter: Adapter, spec: Spec) -> float:
    """Run a worker until the backlog is where it waits (Huey's schedule); its seconds."""

    async def moved() -> int:
        return spec.n - adapter.backlog_unsettled()

    start = time.perf_counter()
    proc = spawn_worker(adapter, CONCURRENCY["backlog"], spec.log_path)
    try:
        deadline = time.monotonic() + spec.timeout
        await wait_for(moved, spec.n, deadline, "backlog tasks not moved to the schedule", proc)
    finally:
        stop_worker(proc)
    return time.perf_counter() - start


async def run_backlog(adapter: Adapter, spec: Spec) -> dict[str, Any]:
    """The probe with an empty queue, then beside ``spec.n`` waiting tasks (module doc)."""
    from benchmarks.adapters.omniq_adapter import OmniQAdapter

    probe = min(BACKLOG_PROBE, max(spec.n // 10, 1000))
    mon = aredis.Redis.from_url(REDIS_URL)
    found: dict[str, Any] = {"n": spec.n, "backlog": spec.n, "probe": probe}
    try:
        await adapter.open()
        try:
            for _ in range(WARMUP):
                await _enqueue(adapter, "noop")
            empty_enqueue, empty_drain = await _probe(adapter, spec, mon, probe)
            start = time.perf_counter()
            if adapter.is_async:
                for first in range(0, spec.n, BULK_CHUNK):
                    await adapter.aenqueue_backlog(min(BULK_CHUNK, spec.n - first))
            else:
                adapter.enqueue_backlog(spec.n)
            fill_s = time.perf_counter() - start
            if adapter.backlog_settles_in_worker:
                found["settle_s"] = await _settle(adapter, spec)
            backlog_enqueue, backlog_drain = await _probe(adapter, spec, mon, probe)
            if isinstance(adapter, OmniQAdapter):
                found.update(await adapter.read_latencies(READ_CALLS))
        finally:
            await adapter.close()
    finally:
        await mon.aclose()
    found.update(
        empty_enqueue_rate=empty_enqueue,
        empty_drain_rate=empty_drain,
        backlog_enqueue_rate=backlog_enqueue,
        backlog_drain_rate=backlog_drain,
        enqueue_ratio=backlog_enqueue / empty_enqueue,
        drain_ratio=backlog_drain / empty_drain,
        fill_s=fill_s,
        fill_rate=spec.n / fill_s,
    )
    return found


async def bare_bodies(body: Callable[[], Awaitable[None]], n: int, width: int) -> float:
    """Bodies/s of ``n`` task bodies run ``width`` at a time in one asyncio loop, with no
    queue at all: the ceiling of any single-process async worker for that body here."""
    pending = iter(range(n))

    async def lane() -> None:
        for _ in pending:
            await body()

    try:
        await body()  # connect outside the timing
        start = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(width)))
        rate = n / (time.perf_counter() - start)
        client = aredis.Redis.from_url(REDIS_URL)
        await client.delete(bodies.COUNT, bodies.FIRST, bodies.LAST)
        await client.aclose()
    finally:
        await bodies.close_async_client()
    return rate


def calibrate(workdir: Path, postgres: bool = False) -> dict[str, float]:
    """Raw engine limits on this machine right now (compare with the reference's).

    redis-py asyncio and sync sequential ``LPUSH`` on one connection (reference: 11,447/s and
    17,760/s), and SQLite WAL single-row transactions with ``synchronous=FULL`` and
    ``NORMAL`` (reference: 11,808/s and 35,087/s): the disk's fsync rate shows in the first.
    With ``postgres``, single-row autocommit INSERTs through asyncpg (reference:
    7.1k/s). Also the drain and sleep bodies with no queue (:func:`bare_bodies`, at the
    workloads' concurrency): what a worker's own overhead is measured against.
    """
    import sqlite3

    import redis

    async def async_lpush(n: int) -> float:
        client = aredis.Redis.from_url(REDIS_URL)
        try:
            start = time.perf_counter()
            for _ in range(n):
                await client.lpush("qbench:calibrate", b"x")
            rate = n / (time.perf_counter() - start)
            await client.delete("qbench:calibrate")
        finally:
            await client.aclose()
        return rate

    out = {"redis_asyncio_lpush_per_s": asyncio.run(async_lpush(5000))}
    out["bare_drain_per_s"] = asyncio.run(bare_bodies(bodies.drain_async, 10_000, 32))
    out["bare_sleep_per_s"] = asyncio.run(bare_bodies(bodies.sleep_async, 5_000, 100))
    client = redis.Redis.from_url(REDIS_URL)
    start = time.perf_counter()
    for _ in range(5000):
        client.lpush("qbench:calibrate", b"x")
    out["redis_sync_lpush_per_s"] = 5000 / (time.perf_counter() - start)
    client.delete("qbench:calibrate")
    client.close()
    workdir.mkdir(parents=True, exist_ok=True)
    for sync, n in (("FULL", 300), ("NORMAL", 3000)):
        path = workdir / f"calibrate-{sync}.db"
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
            start = time.perf_counter()
            for _ in range(n):
                conn.execute("BEGIN")
                conn.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 100,))
                conn.execute("COMMIT")
            out[f"sqlite_wal_{sync.lower()}_tx_per_s"] = n / (time.perf_counter() - start)
        finally:
            conn.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    if postgres:
        from benchmarks import pg

        pg.reset_database()
        out["postgres_asyncpg_insert_per_s"] = asyncio.run(pg.insert_rate(3000))
    return out


ASYNC_WORKLOADS = {
    "enqueue": run_enqueue,
    "bulk": run_bulk,
    "drain": run_drain,
    "memory": run_drain,
    "latency": run_latency,
    "sleep": run_sleep,
    "ratelimit": run_ratelimit,
    "backlog": run_backlog,
}


def run(adapter: Adapter, spec: Spec) -> dict[str, Any]:
    """Run one repetition of ``spec.workload`` (no event loop may be running)."""
    if spec.workload == "sync":
        return run_sync(adapter, spec)
    if spec.workload == "enqueue-concurrent":
        return run_enqueue_concurrent(adapter, spec)
    return asyncio.run(ASYNC_WORKLOADS[spec.workload](adapter, spec))
