"""The four benchmark tasks, registered on any taskiq broker (Redis and NATS apps)."""

from __future__ import annotations

from typing import Any

from taskiq import AsyncBroker

from benchmarks.apps import bodies


def register(broker: AsyncBroker) -> tuple[Any, Any, Any, Any]:
    """The four benchmark tasks on ``broker`` (the NATS app module shares them)."""

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

    return noop, drain, latency, sleep
