"""PgQueuer 1.6 on PostgreSQL: ``Queries.enqueue``; worker via the ``pgq run`` CLI."""

from __future__ import annotations

from typing import Any

from benchmarks.adapters.base import POSTGRES_URL, Adapter, WorkerCommand, cli


class PgQueuerAdapter(Adapter):
    """PgQueuer with its defaults except ``--max-concurrent-tasks``, one worker process."""

    library = "pgqueuer"
    dist = "pgqueuer"
    backends = ("postgres",)
    is_async = True
    has_bulk = True
    has_backlog = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connection: Any = None
        self._queries: Any = None

    def worker_setting(self, concurrency: int) -> str:
        """Concurrency cap, batch size and wake-up mechanism."""
        return (
            f"pgq run --max-concurrent-tasks {concurrency} (default unlimited), "
            "--batch-size 10 (default); LISTEN/NOTIFY"
        )

    async def open(self) -> None:
        """Connect with asyncpg and install PgQueuer's schema in the fresh database."""
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        self._connection = await asyncpg.connect(POSTGRES_URL)
        self._queries = Queries(AsyncpgDriver(self._connection))
        # The harness re-creates the database per repetition, so the schema is never
        # there yet; the check keeps a second open() in the same database harmless.
        if not await self._queries.schema_is_installed():
            await self._queries.install()

    async def close(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def aenqueue(self, kind: str, index: int = 0) -> None:
        """``Queries.enqueue(entrypoint, payload)``: one INSERT per call."""
        payload = str(index).encode() if kind == "latency" else None
        await self._queries.enqueue(kind, payload)

    async def aenqueue_bulk(self, kind: str, count: int) -> None:
        """The list form of ``Queries.enqueue``: one array INSERT for ``count`` jobs."""
        await self._queries.enqueue([kind] * count, [None] * count, [0] * count)

    async def aenqueue_backlog(self, count: int) -> None:
        """The list form of ``Queries.enqueue`` with ``execute_after`` a day ahead."""
        from datetime import timedelta

        from benchmarks.workloads import BACKLOG_DELAY

        after = timedelta(seconds=BACKLOG_DELAY)
        await self._queries.enqueue(["noop"] * count, [None] * count, [0] * count, [after] * count)

    def worker(self, concurrency: int) -> WorkerCommand:
        """``pgq run benchmarks.apps.pgqueuer_app:create_pgqueuer --max-concurrent-tasks N``."""
        return WorkerCommand(
            [
                cli("pgq"),
                "run",
                "benchmarks.apps.pgqueuer_app:create_pgqueuer",
                "--max-concurrent-tasks",
                str(concurrency),
                # The default INFO level logs worker lifecycle lines; WARNING keeps the
                # log to problems, like the other peers' workers.
                "--log-level",
                "WARNING",
            ]
        )
