"""Prometheus metrics (SPEC §8): a real ``omniq worker --metrics-port`` process drains
tasks, and its endpoint, scraped over HTTP, adds up to what ran."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from omniq import OmniQ, TaskStatus
from omniq.errors import ConfigError
from tests.conftest import REPO_ROOT, free_port

TASKS = "tests.conformance.tasks"


@contextlib.contextmanager
def cli_worker(cwd: Path, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``omniq worker *args`` in ``cwd`` (its log in ``cwd/worker.log``); killed if
    still up at the end."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    with open(cwd / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "omniq", "worker", "--log-level", "INFO", *args],
            cwd=cwd,
            env=full_env,
            stderr=log,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Scrape:
    """One scrape of a metrics endpoint: each sample's value by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when the endpoint does not show it (a counter never
        incremented has no sample)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str) -> float:
        """The sum of the samples named ``name`` across all their labels."""
        return sum(value for (sample, _), value in self.samples.items() if sample == name)


def scrape(port: int, worker: subprocess.Popen[bytes], log: Path) -> Scrape:
    """Scrape ``http://127.0.0.1:port/metrics``, waiting for the worker to listen."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
                return Scrape(reply.read().decode())
        except (urllib.error.URLError, ConnectionError):
            # Not listening yet (the worker is still starting): look again shortly.
            if worker.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no metrics endpoint: {log.read_text()}") from None
            time.sleep(0.05)


def wait_for_line(path: Path, text: str, worker: subprocess.Popen[bytes]) -> None:
    """Wait until the file at ``path`` holds ``text`` (written by a running task)."""
    deadline = time.monotonic() + 60
    while not (path.exists() and text in path.read_text()):
        assert worker.poll() is None and time.monotonic() < deadline, "the task never started"
        time.sleep(0.02)


@pytest.mark.parametrize("worker_type", ["async", "process", "gevent"])
def test_a_workers_metrics_add_up_to_what_ran(tmp_path: Path, worker_type: str) -> None:
    port = free_port()
    release, held_log = tmp_path / "release", tmp_path / "held.log"
    worker_log = tmp_path / "worker.log"
    with OmniQ(base_dir=str(tmp_path / ".omniq")) as oq:
        held = oq.submit(f"{TASKS}:hold_until", (str(release), str(held_log)))
        with cli_worker(
            tmp_path,
            *("--metrics-port", str(port), "--worker-type", worker_type, "--concurrency", "2"),
            OMNIQ_METRICS_HOST="127.0.0.1",
            OMNIQ_POLL_INTERVAL="0.05",
        ) as worker:
            # While a task runs, the endpoint shows it running, from the pool and from
            # the queue's own counts.
            wait_for_line(held_log, "start", worker)
            during = scrape(port, worker, worker_log)
            assert during("omniq_tasks_running", queue="default") == 1
            assert during("omniq_queue_depth", queue="default", status="running") == 1
            assert during.total("omniq_tasks_total") == 0
            release.touch()

            added = [oq.submit(f"{TASKS}:add", (i, i)) for i in range(6)]
            failing = [
                oq.submit(f"{TASKS}:fail", (f"no {i}",), max_retries=1, retry_delay=0)
                for i in range(3)
            ]
            for task_id in [held, *added, *failing]:
                result = oq.get_result(task_id, wait=True, timeout=60)
                assert result is not None, worker_log.read_text()
            assert {oq.get_result(task_id).status for task_id in failing} == {TaskStatus.FAILED}

            after = scrape(port, worker, worker_log)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0, worker_log.read_text()

    def tasks_total(func: str, status: str) -> float:
        return after("omniq_tasks_total", queue="default", task=f"{TASKS}:{func}", status=status)

    # Every attempt that ended, by the status it left its task in: the failing tasks'
    # first attempts were retried, their second ones failed.
    assert tasks_total("hold_until", "complete") == 1
    assert tasks_total("add", "complete") == 6
    assert tasks_total("fail", "retrying") == 3
    assert tasks_total("fail", "failed") == 3
    assert after.total("omniq_tasks_total") == 13

    # One duration per run (each ended by itself), one wait per start.
    def duration_count(func: str) -> float:
        return after("omniq_task_duration_seconds_count", queue="default", task=f"{TASKS}:{func}")

    assert duration_count("hold_until") == 1
    assert duration_count("add") == 6
    assert duration_count("fail") == 6
    assert after("omniq_task_wait_seconds_count", queue="default") == 13
    # The histograms' buckets end in +Inf, which holds every observation.
    assert (
        after("omniq_task_duration_seconds_bucket", queue="default", task=f"{TASKS}:add", le="+Inf")
        == 6
    )
    assert after("omniq_task_wait_seconds_bucket", queue="default", le="+Inf") == 13
    # The run held open lasted until it was released: its duration shows it.
    assert after(
        "omniq_task_duration_seconds_sum", queue="default", task=f"{TASKS}:hold_until"
    ) > after("omniq_task_duration_seconds_sum", queue="default", task=f"{TASKS}:add")

    assert after("omniq_tasks_running", queue="default") == 0
    assert after("omniq_queue_depth", queue="default", status="complete") == 7
    assert after("omniq_queue_depth", queue="default", status="failed") == 3
    assert after("omniq_queue_depth", queue="default", status="pending") == 0


def test_a_busy_metrics_port_fails_the_worker_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "omniq", "worker", "--metrics-port", str(port)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMNIQ_METRICS_HOST": "127.0.0.1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"omniq: error: metrics_port={port}: cannot serve metrics on 127.0.0.1:{port}")
    )


def test_the_metrics_port_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match="metrics_port=70000: expected a TCP port number"):
        OmniQ(metrics_port=70000)


def test_a_pool_in_code_serves_its_metrics_while_it_runs(tmp_path: Path) -> None:
    port = free_port()
    store = str(tmp_path / ".omniq")
    with OmniQ(base_dir=store, metrics_port=port, metrics_host="127.0.0.1") as oq:
        ids = [oq.submit(f"{TASKS}:add", (i, 1)) for i in range(3)]
        pool = oq.worker(worker_type="thread")
        assert pool.metrics_port == port  # the setting's, for every pool of the client
        with pool:
            for task_id in ids:
                assert oq.get_result(task_id, wait=True, timeout=30) is not None
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                seen = Scrape(reply.read().decode())
        assert (
            seen("omniq_tasks_total", queue="default", task=f"{TASKS}:add", status="complete") == 3
        )
        assert seen("omniq_queue_depth", queue="default", status="complete") == 3
        # Stopped with the pool: the port is free to listen on again.
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))
            again.listen()

        bad = oq.worker()
        bad.metrics_port = 0
        with pytest.raises(ConfigError, match="metrics_port=0: expected a TCP port number"):
            bad.run(burst=True)
