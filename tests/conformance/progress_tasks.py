"""Task functions of the progress tests (importable by worker processes too)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from omniq import current_task


def _fields() -> dict[str, Any]:
    ctx = current_task()
    assert ctx is not None, "current_task() is None inside a task"
    return {
        "task_id": ctx.task_id,
        "attempt": ctx.attempt,
        "queue": ctx.queue,
        "worker_id": ctx.worker_id,
    }


def report_and_wait(release: str, timeout: float = 60.0) -> dict[str, Any]:
    """Report 1 of 2, block until ``release`` exists, report 2 of 2; return the context."""
    ctx = current_task()
    assert ctx is not None
    ctx.progress(1, 2, message="half")
    deadline = time.monotonic() + timeout
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(release)
        time.sleep(0.01)
    ctx.progress(2, 2, message="done")
    return _fields()


async def report_and_wait_async(release: str, timeout: float = 60.0) -> dict[str, Any]:
    """:func:`report_and_wait` as a coroutine function."""
    ctx = current_task()
    assert ctx is not None
    ctx.progress(1, 2, message="half")
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(Path(release).exists):
        if time.monotonic() > deadline:
            raise TimeoutError(release)
        await asyncio.sleep(0.01)
    ctx.progress(2, 2, message="done")
    return _fields()


def tight_loop(count: int) -> int:
    """Report progress ``count`` times in a row, as fast as it can."""
    ctx = current_task()
    assert ctx is not None
    for done in range(1, count + 1):
        ctx.progress(done, count)
    return count


def silent() -> bool:
    """Reports nothing; True when it sees its context."""
    return current_task() is not None
