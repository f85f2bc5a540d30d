"""The Redis backend bundle: one client (connection pool) shared by the four components."""

from __future__ import annotations

from typing import Any

from omniq.backend.base import Backend
from omniq.storage.redis import (
    AsyncRedisEventStorage,
    AsyncRedisQueue,
    AsyncRedisResultStorage,
    AsyncRedisScheduleStorage,
    RedisClient,
    split_namespace,
)

__all__ = ["RedisBackend"]


class RedisBackend(Backend):
    """The task queue, results, events and schedules on one Redis server.

    ``redis://host:port/db`` (also ``rediss://`` and ``unix://``). Keys live under
    ``settings.namespace`` (default ``omniq``); a ``?namespace=name`` in the URL wins.

    Example::

        backend = RedisBackend("redis://127.0.0.1:6379/0", settings)
        queue = backend.task_queue()
        await queue.connect()  # opens the shared client
    """

    def __init__(self, url: str, settings: Any) -> None:
        super().__init__(url, settings)
        _, url_namespace = split_namespace(url)
        namespace = url_namespace or getattr(settings, "namespace", None)
        self.client = RedisClient(url, namespace=namespace)
        self._queue: AsyncRedisQueue | None = None
        self._results: AsyncRedisResultStorage | None = None
        self._events: AsyncRedisEventStorage | None = None
        self._schedules: AsyncRedisScheduleStorage | None = None

    @property
    def namespace(self) -> str:
        """The key prefix every component uses (without its ``:``)."""
        return self.client.namespace

    async def _open(self) -> None:
        await self.client.open()

    async def _close(self) -> None:
        await self.client.close()

    def task_queue(self) -> AsyncRedisQueue:
        """The task queue on the shared client."""
        if self._queue is None:
            self._queue = AsyncRedisQueue(self.url, self.settings, client=self.client, bundle=self)
        return self._queue

    def result_storage(self) -> AsyncRedisResultStorage:
        """The result storage on the shared client."""
        if self._results is None:
            self._results = AsyncRedisResultStorage(
                self.url, self.settings, client=self.client, bundle=self
            )
        return self._results

    def event_storage(self) -> AsyncRedisEventStorage:
        """The event storage on the shared client."""
        if self._events is None:
            self._events = AsyncRedisEventStorage(
                self.url, self.settings, client=self.client, bundle=self
            )
        return self._events

    def schedule_storage(self) -> AsyncRedisScheduleStorage:
        """The schedule storage on the shared client."""
        if self._schedules is None:
            self._schedules = AsyncRedisScheduleStorage(
                self.url, self.settings, client=self.client, bundle=self
            )
        return self._schedules

    def __repr__(self) -> str:
        return f"RedisBackend({self.client.url!r}, namespace={self.namespace!r})"
