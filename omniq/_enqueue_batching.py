"""Concurrent enqueues stored together: one write for the calls that arrive while others
are out.

A web application enqueues from many requests at once: dozens of ``submit`` calls on one
client, each with one task. Stored one write each, every call pays a round trip, a
script or statement and (on SQLite and PostgreSQL) a commit of its own; stored together,
they pay one, as ``enqueue_many`` does. :class:`EnqueueBatcher` is that group commit:

- a call that finds fewer than ``max_in_flight`` writes out goes at once, alone: a lone
  caller is never delayed;
- the calls that arrive while that many writes are out wait, and go together in the next
  write as soon as one returns (up to ``max_batch`` tasks per write);
- every caller returns once its own tasks are stored, with the write's error if it fails;
  a caller cancelled while it still waits is left out of the write.

One write serves several callers, so nothing but the tasks' storing is shared: the
tasks and events of each call are built, checked and encoded by the call itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["EnqueueBatcher"]

T = TypeVar("T")
E = TypeVar("E")

#: Writes one batch: the tasks, and each task's events (None: no events go with them).
Writer = Callable[[list[T], "list[E] | None"], Awaitable[object]]


class _Waiting(Generic[T, E]):
    __slots__ = ("events", "future", "tasks")

    def __init__(
        self, tasks: Sequence[T], events: Sequence[E] | None, future: asyncio.Future[None]
    ) -> None:
        self.tasks = tasks
        self.events = events
        self.future = future


class EnqueueBatcher(Generic[T, E]):
    """Stores concurrent calls' tasks together (see the module docstring).

    ``write(tasks, events)`` stores one batch; ``events`` is None when the calls carry
    none, else one entry per task, in the tasks' order. One batcher serves one event
    loop (the engine makes a new one when it moves to another).
    """

    def __init__(
        self, write: Writer[T, E], *, max_in_flight: int = 1, max_batch: int = 1000
    ) -> None:
        self._write = write
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self._in_flight = 0
        self._waiting: deque[_Waiting[T, E]] = deque()
        # The writes started for waiting callers (held so they are not collected early).
        self._writers: set[asyncio.Task[None]] = set()

    async def store(self, tasks: Sequence[T], events: Sequence[E] | None) -> None:
        """Store ``tasks`` (with ``events``: one per task), alone at once when few writes
        are out, else with the calls that wait beside it."""
        if self._in_flight < self.max_in_flight and not self._waiting:
            self._in_flight += 1
            try:
                await self._write(list(tasks), None if events is None else list(events))
            finally:
                self._in_flight -= 1
                self._start_next()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = _Waiting(tasks, events, future)
        self._waiting.append(waiting)
        try:
            await future
        except asyncio.CancelledError:
            # Still waiting: left out of the write. Already taken: the write goes on,
            # and the tasks may be stored, as with a cancelled write of their own.
            if waiting in self._waiting:
                self._waiting.remove(waiting)
            raise

    def _start_next(self) -> None:
        """Write the waiting calls (a batch of them) if a write may start."""
        while self._waiting and self._in_flight < self.max_in_flight:
            batch: list[_Waiting[T, E]] = []
            count = 0
            while self._waiting and (
                not batch or count + len(self._waiting[0].tasks) <= self.max_batch
            ):
                item = self._waiting.popleft()
                if item.future.done():  # cancelled meanwhile
                    continue
                batch.append(item)
                count += len(item.tasks)
            if not batch:
                return
            self._in_flight += 1
            writer = asyncio.ensure_future(self._write_batch(batch))
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)

    async def _write_batch(self, batch: list[_Waiting[T, E]]) -> None:
        tasks = [task for item in batch for task in item.tasks]
        events: list[E] | None = None
        if any(item.events is not None for item in batch):
            # Every call of one client carries events or none (the engine's setting).
            events = [event for item in batch for event in item.events or ()]
        try:
            await self._write(tasks, events)
        except Exception as exc:  # handed to each caller: nobody else would see it
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
        except BaseException:  # the loop is shutting down: so are the callers
            for item in batch:
                item.future.cancel()
            raise
        else:
            for item in batch:
                if not item.future.done():
                    item.future.set_result(None)
        finally:
            self._in_flight -= 1
            self._start_next()
