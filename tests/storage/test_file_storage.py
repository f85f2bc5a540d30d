"""The file backend on local disk (a temporary directory) and on ``memory://``.

Runs the storage contract and the file backend's own checks on both, plus what only
local disk offers: worker processes racing for one directory, and a worker killed with
SIGKILL mid-claim.
"""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import fsspec
import pytest

from omniq.config import Settings
from omniq.errors import ConfigError
from omniq.models import TaskStatus, utcnow
from omniq.storage.file import AsyncFileQueue, FileBackend, FileEventStorage, FileQueue
from omniq.storage.file._layout import wake_ups
from omniq.storage.file._local import LocalStore
from omniq.storage.registry import bundle_for_url
from tests.storage import _file_race
from tests.storage._file_checks import (
    FileEventChecks,
    FileQueueChecks,
    FileResultChecks,
    FileScheduleChecks,
    MakeBackend,
    close_backend,
    task,
)
from tests.storage.contract import EventContract, QueueContract, ResultContract, ScheduleContract

SETTINGS = Settings(poll_interval=0.05)


@pytest.fixture(params=["file", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh, empty store: a temporary directory, or a new memory:// name."""
    if request.param == "file":
        yield f"file://{tmp_path}/store"
        return
    name = f"omniqtest-{uuid.uuid4().hex[:12]}"
    yield f"memory://{name}"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


@pytest.fixture
async def make_backend(store_url: str) -> AsyncIterator[MakeBackend]:
    """Connections to the one store of this test, closed afterwards."""
    made: list[FileBackend] = []

    async def make() -> FileBackend:
        backend = FileBackend(store_url, SETTINGS)
        await backend.connect()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await close_backend(backend)


@pytest.fixture
async def backend(make_backend: MakeBackend) -> FileBackend:
    """A connected FileBackend on a fresh store."""
    return await make_backend()


class TestFileQueueContract(QueueContract):
    pass


class TestFileResultContract(ResultContract):
    pass


class TestFileEventContract(EventContract):
    pass


class TestFileScheduleContract(ScheduleContract):
    pass


class TestFileQueue(FileQueueChecks):
    pass


class TestFileResults(FileResultChecks):
    pass


class TestFileEvents(FileEventChecks):
    pass


class TestFileSchedules(FileScheduleChecks):
    pass


# -- the bundle -----------------------------------------------------------------------


async def test_backend_by_url_lays_components_out_in_subdirectories(tmp_path: Path) -> None:
    backend = bundle_for_url(f"file://{tmp_path}/plain", SETTINGS)
    assert isinstance(backend, FileBackend)
    queue = backend.task_queue()
    assert backend.task_queue() is queue
    await queue.enqueue([task("a")])
    await backend.result_storage().connect()
    assert sorted(os.listdir(tmp_path / "plain")) == ["results", "tasks"] or sorted(
        os.listdir(tmp_path / "plain")
    ) == ["events", "results", "schedules", "tasks"]
    assert (tmp_path / "plain" / "tasks" / "t" / "a").is_file()
    await close_backend(backend)
    assert backend.connection.references == 0


async def test_backend_is_reference_counted(tmp_path: Path) -> None:
    backend = FileBackend(f"file://{tmp_path}", SETTINGS)
    queue, results = backend.task_queue(), backend.result_storage()
    await queue.connect()
    await queue.connect()  # a second connect takes no second reference
    await results.connect()
    await queue.close()
    assert await results.get("x") is None  # still open for the other component
    await results.close()
    await results.close()
    assert backend.connection.references == 0


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [("gs://bucket/p", "gcsfs", "gcs"), ("az://container/p", "adlfs", "azure")],
)
def test_missing_cloud_driver_names_the_extra(url: str, module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is not None:
        bundle_for_url(url, SETTINGS)  # installed: construction succeeds
        return
    with pytest.raises(ConfigError, match=rf"pip install 'omniq\[{extra}\]'"):
        bundle_for_url(url, SETTINGS)


def test_sync_twins_block_and_mirror_the_async_class(tmp_path: Path) -> None:
    with FileQueue(str(tmp_path), SETTINGS) as queue:
        assert queue.enqueue([task("a")]) == ["a"]
        (claimed,) = queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
        assert queue.ack(claimed.id, "w", TaskStatus.COMPLETE, now=utcnow()) is True
        assert queue.stats() == {"default": {"complete": 1}}
    with FileEventStorage(str(tmp_path), SETTINGS) as events:
        assert events.get("a") == []


def add(a: int, b: int) -> int:
    """A task for the mixed-backend test (importable by path)."""
    return a + b


async def test_queue_on_file_results_on_sqlite_events_on_memory(tmp_path: Path) -> None:
    from omniq import AsyncOmniQ

    memory = f"memory://omniqtest-{uuid.uuid4().hex[:12]}"
    try:
        async with AsyncOmniQ(
            task_queue=f"file://{tmp_path}/queue",
            result_storage=f"sqlite:///{tmp_path}/results.db",
            event_storage=memory,
            poll_interval=0.05,
        ) as oq:
            ids = [await oq.enqueue(add, n, 1) for n in range(3)]
            await oq.worker(concurrency=2).run(burst=True)
            results = [await oq.get_result(task_id) for task_id in ids]
            assert [r.result for r in results if r is not None] == [1, 2, 3]
            events = await oq.get_events(ids[0])
            assert [e.event_type.value for e in events] == ["enqueued", "executing", "complete"]
            assert await oq.stats() == {"default": {"complete": 3}}
        assert (tmp_path / "queue" / "tasks").is_dir()
        assert (tmp_path / "results.db").is_file()
    finally:
        fs = fsspec.filesystem("memory")
        root = "/" + memory.removeprefix("memory://")
        if fs.exists(root):
            fs.rm(root, recursive=True)


# -- real processes on one local directory ----------------------------------------------


def test_four_processes_claim_each_of_2000_tasks_exactly_once(tmp_path: Path) -> None:
    root = str(tmp_path / "race")
    _file_race.fill(root, 2000)
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    outputs = [str(tmp_path / f"claimed-{n}.txt") for n in range(4)]
    workers = [
        context.Process(target=_file_race.claim_and_ack, args=(root, f"w{n}", outputs[n], start))
        for n in range(4)
    ]
    for worker in workers:
        worker.start()
    start.set()  # all four are up: they race from the first task on
    for worker in workers:
        worker.join(100)
        assert worker.exitcode == 0
    per_worker = [
        [line for line in Path(path).read_text().splitlines() if line] for path in outputs
    ]
    counts = Counter(task_id for claimed in per_worker for task_id in claimed)
    assert len(counts) == 2000
    assert set(counts.values()) == {1}
    assert sum(1 for claimed in per_worker if claimed) >= 2  # it was a race


def test_worker_killed_with_sigkill_loses_nothing(tmp_path: Path) -> None:
    root = str(tmp_path / "crash")
    _file_race.fill(root, 300)
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    worker = context.Process(target=_file_race.claim_forever, args=(root, ready))
    worker.start()
    assert ready.wait(60)  # it holds leases and keeps claiming
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(30)
    assert worker.exitcode == -signal.SIGKILL

    async def recover() -> list[str]:
        queue = AsyncFileQueue(root, SETTINGS)
        later = utcnow() + timedelta(minutes=5)  # every lease the dead worker held is over
        try:
            claimed = await queue.claim(
                ["default"], "survivor", limit=1000, lease_seconds=30, now=later
            )
            assert await queue.stats() == {"default": {"running": 300}}
            return [t.id for t in claimed]
        finally:
            await queue.close()

    ids = asyncio.run(recover())
    assert sorted(ids) == sorted(f"t{i:05d}" for i in range(300))


# -- wake-ups across processes (local disk) ----------------------------------------------


async def test_a_signal_from_another_process_wakes_a_waiter_on_local_disk(tmp_path: Path) -> None:
    root = str(tmp_path / "tree")
    store = LocalStore(root)
    await store.open()
    signal_there = (
        f"from omniq.storage.file._local import LocalStore; LocalStore({root!r}).signal()"
    )
    with wake_ups(store) as woken:
        # Nothing polls here: only the FIFO can set the event.
        await asyncio.to_thread(subprocess.run, [sys.executable, "-c", signal_there], check=True)
        await asyncio.wait_for(woken.wait(), 10)
    # Nobody waits now: a signal is dropped (the writer finds no reader), not stored up.
    store.signal()
    fd = store.listen()
    assert fd is not None
    try:
        with pytest.raises(BlockingIOError):
            os.read(fd, 1)
    finally:
        os.close(fd)


async def test_a_wake_path_that_is_not_a_fifo_is_left_alone(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "tree"))
    await store.open()
    wake = tmp_path / "tree" / ".wake"
    wake.write_bytes(b"mine")
    assert store.listen() is None  # the waiter falls back to polling
    store.signal()
    assert wake.read_bytes() == b"mine"


async def test_looks_at_held_tasks_notice_a_cancel_and_a_takeover(
    make_backend: MakeBackend,
) -> None:
    """A worker's look at its held tasks lists the running entries its claims left:
    a cancel and a takeover after the lease ran out (from another connection, which the
    first one's memory of entries knows nothing of) are both noticed."""
    first, other = await make_backend(), await make_backend()
    queue, queue2 = first.task_queue(), other.task_queue()
    await queue.enqueue([task("kept"), task("cancelled"), task("taken")])
    now = utcnow()
    claimed = await queue.claim(["default"], "w1", limit=3, lease_seconds=60, now=now)
    ids = {t.id for t in claimed}
    assert ids == {"kept", "cancelled", "taken"}
    noticed: list[str] = []
    await queue._look_at_held("w1", lambda: sorted(ids), noticed.append)
    assert noticed == []
    await queue2.transition(
        "cancelled",
        from_statuses=[TaskStatus.RUNNING],
        to_status=TaskStatus.CANCELLED,
        now=utcnow(),
    )
    await queue._look_at_held("w1", lambda: sorted(ids), noticed.append)
    assert noticed == ["cancelled"]
    ids.discard("cancelled")
    noticed.clear()
    later = now + timedelta(seconds=120)  # w1's leases ran out: w2 takes them over
    taken = await queue2.claim(["default"], "w2", limit=3, lease_seconds=60, now=later)
    assert sorted(t.id for t in taken) == ["kept", "taken"]
    await queue._look_at_held("w1", lambda: sorted(ids), noticed.append)
    assert sorted(noticed) == ["kept", "taken"]
