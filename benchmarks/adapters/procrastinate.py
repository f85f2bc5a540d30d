"""Procrastinate 3.10 on PostgreSQL: ``Task.defer_async`` / ``batch_defer_async``; worker
via the ``procrastinate`` CLI."""

from __future__ import annotations

from typing import Any

from benchmarks.adapters.base import Adapter, WorkerCommand, cli

_APP = "benchmarks.apps.procrastinate_app.app"


class ProcrastinateAdapter(Adapter):
    """Procrastinate with ``PsycopgConnector``, one ``procrastinate worker`` process."""

    library = "procrastinate"
    dist = "procrastinate"
    backends = ("postgres",)
    is_async = True
    has_bulk = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module: Any = None

    def worker_setting(self, concurrency: int) -> str:
        """Concurrency, the wake-up mechanism and the pool ceiling the app applies."""
        from benchmarks.apps.procrastinate_app import pool_max_size

        return (
            f"procrastinate worker --concurrency {concurrency} (default 1); "
            "LISTEN/NOTIFY on, polling interval 5 s (default); "
            f"pool max_size {pool_max_size(concurrency)} (default 4)"
        )

    async def open(self) -> None:
        """Open the app's pool and install procrastinate's schema in the fresh database."""
        from benchmarks.apps import procrastinate_app

        self._module = procrastinate_app
        await procrastinate_app.app.open_async()
        # The harness hands every repetition an empty database, and procrastinate does not
        # create its tables on connect (unlike SAQ): apply the bundled schema once here.
        await procrastinate_app.app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        """Close the app's pool."""
        if self._module is not None:
            await self._module.app.close_async()

    async def aenqueue(self, kind: str, index: int = 0) -> None:
        """``task.defer_async(**kwargs)``: one statement; a row trigger sends the NOTIFY."""
        task = getattr(self._module, kind)
        if kind == "latency":
            await task.defer_async(index=index)
        else:
            await task.defer_async()

    async def aenqueue_bulk(self, kind: str, count: int) -> None:
        """``task.batch_defer_async(*kwargs)``: one multi-row INSERT for the whole batch.

        (procrastinate_defer_jobs_v1 runs ``INSERT ... SELECT FROM unnest(jobs)``.)
        """
        task = getattr(self._module, kind)
        if kind == "latency":
            await task.batch_defer_async(*({"index": i} for i in range(count)))
        else:
            await task.batch_defer_async(*({} for _ in range(count)))

    def worker(self, concurrency: int) -> WorkerCommand:
        """``procrastinate --app=... --log-level=warning worker --concurrency N``.

        ``--log-level`` is a top-level option, so it goes before the subcommand; at the
        default INFO the worker writes two lines per job, which would dominate the drain.
        ``BENCH_CONCURRENCY`` lets the app size its connection pool to match.
        """
        return WorkerCommand(
            [
                cli("procrastinate"),
                f"--app={_APP}",
                "--log-level=warning",
                "worker",
                "--concurrency",
                str(concurrency),
            ],
            {"BENCH_CONCURRENCY": str(concurrency)},
        )
