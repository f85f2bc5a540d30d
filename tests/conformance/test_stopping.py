"""A pool asked to stop while a claim is out (SPEC §3, graceful stop), on every backend.

A claim cannot be called back once sent: the store may lease tasks to a worker that has
just been asked to stop. Those tasks must go back to the queue at once, with their attempt
given back, for another worker to take now, not after ``lease_seconds``.

To put the stop request exactly between "the store leased the task" and "the pool has the
reply", the in-process tests let the real claim run and request the stop before its reply
reaches the pool: a wrapper around the queue's own ``claim`` (the store is untouched), or
on Redis, whose idle claim runs on the server behind ``BLPOP``, by holding the event loop
until the server has run it.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis

from omniq import AsyncOmniQ, OmniQ, TaskStatus
from omniq.workers.pool import AsyncWorkerPool
from tests.conformance import tasks
from tests.conformance.conftest import MakeOQ
from tests.conformance.test_reliability import Workers
from tests.conftest import REDIS_URL
from tests.storage._redis_helpers import wait_for_blocked_client

LEASE = 120  # far longer than any test here: a task left to its lease would fail it


class StopOnClaim:
    """Makes the first claim of ``oq``'s queue that leases something ask ``pool`` to stop
    before its reply reaches the pool (a wrapper around the queue's own ``claim``)."""

    def __init__(self, oq: AsyncOmniQ, pool: AsyncWorkerPool) -> None:
        self.requested = asyncio.Event()
        self.stop: asyncio.Task[None] | None = None
        self._queue = oq.queue
        real_claim = self._queue.claim

        async def claim_then_stop(*args: Any, **kwargs: Any) -> list[Any]:
            claimed = await real_claim(*args, **kwargs)
            if claimed and self.stop is None:
                self.stop = asyncio.create_task(pool.stop())
                self.requested.set()
                await asyncio.sleep(0)  # the stop request is in before the claim's reply
            return claimed

        self._queue.claim = claim_then_stop  # type: ignore[method-assign]

    async def stopped(self) -> None:
        """Wait for the stop the claim asked for; the queue's claim is its own again."""
        await self.requested.wait()
        assert self.stop is not None
        await self.stop
        del self._queue.claim


async def assert_handed_back(oq: AsyncOmniQ, task_id: str, marker: Path) -> None:
    """The task never ran, waits unleased with no attempt spent, and another worker
    takes it at once."""
    assert not await asyncio.to_thread(marker.exists), "a claim after the stop request ran"
    task = await oq.get_task(task_id)
    assert task is not None
    assert (task.status, task.attempts, task.worker_id) == (TaskStatus.PENDING, 0, None)
    await asyncio.wait_for(oq.worker().run(burst=True), timeout=LEASE / 4)
    result = await oq.get_result(task_id)
    assert result is not None
    assert (result.status, result.attempts) == (TaskStatus.COMPLETE, 1)
    assert await asyncio.to_thread(marker.exists)


async def test_a_claim_landing_after_the_stop_request_is_handed_back(
    make_oq: MakeOQ, tmp_path: Path
) -> None:
    # The pool's first claim, made as it starts, leases the waiting task.
    oq = await make_oq(lease_seconds=LEASE)
    marker = tmp_path / "ran"
    task_id = await oq.enqueue(tasks.touch, str(marker))
    pool = oq.worker(concurrency=2)
    stopper = StopOnClaim(oq, pool)
    await asyncio.wait_for(pool.run(), timeout=30)
    await stopper.stopped()
    await assert_handed_back(oq, task_id, marker)


async def test_an_idle_worker_stopped_as_a_task_arrives_hands_it_back(
    make_oq: MakeOQ, backend_name: str, namespace: str, tmp_path: Path
) -> None:
    # The pool is idle, waiting for work; a task arrives and is claimed for it just as
    # it is asked to stop.
    marker = tmp_path / "ran"
    if backend_name == "redis":
        # A long poll interval: the pool's BLPOP must not time out while the loop is held.
        oq = await make_oq(lease_seconds=LEASE, poll_interval=60)
        pool = oq.worker(concurrency=2)
        await pool.start()
        plain = sync_redis.Redis.from_url(REDIS_URL)
        try:
            connection = oq.queue.connection  # type: ignore[attr-defined]
            await wait_for_blocked_client(connection, plain, count=2)
            found: list[str] = []

            def produce() -> None:  # another client, so this event loop need not run
                with OmniQ(
                    task_queue=REDIS_URL,
                    result_storage=REDIS_URL,
                    event_storage=REDIS_URL,
                    namespace=namespace,
                ) as producer:
                    found.append(producer.enqueue(tasks.touch, str(marker)))

            producer = threading.Thread(target=produce)
            producer.start()
            producer.join()
            task_id = found[0]
            # The loop is held until the server has run the claim behind the pool's BLPOP:
            # the pool cannot read its reply before the stop request.
            for _ in range(5_000):
                if plain.hget(f"{namespace}:t:{task_id}", "s") == b"running":
                    break
                time.sleep(0.001)  # noqa: ASYNC251 - deliberately keeps the loop still
            else:
                raise AssertionError("the idle worker's claim never ran")
        finally:
            plain.close()
        await asyncio.wait_for(pool.stop(), timeout=30)
    else:
        oq = await make_oq(lease_seconds=LEASE)
        pool = oq.worker(concurrency=2)
        stopper = StopOnClaim(oq, pool)
        await pool.start()
        await asyncio.sleep(0.3)  # idle: more than a poll interval with nothing to claim
        assert not stopper.requested.is_set(), "the pool claimed from an empty queue"
        task_id = await oq.enqueue(tasks.touch, str(marker))
        await asyncio.wait_for(stopper.stopped(), timeout=30)
        assert not pool.running
    await assert_handed_back(oq, task_id, marker)


@pytest.mark.cross_process
@pytest.mark.parametrize("order", ["signal-first", "together", "task-first"])
async def test_a_cli_worker_sigtermed_as_a_task_arrives_leaves_it_to_the_next_worker(
    oq: AsyncOmniQ, store_url: str, namespace: str, tmp_path: Path, order: str
) -> None:
    workers = Workers(store_url, namespace, tmp_path)
    try:
        worker = workers.start(concurrency=2, lease_seconds=LEASE, log_level="INFO")
        while not await asyncio.to_thread(workers.all_started):
            assert worker.poll() is None, workers.output()
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # idle, waiting for work
        marker = tmp_path / "ran"
        if order == "signal-first":
            worker.send_signal(signal.SIGTERM)
        task_id = await oq.enqueue(tasks.touch, str(marker))
        if order == "together":
            worker.send_signal(signal.SIGTERM)
        elif order == "task-first":
            await asyncio.sleep(0.001)
            worker.send_signal(signal.SIGTERM)
        assert await workers.exit_code(worker) == 0, workers.output()
    finally:
        workers.kill_all()
    task = await oq.get_task(task_id)
    assert task is not None
    if task.status is TaskStatus.COMPLETE:  # claimed before the signal: it ran there
        assert task.attempts == 1 and marker.exists()
        return
    # Otherwise it is back in the queue: the next worker runs it now, not in LEASE s.
    await assert_handed_back(oq, task_id, marker)
