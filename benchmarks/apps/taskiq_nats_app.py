"""taskiq-nats broker and tasks: ``PullBasedJetStreamBroker`` with its defaults.

As in the peer reference run: a durable pull consumer on a file-storage stream, fetch batch 1
(the broker's defaults), on the benchmark's NATS server.
"""

from __future__ import annotations

from taskiq import AsyncBroker
from taskiq_nats import PullBasedJetStreamBroker

from benchmarks.adapters.base import NATS_URL
from benchmarks.apps import bodies

broker: AsyncBroker = PullBasedJetStreamBroker(
    [NATS_URL], subject="taskiq_bench_tasks", stream_name="taskiq_bench", durable="taskiq_bench"
)


@broker.task(task_name="noop")
async def noop() -> None:
    """Do nothing."""


@broker.task(task_name="drain")
async def drain() -> None:
    """Drain body."""
    await bodies.drain_async()


@broker.task(task_name="latency")
async def latency(index: int) -> None:
    """Latency body."""
    await bodies.latency_async(index)


@broker.task(task_name="sleep")
async def sleep() -> None:
    """Sleep body."""
    await bodies.sleep_async()
