"""Concurrent enqueues stored together (omniq._enqueue_batching): who goes alone, who
waits, and what each caller gets back."""

from __future__ import annotations

import asyncio

import pytest

from omniq._enqueue_batching import EnqueueBatcher


class Store:
    """A writer that records each write and holds it open until released."""

    def __init__(self) -> None:
        self.writes: list[tuple[list[str], list[str] | None]] = []
        self.release = asyncio.Event()
        self.fail_with: Exception | None = None

    async def write(self, tasks: list[str], events: list[str] | None) -> None:
        self.writes.append((tasks, events))
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_call_is_written_at_once_alone() -> None:
    store = Store()
    batcher: EnqueueBatcher[str, str] = EnqueueBatcher(store.write)
    call = asyncio.ensure_future(batcher.store(["a"], ["ea"]))
    await settle()
    assert store.writes == [(["a"], ["ea"])]  # written before anything returned
    store.release.set()
    await call


async def test_calls_arriving_while_a_write_is_out_go_together_next() -> None:
    store = Store()
    batcher: EnqueueBatcher[str, str] = EnqueueBatcher(store.write)
    first = asyncio.ensure_future(batcher.store(["a"], None))
    await settle()
    rest = [asyncio.ensure_future(batcher.store([name], None)) for name in "bcd"]
    await settle()
    assert store.writes == [(["a"], None)]
    assert not any(call.done() for call in rest)  # waiting for their write
    store.release.set()
    await asyncio.gather(first, *rest)
    assert store.writes == [(["a"], None), (["b", "c", "d"], None)]


async def test_events_stay_beside_their_tasks_in_a_batch() -> None:
    store = Store()
    batcher: EnqueueBatcher[str, str] = EnqueueBatcher(store.write)
    first = asyncio.ensure_future(batcher.store(["a"], ["ea"]))
    await settle()
    calls = [
        asyncio.ensure_future(batcher.store(["b", "c"], ["eb", "ec"])),
        asyncio.ensure_future(batcher.store(["d"], ["ed"])),
    ]
    await settle()
    store.release.set()
    await asyncio.gather(first, *calls)
    assert store.writes[1] == (["b", "c", "d"], ["eb", "ec", "ed"])


async def test_a_failed_write_fails_its_own_callers_only() -> None:
    store = Store()
    batcher: EnqueueBatcher[str, str] = EnqueueBatcher(store.write)
    first = asyncio.ensure_future(batcher.store(["a"], None))
    await settle()
    batch = [asyncio.ensure_future(batcher.store([name], None)) for name in "bc"]
    await settle()
    store.fail_with = RuntimeError("server went away")
    store.release.set()
    results = await asyncio.gather(first, *batch, return_exceptions=True)
    assert [str(r) for r in results] == ["server went away"] * 3
    store.fail_with = None
    await batcher.store(["e"], None)  # the batcher carries on
    assert store.writes[-1] == (["e"], None)


async def test_a_caller_cancelled_while_waiting_is_left_out() -> None:
    store = Store()
    batcher: EnqueueBatcher[str, str] = EnqueueBatcher(store.write)
    first = asyncio.ensure_future(batcher.store(["a"], None))
    await settle()
    gone = asyncio.ensure_future(batcher.store(["b"], None))
    kept = asyncio.ensure_future(batcher.store(["c"], None))
    await settle()
    gone.cancel()
    store.release.set()
    await asyncio.gather(first, kept)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert store.writes == [(["a"], None), (["c"], None)]


async def test_a_batch_holds_at_most_max_batch_tasks() -> None:
    store = Store()
    batcher: EnqueueBatcher[str, str] = EnqueueBatcher(store.write, max_batch=3)
    first = asyncio.ensure_future(batcher.store(["a"], None))
    await settle()
    rest = [
        asyncio.ensure_future(batcher.store(names, None))
        for names in (["b", "c"], ["d"], ["e", "f"], ["g"])
    ]
    await settle()
    store.release.set()
    await asyncio.gather(first, *rest)
    assert [tasks for tasks, _ in store.writes] == [["a"], ["b", "c", "d"], ["e", "f", "g"]]


async def test_max_in_flight_writes_go_at_once() -> None:
    store = Store()
    batcher: EnqueueBatcher[str, str] = EnqueueBatcher(store.write, max_in_flight=2)
    calls = [asyncio.ensure_future(batcher.store([name], None)) for name in "abc"]
    await settle()
    assert store.writes == [(["a"], None), (["b"], None)]
    store.release.set()
    await asyncio.gather(*calls)
    assert store.writes[2] == (["c"], None)
