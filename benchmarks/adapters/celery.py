"""Celery 5.6 on Redis DB 15 (no result backend): sync ``task.delay()``; thread pool."""

from __future__ import annotations

from typing import Any

from benchmarks.adapters.base import Adapter, WorkerCommand, cli


class CeleryAdapter(Adapter):
    """One ``celery worker`` process with the threads pool."""

    library = "celery"
    dist = "celery"
    is_async = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app: Any = None

    def worker_setting(self, concurrency: int) -> str:
        """Pool and concurrency."""
        return (
            f"celery worker -P threads -c {concurrency} (single process; default prefork "
            "pool = N processes); prefetch multiplier 4 (default)"
        )

    async def open(self) -> None:
        """Import the app (the producer connects on first publish)."""
        from benchmarks.apps import celery_app

        self._app = celery_app

    async def close(self) -> None:
        """Release the producer pool."""
        if self._app is not None:
            self._app.app.close()

    def enqueue(self, kind: str, index: int = 0) -> None:
        """``task.delay(*args)``."""
        task = getattr(self._app, kind)
        if kind == "latency":
            task.delay(index)
        else:
            task.delay()

    def worker(self, concurrency: int) -> WorkerCommand:
        """``celery -A benchmarks.apps.celery_app worker -P threads -c N``."""
        return WorkerCommand(
            [
                cli("celery"),
                "-A",
                "benchmarks.apps.celery_app",
                "worker",
                "-P",
                "threads",
                "-c",
                str(concurrency),
                "--loglevel",
                "WARNING",
            ]
        )
