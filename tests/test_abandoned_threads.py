"""A thread worker's task past its timeout: what the user gets (SPEC §3, timeout).

Python cannot stop a thread. The task gets its ``TIMEOUT`` failure at once; its thread
runs on, abandoned, holding one of the pool's threads until the call returns. The pool
counts such threads (``abandoned_threads``) and logs a WARNING naming the task when one
is abandoned and when it ends, so a leak shows; a stop does not wait for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from omniq import AsyncOmniQ, EventType, TaskStatus
from tests.conformance import tasks

WAIT = 25.0  # upper bound for anything waited for


def warnings_about(caplog: pytest.LogCaptureFixture, task_id: str, words: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING
        and task_id in record.getMessage()
        and words in record.getMessage()
    ]


async def test_a_thread_past_its_timeout_is_counted_and_logged_until_it_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="omniq")
    release, runs = tmp_path / "release", tmp_path / "runs.log"
    async with AsyncOmniQ(base_dir=str(tmp_path / ".omniq")) as oq:
        slow = await oq.submit(
            tasks.hold_until, (str(release), str(runs)), timeout=0.3, max_retries=0
        )
        pool = oq.worker(worker_type="thread", concurrency=2)
        await pool.start()
        try:
            # The timeout fails the task at once, while its thread still runs.
            result = await oq.get_result(slow, wait=True, timeout=WAIT)
            assert result is not None and result.status is TaskStatus.FAILED
            assert result.error is not None and result.error.type.endswith("TaskTimeoutError")
            events = [event.event_type for event in await oq.get_events(slow)]
            assert EventType.TIMEOUT in events
            assert not release.exists()  # the call is still blocked in its thread
            assert pool.abandoned_threads == 1
            assert len(warnings_about(caplog, slow, "abandoned")) == 1
            # The pool works on with its other thread.
            quick = await oq.enqueue(tasks.add, 2, 3)
            done = await oq.get_result(quick, wait=True, timeout=WAIT)
            assert done is not None and done.result == 5
        finally:
            # A stop does not wait for the abandoned thread (it would wait forever for a
            # call that never returns).
            await asyncio.wait_for(pool.stop(), timeout=WAIT)
        assert pool.abandoned_threads == 1  # still running after the stop, still counted
        assert warnings_about(caplog, slow, "ended") == []

        release.touch()
        deadline = time.monotonic() + WAIT
        while pool.abandoned_threads:
            assert time.monotonic() < deadline, "the abandoned thread never ended"
            await asyncio.sleep(0.02)
        assert len(warnings_about(caplog, slow, "abandoned thread ended")) == 1
        # It ran once, and what it returned late changed nothing.
        assert len(runs.read_text().splitlines()) == 1
        task = await oq.get_task(slow)
        assert task is not None and (task.status, task.attempts) == (TaskStatus.FAILED, 1)
