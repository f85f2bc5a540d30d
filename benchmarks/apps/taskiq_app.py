"""taskiq broker and tasks; ``BENCH_TASKIQ_BROKER`` is ``stream`` (default) or ``list``.

``stream`` = ``RedisStreamBroker`` (consumer group, acks), ``list`` = ``ListQueueBroker``.
"""

from __future__ import annotations

import os

from taskiq import AsyncBroker
from taskiq_redis import ListQueueBroker, RedisStreamBroker

from benchmarks.apps import bodies

URL = "redis://127.0.0.1:6379/15"

broker: AsyncBroker = (
    ListQueueBroker(URL)
    if os.environ.get("BENCH_TASKIQ_BROKER", "stream") == "list"
    else RedisStreamBroker(URL)
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
