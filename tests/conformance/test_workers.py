"""Live workers (SPEC §8): running pools register, beat and deregister; a dead one drops
out once its heartbeat lapses. Real CLI worker processes, on every shareable backend."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from omniq import AsyncOmniQ, WorkerInfo
from omniq.errors import StorageError
from tests.conformance import tasks
from tests.conformance.conftest import MakeOQ
from tests.conformance.test_reliability import WAIT, Workers, eventually
from tests.conftest import REPO_ROOT


@pytest.fixture
async def workers(store_url: str, namespace: str, tmp_path: Path) -> AsyncIterator[Workers]:
    group = Workers(store_url, namespace, tmp_path)
    yield group
    group.kill_all()


async def test_list_workers_follows_worker_processes_start_stop_and_death(
    oq: AsyncOmniQ, workers: Workers
) -> None:
    # A short lease, so that a killed worker's heartbeat lapses within seconds.
    lease = 3.0
    first = workers.start("--queues", "default,mail", concurrency=3, lease_seconds=lease)
    second = workers.start(concurrency=5, lease_seconds=lease)
    seen: list[WorkerInfo] = []

    async def listed(count: int) -> bool:
        seen[:] = await oq.list_workers()
        return len(seen) == count

    await eventually(lambda: listed(2), "two registered workers")
    by_pid = {info.pid: info for info in seen}
    assert set(by_pid) == {first.pid, second.pid}, workers.output()
    one, two = by_pid[first.pid], by_pid[second.pid]
    assert (one.queues, one.concurrency) == (("default", "mail"), 3)
    assert (two.queues, two.concurrency) == (("default",), 5)
    for info in seen:
        assert info.hostname == socket.gethostname()
        assert info.worker_type == "async"
        assert info.running == 0
        assert info.started_at <= info.last_seen

    first.send_signal(signal.SIGTERM)  # a graceful stop deregisters before it exits
    assert await workers.exit_code(first) == 0
    assert first.pid not in [info.pid for info in await oq.list_workers()]

    async def only_second() -> bool:
        return [info.pid for info in await oq.list_workers()] == [second.pid]

    # The second is listed (unless a stalled host made it miss its beats: back at its
    # next one).
    await eventually(only_second, "the second worker alone")

    second.kill()  # no chance to deregister: it drops out once its heartbeat lapses
    assert await workers.exit_code(second) == -signal.SIGKILL
    await eventually(lambda: listed(0), "the killed worker to drop out", within=WAIT)


async def test_a_pool_reports_its_running_tasks(make_oq: MakeOQ, tmp_path: Path) -> None:
    oq = await make_oq(lease_seconds=1.5)  # beats every 0.5 s
    release, log = tmp_path / "release", tmp_path / "log"
    pool = oq.worker(concurrency=4)
    async with pool:

        async def running_one() -> bool:
            found = await oq.list_workers()
            return [(w.id, w.running) for w in found] == [(pool.worker_id, 1)]

        task_id = await oq.enqueue(tasks.hold_until_async, str(release), str(log))
        await eventually(running_one, "the pool to report one running task")
        release.touch()
        assert (await oq.get_result(task_id, wait=True, timeout=WAIT)).ok
    assert await oq.list_workers() == []


@pytest.mark.cross_process
async def test_omniq_workers_prints_the_running_pools(
    oq: AsyncOmniQ, store_url: str, namespace: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env.update(
        OMNIQ_TEST_URL=store_url,
        OMNIQ_TEST_NAMESPACE=namespace,
        OMNIQ_BASE_DIR=str(tmp_path / ".omniq"),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
    )

    def workers_command() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "omniq", "--app", "tests.conformance._apps:oq", "workers"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert (await asyncio.to_thread(workers_command)).strip() == "no workers"
    pool = oq.worker(concurrency=2, queues="reports")
    async with pool:

        async def registered() -> bool:
            return len(await oq.list_workers()) == 1

        await eventually(registered, "the pool to register")
        lines = (await asyncio.to_thread(workers_command)).splitlines()
    assert await oq.list_workers() == []
    assert lines[0].split() == [
        "ID", "HOST", "PID", "TYPE", "RUNNING", "QUEUES", "STARTED", "LAST", "SEEN"
    ]  # fmt: skip
    assert lines[1].split()[:6] == [
        pool.worker_id, socket.gethostname(), str(os.getpid()), "async", "0/2", "reports"
    ]  # fmt: skip


async def test_a_pool_whose_registration_fails_keeps_working(
    oq: AsyncOmniQ, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def refused(*args: object, **kwargs: object) -> None:
        raise StorageError("the registry is unreachable")

    monkeypatch.setattr(oq.queue, "register_worker", refused)
    task_id = await oq.enqueue(tasks.add, 2, 2)
    with caplog.at_level("WARNING", logger="omniq.worker"):
        async with oq.worker():
            assert (await oq.get_result(task_id, wait=True, timeout=WAIT)).result == 4
    assert "registering it failed" in caplog.text
    assert await oq.list_workers() == []
