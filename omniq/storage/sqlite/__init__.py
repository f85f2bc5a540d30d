"""SQLite storage: the embedded default.

One database file holds the task queue, the results, the event log and the schedules.
It is safe for several worker processes on one host: the file is in WAL mode, every write
that spans statements runs in ``BEGIN IMMEDIATE`` (so writers queue on the busy timeout
instead of failing on a lock upgrade), and a claim is one short write transaction.

Every component works standalone from a URL, on a connection of its own::

    async with AsyncSQLiteQueue("sqlite:///.omniq/omniq.db") as queue:
        await queue.enqueue([task])

or on the shared connection of a :class:`SQLiteBackend`. Blocking twins
(``SQLiteQueue``, ``SQLiteResultStorage``…) run the same coroutines on a private loop.

Each operation is one function run on aiosqlite's connection thread, so the event loop
never blocks on SQLite and a whole transaction costs one thread hop.

The package: :mod:`~omniq.storage.sqlite.connection` (the file, its pragmas, migrations
and wake-ups), one module per component, and ``sql/`` (every statement by name, and the
numbered migrations).
"""

from __future__ import annotations

from omniq.storage._bundle import BackendSpec, Bundle
from omniq.storage.sqlite.connection import SCHEMA_VERSION, SQLiteConnection, sqlite_path
from omniq.storage.sqlite.events import AsyncSQLiteEventStorage, SQLiteEventStorage
from omniq.storage.sqlite.queue import AsyncSQLiteQueue, SQLiteQueue
from omniq.storage.sqlite.results import AsyncSQLiteResultStorage, SQLiteResultStorage
from omniq.storage.sqlite.schedules import AsyncSQLiteScheduleStorage, SQLiteScheduleStorage

__all__ = [
    "BACKEND",
    "SCHEMA_VERSION",
    "AsyncSQLiteEventStorage",
    "AsyncSQLiteQueue",
    "AsyncSQLiteResultStorage",
    "AsyncSQLiteScheduleStorage",
    "SQLiteBackend",
    "SQLiteConnection",
    "SQLiteEventStorage",
    "SQLiteQueue",
    "SQLiteResultStorage",
    "SQLiteScheduleStorage",
    "sqlite_path",
]

#: The SQLite backend, for the registry (:mod:`omniq.storage.registry`).
BACKEND = BackendSpec(
    name="sqlite",
    connection=SQLiteConnection,
    task_queue=AsyncSQLiteQueue,
    result_storage=AsyncSQLiteResultStorage,
    event_storage=AsyncSQLiteEventStorage,
    schedule_storage=AsyncSQLiteScheduleStorage,
)


class SQLiteBackend(Bundle[
    AsyncSQLiteQueue, AsyncSQLiteResultStorage, AsyncSQLiteEventStorage, AsyncSQLiteScheduleStorage
]):  # fmt: skip
    """The task queue, results, events and schedules in one SQLite file, on one
    connection: a finish writes the result, the events and the ack in one transaction.

    ``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or ``sqlite://:memory:``
    (the last one lives and dies with this bundle). ``settings.sqlite_synchronous``
    ("NORMAL", the default, or "FULL") trades durability of the last commits on power
    loss for write speed.

    Example::

        backend = SQLiteBackend("sqlite:///.omniq/omniq.db", settings)
        queue = backend.task_queue()
        await queue.connect()  # opens the shared connection
    """

    spec = BACKEND
    connection: SQLiteConnection
