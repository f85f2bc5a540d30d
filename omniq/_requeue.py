"""Requeue: a task that ended ``FAILED``, ``CANCELLED`` or ``EXPIRED`` runs again.

:func:`requeue` puts it back with a fresh attempt budget (``attempts`` and ``lost_runs``
0, no worker, no lease, due now, no ``expires_at``: an expired task would otherwise
expire again at once). The status change is one compare-and-set in the backend
(``BaseTaskQueue.requeue``), so of a requeue racing another, or a worker, one wins.

The steps after the win, in order:

1. the task is stored *held*: due :data:`HOLD` from now, so no worker runs it yet;
2. its old result is deleted, so ``get_result(wait=True)`` waits for the new run;
3. a ``REQUEUED`` event is logged (the earlier events stay);
4. the task is made due now (which wakes idle workers).

Holding it first keeps a quick worker from storing the new run's result before step 2
deletes the old one. A requeuer that dies between 1 and 4 leaves the task to run once
the hold is over. A cancel that lands during the hold wins; its result is stored again
if step 2 took it.

A task with ``depends_on`` goes back ``SCHEDULED`` and is settled again: it runs once
every dependency is ``COMPLETE`` and is cancelled again if one is not. Dependents that
were cancelled because this task failed stay cancelled: requeue each of them too (a
requeued dependent waits for its requeued dependency).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from msgspec.structs import replace

from omniq.decisions import cancelled_result
from omniq.models import EventType, Task, TaskEvent, TaskStatus, utcnow
from omniq.storage.base import BaseResultStorage, BaseTaskQueue, UnreadableTask

__all__ = ["HOLD", "REQUEUABLE", "requeue"]

#: The statuses a task can be requeued from.
REQUEUABLE = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED})
#: How long a requeued task is held while its old result is removed (step 1 above).
HOLD = timedelta(seconds=30)
_WAITING = frozenset({TaskStatus.PENDING, TaskStatus.SCHEDULED})


async def requeue(
    queue: BaseTaskQueue,
    results: BaseResultStorage,
    task_id: str,
    *,
    log: Callable[[TaskEvent], Awaitable[None]],
    settle: Callable[[str], Awaitable[None]],
) -> bool:
    """Requeue ``task_id`` (see the module docstring): True if this call put it back,
    False for a task in another status (or unknown, or whose record cannot be read)."""
    task = await queue.get(task_id)
    if task is None or task.status not in REQUEUABLE or isinstance(task, UnreadableTask):
        return False
    now = utcnow()
    target = TaskStatus.SCHEDULED if task.depends_on else TaskStatus.PENDING
    fresh = replace(
        task,
        status=target,
        attempts=0,
        lost_runs=0,
        worker_id=None,
        lease_expires_at=None,
        due_at=now + HOLD,
        expires_at=None,
        updated_at=now,
    )
    if await queue.requeue(fresh, from_statuses={task.status}, now=now) is None:
        return False
    await results.delete([task_id])
    await log(
        TaskEvent(
            task_id=task_id,
            event_type=EventType.REQUEUED,
            timestamp=now,
            message=f"requeued from {task.status.value}",
            queue=task.queue,
        )
    )
    released = await queue.transition(
        task_id, from_statuses=_WAITING, to_status=target, now=utcnow(), due_at=now
    )
    if released is None:
        await _restore_cancelled(queue, results, task_id)
    elif task.depends_on:
        await settle(task_id)
    return True


async def _restore_cancelled(
    queue: BaseTaskQueue, results: BaseResultStorage, task_id: str
) -> None:
    """A cancel won during the hold: store its result again if the delete took it."""
    task: Task | None = await queue.get(task_id)
    if task is None or task.status is not TaskStatus.CANCELLED:
        return
    if await results.get(task_id) is None:
        await results.put(cancelled_result(task, now=task.updated_at or utcnow()))
