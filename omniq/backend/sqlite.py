"""The SQLite backend bundle: one database connection shared by the four components."""

from __future__ import annotations

from typing import Any

from omniq.backend.base import Backend
from omniq.storage.sqlite import (
    AsyncSQLiteEventStorage,
    AsyncSQLiteQueue,
    AsyncSQLiteResultStorage,
    AsyncSQLiteScheduleStorage,
    _SQLiteConnection,
    sqlite_path,
)

__all__ = ["SQLiteBackend"]


class SQLiteBackend(Backend):
    """The task queue, results, events and schedules in one SQLite file.

    ``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or ``sqlite://:memory:``
    (the last one lives and dies with this bundle). ``settings.sqlite_synchronous``
    ("FULL", the default, or "NORMAL") trades durability of the last commits on power
    loss for write speed.

    Example::

        backend = SQLiteBackend("sqlite:///.omniq/omniq.db", settings)
        queue = backend.task_queue()
        await queue.connect()  # opens the shared connection
    """

    def __init__(self, url: str, settings: Any) -> None:
        super().__init__(url, settings)
        synchronous = getattr(settings, "sqlite_synchronous", "FULL")
        self.connection = _SQLiteConnection(sqlite_path(url), synchronous=synchronous)
        self._queue: AsyncSQLiteQueue | None = None
        self._results: AsyncSQLiteResultStorage | None = None
        self._events: AsyncSQLiteEventStorage | None = None
        self._schedules: AsyncSQLiteScheduleStorage | None = None

    async def _open(self) -> None:
        await self.connection.open()

    async def _close(self) -> None:
        await self.connection.close()

    def task_queue(self) -> AsyncSQLiteQueue:
        """The task queue on the shared connection."""
        if self._queue is None:
            self._queue = AsyncSQLiteQueue(
                self.url, self.settings, connection=self.connection, bundle=self
            )
        return self._queue

    def result_storage(self) -> AsyncSQLiteResultStorage:
        """The result storage on the shared connection."""
        if self._results is None:
            self._results = AsyncSQLiteResultStorage(
                self.url, self.settings, connection=self.connection, bundle=self
            )
        return self._results

    def event_storage(self) -> AsyncSQLiteEventStorage:
        """The event storage on the shared connection."""
        if self._events is None:
            self._events = AsyncSQLiteEventStorage(
                self.url, self.settings, connection=self.connection, bundle=self
            )
        return self._events

    def schedule_storage(self) -> AsyncSQLiteScheduleStorage:
        """The schedule storage on the shared connection."""
        if self._schedules is None:
            self._schedules = AsyncSQLiteScheduleStorage(
                self.url, self.settings, connection=self.connection, bundle=self
            )
        return self._schedules

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.connection.path!r})"
