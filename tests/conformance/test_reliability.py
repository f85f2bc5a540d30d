"""Crash safety, leases, graceful stop, worker types and signed payloads (SPEC §3, §5),
with real worker processes, on every backend.

Worker processes are ``python -m omniq worker --app tests.conformance._apps:oq`` started
with the test's store in their environment. Tests wait on files and results, not on sleeps;
the one deliberate pause (``test_task_longer_than_its_lease_runs_once``) is the time
that must pass for a lease to run out.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from omniq import AsyncOmniQ, EventType, TaskStatus
from omniq.engine import Engine
from omniq.models import Task
from tests.conformance import tasks
from tests.conformance.conftest import MakeOQ
from tests.conftest import REPO_ROOT
from tests.storage._file_checks import tamper_file_task
from tests.storage._nats_helpers import tamper_nats_task
from tests.storage._redis_helpers import tamper_redis_task

WAIT = 25.0  # upper bound for anything a test waits for


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, *, within: float = WAIT
) -> None:
    """Wait until ``check()`` is true (it reads a file or the store), at most ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def wait_for_path(path: Path, what: str) -> None:
    """Wait until ``path`` exists and holds at least one whole line (a file is created
    by ``open`` before its first line is written)."""

    def written() -> bool:
        return path.exists() and path.read_text(encoding="utf-8").endswith("\n")

    await eventually(lambda: asyncio.to_thread(written), what)


