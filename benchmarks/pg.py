"""The benchmark's PostgreSQL database: reset before every repetition, and its size.

Every Postgres row (OmniQ, SAQ, Procrastinate, PgQueuer) runs in the database
:data:`~benchmarks.adapters.base.POSTGRES_DB`, dropped ``WITH (FORCE)`` and re-created
before each repetition, as in the peer reference benchmark; each library then installs
its own schema when its producer connects.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from benchmarks.adapters.base import POSTGRES_DB, POSTGRES_SERVER, POSTGRES_URL

#: Maintenance database the reset connects to (the benchmark database cannot drop itself).
ADMIN_URL = f"{POSTGRES_SERVER}/postgres"


async def _reset() -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        # Identifier quoting: the name comes from an environment variable.
        name = '"' + POSTGRES_DB.replace('"', '""') + '"'
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()


def reset_database() -> None:
    """Drop and re-create the benchmark database (no event loop may be running)."""
    asyncio.run(_reset())


async def _server_version() -> str:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def server_version() -> str:
    """The server's ``server_version``, or ``unreachable`` (no event loop may be running)."""
    try:
        return asyncio.run(_server_version())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return "unreachable"


async def database_bytes() -> int:
    """``pg_database_size`` of the benchmark database: tables, indexes and TOAST."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


async def insert_rate(n: int) -> float:
    """Single-row autocommit INSERTs per second on one asyncpg connection.

    The raw-driver limit a Postgres queue's single-call enqueue is measured against
    (reference: 7.1k/s with ``synchronous_commit=on``).
    """
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        # A logged table: a TEMP one would skip the WAL flush each commit pays for.
        await conn.execute("CREATE TABLE qbench_calibrate (id bigserial PRIMARY KEY, v bytea)")
        payload = b"x" * 100
        start = time.perf_counter()
        for _ in range(n):
            await conn.execute("INSERT INTO qbench_calibrate (v) VALUES ($1)", payload)
        rate = n / (time.perf_counter() - start)
        await conn.execute("DROP TABLE qbench_calibrate")
        return rate
    finally:
        await conn.close()
