"""``omniq dashboard`` and ``omniq worker`` as real processes over one SQLite store."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from omniq import OmniQ
from tests.conftest import REPO_ROOT, free_port

_APP = """\
from omniq import OmniQ

URL = {url!r}
oq = OmniQ(task_queue=URL, result_storage=URL, event_storage=URL, base_dir={base!r})
"""


def write_app(directory: Path) -> OmniQ:
    """``dashapp.py`` in ``directory`` (its ``oq`` on ``directory/omniq.db``), and a
    client of the same store for the test."""
    url = f"sqlite:///{directory / 'omniq.db'}"
    (directory / "dashapp.py").write_text(_APP.format(url=url, base=str(directory)))
    return OmniQ(task_queue=url, result_storage=url, event_storage=url, base_dir=str(directory))


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("OMNIQ_DASHBOARD_AUTH", None)
    return env


@contextlib.contextmanager
def _process(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def dashboard(directory: Path, *args: str) -> Iterator[str]:
    """``omniq dashboard --app dashapp:oq *args`` on a free port: its base URL, once it
    answers."""
    with dashboard_process(directory, *args) as (base, _):
        yield base


@contextlib.contextmanager
def dashboard_process(directory: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """As :func:`dashboard`, with the process."""
    port = free_port()
    command = ["dashboard", "--app", "dashapp:oq", "--port", str(port), *args]
    with _process(command, directory) as proc:
        assert proc.stdout is not None
        banner = proc.stdout.readline()  # printed just before uvicorn binds the port
        assert "OmniQ dashboard on" in banner, (banner, proc.stderr and proc.stderr.read())
        base = f"http://127.0.0.1:{port}"
        _wait_for(base, proc)
        yield base, proc


def _wait_for(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base}/static/dashboard.css", timeout=5):
                return
        except urllib.error.HTTPError as exc:
            exc.close()
            return  # it answers (401 with auth on)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read() if proc.stderr else ""
                raise AssertionError(f"the dashboard did not start: {err}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def worker(directory: Path) -> Iterator[subprocess.Popen[str]]:
    """``omniq worker --app dashapp:oq`` until the block ends."""
    with _process(["worker", "--app", "dashapp:oq", "--worker-type", "thread"], directory) as p:
        yield p