class Workers:
    """CLI worker processes on the test's store; all are killed at teardown."""

    def __init__(self, store_url: str, namespace: str, directory: Path) -> None:
        self.store_url = store_url
        self.namespace = namespace
        self.directory = directory
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *extra: str, concurrency: int = 8, **settings: Any) -> subprocess.Popen[bytes]:
        """Start ``omniq worker``; ``settings`` become ``OMNIQ_<NAME>`` variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
        env.update(
            OMNIQ_TEST_URL=self.store_url,
            OMNIQ_TEST_NAMESPACE=self.namespace,
            OMNIQ_BASE_DIR=str(self.directory / ".omniq"),
            OMNIQ_POLL_INTERVAL="0.1",
            OMNIQ_RETRY_DELAY="0",
            PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
        )
        env.update({f"OMNIQ_{key.upper()}": str(value) for key, value in settings.items()})
        log = open(self.directory / f"worker{len(self.procs)}.log", "wb")  # noqa: SIM115
        command = [
            sys.executable,
            "-m",
            "omniq",
            "worker",
            "--app",
            "tests.conformance._apps:oq",
            "--concurrency",
            str(concurrency),
            *extra,
        ]
        try:
            proc = subprocess.Popen(
                command, env=env, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    def all_started(self) -> bool:
        """Every worker has logged its start (it was started with ``log_level="INFO"``)."""
        return all(
            " started: " in (self.directory / f"worker{i}.log").read_text(errors="replace")
            for i in range(len(self.procs))
        )

    def output(self) -> str:
        return "\n".join(
            f"--- worker{i}.log\n" + (self.directory / f"worker{i}.log").read_text(errors="replace")
            for i in range(len(self.procs))
        )

    async def exit_code(self, proc: subprocess.Popen[bytes], within: float = WAIT) -> int:
        try:
            return await asyncio.to_thread(proc.wait, within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {proc.pid} did not exit\n{self.output()}") from None

    async def terminate_all(self) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return [await self.exit_code(proc) for proc in self.procs]

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def values(oq: AsyncOmniQ, ids: list[str]) -> list[Any]:
    """The result values of completed tasks (fails on any other outcome)."""
    found = []
    for task_id in ids:
        result = await oq.get_result(task_id)
        assert result is not None, task_id
        assert result.status is TaskStatus.COMPLETE, result.error
        found.append(result.result)
    return found


@pytest.fixture
async def workers(store_url: str, namespace: str, tmp_path: Path) -> AsyncIterator[Workers]:
    group = Workers(store_url, namespace, tmp_path)
    yield group
    group.kill_all()


# -- many workers ------------------------------------------------------------------------


async def test_four_cli_workers_run_each_of_1000_tasks_once(
    oq: AsyncOmniQ, workers: Workers, tmp_path: Path
) -> None:
    out = tmp_path / "lines.txt"
    procs = [workers.start(concurrency=8, log_level="INFO") for _ in range(4)]
    ids = await oq.enqueue_many(tasks.append_line, [(str(out), f"t{i}") for i in range(1000)])

    async def all_complete() -> bool:
        return (await oq.stats()).get("default", {}).get("complete", 0) == 1000

    await eventually(all_complete, "1000 complete tasks")
    # On a loaded host a worker may still be starting: SIGTERM before its handlers are
    # installed ends it the default way (exit -15), which is not what this test is about.
    await eventually(lambda: asyncio.to_thread(workers.all_started), "every worker started")

    assert await workers.terminate_all() == [0, 0, 0, 0], workers.output()
    lines = out.read_text().splitlines()
    texts = [line.split()[0] for line in lines]
    assert sorted(texts) == sorted(f"t{i}" for i in range(1000))  # each ran exactly once
    ran_in = {int(line.split()[1]) for line in lines}
    assert ran_in <= {proc.pid for proc in procs}
    for task_id in ids[::97]:
        result = await oq.get_result(task_id)
        assert result is not None
        assert (result.status, result.attempts) == (TaskStatus.COMPLETE, 1)


# -- crashes and leases ----------------------------------------------------------------------


async def test_worker_killed_mid_task_task_runs_again_after_the_lease(
    oq: AsyncOmniQ, workers: Workers, tmp_path: Path
) -> None:
    # Default options (max_retries=0): a worker's death is not its tasks' failure.
    release, log = tmp_path / "release", tmp_path / "runs.log"
    ids = [await oq.submit(tasks.hold_until, (str(release), str(log))) for _ in range(3)]
    first = workers.start(lease_seconds=1)

    def three_started() -> bool:
        return log.exists() and log.read_text(encoding="utf-8").count("\n") >= 3

    await eventually(lambda: asyncio.to_thread(three_started), "three tasks to start")
    first.kill()
    assert await workers.exit_code(first) == -signal.SIGKILL
    release.touch()

    second = workers.start(lease_seconds=1)
    for task_id in ids:
        result = await oq.get_result(task_id, wait=True, timeout=WAIT)
        assert result is not None, workers.output()
        assert (result.status, result.result) == (TaskStatus.COMPLETE, "released")
        assert result.attempts == 2
        task = await oq.get_task(task_id)
        assert task is not None
        assert (task.attempts, task.lost_runs) == (2, 1)
    runs = [int(line.split()[1]) for line in log.read_text().splitlines()]
    assert runs == [first.pid] * 3 + [second.pid] * 3
    assert await workers.terminate_all() == [-signal.SIGKILL, 0]
    # The killed worker may not have flushed its events; the second one has, at its stop.
    for task_id in ids:
        events = await oq.get_events(task_id)
        assert [e.attempt for e in events if e.event_type is EventType.EXECUTING][-1] == 2
        assert events[-1].event_type is EventType.COMPLETE
        assert events[-1].attempt == 2


async def test_dependents_of_a_task_whose_worker_died_before_releasing_them_still_run(
    oq: AsyncOmniQ, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the chaos runner: a worker killed (or cut off from its store) between
    # acknowledging a task and releasing its dependents left them SCHEDULED for ever.
    # Here the worker "dies" at that very point: its on_finished never runs.
    parent = await oq.submit(tasks.add, (1, 2))
    child = await oq.submit(tasks.add, (3, 4), depends_on=[parent])

    async def died_before_releasing(*args: Any, **kwargs: Any) -> int:
        return 0

    with monkeypatch.context() as patch:
        # Nor does it get to sweep (a dead worker does nothing).
        patch.setattr(Engine, "on_finished", died_before_releasing)
        patch.setattr(Engine, "sweep_dependents", died_before_releasing)
        await oq.worker(concurrency=1).run(burst=True)
    parent_task, child_task = await oq.get_task(parent), await oq.get_task(child)
    assert parent_task is not None and parent_task.status is TaskStatus.COMPLETE
    assert child_task is not None and child_task.status is TaskStatus.SCHEDULED

    # Any worker that runs later releases it (within a lease period).
    workers.start(lease_seconds=1)
    result = await oq.get_result(child, wait=True, timeout=WAIT)
    assert result is not None, workers.output()
    assert (result.status, result.result) == (TaskStatus.COMPLETE, 7)


async def test_task_that_kills_its_worker_every_time_ends_failed(
    oq: AsyncOmniQ, workers: Workers
) -> None:
    poison = await oq.submit(tasks.exit_process, (1,), max_retries=0)
    # A lost run is not the task's failure: it runs again, up to max_lost_runs lost runs.
    first = workers.start("--burst", lease_seconds=1, max_lost_runs=1)
    assert await workers.exit_code(first) == 1  # the task took its worker down

    async def lease_ran_out() -> bool:
        task = await oq.get_task(poison)
        lease = task.lease_expires_at if task is not None else None
        return lease is not None and lease < datetime.now(UTC)

    await eventually(lease_ran_out, "the dead worker's lease to run out")
    second = workers.start("--burst", lease_seconds=1, max_lost_runs=1)
    assert await workers.exit_code(second) == 1  # again, after the first lease ran out

    workers.start(lease_seconds=1, max_lost_runs=1)
    result = await oq.get_result(poison, wait=True, timeout=WAIT)
    after = await oq.enqueue(tasks.add, 1, 2)
    after_result = await oq.get_result(after, wait=True, timeout=WAIT)

    assert result is not None, workers.output()
    assert result.status is TaskStatus.FAILED
    assert result.attempts == 2  # the two that took their workers down
    assert result.error is not None
    assert result.error.type == "omniq.WorkerLost"
    assert "lease expired" in result.error.message
    task = await oq.get_task(poison)
    assert task is not None and task.attempts == 2 and task.lost_runs == 2
    assert after_result is not None
    assert after_result.result == 3  # the worker carried on
    assert (await workers.terminate_all())[2] == 0


@pytest.mark.parametrize(
    ("holder", "worker_type"),
    [
        pytest.param(tasks.hold_until_async, "async", id="async-coroutine"),
        pytest.param(tasks.hold_until, "async", id="async-thread"),
        pytest.param(tasks.hold_until, "process", id="process"),
        pytest.param(tasks.hold_until, "gevent", id="gevent"),
    ],
)
async def test_sigterm_mid_task_exits_cleanly_and_hands_the_task_back(
    oq: AsyncOmniQ,
    workers: Workers,
    tmp_path: Path,
    holder: Callable[..., Any],
    worker_type: str,
) -> None:
    release, log = tmp_path / "release", tmp_path / "runs.log"
    task_id = await oq.submit(holder, (str(release), str(log)))
    worker = workers.start("--worker-type", worker_type, concurrency=2, shutdown_timeout=0.5)
    await wait_for_path(log, "the task to start")

    worker.send_signal(signal.SIGTERM)
    assert await workers.exit_code(worker, within=15) == 0, workers.output()

    task = await oq.get_task(task_id)
    assert task is not None
    assert (task.status, task.attempts) == (TaskStatus.PENDING, 0), workers.output()
    assert task.worker_id is None
    release.touch()
    await oq.worker(concurrency=1).run(burst=True)  # nothing was lost
    result = await oq.get_result(task_id)
    assert result is not None
    assert (result.status, result.attempts) == (TaskStatus.COMPLETE, 1)


async def test_task_longer_than_its_lease_runs_once(
    oq: AsyncOmniQ, workers: Workers, tmp_path: Path
) -> None:
    release, log = tmp_path / "release", tmp_path / "runs.log"
    lease = 0.5
    task_id = await oq.submit(tasks.hold_until, (str(release), str(log)), max_retries=3)
    workers.start(concurrency=1, lease_seconds=lease)
    await wait_for_path(log, "the task to start")
    # A second worker with free slots, shown to be claiming: it runs a probe task (the
    # first worker's only slot is taken).
    workers.start(concurrency=4, lease_seconds=lease)
    probe_out = tmp_path / "probe.txt"
    probe = await oq.enqueue(tasks.append_line, str(probe_out), "probe")
    probe_result = await oq.get_result(probe, wait=True, timeout=WAIT)
    assert probe_result is not None
    assert probe_result.status is TaskStatus.COMPLETE

    await asyncio.sleep(4 * lease)  # several leases' worth of time pass while it runs
    release.touch()
    result = await oq.get_result(task_id, wait=True, timeout=WAIT)

    assert result is not None, workers.output()
    assert (result.status, result.attempts) == (TaskStatus.COMPLETE, 1)
    assert len(log.read_text().splitlines()) == 1  # never started a second time
    assert await workers.terminate_all() == [0, 0]


# -- worker types ------------------------------------------------------------------------------


async def test_process_worker_timeout_kills_the_child_and_the_pool_keeps_working(
    oq: AsyncOmniQ,
) -> None:
    before = await oq.enqueue(tasks.getpid)
    slow = await oq.submit(tasks.sleep_sync, (60,), timeout=0.5, max_retries=0)
    after = await oq.enqueue(tasks.getpid)
    later = await oq.enqueue(tasks.async_add, 2, 3)

    await oq.worker(worker_type="process", concurrency=1).run(burst=True)

    timed_out = await oq.get_result(slow)
    assert timed_out is not None
    assert timed_out.status is TaskStatus.FAILED
    assert timed_out.error is not None
    assert timed_out.error.type == "omniq.errors.TaskTimeoutError"
    kinds = [e.event_type for e in await oq.get_events(slow)]
    assert EventType.TIMEOUT in kinds
    assert kinds[-1] is EventType.ERROR
    first_pid, second_pid, value = await values(oq, [before, after, later])
    assert os.getpid() not in (first_pid, second_pid)
    assert first_pid != second_pid  # the timed-out child was replaced
    assert value == 5


async def test_process_worker_poison_pill_fails_after_its_attempts(oq: AsyncOmniQ) -> None:
    poison = await oq.submit(tasks.exit_process, (1,), max_retries=1)
    later = [await oq.enqueue(tasks.add, i, i) for i in range(3)]

    await oq.worker(worker_type="process", concurrency=2).run(burst=True)

    result = await oq.get_result(poison)
    assert result is not None
    assert (result.status, result.attempts) == (TaskStatus.FAILED, 2)
    assert result.error is not None
    assert result.error.type == "omniq.errors.WorkerError"
    assert "worker process died (exit code 1) while running the task" in result.error.message
    kinds = [e.event_type for e in await oq.get_events(poison)]
    assert kinds.count(EventType.EXECUTING) == 2
    assert EventType.RETRY in kinds
    assert await values(oq, later) == [0, 2, 4]


async def test_gevent_worker_runs_200_blocking_tasks_together(oq: AsyncOmniQ) -> None:
    async def answer_later(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.2)
        writer.write(b"pong")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_later, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ids = await oq.enqueue_many(tasks.timed_sleep, [(0.2,)] * 100)
    ids += await oq.enqueue_many(tasks.timed_read, [(port,)] * 100)

    started = time.monotonic()
    async with server:
        await oq.worker(worker_type="gevent", concurrency=200).run(burst=True)
    elapsed = time.monotonic() - started

    spans = await values(oq, ids)
    # How many of the 200 blocking calls were in flight at the same moment.
    peak = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    print(f"gevent: 200 tasks blocking 0.2 s each took {elapsed:.2f} s, peak overlap {peak}")
    assert peak >= 100


# -- signed payloads ---------------------------------------------------------------------------


def _altered(data: bytes, alter: Callable[[bytes], bytes], replace_record: bytes | None) -> bytes:
    if replace_record is not None:
        return replace_record
    task = msgspec.msgpack.decode(data, type=Task)
    return msgspec.msgpack.encode(msgspec.structs.replace(task, payload=alter(task.payload)))


def _tamper_sqlite(
    store_url: str,
    task_id: str,
    alter: Callable[[bytes], bytes],
    *,
    replace_record: bytes | None = None,
) -> None:
    path = store_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        with conn:
            (data,) = conn.execute("SELECT data FROM tasks WHERE id = ?", (task_id,)).fetchone()
            conn.execute(
                "UPDATE tasks SET data = ? WHERE id = ?",
                (_altered(data, alter, replace_record), task_id),
            )
    finally:
        conn.close()


def _tamper_postgres(
    store_url: str,
    task_id: str,
    alter: Callable[[bytes], bytes],
    *,
    replace_record: bytes | None = None,
) -> None:
    import asyncpg

    async def rewrite() -> None:
        conn = await asyncpg.connect(store_url)
        try:
            # Task ids are unique across test schemas: find the one that holds it.
            schemas = await conn.fetch(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'tasks'"
            )
            for (schema,) in schemas:
                data = await conn.fetchval(
                    f'SELECT data FROM "{schema}".tasks WHERE id = $1', task_id
                )
                if data is not None:
                    await conn.execute(
                        f'UPDATE "{schema}".tasks SET data = $1 WHERE id = $2',
                        _altered(data, alter, replace_record),
                        task_id,
                    )
                    return
            raise AssertionError(f"task {task_id} not found in any schema")
        finally:
            await conn.close()

    asyncio.run(rewrite())


#: Per backend: rewrite a stored task's payload (or with ``replace_record=``, its whole
#: record) in place, behind OmniQ's back.
TAMPER: dict[str, Callable[..., None]] = {
    "sqlite": _tamper_sqlite,
    "redis": tamper_redis_task,
    "file": tamper_file_task,
    "memory": tamper_file_task,
    "azure": tamper_file_task,
    "postgres": _tamper_postgres,
    "nats": tamper_nats_task,
}


async def tamper(
    backend: str,
    store_url: str,
    task_id: str,
    alter: Callable[[bytes], bytes] = bytes,
    *,
    replace_record: bytes | None = None,
) -> None:
    helper = TAMPER.get(backend)
    if helper is None:
        pytest.fail(f"no helper to alter stored task bytes on the {backend} backend: add one")
    await asyncio.to_thread(helper, store_url, task_id, alter, replace_record=replace_record)


def flip_last_byte(payload: bytes) -> bytes:
    assert payload[:1] == b"S", "expected a signed dill payload"
    return payload[:-1] + bytes([payload[-1] ^ 0x01])


async def test_tampered_signed_payload_is_refused_and_never_unpickled(
    make_oq: MakeOQ, backend_name: str, store_url: str, tmp_path: Path
) -> None:
    oq = await make_oq(secret_key="reliability-secret")
    made = {name: tmp_path / name for name in ("called", "loaded", "ok-called", "ok-loaded")}

    def writer(name: str) -> Callable[[Any], Awaitable[None] | None]:
        target = made[name]
        return lambda evidence: target.touch()  # a closure: travels with dill

    tampered = await oq.submit(writer("called"), (tasks.TouchOnLoad(str(made["loaded"])),))
    control = await oq.submit(writer("ok-called"), (tasks.TouchOnLoad(str(made["ok-loaded"])),))
    await tamper(backend_name, store_url, tampered, flip_last_byte)

    await oq.worker(concurrency=2).run(burst=True)

    refused = await oq.get_result(tampered)
    assert refused is not None
    assert refused.status is TaskStatus.FAILED
    assert refused.error is not None
    assert refused.error.type == "omniq.errors.PayloadSignatureError"
    assert "signature does not match" in refused.error.message
    assert not made["called"].exists()
    assert not made["loaded"].exists()  # nothing was unpickled
    assert refused.attempts == 1  # no retry can fix a refused payload
    ok = await oq.get_result(control)
    assert ok is not None
    assert ok.status is TaskStatus.COMPLETE
    assert made["ok-called"].exists()
    assert made["ok-loaded"].exists()  # the evidence files do work


# -- damaged records ---------------------------------------------------------------------------


async def test_a_task_whose_record_is_damaged_fails_with_a_result_and_spares_the_queue(
    oq: AsyncOmniQ, backend_name: str, store_url: str
) -> None:
    damaged = await oq.submit(tasks.add, (1, 2), queue="mail")
    dependent = await oq.submit(tasks.add, (3, 4), queue="mail", depends_on=[damaged])
    others = [await oq.submit(tasks.add, (i, i), queue="mail") for i in range(3)]
    await tamper(backend_name, store_url, damaged, replace_record=b"\xc1 not a record")
    waiting = asyncio.ensure_future(oq.get_result(damaged, wait=True, timeout=WAIT))

    await oq.worker(queues="mail").run(burst=True)

    result = await waiting  # a waiter hears of it, like of any failure
    assert result.status is TaskStatus.FAILED
    assert result.error is not None and result.error.type == "omniq.UnreadableTask"
    assert damaged in result.error.message and "corrupt" in result.error.message
    events = await oq.get_events(damaged)
    assert events[-1].event_type is EventType.ERROR
    assert events[-1].queue == "mail"
    cancelled = await oq.get_result(dependent)
    assert cancelled is not None and cancelled.status is TaskStatus.CANCELLED
    for i, task_id in enumerate(others):  # the rest of the queue ran
        done = await oq.get_result(task_id)
        assert done is not None and (done.status, done.result) == (TaskStatus.COMPLETE, 2 * i)
    assert (await oq.stats())["mail"] == {"failed": 1, "cancelled": 1, "complete": 3}


# -- cancel --------------------------------------------------------------------------------


def _pid_gone(pid: int) -> bool:
    """True when process ``pid`` has ended (a zombie not yet reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rpartition(")")[2].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return True


@pytest.mark.parametrize(
    ("holder", "worker_type"),
    [
        pytest.param(tasks.hold_until_async, "async", id="async-coroutine"),
        pytest.param(tasks.hold_until, "thread", id="thread"),
        pytest.param(tasks.hold_until, "process", id="process"),
        pytest.param(tasks.hold_until, "gevent", id="gevent"),
    ],
)
async def test_cancel_reaches_a_running_task_in_another_process_at_once(
    oq: AsyncOmniQ,
    workers: Workers,
    tmp_path: Path,
    holder: Callable[..., Any],
    worker_type: str,
) -> None:
    # A CLI worker with the default lease (30 s, renewed every 10 s): the cancel must
    # reach it without waiting for a renewal (it takes well under a second; the bound
    # below leaves room for a loaded host, and is still short of the first renewal).
    release, log = tmp_path / "release", tmp_path / "runs.log"
    task_id = await oq.submit(holder, (str(release), str(log)))
    workers.start("--worker-type", worker_type, concurrency=2)
    await wait_for_path(log, "the task to start")
    pid = int(log.read_text(encoding="utf-8").split()[1])

    assert await oq.cancel(task_id) is True
    if worker_type == "process":  # the child running it is killed (and replaced)
        await eventually(lambda: asyncio.to_thread(_pid_gone, pid), "the child to die", within=8)
    elif worker_type != "thread":  # the coroutine or greenlet is stopped where it waits
        stopped = f"stopped {pid}"
        await eventually(
            lambda: asyncio.to_thread(lambda: stopped in log.read_text(encoding="utf-8")),
            "the run to stop",
            within=8,
        )
    # A thread cannot be stopped: it runs on to its end, and its outcome is dropped.
    release.touch()
    after = await oq.enqueue(tasks.add, 1, 2)
    assert (await oq.get_result(after, wait=True, timeout=WAIT)).result == 3
    assert await workers.terminate_all() == [0], workers.output()

    result = await oq.get_result(task_id)
    assert result is not None and result.status is TaskStatus.CANCELLED
    task = await oq.get_task(task_id)
    assert task is not None and task.status is TaskStatus.CANCELLED
    kinds = [event.event_type for event in await oq.get_events(task_id)]
    assert kinds == [EventType.ENQUEUED, EventType.EXECUTING, EventType.CANCELLED]


async def test_cancel_racing_the_finish_has_exactly_one_outcome(
    oq: AsyncOmniQ, workers: Workers
) -> None:
    # Tasks that end within ~60 ms, cancelled around that time from this process while a
    # CLI worker runs them: whichever wins, the loser changes nothing.
    workers.start(concurrency=8, log_level="INFO")
    # Submitted once the worker runs: before, every cancel would find a waiting task.
    await eventually(lambda: asyncio.to_thread(workers.all_started), "the worker to start")
    rng = random.Random(29)
    ids = [await oq.submit(tasks.sleep_async, (rng.uniform(0.0, 0.06),)) for _ in range(40)]

    async def cancel_later(task_id: str, delay: float) -> bool:
        await asyncio.sleep(delay)
        return await oq.cancel(task_id)

    cancelled = await asyncio.gather(
        *(cancel_later(task_id, rng.uniform(0.0, 0.3)) for task_id in ids)
    )
    for task_id in ids:
        result = await oq.get_result(task_id, wait=True, timeout=WAIT)
        assert result is not None
    assert await workers.terminate_all() == [0], workers.output()
    outcomes = set()
    for task_id, won in zip(ids, cancelled, strict=True):
        expected = TaskStatus.CANCELLED if won else TaskStatus.COMPLETE
        result, task = await oq.get_result(task_id), await oq.get_task(task_id)
        assert result is not None and task is not None
        assert (result.status, task.status) == (expected, expected), task_id
        kinds = [event.event_type for event in await oq.get_events(task_id)]
        winner, loser = (
            (EventType.CANCELLED, EventType.COMPLETE)
            if won
            else (EventType.COMPLETE, EventType.CANCELLED)
        )
        # (A cancelled task's run may log EXECUTING after CANCELLED: its worker claimed
        # it, the cancel landed, then the run began before the worker heard of it.)
        assert winner in kinds and loser not in kinds, (task_id, kinds)
        outcomes.add(won)
    assert outcomes == {True, False}  # both sides of the race were exercised


# -- events ----------------------------------------------------------------------------------


async def test_a_finished_tasks_events_are_stored_with_its_result(
    oq: AsyncOmniQ, workers: Workers
) -> None:
    # Read right after get_result returns, with the worker in another process. Where the
    # event log shares the queue's store, the worker writes a task's events in the same
    # transaction or script as its result; elsewhere (the file backend) they follow it
    # within one write.
    workers.start()
    together = oq.event_storage is not None and oq.queue.finish_logs_events(oq.event_storage)
    expected = [EventType.ENQUEUED, EventType.EXECUTING, EventType.COMPLETE]
    for _ in range(10):
        task_id = await oq.enqueue(tasks.add, 1, 2)
        result = await oq.get_result(task_id, wait=True, timeout=WAIT)
        assert result is not None and result.status is TaskStatus.COMPLETE
        if together:
            kinds = [event.event_type for event in await oq.get_events(task_id)]
            assert kinds == expected
        else:

            async def logged(task_id: str = task_id) -> bool:
                kinds = [event.event_type for event in await oq.get_events(task_id)]
                return kinds == expected

            await eventually(logged, "the events of the finished task", within=2)


async def test_a_long_runs_executing_event_shows_while_it_runs(
    oq: AsyncOmniQ, workers: Workers, tmp_path: Path
) -> None:
    # Short runs write EXECUTING with their result; a long one hands it to the event
    # logger after a moment, so a reader in another process sees the run under way.
    release, log = tmp_path / "release", tmp_path / "runs.log"
    task_id = await oq.submit(tasks.hold_until, (str(release), str(log)))
    workers.start()
    await wait_for_path(log, "the task to start")

    async def executing() -> bool:
        kinds = [event.event_type for event in await oq.get_events(task_id)]
        return kinds == [EventType.ENQUEUED, EventType.EXECUTING]

    await eventually(executing, "EXECUTING while the task runs", within=5)
    assert (await oq.get_task(task_id)).status is TaskStatus.RUNNING
    release.touch()
    result = await oq.get_result(task_id, wait=True, timeout=WAIT)
    assert result is not None and result.status is TaskStatus.COMPLETE

    async def finished() -> bool:  # at once, or (the file backend) within a write
        kinds = [event.event_type for event in await oq.get_events(task_id)]
        return kinds == [EventType.ENQUEUED, EventType.EXECUTING, EventType.COMPLETE]

    await eventually(finished, "EXECUTING once, then COMPLETE", within=2)


async def test_a_claim_whose_reply_outlives_its_lease_does_not_run_a_task_taken_over(
    make_oq: MakeOQ, tmp_path: Path
) -> None:
    # A slow store (the chaos runs' S3): the claim's reply reaches the pool after the
    # lease it wrote ran out, and by then another worker took the task over and
    # finished it. Starting the body then would run a finished task again.
    oq = await make_oq(lease_seconds=1.0)
    other = await make_oq(lease_seconds=WAIT)
    log = tmp_path / "runs"
    task_id = await oq.enqueue(tasks.append_line, str(log), "ran")
    real_claim = oq.queue.claim
    taken_over = asyncio.Event()

    async def slow_claim(*args: Any, **kwargs: Any) -> list[Task]:
        claimed = await real_claim(*args, **kwargs)
        if claimed and not taken_over.is_set():
            lease = claimed[0].lease_expires_at
            assert lease is not None
            # The time that must pass for the lease to run out, then the takeover.
            await asyncio.sleep(max(0.0, (lease - datetime.now(UTC)).total_seconds()) + 0.1)
            await asyncio.wait_for(other.worker().run(burst=True), timeout=WAIT)
            taken_over.set()
        return claimed

    oq.queue.claim = slow_claim  # type: ignore[method-assign]
    await asyncio.wait_for(oq.worker().run(burst=True), timeout=WAIT)
    assert taken_over.is_set()
    result = await oq.get_result(task_id)
    assert result is not None and result.status is TaskStatus.COMPLETE
    lines = (await asyncio.to_thread(log.read_text)).splitlines()
    assert len(lines) == 1, f"the body ran {len(lines)} times: {lines}"
