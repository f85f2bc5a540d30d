"""Task lifecycle events: logged without blocking, written in batches, read back in order.

:class:`AsyncEventLogger` buffers events in memory and a background task writes them to
the event storage in batches, so logging costs the hot path an append to a list. Events
are visible within ``flush_interval`` (default 50 ms) and always after ``flush()`` or
``close()``. With no storage the logger is off and ``log`` does nothing.

A logger outlives event loops (``asyncio.run`` twice): the loop that ends cancels its
writer, which writes what is buffered first; what it could not write stays buffered, and
the next event or flush, on the new loop, starts a writer there.

Library logging (the ``omniq`` logger) is separate and never receives task events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from omniq._sync import BlockingTwin, blocking, may_wait, twin_target
from omniq.models import EventType, TaskEvent
from omniq.storage.base import BaseEventStorage

__all__ = ["AsyncEventLogger", "AsyncEventProcessor", "EventLogger", "EventProcessor"]

logger = logging.getLogger("omniq.events")

EventHandler = Callable[[TaskEvent], None]

# Past this many unwritten events (storage down for long) the oldest are dropped, loudly,
# rather than growing without bound.
_MAX_BUFFER = 100_000


class AsyncEventLogger:
    """Buffers task events and writes them to ``storage`` in the background.

    Example::

        events = AsyncEventLogger(storage)
        events.log(TaskEvent(task_id=tid, event_type=EventType.ENQUEUED))
        await events.flush()
    """

    def __init__(
        self,
        storage: BaseEventStorage | None,
        *,
        flush_interval: float = 0.05,
        batch_size: int = 500,
    ) -> None:
        # A blocking twin (``SQLiteEventStorage``) stands for the async storage it drives.
        self.storage = twin_target(storage) or storage
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._buffer: list[TaskEvent] = []
        self._handlers: list[EventHandler] = []
        self._wakeup: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._write_lock: asyncio.Lock | None = None
        # The loop the writer, its wake-up and the lock belong to.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        #: Events taken into the buffer so far, and how many of them are written (or
        #: dropped): the buffer is written in order, so every event taken before
        #: ``accepted`` reached ``n`` is stored once ``written`` reaches ``n``.
        self.accepted = 0
        self.written = 0

    @property
    def enabled(self) -> bool:
        """False when events are switched off (no storage)."""
        return self.storage is not None

    @property
    def pending(self) -> int:
        """How many logged events are not written yet."""
        return len(self._buffer)

    @property
    def handlers(self) -> tuple[EventHandler, ...]:
        """The in-process handlers added with :meth:`add_handler`."""
        return tuple(self._handlers)

    @property
    def has_handlers(self) -> bool:
        """True when an in-process handler listens (events are built for it)."""
        return bool(self._handlers)

    def add_handler(self, handler: EventHandler) -> None:
        """Call ``handler(event)`` in-process for every event logged here."""
        self._handlers.append(handler)

    def log(self, event: TaskEvent) -> None:
        """Queue ``event`` for writing; never blocks and never raises for storage errors."""
        if self._handlers:
            self._call_handlers(event)
        if self.storage is None or self._closed:
            return
        self._buffer.append(event)
        self.accepted += 1
        self._kick(len(self._buffer) >= self.batch_size)

    def log_many(self, events: Iterable[TaskEvent], *, announce: bool = True) -> None:
        """Queue several events (one wake-up of the writer for all of them);
        ``announce=False`` for events the handlers have heard of already."""
        if self._handlers and announce:
            events = list(events)
            for event in events:
                self._call_handlers(event)
        if self.storage is None or self._closed:
            return
        before = len(self._buffer)
        self._buffer.extend(events)
        self.accepted += len(self._buffer) - before
        if self._buffer:
            self._kick(len(self._buffer) >= self.batch_size)

    def announce(self, events: Iterable[TaskEvent]) -> None:
        """Call the handlers for events already stored by another path (a backend that
        writes them together with their tasks)."""
        for event in events:
            self._call_handlers(event)

    def _call_handlers(self, event: TaskEvent) -> None:
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:
                logger.exception("event handler %r failed", handler)

    def _follow_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            # A new loop: the old one stopped its writer (asyncio.run cancels it), or
            # will never run it again, or if it does, the writer sees it is not current.
            self._loop = loop
            self._flusher = self._wakeup = self._write_lock = None

    def _kick(self, now: bool) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # written by the next flush() or close()
        self._follow_loop(loop)
        if self._flusher is None or self._flusher.done():
            self._wakeup = asyncio.Event()
            self._flusher = loop.create_task(self._run(), name="omniq-event-flusher")
            # A blocking client need not hand its loop to a thread for this writer.
            may_wait(self._flusher, self.flush_interval)
        if now and self._wakeup is not None:
            self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        me = asyncio.current_task()
        try:
            while self._buffer:
                if self.flush_interval > 0 and len(self._buffer) < self.batch_size:
                    # asyncio.timeout, not wait_for: no inner task (see _kick).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.flush_interval):
                            await wakeup.wait()
                wakeup.clear()
                if self._flusher is not me:
                    return  # the logger moved to another loop, whose writer takes over
                await self._write_some()
        except asyncio.CancelledError:
            if self._buffer and not self._closed and self._flusher is me:
                # Stopped from outside close(): most often asyncio.run() ending a script
                # whose client was never closed. One last write, or these events would
                # go with the loop.
                await self._write_some()
            raise

    async def _write_some(self) -> None:
        # Only on the logger's current loop (the lock is that loop's).
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        async with self._write_lock:
            if not self._buffer or self.storage is None:
                return
            batch, self._buffer = self._buffer, []
            try:
                await self.storage.append(batch)
                self.written += len(batch)
            except asyncio.CancelledError:
                # Stopped mid-write (close() stopping the writer): the batch goes back, for
                # the final flush. A store that had applied it may then hold it twice;
                # losing it would be worse.
                self._buffer[:0] = batch
                raise
            except Exception as exc:
                # Keep them for the next attempt; events must not break task processing.
                self._buffer[:0] = batch
                if len(self._buffer) > _MAX_BUFFER:
                    dropped = len(self._buffer) - _MAX_BUFFER
                    del self._buffer[:dropped]
                    self.written += dropped
                    logger.error("event storage unavailable: dropped %d oldest events", dropped)
                logger.warning("writing %d events failed: %s", len(batch), exc)
                await asyncio.sleep(min(1.0, max(self.flush_interval, 0.05)))

    async def flush(self) -> None:
        """Write every buffered event now; on return, every event logged before the call
        is stored (unless the storage is failing: then they stay buffered)."""
        if self.storage is None:
            return
        self._follow_loop(asyncio.get_running_loop())
        # A batch the background writer has taken is not in the buffer: taking the write
        # lock first waits for that write to end (or to put a failed batch back).
        await self._write_some()
        while self._buffer:
            before = len(self._buffer)
            await self._write_some()
            if len(self._buffer) >= before:
                break  # storage is failing; the background task keeps trying

    async def close(self) -> None:
        """Flush and stop the background writer. Later events are ignored."""
        self._follow_loop(asyncio.get_running_loop())
        await self.flush()
        self._closed = True
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._flusher = None
        if self._buffer:
            # The writer took events logged during the flush above and was stopped
            # holding them: they were put back, write them now.
            await self.flush()


class AsyncEventProcessor:
    """Reads and summarises the event log.

    Example::

        timeline = await AsyncEventProcessor(storage).get(task_id)
    """

    def __init__(self, storage: BaseEventStorage | None) -> None:
        self.storage = twin_target(storage) or storage

    async def get(self, task_id: str) -> list[TaskEvent]:
        """The task's events, oldest first (``[]`` when events are off)."""
        if self.storage is None:
            return []
        return await self.storage.get(task_id)

    async def counts(self, task_ids: Sequence[str]) -> dict[EventType, int]:
        """How many events of each type the given tasks logged."""
        counter: Counter[EventType] = Counter()
        for task_id in task_ids:
            counter.update(event.event_type for event in await self.get(task_id))
        return dict(counter)

    async def timeline(self, task_id: str) -> list[str]:
        """One readable line per event of the task."""
        lines = []
        for event in await self.get(task_id):
            who = f" on {event.worker_id}" if event.worker_id else ""
            note = f": {event.message}" if event.message else ""
            lines.append(
                f"{event.timestamp.isoformat(timespec='milliseconds')} "
                f"{event.event_type.value:<9} attempt {event.attempt}{who}{note}"
            )
        return lines


class EventLogger(BlockingTwin[AsyncEventLogger]):
    """Blocking twin of :class:`AsyncEventLogger`: the same methods, without ``await``."""

    async_class = AsyncEventLogger
    flush = blocking(AsyncEventLogger.flush)

    def close(self) -> None:
        """Flush and stop the logger (as ``AsyncEventLogger.close``), then this twin's loop."""
        try:
            self._runner.run(self._async.close())
        finally:
            self._stop()


class EventProcessor(BlockingTwin[AsyncEventProcessor]):
    """Blocking twin of :class:`AsyncEventProcessor`: the same methods, without ``await``."""

    async_class = AsyncEventProcessor
    counts = blocking(AsyncEventProcessor.counts)
    get = blocking(AsyncEventProcessor.get)
    timeline = blocking(AsyncEventProcessor.timeline)

    def close(self) -> None:
        """Close this twin's private loop (the next call opens a new one)."""
        self._stop()
