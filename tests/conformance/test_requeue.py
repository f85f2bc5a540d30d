"""Requeue (SPEC §8): a FAILED, CANCELLED or EXPIRED task runs again with a fresh attempt
budget; its history stays; of racing requeues one wins. On every backend."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omniq import AsyncOmniQ, EventType, TaskStatus
from tests.conformance import tasks
from tests.conformance.conftest import MakeOQ
from tests.conformance.test_reliability import eventually
from tests.conftest import REPO_ROOT

WAIT = 25.0


def run_unless_missing(log: str, needed: str) -> str:
    """Append a line to ``log`` per run; fail while ``needed`` does not exist."""
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("run\n")
    if not os.path.exists(needed):
        raise FileNotFoundError(needed)
    return "done"


def runs(log: Path) -> int:
    return len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0


def kinds(events: list) -> list[EventType]:
    return [event.event_type for event in events]


async def test_requeue_of_a_failed_task_completes_it_on_its_next_run(
    oq: AsyncOmniQ, tmp_path: Path
) -> None:
    log, needed = tmp_path / "log", tmp_path / "needed"
    task_id = await oq.submit(run_unless_missing, (str(log), str(needed)), max_retries=1)
    await oq.worker().run(burst=True)
    failed = await oq.get_task(task_id)
    assert failed.status is TaskStatus.FAILED and failed.attempts == 2
    assert (await oq.get_result(task_id)).status is TaskStatus.FAILED
    before = await oq.get_events(task_id)

    needed.touch()
    assert await oq.requeue(task_id) is True
    again = await oq.get_task(task_id)
    assert again.status is TaskStatus.PENDING
    assert (again.attempts, again.lost_runs, again.worker_id) == (0, 0, None)
    # The old result is gone: a waiter waits for the new run's.
    assert await oq.get_result(task_id) is None
    waiter = asyncio.ensure_future(oq.get_result(task_id, wait=True, timeout=WAIT))
    async with oq.worker():
        result = await waiter
    assert result.status is TaskStatus.COMPLETE and result.result == "done"
    assert (await oq.get_task(task_id)).attempts == 1
    assert runs(log) == 3

    # History stays: the first life's events, then REQUEUED, then the new run's.
    after = await oq.get_events(task_id)
    assert kinds(after[: len(before)]) == kinds(before)
    rest = kinds(after[len(before) :])
    assert rest[0] is EventType.REQUEUED
    assert rest[-1] is EventType.COMPLETE


async def test_two_concurrent_requeues_run_the_task_once(make_oq: MakeOQ, tmp_path: Path) -> None:
    first, second = await make_oq(), await make_oq()
    log = tmp_path / "log"
    task_id = await first.enqueue(tasks.append_line, str(log), "ran")
    assert await first.cancel(task_id) is True
    async with first.worker(concurrency=4):
        won = await asyncio.gather(
            first.requeue(task_id), second.requeue(task_id), first.requeue(task_id)
        )
        assert sorted(won) == [False, False, True]
        result = await first.get_result(task_id, wait=True, timeout=WAIT)
        assert result.status is TaskStatus.COMPLETE
    # Anything left to run would run now.
    await first.worker().run(burst=True)
    assert runs(log) == 1
    assert kinds(await first.get_events(task_id)).count(EventType.REQUEUED) == 1


async def test_requeue_racing_the_stale_run_of_a_cancelled_task_has_one_outcome(
    oq: AsyncOmniQ, tmp_path: Path
) -> None:
    # A thread cannot be stopped: the cancelled run goes on while the requeued one runs.
    release, log = tmp_path / "release", tmp_path / "log"
    task_id = await oq.enqueue(tasks.hold_until, str(release), str(log))
    async with oq.worker(worker_type="thread", concurrency=2):

        async def started(count: int) -> bool:
            return runs(log) == count

        await eventually(lambda: started(1), "the first run")
        assert await oq.cancel(task_id) is True
        assert await oq.requeue(task_id) is True
        await eventually(lambda: started(2), "the requeued run")
        release.touch()  # both runs end now: only the requeued one's outcome counts
        result = await oq.get_result(task_id, wait=True, timeout=WAIT)
    assert result.status is TaskStatus.COMPLETE and result.attempts == 1
    assert (await oq.get_task(task_id)).status is TaskStatus.COMPLETE
    events = kinds(await oq.get_events(task_id))
    assert events.count(EventType.COMPLETE) == 1
    assert events.index(EventType.CANCELLED) < events.index(EventType.REQUEUED)


async def test_requeue_of_an_expired_task_runs_it(oq: AsyncOmniQ) -> None:
    task_id = await oq.submit(tasks.add, (2, 3), ttl=0.05)

    async def expired() -> bool:
        return (await oq.get_task(task_id)).status is TaskStatus.EXPIRED

    await eventually(expired, "the task to expire")
    assert await oq.requeue(task_id) is True
    assert (await oq.get_task(task_id)).expires_at is None
    await oq.worker().run(burst=True)
    assert (await oq.get_result(task_id)).result == 5


async def test_requeue_refuses_tasks_that_are_not_failed_cancelled_or_expired(
    oq: AsyncOmniQ, tmp_path: Path
) -> None:
    assert await oq.requeue("no-such-task") is False
    pending = await oq.enqueue(tasks.add, 1, 1)
    assert await oq.requeue(pending) is False
    await oq.worker().run(burst=True)
    assert await oq.requeue(pending) is False  # complete
    assert (await oq.get_result(pending)).result == 2

    release, log = tmp_path / "release", tmp_path / "log"
    running = await oq.enqueue(tasks.hold_until_async, str(release), str(log))
    async with oq.worker():

        async def started() -> bool:
            return runs(log) > 0

        await eventually(started, "the task to start")
        assert await oq.requeue(running) is False
        release.touch()
        assert (await oq.get_result(running, wait=True, timeout=WAIT)).ok
    assert kinds(await oq.get_events(running)).count(EventType.REQUEUED) == 0


async def test_a_requeued_dependent_waits_for_its_requeued_dependency(
    oq: AsyncOmniQ, tmp_path: Path
) -> None:
    log, needed = tmp_path / "log", tmp_path / "needed"
    parent = await oq.enqueue(run_unless_missing, str(log), str(needed))
    child = await oq.submit(tasks.add, (1, 2), depends_on=[parent])
    await oq.worker().run(burst=True)
    assert (await oq.get_task(child)).status is TaskStatus.CANCELLED  # the parent failed

    # Requeued first, the dependent is cancelled again: its dependency still failed.
    assert await oq.requeue(child) is True
    assert (await oq.get_task(child)).status is TaskStatus.CANCELLED
    needed.touch()
    assert await oq.requeue(parent) is True
    assert await oq.requeue(child) is True
    assert (await oq.get_task(child)).status is TaskStatus.SCHEDULED
    await oq.worker().run(burst=True)
    assert (await oq.get_result(parent)).result == "done"
    assert (await oq.get_result(child)).result == 3


@pytest.mark.cross_process
async def test_cli_requeues_one_task_or_all_failed_ones(
    oq: AsyncOmniQ, store_url: str, namespace: str, tmp_path: Path
) -> None:
    failed = [await oq.enqueue(tasks.fail, f"no {i}") for i in range(3)]
    other = await oq.submit(tasks.fail, ("elsewhere",), queue="other")
    await oq.worker(queues=["default", "other"]).run(burst=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env.update(
        OMNIQ_TEST_URL=store_url,
        OMNIQ_TEST_NAMESPACE=namespace,
        OMNIQ_BASE_DIR=str(tmp_path / ".omniq"),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
    )

    def omniq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "omniq", "--app", "tests.conformance._apps:oq", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )

    one = await asyncio.to_thread(omniq, "requeue", failed[0])
    assert one.returncode == 0, one.stderr
    assert (await oq.get_task(failed[0])).status is TaskStatus.PENDING
    again = await asyncio.to_thread(omniq, "requeue", failed[0])
    assert again.returncode == 1
    assert "not requeued" in again.stderr

    many = await asyncio.to_thread(omniq, "requeue", "--status", "failed", "--queue", "default")
    assert many.returncode == 0, many.stderr
    assert "requeued 2 tasks" in many.stdout
    for task_id in failed:
        assert (await oq.get_task(task_id)).status is TaskStatus.PENDING
    assert (await oq.get_task(other)).status is TaskStatus.FAILED
