"""LoopThread: where the sync API's coroutines run, and that none is ever stranded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from omniq._sync import LoopThread, may_wait


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


def test_work_that_may_wait_leaves_the_loop_with_the_caller_and_still_runs(
    runner: LoopThread,
) -> None:
    # The event logger's writer: calls keep running in the calling thread, and with no
    # further call a timer runs the loop until the work is done.
    done = threading.Event()
    ran_in: list[threading.Thread] = []

    async def leave_work() -> threading.Thread:
        async def later() -> None:
            await asyncio.sleep(0.02)
            ran_in.append(threading.current_thread())
            done.set()

        may_wait(asyncio.get_running_loop().create_task(later()), 0.05)
        return threading.current_thread()

    assert runner.run(leave_work()) is threading.current_thread()
    assert runner.run(current_thread()) is threading.current_thread()
    assert done.wait(5), "work that may wait never ran without a call"
    assert ran_in[0] is not threading.current_thread()
    # The timer's turn of the loop ends just after the work: a call made before that
    # is handed to a loop thread (by design), so wait for the timer to finish.
    for thread in threading.enumerate():
        if thread.name == "omniq-test-loop-timer":
            thread.join(5)
    assert not any(t.name == "omniq-test-loop" for t in threading.enumerate())
    assert runner.run(current_thread()) is threading.current_thread()


def test_work_that_may_wait_moves_on_during_later_calls(runner: LoopThread) -> None:
    steps: list[threading.Thread] = []

    async def leave_work() -> None:
        async def stepping() -> None:
            for _ in range(3):
                await asyncio.sleep(0)
                steps.append(threading.current_thread())

        may_wait(asyncio.get_running_loop().create_task(stepping()), 60)

    async def yield_a_few_times() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    runner.run(leave_work())
    runner.run(yield_a_few_times())
    assert steps == [threading.current_thread()] * 3


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


def _interrupt() -> None:
    raise KeyboardInterrupt


def test_an_interrupted_call_ends_on_the_loop_thread_which_keeps_running(
    runner: LoopThread,
) -> None:
    # Ctrl-C during a blocking call: the call is cancelled, and its clean-up finishes on
    # a loop thread. Ending there must not stop that thread's loop: work handed to it
    # afterwards still completes.
    cleaned_up = threading.Event()

    async def interrupted() -> None:
        asyncio.get_running_loop().call_soon(_interrupt)
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.05)
            cleaned_up.set()

    with pytest.raises(KeyboardInterrupt):
        runner.run(interrupted())
    later = runner.submit(asyncio.sleep(0.2, "done"))
    assert cleaned_up.wait(5)
    assert later.result(timeout=5) == "done"
    assert runner.run(current_thread()).name == "omniq-test-loop"
