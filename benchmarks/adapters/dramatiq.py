"""Dramatiq 2.2 on Redis DB 15: sync ``actor.send()``; ``dramatiq`` CLI, 1 process."""

from __future__ import annotations

from typing import Any

from benchmarks.adapters.base import Adapter, WorkerCommand, cli


class DramatiqAdapter(Adapter):
    """One worker process with N threads."""

    library = "dramatiq"
    dist = "dramatiq"
    is_async = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app: Any = None

    def worker_setting(self, concurrency: int) -> str:
        """Processes and threads."""
        return f"dramatiq --processes 1 --threads {concurrency} (defaults 2 x 8)"

    async def open(self) -> None:
        """Import the actors (the broker connects lazily)."""
        from benchmarks.apps import dramatiq_app

        self._app = dramatiq_app

    async def close(self) -> None:
        """Close the broker."""
        if self._app is not None:
            self._app.broker.close()

    def enqueue(self, kind: str, index: int = 0) -> None:
        """``actor.send(*args)``."""
        actor = getattr(self._app, kind)
        if kind == "latency":
            actor.send(index)
        else:
            actor.send()

    def worker(self, concurrency: int) -> WorkerCommand:
        """``dramatiq benchmarks.apps.dramatiq_app --processes 1 --threads N``."""
        return WorkerCommand(
            [
                cli("dramatiq"),
                "benchmarks.apps.dramatiq_app",
                "--processes",
                "1",
                "--threads",
                str(concurrency),
            ]
        )
