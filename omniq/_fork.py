"""Clients that outlive a fork: the child process starts them afresh.

A process forked after a client connected (multiprocessing's default start method on
Linux, ``gunicorn --preload``, any prefork server) inherits the client's sockets, database
handles and event loop, but none of its threads. Used in the child they hang (SQLite's
connection thread is gone) or garble the parent's traffic (one socket, two processes).
So after a fork every tracked object forgets its connections, and its first use in the
child connects anew. What it forgets is kept here, never closed or collected: closing a
shared connection from the child could end the parent's session.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Protocol

__all__ = ["track"]

logger = logging.getLogger("omniq")


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> list[Any]:
        """Forget inherited connections; return what was dropped (kept alive here)."""


_TRACKED: weakref.WeakSet[Any] = weakref.WeakSet()
# What the children dropped: referenced for the life of the child, so that no destructor
# runs on a connection the parent still uses.
_INHERITED: list[Any] = []


def track(obj: ForkAware) -> None:
    """Have ``obj._after_fork_in_child()`` called in every child forked from now on."""
    _TRACKED.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_TRACKED):
        try:
            _INHERITED.append(obj._after_fork_in_child())
        except Exception:
            logger.exception("resetting %r after fork failed", obj)


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
