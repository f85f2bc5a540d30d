"""PostgreSQL storage (asyncpg): the task queue, results, events and schedules in one schema.

``postgresql://user@host:port/db`` (``postgres://`` too). Every table lives in a schema
named after ``settings.namespace`` (default ``omniq``; a ``?namespace=name`` in the URL
wins), created with its tables on first connect, so applications share a database safely.
``?pool_size=N`` sets how many connections the pool may open (default 10, at least 2).

Every component works standalone from a URL, on a pool of its own::

    async with AsyncPostgresQueue("postgresql://postgres@127.0.0.1/app") as queue:
        await queue.enqueue([task])

or on the one pool a :class:`PostgresBackend` shares among the four, which lets one
statement span them (tasks with their events, acks with their results). Blocking twins
(``PostgresQueue``, ``PostgresResultStorage``…) run the same coroutines on a private loop.

The package: :mod:`~omniq.storage.postgres.connection` (the pool, the listener, the
schema migrations, asyncpg's errors translated), one module per component, and ``sql/``
(``queries.sql``, every statement by name; ``NNNN_*.sql``, the migrations).
"""

from __future__ import annotations

from omniq.storage._bundle import BackendSpec, Bundle
from omniq.storage.postgres.connection import PostgresConnection
from omniq.storage.postgres.events import AsyncPostgresEventStorage, PostgresEventStorage
from omniq.storage.postgres.queue import AsyncPostgresQueue, PostgresQueue
from omniq.storage.postgres.results import AsyncPostgresResultStorage, PostgresResultStorage
from omniq.storage.postgres.schedules import (
    AsyncPostgresScheduleStorage,
    PostgresScheduleStorage,
)

__all__ = [
    "BACKEND",
    "AsyncPostgresEventStorage",
    "AsyncPostgresQueue",
    "AsyncPostgresResultStorage",
    "AsyncPostgresScheduleStorage",
    "PostgresBackend",
    "PostgresConnection",
    "PostgresEventStorage",
    "PostgresQueue",
    "PostgresResultStorage",
    "PostgresScheduleStorage",
]

#: The PostgreSQL backend, for :mod:`omniq.storage.registry`.
BACKEND = BackendSpec(
    name="postgres",
    connection=PostgresConnection,
    task_queue=AsyncPostgresQueue,
    result_storage=AsyncPostgresResultStorage,
    event_storage=AsyncPostgresEventStorage,
    schedule_storage=AsyncPostgresScheduleStorage,
)


class PostgresBackend(Bundle[
    AsyncPostgresQueue, AsyncPostgresResultStorage,
    AsyncPostgresEventStorage, AsyncPostgresScheduleStorage,
]):  # fmt: skip
    """The task queue, results, events and schedules in one PostgreSQL schema, on one pool.

    Example::

        backend = PostgresBackend("postgresql://postgres@127.0.0.1:5432/app", settings)
        queue = backend.task_queue()
        await queue.connect()  # opens the shared pool, creates the schema if needed
    """

    spec = BACKEND
    connection: PostgresConnection

    @property
    def namespace(self) -> str:
        """The namespace, which names the schema."""
        return self.connection.namespace

    @property
    def schema(self) -> str:
        """The quoted schema name, ready to prefix table names in SQL."""
        return self.connection.schema
