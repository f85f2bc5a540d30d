"""LoopThread: where the sync API's coroutines run, and that none is ever stranded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from omniq._sync import LoopThread, may_wait
from omniq.errors import OmniQError


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


def _block_the_loop_thread(runner: LoopThread) -> tuple[threading.Event, list[int]]:
    """Start the loop thread and hold it inside one callback until the returned event is
    set; from then on ``turns`` counts the loop's turns."""
    gate = threading.Event()
    holding = threading.Event()
    turns = [0]

    async def hold() -> None:
        loop = asyncio.get_running_loop()
        holding.set()
        gate.wait(10)  # blocks the loop itself: calls handed over meanwhile wait

        def tick() -> None:
            turns[0] += 1
            if turns[0] < 1000:
                loop.call_soon(tick)

        tick()

    runner.submit(hold())
    assert holding.wait(5)
    return gate, turns


def _wait_for_inbox(runner: LoopThread, count: int) -> None:
    for _ in range(1000):
        if len(runner._inbox) >= count:
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"{count} calls never reached the loop's inbox")


def test_calls_from_many_threads_start_together_and_each_get_their_own_outcome(
    runner: LoopThread,
) -> None:
    gate, turns = _block_the_loop_thread(runner)
    started: dict[int, int] = {}
    outcomes: dict[int, object] = {}

    async def call(n: int) -> int:
        started[n] = turns[0]
        await asyncio.sleep(0)
        if n % 3 == 0:
            raise ValueError(n)
        return n * 10

    def caller(n: int) -> None:
        try:
            outcomes[n] = runner.run(call(n))
        except ValueError as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    _wait_for_inbox(runner, 12)
    gate.set()
    for thread in threads:
        thread.join(10)
    # Handed over while the loop was busy, they all start in the same turn of it.
    assert len(started) == 12 and len(set(started.values())) == 1
    for n, outcome in outcomes.items():
        if n % 3 == 0:
            assert isinstance(outcome, ValueError) and outcome.args == (n,)
        else:
            assert outcome == n * 10
    assert sorted(outcomes) == list(range(12))


def test_a_lone_call_to_the_loop_thread_is_not_held_back(runner: LoopThread) -> None:
    # Nothing waits for other calls to join it: no timer, no linger. The loop thread
    # runs it at once and it returns.
    assert runner.submit(asyncio.sleep(0, "up")).result(timeout=5) == "up"
    assert runner.run(current_thread()).name == "omniq-test-loop"
    assert not any("timer" in t.name for t in threading.enumerate())
    assert runner.run(current_thread()).name == "omniq-test-loop"


def test_stopping_fails_a_call_that_never_started(runner: LoopThread) -> None:
    gate, _ = _block_the_loop_thread(runner)
    outcome: list[BaseException] = []

    def caller() -> None:
        try:
            runner.run(current_thread())
        except OmniQError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    _wait_for_inbox(runner, 1)
    stopper = threading.Thread(target=runner.stop)
    stopper.start()
    thread.join(5)  # failed at once, while the loop is still held
    assert [str(exc) for exc in outcome] == ["the blocking client was closed before this call ran"]
    gate.set()
    stopper.join(10)
    assert not stopper.is_alive()
