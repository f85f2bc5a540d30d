"""AsyncEventLogger: flush() and close() mean every event logged so far is stored, even
while the background writer is in the middle of a write."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest

from omniq.events import AsyncEventLogger
from omniq.models import EventType, TaskEvent
from omniq.storage.file import AsyncFileEventStorage


class HeldEventStorage(AsyncFileEventStorage):
    """The in-memory file event store, with writes held until the test lets them go."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.writing = asyncio.Event()
        self.go = asyncio.Event()

    async def append(self, events: Sequence[TaskEvent]) -> None:
        self.writing.set()
        await self.go.wait()
        await super().append(events)


@pytest.fixture
async def storage() -> AsyncIterator[HeldEventStorage]:
    store = HeldEventStorage(f"memory://omniq-events-{uuid.uuid4().hex}")
    await store.connect()
    yield store
    await store.close()


async def _writer_busy(storage: HeldEventStorage) -> tuple[AsyncEventLogger, str]:
    """A logger whose background writer has taken one event and is writing it."""
    events = AsyncEventLogger(storage, flush_interval=0.01)
    task_id = uuid.uuid4().hex
    events.log(TaskEvent(task_id=task_id, event_type=EventType.ENQUEUED))
    await asyncio.wait_for(storage.writing.wait(), timeout=10)
    return events, task_id


async def test_close_during_a_background_write_still_stores_its_events(
    storage: HeldEventStorage,
) -> None:
    events, task_id = await _writer_busy(storage)
    closing = asyncio.create_task(events.close())
    for _ in range(5):
        await asyncio.sleep(0)
    storage.go.set()
    await asyncio.wait_for(closing, timeout=10)
    stored = await storage.get(task_id)
    assert [e.event_type for e in stored] == [EventType.ENQUEUED]


async def test_flush_waits_for_a_background_write_under_way(storage: HeldEventStorage) -> None:
    events, task_id = await _writer_busy(storage)
    flushing = asyncio.create_task(events.flush())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not flushing.done(), "flush() returned before the event it covers was stored"
    storage.go.set()
    await asyncio.wait_for(flushing, timeout=10)
    assert [e.event_type for e in await storage.get(task_id)] == [EventType.ENQUEUED]
    await events.close()


async def test_events_logged_while_closing_are_stored_once(storage: HeldEventStorage) -> None:
    events, first = await _writer_busy(storage)
    closing = asyncio.create_task(events.close())
    await asyncio.sleep(0)
    # Logged while close() waits on the write under way: still before the close ends.
    second = uuid.uuid4().hex
    events.log(TaskEvent(task_id=second, event_type=EventType.ENQUEUED))
    storage.go.set()
    await asyncio.wait_for(closing, timeout=10)
    for task_id in (first, second):
        assert [e.event_type for e in await storage.get(task_id)] == [EventType.ENQUEUED]


def test_the_blocking_logger_writes_to_a_blocking_event_storage(tmp_path) -> None:
    # The plan's usage: EventLogger(SQLiteEventStorage(...)), both blocking.
    from omniq.events import EventLogger
    from omniq.storage.sqlite import SQLiteEventStorage

    storage = SQLiteEventStorage(f"sqlite:///{tmp_path}/events.db")
    logger = EventLogger(storage)
    logger.log(TaskEvent(task_id="t1", event_type=EventType.ENQUEUED))
    logger.close()
    assert [e.event_type for e in storage.get("t1")] == [EventType.ENQUEUED]
    storage.close()
