"""taskiq 0.12.6: taskiq-redis 1.0.9 on Redis DB 15 (stream broker and list broker), and
taskiq-nats 0.6.0 on NATS JetStream (pull-based broker)."""

from __future__ import annotations

from typing import Any, ClassVar

from benchmarks.adapters.base import Adapter, WorkerCommand, cli


class TaskiqStreamAdapter(Adapter):
    """``RedisStreamBroker`` (consumer group with acks); ``taskiq worker --workers 1``."""

    library = "taskiq"
    dist = "taskiq"
    broker_kind: ClassVar[str] = "stream"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app: Any = None

    @classmethod
    def version(cls) -> str:
        """taskiq and taskiq-redis versions."""
        import importlib.metadata as md

        return f"{md.version('taskiq')} (taskiq-redis {md.version('taskiq-redis')})"

    def worker_setting(self, concurrency: int) -> str:
        """Broker, workers and async task limit."""
        broker = "RedisStreamBroker" if self.broker_kind == "stream" else "ListQueueBroker"
        return (
            f"{broker}; taskiq worker --workers 1 --max-async-tasks {concurrency} "
            "(defaults 2 / 100)"
        )

    def child_env(self) -> dict[str, str]:
        """Which broker the app module builds."""
        return {"BENCH_TASKIQ_BROKER": self.broker_kind}

    def app_module(self) -> str:
        """The module holding the broker and its tasks."""
        return "benchmarks.apps.taskiq_app"

    async def open(self) -> None:
        """Start the broker (declares the consumer group for streams)."""
        import importlib

        self._app = importlib.import_module(self.app_module())
        await self._app.broker.startup()

    async def close(self) -> None:
        """Shut the broker down."""
        if self._app is not None:
            await self._app.broker.shutdown()

    async def aenqueue(self, kind: str, index: int = 0) -> None:
        """``task.kiq(*args)``."""
        task = getattr(self._app, kind)
        if kind == "latency":
            await task.kiq(index)
        else:
            await task.kiq()

    def worker(self, concurrency: int) -> WorkerCommand:
        """``taskiq worker <app module>:broker``."""
        return WorkerCommand(
            [
                cli("taskiq"),
                "worker",
                f"{self.app_module()}:broker",
                "--workers",
                "1",
                "--max-async-tasks",
                str(concurrency),
                "--log-level",
                "WARNING",
            ]
        )


class TaskiqListAdapter(TaskiqStreamAdapter):
    """``ListQueueBroker`` (BRPOP, no acks)."""

    broker_kind = "list"


class TaskiqNatsAdapter(TaskiqStreamAdapter):
    """taskiq-nats ``PullBasedJetStreamBroker`` (durable pull consumer, acks, fetch batch 1)."""

    broker_kind = "nats"

    @classmethod
    def version(cls) -> str:
        """taskiq and taskiq-nats versions."""
        import importlib.metadata as md

        return f"{md.version('taskiq')} (taskiq-nats {md.version('taskiq-nats')})"

    def worker_setting(self, concurrency: int) -> str:
        """Broker, workers and async task limit."""
        return (
            "PullBasedJetStreamBroker (defaults); taskiq worker --workers 1 "
            f"--max-async-tasks {concurrency} (defaults 2 / 100)"
        )

    def app_module(self) -> str:
        """The NATS app module."""
        return "benchmarks.apps.taskiq_nats_app"
