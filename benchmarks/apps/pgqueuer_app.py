"""PgQueuer worker factory for ``pgq run benchmarks.apps.pgqueuer_app:create_pgqueuer``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job

from benchmarks.adapters.base import POSTGRES_URL
from benchmarks.apps import bodies


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    """One asyncpg connection, one ``PgQueuer`` with the four benchmark entrypoints.

    PgQueuer 1.6's ``pgq run`` requires the factory to be an async context manager (a
    plain coroutine returning the ``PgQueuer``, as older releases took, raises a
    ``TypeError``); the connection is closed when the worker leaves it.
    """
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        pgq = PgQueuer(AsyncpgDriver(connection))

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            """Do nothing."""

        @pgq.entrypoint("drain")
        async def drain(job: Job) -> None:
            """Drain body."""
            await bodies.drain_async()

        @pgq.entrypoint("latency")
        async def latency(job: Job) -> None:
            """Latency body; the task's index travels as the payload bytes."""
            await bodies.latency_async(int(job.payload or b"0"))

        @pgq.entrypoint("sleep")
        async def sleep(job: Job) -> None:
            """Sleep body."""
            await bodies.sleep_async()

        yield pgq
    finally:
        await connection.close()
