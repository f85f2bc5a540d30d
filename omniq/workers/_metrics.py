"""A worker pool's Prometheus metrics (``metrics_port``, the ``metrics`` extra).

While a pool runs with ``metrics_port`` set, :func:`serve_metrics` serves, at
``http://<metrics_host>:<metrics_port>/metrics``, the names of SPEC §8:

- ``omniq_tasks_total{queue,task,status}``: attempts that ended, by the status each left
  its task in (``complete``, ``failed``, ``retrying``, ``cancelled``, ``expired``);
- ``omniq_task_duration_seconds{queue,task}``: how long each run took (a histogram);
- ``omniq_task_wait_seconds{queue}``: from the time a run was due to its start;
- ``omniq_tasks_running{queue}``: runs under way;
- ``omniq_queue_depth{queue,status}``: the tasks of the pool's queues by status, read
  from the queue's ``stats()`` once per scrape.

Everything is recorded in the pool's own process, on its outcome path: the runs of
``process`` and ``gevent`` workers, which happen in child processes, are counted by the
parent that hands them out. Each pool has a registry of its own (not prometheus_client's
global one). prometheus_client is imported only here, and only when a pool serves
metrics: without ``metrics_port`` nothing of this runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from omniq.errors import ConfigError
from omniq.models import Task, TaskStatus, utcnow

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from omniq.engine import Engine

__all__ = ["PoolMetrics", "serve_metrics"]

logger = logging.getLogger("omniq.worker")

#: Seconds, from 5 ms to an hour: tasks range from quick calls to long batch jobs.
BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
#: How long a scrape waits for the queue's counts before leaving the depth out.
_STATS_TIMEOUT = 5.0


class PoolMetrics:
    """The metrics of one pool, in ``registry``; the pool's outcome path calls
    :meth:`finished` and wraps each run in :meth:`attempt`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.tasks = Counter(
            "omniq_tasks",
            "Task attempts that ended, by the status they left the task in.",
            ("queue", "task", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "omniq_task_duration_seconds",
            "How long task runs took.",
            ("queue", "task"),
            buckets=BUCKETS,
            registry=registry,
        )
        self.wait = Histogram(
            "omniq_task_wait_seconds",
            "From the time a task run was due to its start.",
            ("queue",),
            buckets=BUCKETS,
            registry=registry,
        )
        self.running = Gauge(
            "omniq_tasks_running", "Task runs under way.", ("queue",), registry=registry
        )

    def finished(self, task: Task, status: TaskStatus) -> None:
        """An attempt of ``task`` ended, leaving it ``status``."""
        self.tasks.labels(task.queue, task.func, status.value).inc()

    @contextlib.contextmanager
    def attempt(self, task: Task, held: set[str]) -> Iterator[None]:
        """Around one run of ``task``: its wait, its place among the running, and (when
        it ends by itself) its duration; a run stopped because its task was cancelled
        (no longer in ``held``, the ids the pool holds) counts as ``cancelled``."""
        due = task.due_at or task.created_at
        self.wait.labels(task.queue).observe(max(0.0, (utcnow() - due).total_seconds()))
        running = self.running.labels(task.queue)
        running.inc()
        began = time.perf_counter()
        try:
            yield
        except Exception:
            self.duration.labels(task.queue, task.func).observe(time.perf_counter() - began)
            raise
        except BaseException:
            if task.id not in held:
                self.finished(task, TaskStatus.CANCELLED)
            raise
        else:
            self.duration.labels(task.queue, task.func).observe(time.perf_counter() - began)
        finally:
            running.dec()


class _Hooked(Protocol):
    """A part of the pool's outcome path that records into the pool's metrics."""

    metrics: PoolMetrics | None


class _QueueDepth:
    """``omniq_queue_depth``: the queue's ``stats()`` for the pool's queues, read on
    the pool's event loop once per scrape (the scrape runs on the server's thread)."""

    def __init__(
        self,
        stats: Callable[[], Coroutine[Any, Any, dict[str, dict[str, int]]]],
        queues: Sequence[str],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._stats = stats
        self._queues = tuple(queues)
        self._loop = loop

    def _family(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily(
            "omniq_queue_depth", "Tasks of the queue by status.", labels=("queue", "status")
        )

    def describe(self) -> Iterator[Any]:
        # Registering a collector without describe() would collect (read stats) at once.
        yield self._family()

    def collect(self) -> Iterator[Any]:
        try:
            reading = asyncio.run_coroutine_threadsafe(self._stats(), self._loop)
            counts = reading.result(_STATS_TIMEOUT)
        except Exception as exc:  # a failing store must not fail the scrape's other metrics
            logger.warning("metrics: reading the queue's counts failed: %r", exc)
            return
        family = self._family()
        for queue in self._queues:
            found = counts.get(queue, {})
            for status in TaskStatus:
                family.add_metric((queue, status.value), found.get(status.value, 0))
        yield family


def serve_metrics(
    engine: Engine, queues: Sequence[str], port: int, hooked: Sequence[_Hooked]
) -> asyncio.Task[None]:
    """Serve a fresh set of metrics for a pool on ``port`` (at the ``metrics_host``
    setting's address) and have ``hooked`` record into it; the task returned holds the
    server until it is cancelled, then stops it.

    ``ConfigError`` when prometheus_client is not installed or the port cannot be
    listened on (both before anything starts).
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"metrics_port={port!r}: expected a TCP port number (1 to 65535)")
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise ConfigError(
            "metrics_port needs prometheus_client: pip install 'omniq[metrics]'"
        ) from exc
    host = engine.settings.metrics_host
    registry = CollectorRegistry(auto_describe=False)
    metrics = PoolMetrics(registry)
    queue = engine.queue
    registry.register(_QueueDepth(queue.stats, queues, asyncio.get_running_loop()))
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"metrics_port={port}: cannot serve metrics on {host}:{port} ({exc.strerror or exc})"
        ) from None
    for part in hooked:
        part.metrics = metrics
    logger.info("metrics: serving http://%s:%d/metrics", host, port)

    async def hold() -> None:
        try:
            await asyncio.Future()
        finally:
            for part in hooked:
                part.metrics = None
            # shutdown() waits for the serving loop's next poll (up to half a second).
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            thread.join()

    return asyncio.create_task(hold(), name="omniq-metrics")
