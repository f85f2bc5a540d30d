"""One blocking call handed to an event loop another thread runs (see
:meth:`omniq._sync.LoopThread.run`): its coroutine, the lock its caller waits on, and its
outcome carried back to the caller's thread."""

from __future__ import annotations

import _thread
import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar, cast

from omniq._greenlets import GreenletWake
from omniq.errors import OmniQError

__all__ = ["HandedCall"]

T = TypeVar("T")


class HandedCall(Generic[T]):
    """One blocking call handed to the loop: its coroutine, the lock its caller waits
    on (held until the call ends; a :class:`GreenletWake` for a greenlet), and its
    outcome."""

    __slots__ = ("context", "coro", "done", "error", "result", "task")

    def __init__(self, coro: Coroutine[Any, Any, T], done: GreenletWake | None) -> None:
        self.coro = coro
        # The caller's context variables go with its coroutine, as they do through
        # call_soon_threadsafe (run_coroutine_threadsafe).
        self.context = contextvars.copy_context()
        if done is None:
            self.done: _thread.LockType | GreenletWake = _thread.allocate_lock()
            self.done.acquire()
        else:
            self.done = done
        self.result: T | None = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the call's task (on the loop)."""
        if self.error is not None:  # cancelled before it started
            self.coro.close()
            self.done.release()
            return
        self.task = loop.create_task(self._run(), context=self.context)

    async def _run(self) -> None:
        try:
            self.result = await self.coro
        except BaseException as exc:
            self.error = exc
            if not isinstance(exc, Exception | asyncio.CancelledError):
                self.done.release()
                raise  # KeyboardInterrupt, SystemExit: the loop's to handle too
        self.done.release()

    def cancel(self) -> None:
        """Stop the call (on the loop): its caller stopped waiting for it."""
        if self.task is not None:
            self.task.cancel()
        elif self.error is None:
            self.error = asyncio.CancelledError()

    def abandon(self) -> None:
        """Fail a call that never started: its loop was stopped."""
        self.coro.close()
        self.error = OmniQError("the blocking client was closed before this call ran")
        self.done.release()

    def outcome(self) -> T:
        """The call's return value, or its exception raised (in the caller's thread)."""
        error = self.error
        if error is not None:
            self.error = None  # no cycle through the traceback
            raise error
        return cast(T, self.result)
