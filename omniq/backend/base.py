"""The backend bundle interface: one shared connection, four storage components."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from omniq._loops import LoopBinding
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

    A bundle outlives event loops (``asyncio.run`` twice, see :mod:`omniq._loops`): what
    it made on a loop is closed as that loop shuts down (``_release_loop``) or dropped
    when a call comes from a new loop (``_forget_loop``), and it reconnects there, with
    its references unchanged.
    """

    def __init__(self, url: str, settings: Any) -> None:
        self.url = url
        self.settings = settings
        self._refs = 0
        self._lock = asyncio.Lock()
        self._bound = LoopBinding(self, self._release_loop)

    async def connect(self) -> None:
        """Take a reference; open the shared connection on the first."""
        self._follow_loop()
        async with self._lock:
            if self._refs == 0:
                await self._open()
            self._refs += 1

    async def close(self) -> None:
        """Drop a reference; close the shared connection with the last."""
        self._follow_loop()
        async with self._lock:
            if self._refs == 0:
                return
            self._refs -= 1
            if self._refs == 0:
                await self._close()
                await self._bound.detach()

    def _follow_loop(self) -> None:
        """Bind to the running loop; after a move, drop what the old loop left (call it
        before using anything loop-bound)."""
        if self._bound.moved():
            self._lock = asyncio.Lock()
            self._forget_loop()

    def _forget_loop(self) -> None:  # noqa: B027 - optional hook
        """Drop what is left of the loop the bundle moved from: locks, and the
        connections of a loop that finished without shutting down (closed by hand, or
        stopped), closed as far as it allows. The next use reconnects on the running
        loop."""

    async def _release_loop(self) -> None:  # noqa: B027 - optional hook
        """Close the connections made on the running loop, which is shutting down; the
        bundle stays connected and reconnects at its next use (see ``_bound.watch``)."""

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
