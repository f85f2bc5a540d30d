"""The storage contract of requeue and the worker registry (``omniq.storage._fleet``,
``BaseResultStorage.delete``): mixed into ``QueueContract`` and ``ResultContract``, so
every backend's storage tests run it. The fixtures are those classes' (``queue``,
``other_queue``, ``results``)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import msgspec

from omniq.models import Task, TaskResult, TaskStatus, WorkerInfo, utcnow
from omniq.storage.base import BaseResultStorage, BaseTaskQueue

S = timedelta(seconds=1)


def _task(**fields: object) -> Task:
    return Task(id=uuid.uuid4().hex, func="tests.conformance.tasks:add", **fields)  # type: ignore[arg-type]


def _fresh(task: Task, **fields: object) -> Task:
    """``task`` made new as ``omniq._requeue`` makes it."""
    values: dict[str, object] = {
        "status": TaskStatus.PENDING,
        "attempts": 0,
        "lost_runs": 0,
        "worker_id": None,
        "lease_expires_at": None,
        "expires_at": None,
        "due_at": utcnow(),
        "updated_at": utcnow(),
    }
    values.update(fields)
    return msgspec.structs.replace(task, **values)


def _worker(worker_id: str, **fields: object) -> WorkerInfo:
    values: dict[str, object] = {
        "hostname": "host",
        "pid": 42,
        "queues": ("default", "mail"),
        "worker_type": "async",
        "concurrency": 8,
    }
    values.update(fields)
    return WorkerInfo(id=worker_id, **values)  # type: ignore[arg-type]


class FleetQueueContract:
    """``requeue`` is a compare-and-set that writes the fresh record; the registry
    upserts, deregisters and leaves out (then purges) the lapsed."""

    async def _failed(self, queue: BaseTaskQueue, **fields: object) -> Task:
        task = _task(max_retries=1, **fields)
        await queue.enqueue([task])
        now = utcnow()
        await queue.claim([task.queue], "w", limit=1, lease_seconds=30, now=now)
        assert await queue.ack(task.id, "w", TaskStatus.FAILED, now=now)
        stored = await queue.get(task.id)
        assert stored is not None and stored.status is TaskStatus.FAILED
        return stored

    async def test_requeue_writes_the_fresh_task_if_its_status_matches(
        self, queue: BaseTaskQueue
    ) -> None:
        failed = await self._failed(queue, expires_at=utcnow() + 3600 * S, priority=2)
        now = utcnow()
        assert await queue.requeue(
            _fresh(failed), from_statuses={TaskStatus.CANCELLED}, now=now
        ) is None  # fmt: skip
        assert await queue.requeue(
            _fresh(_task()), from_statuses={TaskStatus.FAILED}, now=now
        ) is None  # fmt: skip  # unknown id
        back = await queue.requeue(_fresh(failed), from_statuses={TaskStatus.FAILED}, now=now)
        assert back is not None
        stored = await queue.get(failed.id)
        assert stored is not None
        for task in (back, stored):
            assert task.status is TaskStatus.PENDING
            assert (task.attempts, task.lost_runs, task.worker_id) == (0, 0, None)
            assert (task.lease_expires_at, task.expires_at) == (None, None)
            assert (task.priority, task.max_retries, task.func) == (2, 1, failed.func)
        claimed = await queue.claim(["default"], "w2", limit=5, lease_seconds=30, now=utcnow())
        assert [(t.id, t.attempts) for t in claimed] == [(failed.id, 1)]
        assert await queue.stats() == {"default": {"running": 1}}

    async def test_requeue_holds_a_task_due_later(self, queue: BaseTaskQueue) -> None:
        failed = await self._failed(queue)
        now = utcnow()
        held = _fresh(failed, due_at=now + 60 * S)
        assert await queue.requeue(held, from_statuses={TaskStatus.FAILED}, now=now)
        assert await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=now) == []
        released = await queue.transition(
            failed.id, from_statuses={TaskStatus.PENDING}, to_status=TaskStatus.PENDING,
            now=now, due_at=now,
        )  # fmt: skip
        assert released is not None
        claimed = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
        assert [t.id for t in claimed] == [failed.id]

    async def test_racing_requeues_have_one_winner(
        self, queue: BaseTaskQueue, other_queue: BaseTaskQueue
    ) -> None:
        failed = await self._failed(queue)
        now = utcnow()
        won = await asyncio.gather(
            *(
                q.requeue(_fresh(failed), from_statuses={TaskStatus.FAILED}, now=now)
                for q in (queue, other_queue, queue, other_queue)
            )
        )
        assert sum(task is not None for task in won) == 1

    async def test_register_list_and_deregister_workers(
        self, queue: BaseTaskQueue, other_queue: BaseTaskQueue
    ) -> None:
        now = utcnow()
        assert await queue.list_workers(now=now) == []
        a, b = _worker("w-a", started_at=now - 5 * S), _worker("w-b:host:1", queues=("x",))
        await queue.register_worker(a, expires_at=now + 30 * S)
        await other_queue.register_worker(b, expires_at=now + 30 * S)
        assert await queue.list_workers(now=now) == [a, b]
        beat = msgspec.structs.replace(a, running=3, last_seen=now + S)
        await queue.register_worker(beat, expires_at=now + 31 * S)
        assert await other_queue.list_workers(now=now) == [beat, b]
        await other_queue.deregister_worker("w-a")
        await other_queue.deregister_worker("unknown")
        assert await queue.list_workers(now=now) == [b]

    async def test_a_registration_lapses_unless_renewed(self, queue: BaseTaskQueue) -> None:
        now = utcnow()
        await queue.register_worker(_worker("short"), expires_at=now + 10 * S)
        await queue.register_worker(_worker("long"), expires_at=now + 60 * S)
        assert [w.id for w in await queue.list_workers(now=now + 20 * S)] == ["long"]
        # Purged on the way: not back when read at an earlier time.
        assert [w.id for w in await queue.list_workers(now=now)] == ["long"]


class ResultDeleteContract:
    """``BaseResultStorage.delete``."""

    async def test_delete_removes_the_results_named(self, results: BaseResultStorage) -> None:
        kept, gone = (
            TaskResult(task_id=uuid.uuid4().hex, status=TaskStatus.FAILED) for _ in range(2)
        )
        expiring = TaskResult(
            task_id=uuid.uuid4().hex, status=TaskStatus.FAILED, expires_at=utcnow() + 60 * S
        )
        await results.put_many([kept, gone, expiring])
        await results.delete([gone.task_id, expiring.task_id, "unknown"])
        await results.delete([])
        assert await results.get(gone.task_id) is None
        assert await results.get(expiring.task_id) is None
        assert (await results.get(kept.task_id)) is not None
        assert await results.wait(gone.task_id, 0.05) is None
        await results.put(gone)
        assert await results.get(gone.task_id) is not None
        assert await results.delete_expired(utcnow() + 120 * S) == 0
