"""The NATS backend against a private ``nats-server -js -sd <dir>`` this module starts on
a free loopback port and kills with SIGKILL: nothing acknowledged is lost, clients
reconnect by themselves, and running workers carry on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from omniq import AsyncOmniQ
from omniq.errors import StorageConnectionError
from omniq.models import TaskStatus, utcnow
from omniq.storage.base import Ack
from omniq.storage.nats import AsyncNATSQueue, AsyncNATSResultStorage
from tests._certs import CertFiles, make_certs
from tests.conftest import REPO_ROOT
from tests.storage._nats_server import PrivateNATS
from tests.storage.contract import make_result, make_task

WAIT = 60.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateNATS]:
    """A private JetStream server with its file store under ``tmp_path``."""
    private = PrivateNATS(tmp_path / "nats")
    private.start()
    yield private
    private.kill()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until ``check()`` holds (it reads the store or a file), at most ``WAIT`` s."""
    deadline = time.monotonic() + WAIT
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_restart_loses_nothing_acknowledged_and_clients_reconnect(
    server: PrivateNATS,
) -> None:
    queue = AsyncNATSQueue(server.url, namespace="app")
    results = AsyncNATSResultStorage(server.url, namespace="app")
    await queue.connect()
    await results.connect()
    try:
        await queue.enqueue([make_task(f"t{i:03}", priority=i % 3) for i in range(100)])
        now = utcnow()
        claimed = await queue.claim(["default"], "w1", limit=10, lease_seconds=60, now=now)
        done = claimed[:5]
        stored_results = [make_result(t.id) for t in done]
        await results.put_many(stored_results)
        acks = [Ack(t.id, "w1", TaskStatus.COMPLETE) for t in done]
        assert await queue.ack_many(acks, now=now) == [True] * 5
        before = await queue.stats()
        assert before == {"default": {"pending": 90, "running": 5, "complete": 5}}
        idle = asyncio.ensure_future(queue.wait(["default"], 30.0))

        server.restart()  # SIGKILL: only what the store directory holds survives

        assert await queue.stats() == before
        for task, result in zip(done, stored_results, strict=True):
            stored = await queue.get(task.id)
            assert stored is not None and stored.status is TaskStatus.COMPLETE
            assert await results.get(task.id) == result
        held = {t.id for t in claimed[5:]}
        assert await queue.renew(held, "w1", lease_seconds=60, now=utcnow()) == held
        again = await queue.claim(["default"], "w2", limit=100, lease_seconds=60, now=utcnow())
        assert len(again) == 90 and not held & {t.id for t in again}
        acks = [Ack(t.id, "w2", TaskStatus.COMPLETE) for t in again]
        assert await queue.ack_many(acks, now=utcnow()) == [True] * 90
        # The wait idle across the crash is woken by a task another client enqueues:
        # the watch was set up again on the restarted server.
        assert not idle.done()
        async with AsyncNATSQueue(server.url, namespace="app") as producer:
            await producer.enqueue([make_task("after")])
        await asyncio.wait_for(idle, 5)
    finally:
        await queue.close()
        await results.close()


