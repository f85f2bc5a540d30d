"""Procrastinate app for ``procrastinate --app=benchmarks.apps.procrastinate_app.app worker``.

One module serves the producer (the adapter defers through :data:`app`) and the worker
(the CLI loads :data:`app` by dotted path), so both see the same tasks under the same names.
The database is the benchmark's PostgreSQL database, re-created empty per repetition.
"""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

from benchmarks.adapters.base import POSTGRES_URL
from benchmarks.apps import bodies

#: Ceiling on the worker's pool: the server's ``max_connections`` (100) is shared with the
#: producer, the harness and any other run. The cap hardly binds: the pool only grows while
#: a job waits for a connection, and pg_stat_activity sampled during sleep runs
#: (concurrency 100) never showed more than 9 connections on the database.
POOL_CAP = 50


def pool_max_size(concurrency: int) -> int:
    """The worker's pool ceiling: concurrency + 1, as procrastinate's docs advise.

    "Mind the size of your PostgreSQL pool" (docs, Discussions): the shorter the jobs, the
    more the pool should hold as many connections as the concurrency, plus one, so that no
    job waits for a connection to record its status (the single fetch loop holds one).
    The LISTEN connection is outside the pool.
    """
    return min(concurrency + 1, POOL_CAP)


def _pool_args() -> dict[str, int]:
    concurrency = os.environ.get("BENCH_CONCURRENCY")
    if concurrency is None:  # the producer: one call at a time, psycopg's pool of 4 is plenty
        return {}
    # min_size stays psycopg's 4 (the pool grows on demand), so the worker's startup is not
    # spent opening dozens of connections before the first job is fetched.
    return {"max_size": pool_max_size(int(concurrency))}


app = App(connector=PsycopgConnector(conninfo=POSTGRES_URL, **_pool_args()))


# Explicit names: procrastinate otherwise names a task by its function's import path,
# which differs if the module is ever imported under another name (``__main__``).
@app.task(name="noop")
async def noop() -> None:
    """Do nothing."""


@app.task(name="drain")
async def drain() -> None:
    """Drain body."""
    await bodies.drain_async()


@app.task(name="latency")
async def latency(index: int) -> None:
    """Latency body (procrastinate passes the job's arguments as keywords)."""
    await bodies.latency_async(index)


@app.task(name="sleep")
async def sleep() -> None:
    """Sleep body."""
    await bodies.sleep_async()
