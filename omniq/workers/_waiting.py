"""A worker's waits: an idle one's for work, a timeout, a stop or a nudge, whichever comes
first; a stopping one's for its running tasks, up to the stop's timeout."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

__all__ = ["InterruptibleWait", "let_running_finish"]

logger = logging.getLogger("omniq.worker")


class InterruptibleWait:
    """Runs one wait at a time in the caller's task, which :meth:`interrupt` cuts short.

    ``stopping()`` says whether the pool is stopping: a wait is then not begun.
    """

    def __init__(self, stopping: Callable[[], bool]) -> None:
        self._stopping = stopping
        # The task blocked in wait() (interruptible), and whether it was interrupted.
        self._waiting: asyncio.Task[Any] | None = None
        self._interrupted = False

    async def wait(self, timeout: float, waiter: Coroutine[Any, Any, Any] | None = None) -> Any:
        """Sleep for ``timeout`` or until ``waiter`` finishes, but wake on stop or a
        nudge; the waiter's value when it finished, else None.

        The waiter runs in this task, not a task of its own, and stop and nudge cancel
        this task (then take their cancel back): a wake-up costs no extra asyncio task
        and no extra loop turn. A waiter cut short may have claimed on the server as it
        was stopped: the queue hands those tasks back at once (Redis settles its blocked
        connection first; the other backends finish the claim, then release it).
        """
        if waiter is None:
            waiter = asyncio.sleep(timeout)
        if self._stopping():
            waiter.close()
            return None
        current = asyncio.current_task()
        assert current is not None
        self._waiting = current
        try:
            return await waiter
        except asyncio.CancelledError:
            # Only our own interrupt is taken back: a cancel from anyone else stands.
            if not self._interrupted or current.uncancel() > 0:
                raise
            return None
        except Exception as exc:
            logger.warning("waiting for work failed: %s", exc)
            await asyncio.sleep(min(timeout, 0.5))
            return None
        finally:
            self._waiting = None
            self._interrupted = False

    def interrupt(self) -> None:
        """End the wait under way now (none: nothing happens)."""
        if self._waiting is not None and not self._interrupted:
            self._interrupted = True
            self._waiting.cancel()


async def let_running_finish(
    running: Mapping[str, asyncio.Task[None]],
    stop_changed: asyncio.Event,
    timeout: Callable[[], float],
) -> None:
    """Wait for the ``running`` tasks, up to ``timeout()`` seconds counted from now; a
    later stop (``stop_changed`` set) with a shorter timeout takes over."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while True:
        pending = [task for task in running.values() if not task.done()]
        remaining = began + timeout() - loop.time()
        if not pending or remaining <= 0:
            return
        stop_changed.clear()
        changed = asyncio.create_task(stop_changed.wait())
        try:
            await asyncio.wait(
                [*pending, changed], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            changed.cancel()