def start_worker(url: str, namespace: str, directory: Path, n: int) -> subprocess.Popen[bytes]:
    """``omniq worker`` on the private server (the reliability tests' app module)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env.update(
        OMNIQ_TEST_URL=url,
        OMNIQ_TEST_NAMESPACE=namespace,
        OMNIQ_BASE_DIR=str(directory / ".omniq"),
        OMNIQ_POLL_INTERVAL="0.1",
        OMNIQ_SECRET_KEY="restart-test",
        OMNIQ_LOG_LEVEL="INFO",
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
    )
    log = open(directory / f"worker{n}.log", "wb")  # noqa: SIM115 - the child writes it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "omniq", "worker", "--app", "tests.conformance._apps:oq",
             "--concurrency", "8"],
            env=env, cwd=directory, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    finally:
        log.close()


async def test_workers_carry_on_through_a_server_crash_and_run_each_task_once(
    server: PrivateNATS, tmp_path: Path
) -> None:
    out = tmp_path / "lines.txt"
    url = server.url
    oq = AsyncOmniQ(
        task_queue=url, result_storage=url, event_storage=url, namespace="crash",
        secret_key="restart-test", base_dir=str(tmp_path / ".omniq"),
    )  # fmt: skip
    await oq.connect()
    procs = [start_worker(url, "crash", tmp_path, n) for n in range(2)]
    try:
        ids = await oq.enqueue_many(
            "tests.conformance.tasks:append_line", [(str(out), f"t{i}") for i in range(600)]
        )

        def ran() -> list[str]:
            return (
                [line.split()[0] for line in out.read_text().splitlines()] if out.exists() else []
            )

        def started() -> bool:
            logs = [(tmp_path / f"worker{n}.log").read_text(errors="replace") for n in range(2)]
            return all(" started: " in log for log in logs)

        # Both connected (a worker that cannot connect at start-up fails at once), and
        # busy: then the crash.
        await eventually(lambda: asyncio.to_thread(started), "both workers started")
        await eventually(lambda: asyncio.to_thread(lambda: len(ran()) >= 100), "100 tasks run")
        # Tasks already complete before the crash: they must never run again.
        completed_before = {
            t.id for t in await oq.list_tasks(status=TaskStatus.COMPLETE, limit=1000)
        }
        assert completed_before

        server.kill()
        await asyncio.sleep(0.5)  # the workers meet a dead server for a while
        server.start()

        async def all_complete() -> bool:
            stats = await oq.stats()
            return stats.get("default", {}).get("complete", 0) == 600

        await eventually(all_complete, "600 complete tasks")
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        assert [await asyncio.to_thread(proc.wait, 30) for proc in procs] == [0, 0]
        counts = Counter(ran())
        assert set(counts) == {f"t{i}" for i in range(600)}  # every task ran
        by_id = {task_id: f"t{i}" for i, task_id in enumerate(ids)}
        assert all(counts[by_id[task_id]] == 1 for task_id in completed_before)
        # Only tasks in flight at the crash may have run twice (at least once delivery):
        # at most one per worker slot.
        assert sum(n - 1 for n in counts.values()) <= 16
        results = [await oq.get_result(task_id) for task_id in ids]
        assert all(r is not None and r.status is TaskStatus.COMPLETE for r in results)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await oq.close()


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_server(certs: CertFiles, tmp_path: Path) -> Iterator[PrivateNATS]:
    """A JetStream server that speaks TLS only and asks clients for a certificate."""
    private = PrivateNATS(
        tmp_path / "nats-tls",
        args=[
            "--tls", "--tlsverify",
            "--tlscert", str(certs.server_cert),
            "--tlskey", str(certs.server_key),
            "--tlscacert", str(certs.ca),
        ],
    )  # fmt: skip
    private.start()
    yield private
    private.kill()


async def test_tls_with_the_options_in_the_url_or_in_storage_options(
    tls_server: PrivateNATS, certs: CertFiles, tmp_path: Path
) -> None:
    files = {
        "tls_ca_file": str(certs.ca),
        "tls_cert_file": str(certs.client_cert),
        "tls_key_file": str(certs.client_key),
    }
    address = f"127.0.0.1:{tls_server.port}"
    for url, options in (
        (f"tls://{address}?{urlencode(files)}", {}),
        (f"nats://{address}", files),
    ):
        oq = AsyncOmniQ(
            task_queue=url, result_storage=url, event_storage=url, namespace="tls",
            storage_options=options, base_dir=str(tmp_path / ".omniq"),
        )  # fmt: skip
        async with oq:
            task_id = await oq.enqueue("tests.conformance.tasks:add", 2, 3)
            await oq.worker(concurrency=2).run(burst=True)
            result = await oq.get_result(task_id)
            assert result is not None and result.result == 5
    # A server certificate from another CA: refused, saying why.
    other = {**files, "tls_ca_file": str(certs.other_ca)}
    queue = AsyncNATSQueue(f"tls://{address}?{urlencode(other)}")
    with pytest.raises(StorageConnectionError, match="certificate"):
        await queue.connect()
