"""OmniQ, programmed only against the public contract (SPEC §2 and §7).

Producer: ``AsyncOmniQ`` (and ``OmniQ`` for the sync workload) built by
:mod:`benchmarks.apps.omniq_app`; worker: ``omniq worker --app benchmarks.apps.omniq_app:oq
--concurrency N --worker-type async``.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from typing import Any, ClassVar

from benchmarks.adapters.base import (
    NATS_URL,
    POSTGRES_URL,
    REDIS_URL,
    Adapter,
    WorkerCommand,
    cli,
)


class OmniQAdapter(Adapter):
    """OmniQ with the event log on (the default), on Redis, SQLite, files, PostgreSQL or NATS."""

    library = "omniq"
    dist = "omniq"
    backends = ("redis", "sqlite", "file", "postgres", "nats")
    has_bulk = True
    has_backlog = True
    extra_workloads = ("sync", "ratelimit", "enqueue-concurrent")
    events: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._oq: Any = None
        self._tasks: Any = None
        self._backlog_id: str | None = None

    # -- where the storages live ----------------------------------------------------
    def url(self, suffix: str = "") -> str:
        """The queue/result/event URL of this backend (``suffix`` separates a 2nd store)."""
        if self.backend == "redis":
            return REDIS_URL
        if self.backend == "sqlite":
            return f"sqlite:///{self.workdir / f'bench{suffix}.db'}"
        if self.backend == "file":
            return f"file://{self.workdir / f'fq{suffix}'}"
        if self.backend == "postgres":
            return POSTGRES_URL  # the namespace (a schema) separates a second store
        if self.backend == "nats":
            return NATS_URL  # the namespace prefixes every stream and bucket
        raise ValueError(f"omniq adapter: unknown backend {self.backend!r}")

    def namespace(self, suffix: str = "") -> str:
        """Namespace (Redis key prefix, Postgres schema, NATS stream and bucket prefix); a suffix
        separates a 2nd store."""
        return f"bench{suffix.replace('-', '_')}"

    def worker_setting(self, concurrency: int) -> str:
        """Worker type, concurrency and whether events are logged."""
        events = "events on (same URL)" if self.events else "event_storage=False"
        # --loop auto, the default: uvloop, which the [bench] extra installs.
        return f"omniq worker --worker-type async --concurrency {concurrency} (uvloop); {events}"

    def child_env(self) -> dict[str, str]:
        """What :mod:`benchmarks.apps.omniq_app` reads."""
        return {
            "OMNIQ_BENCH_QUEUE_URL": self.url(),
            "OMNIQ_BENCH_EVENTS": "1" if self.events else "0",
            "OMNIQ_BENCH_NAMESPACE": self.namespace(),
        }

    # -- producer ------------------------------------------------------------------
    async def open(self) -> None:
        """Build and connect an ``AsyncOmniQ``."""
        from benchmarks.apps import omniq_app, omniq_tasks

        self._tasks = omniq_tasks
        self._oq = omniq_app.make_async(self.url(), self.events, self.namespace())
        await self._oq.connect()

    async def close(self) -> None:
        """Close it (flushes anything buffered)."""
        if self._oq is not None:
            await self._oq.close()

    async def aenqueue(self, kind: str, index: int = 0) -> None:
        """``await oq.enqueue(func, *args)``."""
        func = getattr(self._tasks, kind)
        if kind == "latency":
            await self._oq.enqueue(func, index)
        else:
            await self._oq.enqueue(func)

    async def aenqueue_bulk(self, kind: str, count: int) -> None:
        """``await oq.enqueue_many(func, [()] * count)`` (the ratelimit workload's tasks
        with ``rate_limit``)."""
        options = {}
        if kind == "ratelimit":
            from benchmarks.workloads import RATE_LIMIT

            options["rate_limit"] = f"{RATE_LIMIT}/s"
        await self._oq.enqueue_many(
            getattr(self._tasks, kind), [() for _ in range(count)], **options
        )

    async def aenqueue_backlog(self, count: int) -> None:
        """``await oq.enqueue_many(noop, [()] * count, delay=BACKLOG_DELAY)``; keeps one id
        for :meth:`read_latencies`."""
        from benchmarks.workloads import BACKLOG_DELAY

        ids = await self._oq.enqueue_many(
            self._tasks.noop, [() for _ in range(count)], delay=BACKLOG_DELAY
        )
        self._backlog_id = ids[len(ids) // 2]

    async def read_latencies(self, calls: int) -> dict[str, float]:
        """Median ms of ``stats()``, ``list_tasks(limit=100)`` and ``get_task(id)`` (an id of
        the backlog), each called ``calls`` times in turn, and the slowest of the three."""
        import statistics

        timed: dict[str, list[float]] = {"stats_ms": [], "list_ms": [], "get_ms": []}
        for _ in range(calls):
            for key, call in (
                ("stats_ms", self._oq.stats),
                ("list_ms", lambda: self._oq.list_tasks(limit=100)),
                ("get_ms", lambda: self._oq.get_task(self._backlog_id)),
            ):
                start = time.perf_counter()
                await call()
                timed[key].append((time.perf_counter() - start) * 1000)
        found = {key: statistics.median(values) for key, values in timed.items()}
        return {**found, "read_max_ms": max(found.values())}

    # -- sync vs async ---------------------------------------------------------------
    def sync_enqueue_rate(self, n: int, warmup: int) -> float:
        """Tasks/s of ``OmniQ.enqueue`` (blocking), on its own store; no loop running."""
        from benchmarks.apps import omniq_app, omniq_tasks

        with omniq_app.make_sync(self.url("-sync"), self.events, self.namespace("-sync")) as oq:
            for _ in range(warmup):
                oq.enqueue(omniq_tasks.noop)
            start = time.perf_counter()
            for _ in range(n):
                oq.enqueue(omniq_tasks.noop)
            elapsed = time.perf_counter() - start
        return n / elapsed

    def sync_concurrent_rate(self, n: int, threads: int) -> float:
        """Tasks/s of ``OmniQ.enqueue`` (blocking) from ``threads`` threads sharing one
        client, on its own store (the enqueue-concurrent workload's blocking row)."""
        from benchmarks.apps import omniq_app, omniq_tasks
        from benchmarks.workloads import threads_rate

        with omniq_app.make_sync(self.url("-sync"), self.events, self.namespace("-sync")) as oq:
            return threads_rate(lambda: oq.enqueue(omniq_tasks.noop), n, threads)

    async def async_enqueue_rate(self, n: int, warmup: int) -> float:
        """Tasks/s of ``await AsyncOmniQ.enqueue`` on its own store."""
        from benchmarks.apps import omniq_app, omniq_tasks

        oq = omniq_app.make_async(self.url("-async"), self.events, self.namespace("-async"))
        async with oq:
            for _ in range(warmup):
                await oq.enqueue(omniq_tasks.noop)
            start = time.perf_counter()
            for _ in range(n):
                await oq.enqueue(omniq_tasks.noop)
            elapsed = time.perf_counter() - start
        return n / elapsed

    # -- worker --------------------------------------------------------------------
    def worker(self, concurrency: int) -> WorkerCommand:
        """``omniq worker --app benchmarks.apps.omniq_app:oq`` (``python -m omniq`` if present)."""
        if importlib.util.find_spec("omniq.__main__") is not None:
            head = [sys.executable, "-m", "omniq"]
        else:
            head = [cli("omniq")]
        return WorkerCommand(
            [
                *head,
                "worker",
                "--app",
                "benchmarks.apps.omniq_app:oq",
                "--concurrency",
                str(concurrency),
                "--worker-type",
                "async",
                "--log-level",
                "WARNING",
            ],
            self.child_env(),
        )


class OmniQNoEventsAdapter(OmniQAdapter):
    """Extra row: ``event_storage=False``."""

    events = False
