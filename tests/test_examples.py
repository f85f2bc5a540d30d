"""The programs in examples/ run as a user runs them: each in a process of its own (the
FastAPI app's worker and web server in two), in a fresh directory, and do what their
docstrings say."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zoneinfo
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from itertools import pairwise
from types import ModuleType
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    REPO_ROOT,
    delete_redis_namespace,
    drop_postgres_schema,
    free_port,
    unique_name,
)

EXAMPLES = REPO_ROOT / "examples"

#: Every process an example starts reads its settings from the environment: a short poll
#: interval so that waits across processes (SQLite has no push wake-ups) stay short.
FAST = {"OMNIQ_POLL_INTERVAL": "0.05"}


def example_env(**extra: str) -> dict[str, str]:
    """The environment of an example's process: this checkout's omniq and the examples
    importable (as ``omniq worker --app fastapi_app:oq`` run from examples/ finds them)."""
    path = os.pathsep.join([str(EXAMPLES), str(REPO_ROOT)])
    return {**os.environ, "PYTHONPATH": path, **FAST, **extra}


def run_example(name: str, *args: str, **env: str) -> str:
    """``python examples/<name> *args`` in the current (per-test) directory; its stdout."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=example_env(**env),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` under a name of its own (building its client touches
    no storage)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Lines:
    """The lines a process writes to one pipe, read on a thread so a test can wait for
    one with a deadline instead of blocking on ``readline``."""

    def __init__(self, pipe: Any) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in pipe:
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        #: Ends when the pipe does: join it before closing the pipe.
        self.thread = threading.Thread(target=pump, daemon=True)
        self.thread.start()

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        """The next line matching ``pattern``; fails when the pipe closes or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {timeout} s: {self.seen}")
            if line is None:
                pytest.fail(f"the process ended before a line matching {pattern!r}: {self.seen}")
            self.seen.append(line)
            if re.search(pattern, line):
                return line


@contextlib.contextmanager
def started(*command: str, **env: str) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    """``command`` running in the background, its stdout and stderr as one stream of
    lines; killed at the end if it is still up."""
    proc = subprocess.Popen(
        command,
        env=example_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = Lines(proc.stdout)
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        lines.thread.join(timeout=30)  # at the pipe's end, once the process has exited
        assert proc.stdout is not None
        proc.stdout.close()


def stop(proc: subprocess.Popen[str], sig: signal.Signals) -> int:
    """Send ``sig`` and wait for the process to exit; its exit code."""
    proc.send_signal(sig)
    return proc.wait(timeout=30)


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One JSON request with the standard library: (status, decoded body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def test_fastapi_app_with_a_worker_process_beside_it() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker_cmd = (sys.executable, "-m", "omniq", "worker", "--app", "fastapi_app:oq")
    web_cmd = (sys.executable, "-m", "uvicorn", "fastapi_app:app", "--port", str(port))
    with (
        started(*worker_cmd, "--log-level", "INFO") as (worker, worker_log),
        started(*web_cmd, "--host", "127.0.0.1") as (web, web_log),
    ):
        # The first request waits at most 10 s for its result: have the worker up first.
        worker_log.wait_for(r"omniq\.worker: worker \S+ started")
        # Uvicorn says so once the lifespan has run (the client is connected) and the
        # socket listens.
        web_log.wait_for("Uvicorn running on")

        # Enqueue and wait: the worker's result is the response.
        text = "OmniQ runs tasks. Workers run beside the app."
        assert http("POST", f"{base}/summaries", {"text": text}) == (
            200,
            {"words": 8, "sentences": 2, "first": "OmniQ runs tasks"},
        )

        # Enqueue and poll: 202 with the id at once, then the status until complete.
        status, accepted = http("POST", f"{base}/jobs", {"text": "hello there"})
        assert status == 202
        task_id = accepted["task_id"]
        deadline = time.monotonic() + 30
        while (job := http("GET", f"{base}/jobs/{task_id}")[1])["status"] != "complete":
            assert job["status"] in {"pending", "running"}, job
            assert time.monotonic() < deadline, job
            time.sleep(0.05)  # a web client polls; the example's point is that it can
        assert job == {
            "task_id": task_id,
            "status": "complete",
            "result": {"words": 2, "sentences": 0, "first": "hello there"},
            "error": None,
        }
        assert http("GET", f"{base}/jobs/no-such-task") == (404, {"detail": "no task no-such-task"})

        # The app stops gracefully (its lifespan closes the client; recent uvicorn then
        # exits by the signal it caught, older ones with 0)...
        assert stop(web, signal.SIGTERM) in {0, -signal.SIGTERM}
        web_log.wait_for("Application shutdown complete")
        # ...and both tasks ran in the worker process, not in the web server's.
        assert stop(worker, signal.SIGTERM) == 0
        assert "'complete': 2" in worker_log.wait_for("stopped")


def test_schedules_fire_on_a_running_worker() -> None:
    with started(
        sys.executable, "-u", str(EXAMPLES / "schedules.py"), HEARTBEAT_INTERVAL="0.2s"
    ) as (proc, out):
        out.wait_for("^worker running")
        # list_schedules() printed both schedules above that line, in its own order.
        (cron,) = [line for line in out.seen if line.startswith("schedule weekday-report: ")]
        (interval,) = [line for line in out.seen if line.startswith("schedule heartbeat: ")]
        assert cron.startswith("schedule weekday-report: 0 7 * * mon-fri, next at ")
        assert interval.startswith("schedule heartbeat: every 0.2 s, next at ")
        ticks = [out.wait_for(r"^heartbeat at ") for _ in range(3)]
        assert stop(proc, signal.SIGINT) == 0
        out.wait_for("^stopped$")

    # The cron schedule's next run is a weekday at 07:00 in Paris, whatever UTC says.
    next_report = datetime.fromisoformat(cron.rsplit(" ", 1)[1])
    paris = next_report.astimezone(zoneinfo.ZoneInfo("Europe/Paris"))
    assert (paris.hour, paris.minute, paris.second) == (7, 0, 0) and paris.weekday() < 5
    # The interval ticks come one per interval, from one interval after creation.
    first_due = datetime.fromisoformat(interval.rsplit(" ", 1)[1])
    times = [datetime.fromisoformat(tick.rsplit(" ", 1)[1]) for tick in ticks]
    assert times[0] >= first_due.replace(microsecond=first_due.microsecond // 1000 * 1000)
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(times)]
    assert all(gap >= 0.1 for gap in gaps), gaps  # never two for one tick


def test_dag_results_flow_through_fan_out_and_fan_in() -> None:
    dag = load_example("dag")
    expected = Counter(word for doc in dag.DOCUMENTS for word in doc.split()).most_common(3)
    out = run_example("dag.py")
    assert out.splitlines() == [f"{word}: {count}" for word, count in expected]


def test_cpu_bound_work_on_process_workers() -> None:
    limit = 60_000
    sieve = bytearray([1]) * limit
    sieve[:2] = b"\0\0"
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit, n)))
    out = run_example("cpu_bound.py", str(limit), "4")
    assert out.startswith(f"{sum(sieve)} primes below 60,000 (4 tasks, ")


async def test_mixed_backends_keep_each_part_where_its_url_says() -> None:
    namespace = unique_name("omniqexample")
    try:
        out = run_example(
            "mixed_backends.py",
            REDIS_URL=REDIS_URL,
            DATABASE_URL=POSTGRES_URL,
            EVENTS_URL="sqlite:///events.db",
            OMNIQ_NAMESPACE=namespace,
        )
        mixed = load_example("mixed_backends")
        prices = {symbol: mixed.quote(symbol) for symbol in ("ACME", "GLOBEX", "INITECH")}
        lines = out.splitlines()
        assert lines[0] == f"prices: {prices}"
        shown = re.fullmatch(r"task (\S+): status complete \(queue: .*\)", lines[1])
        assert shown is not None
        first_id = shown.group(1)
        assert lines[2].startswith(f"  result {prices['ACME']} (results: ")
        assert lines[3].startswith("  events ['enqueued', 'executing', 'complete'] (events: ")

        # Each part is where its URL put it, under the namespace: the tasks in Redis...
        client = aioredis.from_url(REDIS_URL)
        try:
            assert [key async for key in client.scan_iter(match=f"{namespace}:*")]
        finally:
            await client.aclose()
        # ...the results in PostgreSQL, in the namespace's schema...
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            stored = await conn.fetch(f'SELECT task_id FROM "{namespace}".results')
        finally:
            await conn.close()
        assert len(stored) == 3 and first_id in {row["task_id"] for row in stored}
        # ...and the events in the SQLite file, in the example's working directory (and
        # nothing else there).
        with contextlib.closing(sqlite3.connect("events.db")) as db:
            logged = db.execute("SELECT count(*) FROM events WHERE task_id = ?", (first_id,))
            assert logged.fetchone()[0] > 0
            assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 0
    finally:
        await delete_redis_namespace(REDIS_URL, namespace)
        await drop_postgres_schema(POSTGRES_URL, namespace)
