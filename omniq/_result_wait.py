"""Waiting for a task's result (``get_result(wait=True)``).

The waiter blocks on the result storage's own notification (a pub/sub message, a
``NOTIFY``, a file watch) in chunks, and between chunks looks at the task: an id the
queue does not hold fails at once, a task past its ttl is expired (``expire``), and a
final task whose result is gone (cleaned up) ends the wait with None.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from omniq.decisions import is_expired
from omniq.errors import ResultTimeoutError, StorageConnectionError, StorageError, TaskNotFoundError
from omniq.models import FINAL_STATUSES, Task, TaskResult, utcnow
from omniq.storage.base import BaseResultStorage, BaseTaskQueue

__all__ = ["RESULT_GRACE", "wait_for_result", "while_no_result"]

#: How long a ``get_result`` waiter gives a task that just became final to show its
#: result: one ended by ``cancel()`` or its ttl stores it right after the status change.
RESULT_GRACE = timedelta(seconds=1)

#: ``expire(task)``: expire a waiting task past its ttl; the task as it now stands.
Expire = Callable[[Task], Awaitable[Task | None]]


async def wait_for_result(
    queue: BaseTaskQueue,
    results: BaseResultStorage,
    task_id: str,
    limit: float | None,
    *,
    expire: Expire,
) -> TaskResult | None:
    """Wait for a task's result: None when it finished but its result is gone;
    ``ResultTimeoutError`` after ``limit`` seconds (None: never)."""
    loop = asyncio.get_running_loop()
    deadline = None if limit is None else loop.time() + limit
    while True:
        now = utcnow()
        look_again, gone = await while_no_result(queue, task_id, now, expire=expire)
        if gone:
            # Results are stored before tasks are acknowledged: read once more.
            return await results.get(task_id)
        remaining = 60.0 if deadline is None else deadline - loop.time()
        if remaining <= 0:
            raise ResultTimeoutError(f"no result for task {task_id} within {limit} s")
        chunk = min(remaining, 60.0)
        if look_again is not None:
            chunk = min(chunk, max(0.001, (look_again - now).total_seconds()))
        stored = await results.wait(task_id, chunk)
        if stored is not None:
            return stored


async def while_no_result(
    queue: BaseTaskQueue, task_id: str, now: datetime, *, expire: Expire
) -> tuple[datetime | None, bool]:
    """What a ``get_result`` waiter that found no result should do: (when to look at
    the task again, None for "at leisure"; True when no result is coming).

    A final task's result was stored before it became final, but for a task ended
    by ``cancel()`` or ``ttl``: that result follows the status change at once, so a
    task final for under a second is given that second. Raises TaskNotFoundError for
    an id the queue does not hold.
    """
    try:
        task = await queue.get(task_id)
    except StorageConnectionError:
        raise
    except StorageError:
        return None, False  # an unreadable record: its worker will store a result
    if task is None:
        raise TaskNotFoundError(f"task {task_id} does not exist (never enqueued, or cleaned up)")
    if is_expired(task, now):
        task = await expire(task) or task
    if task.status in FINAL_STATUSES:
        settled = (task.updated_at or task.created_at) + RESULT_GRACE
        return (settled, False) if now < settled else (None, True)
    if task.expires_at is not None and task.attempts == 0:
        return task.expires_at, False
    return None, False
