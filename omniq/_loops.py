"""Clients that follow their caller from one event loop to the next.

A script that calls ``asyncio.run`` twice, a notebook, a test suite with a loop per test:
each runs OmniQ's coroutines on a new event loop, while a client made once (at module
level, in a fixture) outlives them all. Sockets, asyncpg pools, HTTP sessions, asyncio
locks and futures belong to the loop they were made on: used from another loop they hang
(a reply arrives on a socket that a closed loop no longer reads) or fail. So every
object that holds such things keeps a :class:`LoopBinding`:

- it is told when its loop shuts down (``asyncio.run``, ``asyncio.Runner``, ``uvloop.run``
  and pytest-asyncio finalize async generators just before they close the loop, after
  cancelling its tasks, so a task's last write is done by then): it closes its
  connections there, gracefully, while the loop still runs;
- on each use it checks the running loop: on a new one it first forgets whatever the
  old loop left behind (a loop closed by hand, or only stopped, never said it ended;
  those connections are closed as far as a dead loop allows), then connects anew;
- if the old loop is still running, in another thread, the object is being used from two
  loops at once, which it does not support: :class:`~omniq.errors.EventLoopError`.

Like ``omniq._fork`` for forked processes: the object carries on, on the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from omniq.errors import EventLoopError

__all__ = ["LoopBinding", "abort_transport", "quietly"]

logger = logging.getLogger("omniq")


class LoopBinding:
    """The event loop an object's connections belong to, and what to do when it ends.

    ``owner`` names the object in errors (a string as it is, anything else by its repr);
    ``release`` (optional) closes the object's connections when their loop shuts down,
    leaving the object usable: its next call, on a new loop, sees :meth:`moved` (to
    reset its locks and such) and connects again.

    Example::

        self._bound = LoopBinding(self, self._close_connections)
        ...
        if self._bound.moved():       # at each use
            self._drop_connections()  # made on a loop that has finished
        ...                           # after connecting on the running loop:
        await self._bound.watch()
        ...                           # and once closed:
        await self._bound.detach()
    """

    __slots__ = ("_left", "_owner", "_release", "_watcher", "loop")

    def __init__(self, owner: object, release: Callable[[], Awaitable[None]] | None = None):
        self._owner = owner
        self._release = release
        self._watcher: AsyncGenerator[None, None] | None = None
        #: The loop the object is bound to (None: to none, yet or since it closed).
        self.loop: asyncio.AbstractEventLoop | None = None
        # The loop the object was bound to when it closed: its locks may belong there.
        self._left: asyncio.AbstractEventLoop | None = None

    def moved(self) -> bool:
        """Bind to the running loop; True when the object was bound to another loop
        (one that has finished, or that it closed on), so the caller must drop what it
        still holds from there: connections, locks, futures.

        Raises :class:`EventLoopError` when the object is in use on another loop that is
        still running (in another thread): it would be shared by two loops at once.
        """
        loop = asyncio.get_running_loop()
        old = self.loop
        if old is loop:
            return False
        if old is None:
            old, self._left = self._left, None
        elif old.is_running() and not old.is_closed():
            what = self._owner if isinstance(self._owner, str) else repr(self._owner)
            raise EventLoopError(
                f"{what} is in use on another event loop, which is still running (in "
                "another thread). A client and its storages serve one event loop at a "
                "time: create one client per event loop (or per thread), or use the "
                "blocking OmniQ, which runs its own loop."
            )
        self.loop = loop
        # The old loop's watcher is dropped unrun (if its loop ever runs again, it sees
        # that the binding has moved on and does nothing).
        self._watcher = None
        return old is not None and old is not loop

    async def watch(self) -> None:
        """Have ``release`` run when the running loop shuts down (call it once the
        object has connected on that loop; it does nothing when already watching)."""
        if self._release is None or self._watcher is not None:
            return
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            return  # only the loop the object is bound to (see moved)
        # An async generator suspended at its first yield is registered with the loop,
        # which closes it in shutdown_asyncgens(): there its finally block runs.
        watcher = self._until_loop_ends(loop)
        await watcher.asend(None)
        self._watcher = watcher

    async def detach(self) -> None:
        """The object closed its connections: stop watching, and let another loop take
        it (even while this one still runs)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None and self.loop is asyncio.get_running_loop():
            await watcher.aclose()
        if self.loop is not None:
            self._left, self.loop = self.loop, None

    async def _until_loop_ends(self, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            # Closed by detach(), or by the loop after the object moved on: nothing to do.
            if self._watcher is not None and self.loop is loop:
                self._watcher = None
                assert self._release is not None
                try:
                    await self._release()
                except Exception as exc:  # a loop ending is no place for a traceback
                    logger.debug("closing %r as its event loop ends: %s", self._owner, exc)


def quietly(close: Callable[[], Any]) -> None:
    """Call ``close()`` (a sync close or terminate of something made on a loop that has
    finished) and swallow what it raises: a dead loop cannot schedule the callbacks a
    close normally needs, and nothing is left to tell about the failure."""
    try:
        close()
    except Exception as exc:
        logger.debug("closing a connection of a finished event loop: %s", exc)


def abort_transport(transport: Any) -> None:
    """Close ``transport`` now, even when its event loop has closed.

    ``abort()`` leaves closing the socket to a loop callback, which a closed loop refuses
    (``RuntimeError``): the socket would stay open until the transport is collected, with
    a ``ResourceWarning``. asyncio's own transports can run that callback in place.
    """
    loop = getattr(transport, "_loop", None)
    finish = getattr(transport, "_call_connection_lost", None)
    if loop is not None and loop.is_closed() and finish is not None:
        with contextlib.suppress(Exception):  # the protocol may fail futures of that loop
            finish(None)
        return
    quietly(transport.abort)
