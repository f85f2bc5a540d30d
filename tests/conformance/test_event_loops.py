"""A client used from one event loop after another, on every backend.

Scripts call ``asyncio.run`` more than once, notebooks and test suites run a loop per
cell or test, while the client is made once, outside any loop. It follows its caller to
each new loop (its connections close with the loop they were made on) and never hangs;
used from two running loops at once it fails at once, with an error that says why.

These are plain test functions that run ``asyncio.run`` themselves (pytest-asyncio would
run them inside a loop), and every step has a deadline, so a regression fails rather
than hangs.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from omniq import AsyncOmniQ, EventType, TaskEvent, TaskStatus
from tests.conformance import tasks
from tests.conftest import (
    NATS_URL,
    POSTGRES_URL,
    REDIS_URL,
    delete_nats_namespace,
    delete_redis_namespace,
    drop_postgres_schema,
)

#: Seconds any one step may take (each takes well under one).
STEP = 20.0

Runner = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


def _client(store_url: str, namespace: str, tmp_path: Path, **extra: Any) -> AsyncOmniQ:
    return AsyncOmniQ(
        task_queue=store_url,
        result_storage=store_url,
        event_storage=store_url,
        namespace=namespace,
        base_dir=str(tmp_path / ".omniq"),
        poll_interval=0.2,
        **extra,
    )


def _kinds(events: list[TaskEvent]) -> list[EventType]:
    return [event.event_type for event in events]


def _drop_store(backend_name: str, store_url: str, namespace: str) -> None:
    if backend_name == "redis":
        asyncio.run(delete_redis_namespace(REDIS_URL, namespace))
    if backend_name == "postgres":
        asyncio.run(drop_postgres_schema(POSTGRES_URL, namespace))
    if backend_name == "nats":
        asyncio.run(delete_nats_namespace(NATS_URL, namespace))
    if backend_name == "memory":
        import fsspec

        fs = fsspec.filesystem("memory")
        root = store_url.removeprefix("memory://")
        if fs.exists(root):
            fs.rm(root, recursive=True)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


RAN = [EventType.ENQUEUED, EventType.EXECUTING, EventType.COMPLETE]


@pytest.mark.timeout(90)
def test_a_client_made_outside_any_loop_follows_asyncio_run(
    backend_name: str, store_url: str, namespace: str, tmp_path: Path
) -> None:
    # A long flush interval keeps the events logged last in a loop buffered when it ends:
    # asyncio.run cancels the background writer, which writes them before it goes.
    oq = _client(store_url, namespace, tmp_path, event_flush_interval=30.0)
    left_pending: list[str] = []

    async def step(n: int) -> None:
        async with asyncio.timeout(STEP):
            if left_pending:
                # Read by a client of its own: stored when the last loop ended, not by
                # the next flush of this one.
                async with _client(store_url, namespace, tmp_path) as reader:
                    assert _kinds(await reader.get_events(left_pending[-1])) == [EventType.ENQUEUED]
            task_id = await oq.enqueue(tasks.add, n, n)
            await oq.worker(concurrency=2).run(burst=True)
            result = await oq.get_result(task_id)
            assert result is not None and result.status is TaskStatus.COMPLETE
            assert result.result == 2 * n
            assert _kinds(await oq.get_events(task_id)) == RAN
            # A worker idle in its blocking wait (BLPOP, LISTEN, a file or SQLite watch)
            # when the task comes, stopped before the loop ends.
            async with oq.worker(concurrency=2):
                await asyncio.sleep(0.3)
                waited = await oq.enqueue(tasks.async_add, n, 1)
                result = await oq.get_result(waited, wait=True, timeout=STEP)
            assert result is not None and result.result == n + 1
            left_pending.append(await oq.enqueue(tasks.add, 0, 0))

    async def finish() -> None:
        async with asyncio.timeout(STEP), oq:  # the form that hung on Redis
            assert _kinds(await oq.get_events(left_pending[-1])) == [EventType.ENQUEUED]
            assert (await oq.stats())["default"] == {"complete": 8, "pending": 1}

    try:
        for n in range(3):
            asyncio.run(step(n))
        asyncio.run(finish())
    finally:
        _drop_store(backend_name, store_url, namespace)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_connections_close_with_their_loop(
    backend_name: str, store_url: str, namespace: str, tmp_path: Path, runner: str
) -> None:
    run = RUNNERS[runner]
    oq = _client(store_url, namespace, tmp_path)

    async def step(n: int) -> None:
        async with asyncio.timeout(STEP):
            task_id = await oq.enqueue(tasks.add, n, n)
            async with oq.worker(concurrency=2):  # its blocking connections too
                result = await oq.get_result(task_id, wait=True, timeout=STEP)
            assert result is not None and result.result == 2 * n

    async def close() -> None:
        async with asyncio.timeout(STEP):
            await oq.close()

    try:
        for n in range(2):
            run(step(n))
        before = _open_fds()
        for n in range(2, 14):
            run(step(n))
        # One loop's connections are gone with it: twelve more loops, no more descriptors.
        assert _open_fds() - before <= 2
        run(close())
    finally:
        _drop_store(backend_name, store_url, namespace)


@pytest.mark.timeout(90)
def test_a_client_running_on_one_loop_refuses_a_second_loop_at_once(
    backend_name: str, store_url: str, namespace: str, tmp_path: Path
) -> None:
    from omniq.errors import EventLoopError

    oq = _client(store_url, namespace, tmp_path)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, name="other-loop", daemon=True)
    thread.start()

    def on_other_loop(coro: Coroutine[Any, Any, Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, STEP), other)
        return future.result(STEP + 5)

    async def from_here() -> None:
        async with asyncio.timeout(STEP):
            with pytest.raises(EventLoopError, match="one event loop at a time"):
                await oq.enqueue(tasks.add, 2, 2)
            with pytest.raises(EventLoopError, match="one client per event loop"):
                await oq.close()

    async def after_it_ended(task_id: str) -> None:
        async with asyncio.timeout(STEP):
            task = await oq.get_task(task_id)
            assert task is not None and task.status is TaskStatus.PENDING
            await oq.enqueue(tasks.add, 3, 3)
            assert (await oq.stats())["default"] == {"pending": 2}
            await oq.close()

    try:
        try:
            first = on_other_loop(oq.enqueue(tasks.add, 1, 1))
            asyncio.run(from_here())
            # Refused without harm to the loop it runs on.
            assert on_other_loop(oq.get_task(first)) is not None
        finally:
            other.call_soon_threadsafe(other.stop)
            thread.join(STEP)
            # Closed by hand, without shutting down: its connections are left to whoever
            # uses the client next, on the next loop.
            other.close()
        asyncio.run(after_it_ended(first))
    finally:
        _drop_store(backend_name, store_url, namespace)
