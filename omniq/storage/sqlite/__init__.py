"""SQLite storage: the embedded default (see :mod:`omniq.storage.sqlite.queue`)."""

from omniq.storage.sqlite.connection import SCHEMA_VERSION, SQLiteBackend, sqlite_path
from omniq.storage.sqlite.queue import (
    AsyncSQLiteEventStorage,
    AsyncSQLiteQueue,
    AsyncSQLiteResultStorage,
    AsyncSQLiteScheduleStorage,
    SQLiteEventStorage,
    SQLiteQueue,
    SQLiteResultStorage,
    SQLiteScheduleStorage,
)

__all__ = [
    "SCHEMA_VERSION",
    "AsyncSQLiteEventStorage",
    "AsyncSQLiteQueue",
    "AsyncSQLiteResultStorage",
    "AsyncSQLiteScheduleStorage",
    "SQLiteBackend",
    "SQLiteEventStorage",
    "SQLiteQueue",
    "SQLiteResultStorage",
    "SQLiteScheduleStorage",
    "sqlite_path",
]
