"""Task context and progress (SPEC §8): ``current_task()`` in every worker type, progress
stored by the worker and read back through ``get_task`` while the task runs and after."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ, Progress, Task, TaskContext, TaskStatus, current_task
from omniq.errors import ConfigError
from omniq.models import utcnow
from tests.conformance import progress_tasks, tasks

#: The longest any wait below may take before the test fails (never reached when green).
_PATIENCE = 60.0


async def _progress_seen(oq: AsyncOmniQ, task_id: str, check: Callable[[Progress], bool]) -> Task:
    """Read the task until its stored progress passes ``check``."""
    deadline = time.monotonic() + _PATIENCE
    while True:
        task = await oq.get_task(task_id)
        assert task is not None
        if task.progress is not None and check(task.progress):
            return task
        assert time.monotonic() < deadline, f"progress never showed: {task.progress}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("worker_type", "func"),
    [
        pytest.param("async", progress_tasks.report_and_wait_async, id="async-coroutine"),
        pytest.param("async", progress_tasks.report_and_wait, id="async-plain"),
        pytest.param("thread", progress_tasks.report_and_wait, id="thread"),
        pytest.param("process", progress_tasks.report_and_wait, id="process"),
        pytest.param("process", progress_tasks.report_and_wait_async, id="process-coroutine"),
        pytest.param("gevent", progress_tasks.report_and_wait, id="gevent"),
        pytest.param("gevent", progress_tasks.report_and_wait_async, id="gevent-coroutine"),
    ],
)
async def test_progress_is_visible_while_the_task_runs_and_after(
    oq: AsyncOmniQ, tmp_path: Path, worker_type: str, func: Callable[..., Any]
) -> None:
    release = tmp_path / "release"
    task_id = await oq.enqueue(func, str(release))
    pool = oq.worker(worker_type=worker_type, concurrency=2)
    await pool.start()
    try:
        running = await _progress_seen(oq, task_id, lambda p: p.done == 1)
        assert running.status.value == "running"
        assert running.progress is not None
        assert (running.progress.done, running.progress.total) == (1, 2)
        assert running.progress.message == "half"
        listed = {task.id: task for task in await oq.list_tasks()}
        assert listed[task_id].progress == running.progress

        release.touch()
        result = await oq.get_result(task_id, wait=True, timeout=_PATIENCE)
    finally:
        await pool.stop()
    assert result is not None and result.ok, result
    assert result.result == {
        "task_id": task_id,
        "attempt": 1,
        "queue": "default",
        "worker_id": pool.worker_id,
    }
    # The last report is stored by the time the result is: no waiting here.
    final = await oq.get_task(task_id)
    assert final is not None and final.progress is not None
    assert (final.progress.done, final.progress.total, final.progress.message) == (2, 2, "done")
    assert final.progress.updated_at >= running.progress.updated_at


async def test_current_task_is_none_outside_a_task(oq: AsyncOmniQ) -> None:
    assert current_task() is None
    task_id = await oq.enqueue(progress_tasks.silent)
    await oq.worker().run(burst=True)
    result = await oq.get_result(task_id)
    assert result is not None and result.result is True
    assert current_task() is None
    task = await oq.get_task(task_id)
    assert task is not None and task.progress is None  # never reported: nothing stored


@pytest.mark.parametrize("worker_type", ["async", "thread", "process", "gevent"])
async def test_progress_in_a_tight_loop_is_coalesced(
    oq: AsyncOmniQ, worker_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = oq.queue
    written: list[int] = []
    original = queue.set_progress

    async def counting(updates: Mapping[str, Progress]) -> None:
        written.append(len(updates))
        await original(updates)

    monkeypatch.setattr(queue, "set_progress", counting)
    count = 100_000
    task_id = await oq.enqueue(progress_tasks.tight_loop, count)
    pool = oq.worker(worker_type=worker_type)
    began = time.monotonic()
    await pool.run(burst=True)
    elapsed = time.monotonic() - began
    result = await oq.get_result(task_id)
    assert result is not None and result.result == count
    task = await oq.get_task(task_id)
    assert task is not None and task.progress is not None
    assert (task.progress.done, task.progress.total) == (count, count)
    # 100k reports, a handful of writes: one per interval of the run at most, plus the
    # first and the final one.
    interval = 0.25  # omniq.workers._progress.ProgressWriter.interval
    assert 1 <= len(written) <= 2 + elapsed / interval, (written, elapsed)


async def test_progress_is_kept_apart_from_the_task_and_goes_with_it(oq: AsyncOmniQ) -> None:
    queue = oq.queue
    # An unknown task is not given any (nor made to exist).
    await queue.set_progress({"no-such-task": Progress(done=1)})
    assert await queue.get_progress(["no-such-task"]) == {}
    assert await oq.get_task("no-such-task") is None

    task_id = await oq.enqueue(tasks.add, 1, 2)
    stored = Progress(done=0.5, total=1.0, message="halfway")
    await queue.set_progress({task_id: stored, "no-such-task": Progress(done=2)})
    assert await queue.get_progress([task_id, "no-such-task"]) == {task_id: stored}
    # The task's record is untouched: it claims and finishes as if nothing was written.
    await oq.worker().run(burst=True)
    task = await oq.get_task(task_id)
    assert task is not None and task.status is TaskStatus.COMPLETE
    assert task.progress == stored
    assert [t.progress for t in await oq.list_tasks() if t.id == task_id] == [stored]

    # Deleted with its task, and a late write does not bring either back.
    assert await queue.delete_finished(utcnow() + timedelta(seconds=1)) == 1
    assert await queue.get_progress([task_id]) == {}
    await queue.set_progress({task_id: stored})
    assert await queue.get(task_id) is None
    assert await queue.get_progress([task_id]) == {}


async def test_a_bad_progress_report_is_refused_with_the_reason() -> None:
    context = TaskContext("t1", 1, "default", "w1")
    for done, total, message in [(-1, None, None), ("3", None, None), (1, float("nan"), None)]:
        with pytest.raises(ConfigError, match="progress"):
            context.progress(done, total, message)
    with pytest.raises(ConfigError, match="message"):
        context.progress(1, 2, 3)  # type: ignore[arg-type]
