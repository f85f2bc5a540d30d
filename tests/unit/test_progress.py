"""Coalescing of progress reports: the pool's writer (``omniq.workers._progress``) and a
child process's sender (``omniq.workers._child.ChildProgress``), on a real SQLite queue;
and ``current_task()`` through the blocking client."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ, Progress, Task, TaskContext, current_task
from omniq.storage.sqlite import AsyncSQLiteQueue
from omniq.workers._child import ChildProgress, ProgressReport
from omniq.workers._progress import ProgressWriter
from tests.conformance import progress_tasks
from tests.conftest import run_script


class Recorder:
    """Wraps a real queue's ``set_progress`` to see every write."""

    def __init__(self, queue: AsyncSQLiteQueue) -> None:
        self.queue = queue
        self.writes: list[dict[str, Progress]] = []
        self.original = queue.set_progress

    async def __call__(self, updates: Mapping[str, Progress]) -> None:
        self.writes.append(dict(updates))
        await self.original(updates)


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[AsyncSQLiteQueue]:
    async with AsyncSQLiteQueue(f"sqlite:///{tmp_path}/omniq.db") as queue:
        yield queue


@pytest.fixture
def recorder(queue: AsyncSQLiteQueue, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder(queue)
    monkeypatch.setattr(queue, "set_progress", recorder)
    return recorder


async def _tasks(queue: AsyncSQLiteQueue, count: int) -> list[Task]:
    made = [Task(id=f"t{i}", func="tests.conformance.tasks:add") for i in range(count)]
    await queue.enqueue(made)
    return made


async def test_a_burst_of_reports_is_one_write_of_the_first_and_one_of_the_last(
    queue: AsyncSQLiteQueue, recorder: Recorder
) -> None:
    writer = ProgressWriter(lambda: queue, "w1")
    [task] = await _tasks(queue, 1)
    context = writer.context(task)
    for done in range(1, 10_001):
        context.progress(done, 10_000)
    await asyncio.sleep(0)  # the flusher writes what it found (the first write is at once)
    context.close()
    await writer.finish(task.id)
    assert 1 <= len(recorder.writes) <= 2, recorder.writes
    stored = await queue.get_progress([task.id])
    assert (stored[task.id].done, stored[task.id].total) == (10_000, 10_000)
    assert writer.writes == len(recorder.writes)


async def test_reports_of_many_tasks_from_threads_are_coalesced(
    queue: AsyncSQLiteQueue, recorder: Recorder
) -> None:
    writer = ProgressWriter(lambda: queue, "w1")
    writer.interval = 0.05
    tasks = await _tasks(queue, 4)
    contexts = [writer.context(task) for task in tasks]

    def report(index: int) -> None:
        for done in range(1, 1001):
            contexts[index].progress(done, 1000, message=f"task {index}")

    began = time.monotonic()
    await asyncio.gather(*(asyncio.to_thread(report, i) for i in range(len(tasks))))
    for task, context in zip(tasks, contexts, strict=True):
        context.close()
        await writer.finish(task.id)
    elapsed = time.monotonic() - began
    # One write per interval at most (plus the first and each task's last), whatever
    # the number of reports; each write carries every task with a report pending.
    assert len(recorder.writes) <= 1 + elapsed / writer.interval + len(tasks), recorder.writes
    stored = await queue.get_progress([task.id for task in tasks])
    assert {task_id: p.done for task_id, p in stored.items()} == {t.id: 1000 for t in tasks}


async def test_a_quiet_task_s_last_report_is_written_without_waiting_for_its_end(
    queue: AsyncSQLiteQueue, recorder: Recorder
) -> None:
    writer = ProgressWriter(lambda: queue, "w1")
    [task] = await _tasks(queue, 1)
    context = writer.context(task)

    async def written(done: int) -> None:
        deadline = time.monotonic() + 30
        while not recorder.writes or recorder.writes[-1][task.id].done != done:
            assert time.monotonic() < deadline, recorder.writes
            await asyncio.sleep(0.01)

    context.progress(1, 3)
    await written(1)  # the first report goes at once
    context.progress(2, 3)  # within the interval of that write: held, then written
    await written(2)
    assert [write[task.id].done for write in recorder.writes] == [1, 2]


async def test_reports_after_the_run_ended_are_dropped(
    queue: AsyncSQLiteQueue, recorder: Recorder
) -> None:
    writer = ProgressWriter(lambda: queue, "w1")
    [task] = await _tasks(queue, 1)
    context = writer.context(task)
    context.progress(1)
    context.close()
    await writer.finish(task.id)
    context.progress(2)  # a thread left running, say
    await writer.finish(task.id)
    assert context.closed
    assert (await queue.get_progress([task.id]))[task.id].done == 1


def test_a_child_sends_a_few_messages_for_a_tight_loop_and_the_last_on_close() -> None:
    sent: list[ProgressReport] = []
    reporter = ChildProgress(sent.append)
    for done in range(1, 100_001):
        reporter("t1", done, 100_000, None, time.time())
    reporter.close()
    reporter("t1", 7, None, None, time.time())  # after the call: dropped
    assert sent[0][0] == 1 and sent[-1][0] == 100_000
    assert len(sent) <= 2 + 100 * 10  # at most one per 0.1 s, for a loop far under 100 s


def test_a_child_s_held_back_report_is_sent_by_its_timer() -> None:
    arrived = threading.Event()
    sent: list[ProgressReport] = []

    def send(report: ProgressReport) -> None:
        sent.append(report)
        if report[0] == 2:
            arrived.set()

    reporter = ChildProgress(send)
    reporter("t1", 1, 2, "first", time.time())
    reporter("t1", 2, 2, "second", time.time())  # too soon: the timer sends it
    assert arrived.wait(30), sent
    assert [report[2] for report in sent] == ["first", "second"]
    reporter.close()


def test_the_blocking_client_sees_the_context_and_the_progress(tmp_path: Path) -> None:
    with OmniQ(base_dir=str(tmp_path)) as oq:
        task_id = oq.submit(progress_tasks.tight_loop, args=(1000,), queue="bulk")
        assert current_task() is None
        oq.worker(queues=["bulk"], worker_type="thread").run(burst=True)
        result = oq.get_result(task_id)
        assert result is not None and result.result == 1000
        task = oq.get_task(task_id)
        assert task is not None and task.progress is not None
        assert (task.progress.done, task.progress.total) == (1000, 1000)
        [listed] = oq.list_tasks(queue="bulk")
        assert listed.progress == task.progress


def test_numbers_of_other_types_are_stored_as_int_or_float() -> None:
    reports: list[tuple[Any, ...]] = []
    context = TaskContext("t1", 1, "default", "w1", lambda *report: reports.append(report))
    context.progress(Fraction(1, 2), Decimal("3"), message="m")
    [(_, done, total, message, _)] = reports
    assert (type(done), done, type(total), total, message) == (float, 0.5, float, 3.0, "m")


_PROGRESS_SCRIPT = """
import sys
from omniq import OmniQ, current_task

oq = OmniQ(base_dir=sys.argv[1])

@oq.task
def work(n: int) -> int:
    for i in range(n):
        current_task().progress(i + 1, total=n)
    return n

handle = work.delay(50)
oq.worker().run(burst=True)
print(handle.result(), oq.get_task(handle).progress.done)
oq.close()
"""


def test_a_pool_that_stops_leaves_no_progress_flush_behind(tmp_path: Path) -> None:
    # A script as users write it: the blocking client, a task reporting progress in a
    # loop, a burst run, close. The pool's background flush of progress was left
    # sleeping when the pool stopped, and the loop's close reported it destroyed pending.
    run = run_script(tmp_path, _PROGRESS_SCRIPT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["50", "50"]
    assert "destroyed but it is pending" not in run.stderr, run.stderr
