"""The backend bundle interface: one shared connection, four storage components."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from omniq.storage.base import (
    BaseEventStorage,
    BaseResultStorage,
    BaseScheduleStorage,
    BaseTaskQueue,
)

__all__ = ["Backend"]


class Backend(ABC):
    """Builds a backend's storage components on one connection or pool.

    ``connect``/``close`` are reference counted: each component that is connected
    through the bundle holds one reference, and the shared connection closes when the
    last one is released. Components made by a bundle must not open connections of
    their own.
    """

    def __init__(self, url: str, settings: Any) -> None:
        self.url = url
        self.settings = settings
        self._refs = 0
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        """Take a reference; open the shared connection on the first."""
        async with self._lock:
            if self._refs == 0:
                await self._open()
            self._refs += 1

    async def close(self) -> None:
        """Drop a reference; close the shared connection with the last."""
        async with self._lock:
            if self._refs == 0:
                return
            self._refs -= 1
            if self._refs == 0:
                await self._close()

    @abstractmethod
    async def _open(self) -> None:
        """Open the shared connection or pool and make sure the schema exists."""

    @abstractmethod
    async def _close(self) -> None:
        """Close the shared connection or pool."""

    @abstractmethod
    def task_queue(self) -> BaseTaskQueue:
        """The task queue component on this backend."""

    @abstractmethod
    def result_storage(self) -> BaseResultStorage:
        """The result storage component on this backend."""

    @abstractmethod
    def event_storage(self) -> BaseEventStorage:
        """The event storage component on this backend."""

    @abstractmethod
    def schedule_storage(self) -> BaseScheduleStorage:
        """The schedule storage component on this backend."""
