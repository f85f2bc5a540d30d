"""LoopThread: where the sync API's coroutines run, and that none is ever stranded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from omniq._sync import LoopThread


@pytest.fixture
def runner() -> Iterator[LoopThread]:
    made = LoopThread("omniq-test-loop")
    yield made
    made.stop()


async def current_thread() -> threading.Thread:
    return threading.current_thread()


def test_a_short_call_runs_in_the_calling_thread(runner: LoopThread) -> None:
    assert runner.run(current_thread()) is threading.current_thread()
    assert runner.run(current_thread()) is threading.current_thread()
    assert not any(t.name == "omniq-test-loop" for t in threading.enumerate())


def test_work_left_behind_keeps_running_on_the_loop_thread(runner: LoopThread) -> None:
    done = threading.Event()

    async def leave_work() -> None:
        async def later() -> None:
            await asyncio.sleep(0.05)
            done.set()

        asyncio.get_running_loop().create_task(later())

    runner.run(leave_work())
    assert done.wait(5), "the task left on the loop never ran"
    # From now on calls go to that thread, which keeps the loop running between them.
    assert runner.run(current_thread()).name == "omniq-test-loop"


def test_a_call_from_a_second_thread_while_the_first_runs_the_loop(runner: LoopThread) -> None:
    holding = threading.Event()
    outcome: list[object] = []

    async def hold_until_released(release: asyncio.Event) -> str:
        holding.set()
        await release.wait()
        return "released"

    async def make_event() -> asyncio.Event:
        return asyncio.Event()

    release = runner.run(make_event())
    first = threading.Thread(
        target=lambda: outcome.append(runner.run(hold_until_released(release)))
    )
    first.start()
    assert holding.wait(5)

    async def set_release() -> threading.Thread:
        release.set()
        return threading.current_thread()

    # The first thread is running the loop: this call is handed to it, and still returns.
    assert runner.run(set_release()) is first
    first.join(5)
    assert outcome == ["released"]


def test_submit_returns_at_once_and_the_loop_thread_finishes_the_work(
    runner: LoopThread,
) -> None:
    async def slow() -> int:
        await asyncio.sleep(0.05)
        return 7

    future = runner.submit(slow())
    assert future.result(timeout=5) == 7


def test_stop_then_run_again_uses_a_fresh_loop(runner: LoopThread) -> None:
    async def loop_of_call() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    first = runner.run(loop_of_call())
    runner.stop()
    assert first.is_closed()
    second = runner.run(loop_of_call())
    assert second is not first and not second.is_closed()


def test_an_exception_reaches_the_caller_and_the_loop_stays_usable(runner: LoopThread) -> None:
    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        runner.run(fail())
    assert runner.run(current_thread()) is threading.current_thread()
