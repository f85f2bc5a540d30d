"""The ``process`` and ``gevent`` worker types on their own, without a store.

The task functions live in this module so that the child processes can import them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from omniq import Retry
from omniq.errors import TaskTimeoutError, WorkerError
from omniq.models import ErrorInfo, Task
from omniq.workers.executors import BaseExecutor, create_executor
from omniq.workers.gevent import GeventWorker
from omniq.workers.process import ProcessWorker


def pid() -> int:
    return os.getpid()


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


class OddError(Exception):
    """An exception whose __init__ does not take its args back (pickle cannot rebuild it)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"odd {a} {b}")


def fail_odd() -> None:
    raise OddError(1, 2)


def ask_retry() -> None:
    raise Retry(delay=1.5)


def block(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def die(code: int) -> None:
    os._exit(code)


def wait_for_peer(directory: str, name: str, peers: int) -> str:
    """Create ``name`` in ``directory``, then wait until ``peers`` files exist there: only
    returns if that many calls run at the same time."""
    Path(directory, name).touch()
    deadline = time.monotonic() + 30
    while len(os.listdir(directory)) < peers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(directory))} of {peers} ran at once")
        time.sleep(0.01)
    return name


def pid_with_peer(directory: str, name: str) -> int:
    """The pid of a child running alongside one other call."""
    wait_for_peer(directory, name, 2)
    return os.getpid()


def read_socket(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return sock.recv(16)


def task(name: str = "t") -> Task:
    return Task(id=f"{name}-{time.monotonic_ns()}", func=f"{__name__}:{name}")


@pytest.fixture
async def process_worker() -> AsyncIterator[BaseExecutor]:
    worker = create_executor("process", 2)
    assert isinstance(worker, ProcessWorker)
    await worker.start()
    yield worker
    await worker.stop()


@pytest.fixture
async def gevent_worker() -> AsyncIterator[BaseExecutor]:
    worker = create_executor("gevent", 300)
    assert isinstance(worker, GeventWorker)
    await worker.start()
    yield worker
    await worker.stop()


@pytest.fixture(params=["process", "gevent"])
def worker(request: pytest.FixtureRequest) -> BaseExecutor:
    chosen: BaseExecutor = request.getfixturevalue(f"{request.param}_worker")
    return chosen


async def until_running(worker: BaseExecutor, running: Task) -> None:
    """Wait until ``worker`` has handed ``running`` to its child."""
    in_flight = worker._busy if isinstance(worker, ProcessWorker) else worker._by_task  # type: ignore[attr-defined]
    for _ in range(3000):
        if running.id in in_flight:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{running.id} never started")


async def call(worker: BaseExecutor, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await worker.run(task(), func, args, kwargs, kwargs.pop("timeout", None))


async def test_runs_plain_async_and_by_value_functions(worker: BaseExecutor) -> None:
    offset = 10
    assert await call(worker, add, 2, 3) == 5
    assert await call(worker, async_add, 4, 5) == 9
    assert await call(worker, lambda x: x + offset, 1) == 11
    child = await call(worker, pid)
    assert child != os.getpid()


async def test_exceptions_keep_type_message_and_remote_traceback(worker: BaseExecutor) -> None:
    with pytest.raises(ValueError, match="nope") as caught:
        await call(worker, fail, "nope")
    info = ErrorInfo.from_exception(caught.value)
    assert info.type == "builtins.ValueError"
    assert "in fail" in info.traceback  # the child's frames are in the stored traceback

    with pytest.raises(Exception, match="odd 1 2") as odd:
        await call(worker, fail_odd)
    assert ErrorInfo.from_exception(odd.value).type == f"{__name__}.OddError"

    with pytest.raises(Retry) as retry:
        await call(worker, ask_retry)
    assert retry.value.delay == 1.5


async def test_process_timeout_kills_the_child_and_a_new_one_takes_over(
    process_worker: BaseExecutor, tmp_path: Path
) -> None:
    async def both_pids(directory: Path) -> set[int]:
        await asyncio.to_thread(directory.mkdir)
        calls = (call(process_worker, pid_with_peer, str(directory), n) for n in "ab")
        return set(await asyncio.gather(*calls))

    before = await both_pids(tmp_path / "before")
    with pytest.raises(TaskTimeoutError, match="terminated"):
        await call(process_worker, block, 30, timeout=0.3)
    after = await both_pids(tmp_path / "after")  # needs two children: waits for the new one
    assert len(before) == len(after) == 2
    assert len(before & after) == 1  # the timed-out child was replaced


async def test_process_child_death_is_a_worker_error(process_worker: BaseExecutor) -> None:
    with pytest.raises(WorkerError, match=r"worker process died \(exit code 3\)"):
        await call(process_worker, die, 3)
    assert await call(process_worker, add, 1, 1) == 2


async def test_process_cancel_terminates_the_child(process_worker: BaseExecutor) -> None:
    running = task("block")
    call_task = asyncio.create_task(process_worker.run(running, block, (30,), {}, None))
    await until_running(process_worker, running)
    await process_worker.cancel(running.id)
    with pytest.raises(WorkerError, match="cancelled"):
        await call_task
    assert await call(process_worker, add, 2, 2) == 4


async def test_process_children_run_in_parallel(
    process_worker: BaseExecutor, tmp_path: Path
) -> None:
    names = await asyncio.gather(
        *(call(process_worker, wait_for_peer, str(tmp_path), n, 2) for n in ("a", "b"))
    )
    assert sorted(names) == ["a", "b"]


async def test_gevent_runs_hundreds_of_blocking_calls_at_once(
    gevent_worker: BaseExecutor, tmp_path: Path
) -> None:
    names = [f"n{i}" for i in range(250)]
    done = await asyncio.gather(
        *(call(gevent_worker, wait_for_peer, str(tmp_path), n, len(names)) for n in names)
    )
    assert sorted(done) == sorted(names)


async def test_gevent_socket_reads_are_cooperative(gevent_worker: BaseExecutor) -> None:
    arrived = 0
    everyone = asyncio.Event()

    async def answer_when_all_arrived(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 100:
            everyone.set()
        await everyone.wait()  # answers only once all 100 readers are blocked in recv
        writer.write(b"pong")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_when_all_arrived, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        replies = await asyncio.gather(
            *(call(gevent_worker, read_socket, port) for _ in range(100))
        )
    assert replies == [b"pong"] * 100


async def test_gevent_timeout_and_cancel(gevent_worker: BaseExecutor) -> None:
    with pytest.raises(TaskTimeoutError, match=r"timeout of 0\.2 s"):
        await call(gevent_worker, block, 30, timeout=0.2)

    running = task("block")
    call_task = asyncio.create_task(gevent_worker.run(running, block, (30,), {}, None))
    await until_running(gevent_worker, running)
    await gevent_worker.cancel(running.id)
    with pytest.raises(WorkerError, match="cancelled"):
        await call_task
    assert await call(gevent_worker, add, 1, 2) == 3


async def test_gevent_child_death_fails_calls_in_flight_then_recovers(
    gevent_worker: BaseExecutor,
) -> None:
    first = await call(gevent_worker, pid)
    with pytest.raises(WorkerError, match=r"worker process died \(exit code 4\)"):
        await call(gevent_worker, die, 4)
    assert await call(gevent_worker, add, 2, 2) == 4
    assert await call(gevent_worker, pid) != first
