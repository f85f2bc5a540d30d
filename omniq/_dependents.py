"""Dependents: releasing a waiting task once all its dependencies completed, cancelling it
once one ended otherwise, and sweeping for those a lost worker left waiting.

A task with ``depends_on`` waits ``SCHEDULED`` until :func:`settle` moves it to ``PENDING``
(every dependency ``COMPLETE``) or has it cancelled (a dependency ended in another final
state). The engine calls these after every finish; the cancel itself (a final result, an
event, and the dependents' own dependents) is the engine's, passed in as ``cancel``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from omniq.models import FINAL_STATUSES, Task, TaskStatus, utcnow
from omniq.storage.base import BaseTaskQueue

__all__ = ["FAILED_DEPENDENCY", "SWEEP_LIMIT", "CancelDependent", "on_finished", "settle", "sweep"]

#: How many waiting tasks one dependents sweep looks at (:func:`sweep`).
SWEEP_LIMIT = 1000
#: A dependency that ended in one of these cancels its dependents.
FAILED_DEPENDENCY = FINAL_STATUSES - {TaskStatus.COMPLETE}

#: ``cancel(task_id, dependency_id, dependency_status)``: cancel a dependent for its
#: dependency's sake.
CancelDependent = Callable[[str, str, TaskStatus], Awaitable[None]]


async def on_finished(
    queue: BaseTaskQueue,
    finished: Sequence[tuple[str, TaskStatus]],
    found: dict[str, list[Task]] | None,
    cancel: CancelDependent,
) -> None:
    """Release or cancel the dependents of tasks that just reached a final state
    (``found``: their dependents, when the caller already looked them up)."""
    if not finished:
        return
    if found is None:
        found = await queue.dependents_many([task_id for task_id, _ in finished])
    if not found:
        return
    for task_id, status in finished:
        for dependent in found.get(task_id, ()):
            if dependent.status is not TaskStatus.SCHEDULED:
                continue
            if status is TaskStatus.COMPLETE:
                await settle(queue, dependent.id, cancel)
            else:
                await cancel(dependent.id, task_id, status)


async def settle(queue: BaseTaskQueue, task_id: str, cancel: CancelDependent) -> None:
    """Release a dependent whose dependencies all completed; cancel one with a
    dependency that ended otherwise."""
    task = await queue.get(task_id)
    if task is None or task.status is not TaskStatus.SCHEDULED or not task.depends_on:
        return
    deps = await queue.get_many(list(task.depends_on))
    for dep_id, dep in zip(task.depends_on, deps, strict=True):
        dep_status = dep.status if dep is not None else None
        if dep_status in FINAL_STATUSES and dep_status is not TaskStatus.COMPLETE:
            assert dep_status is not None
            await cancel(task_id, dep_id, dep_status)
            return
    if all(dep is not None and dep.status is TaskStatus.COMPLETE for dep in deps):
        # The backend wakes idle workers when the task becomes claimable.
        await queue.transition(
            task_id,
            from_statuses={TaskStatus.SCHEDULED},
            to_status=TaskStatus.PENDING,
            now=utcnow(),
            due_at=task.due_at,
        )


async def sweep(queue: BaseTaskQueue, limit: int, cancel: CancelDependent) -> int:
    """Settle the dependents left ``SCHEDULED`` after all their dependencies ended.

    A worker releases a task's dependents after acknowledging it; one killed (or cut
    off from its store) between the two leaves them waiting for ever, since nothing
    else would finish their dependencies again. Running workers call this now and
    then. It looks at the newest ``limit`` waiting tasks and returns how many it
    settled (released, or cancelled for a failed dependency).
    """
    waiting = [
        task
        for task in await queue.list(status=TaskStatus.SCHEDULED, limit=limit)
        if task.depends_on
    ]
    if not waiting:
        return 0
    dep_ids = sorted({dep_id for task in waiting for dep_id in task.depends_on})
    deps = await queue.get_many(dep_ids)
    ended = {dep.id for dep in deps if dep is not None and dep.status in FINAL_STATUSES}
    failed = {dep.id for dep in deps if dep is not None and dep.status in FAILED_DEPENDENCY}
    settled = 0
    for task in waiting:
        if ended.issuperset(task.depends_on) or not failed.isdisjoint(task.depends_on):
            await settle(queue, task.id, cancel)
            settled += 1
    return settled
