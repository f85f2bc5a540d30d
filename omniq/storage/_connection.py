"""What a backend's components share: one connection or pool, reference counted.

Each backend has one :class:`Connection` subclass (``SQLiteConnection``,
``RedisConnection``, ``PostgresConnection``, ``FileConnection``) that owns its driver's
connection or pool, and translates the driver's errors into OmniQ's. Its components
(queue, results, events, schedules) hold it: built alone from a URL, a component builds
its own; built by a bundle (:mod:`omniq.storage._bundle`), the components share the
bundle's. :meth:`Connection.acquire` and :meth:`Connection.release` are reference counted:
the first component connected opens it, the last one closed closes it.

A connection outlives event loops (``asyncio.run`` twice, see :mod:`omniq._loops`): what
it made on a loop is closed as that loop shuts down (:meth:`Connection._release_loop`) or
dropped when a call comes from a new loop (:meth:`Connection._forget_loop`), and it
reconnects there, with its references unchanged.
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod

from omniq._loops import LoopBinding
from omniq.config import Settings

__all__ = ["Connection"]


class Connection(ABC):
    """A backend's connection or pool, shared by the components built on it.

    Subclasses implement :meth:`_open` and :meth:`_close` (and, where they hold
    loop-bound things, :meth:`_forget_loop` and :meth:`_release_loop`).
    """

    def __init__(self, url: str | os.PathLike[str], settings: Settings) -> None:
        self.url = os.fspath(url)
        self.settings = settings
        self._refs = 0
        self._lock = asyncio.Lock()
        self._bound = LoopBinding(self, self._release_loop)

    @property
    def references(self) -> int:
        """How many components hold this connection open."""
        return self._refs

    async def acquire(self) -> None:
        """Take a reference; open the connection on the first."""
        self._follow_loop()
        async with self._lock:
            if self._refs == 0:
                await self._open()
            self._refs += 1

    async def release(self) -> None:
        """Drop a reference; close the connection with the last."""
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
        """Drop what is left of the loop the connection moved from: locks, and what a
        loop that finished without shutting down (closed by hand, or stopped) left open,
        closed as far as it allows. The next use reconnects on the running loop."""

    async def _release_loop(self) -> None:  # noqa: B027 - optional hook
        """Close what was made on the running loop, which is shutting down; the
        connection stays acquired and reconnects at its next use."""

    @abstractmethod
    async def _open(self) -> None:
        """Open the connection or pool and make sure the schema exists."""

    @abstractmethod
    async def _close(self) -> None:
        """Close the connection or pool."""
