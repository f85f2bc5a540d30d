"""``omniq dashboard`` as a user runs it: a real process serving over HTTP."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.dashboard._served import dashboard, dashboard_process, write_app

JOBS = "tests.dashboard.jobs"


def test_omniq_dashboard_serves_the_apps_store(tmp_path: Path) -> None:
    with write_app(tmp_path) as oq:
        task_id = oq.submit(f"{JOBS}:add", (2, 3), queue="mail")
    with dashboard(tmp_path) as base:
        with urllib.request.urlopen(f"{base}/api/overview", timeout=10) as response:
            data = json.load(response)
        assert data["queues"]["mail"]["counts"]["pending"] == 1
        with urllib.request.urlopen(f"{base}/tasks/{task_id}", timeout=10) as response:
            assert "add" in response.read().decode()


def test_omniq_dashboard_auth(tmp_path: Path) -> None:
    write_app(tmp_path).close()
    with dashboard(tmp_path, "--auth", "admin:s3cret") as base:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/", timeout=10)
        refused.value.close()
        assert refused.value.code == 401
        request = urllib.request.Request(
            f"{base}/",
            headers={"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def test_a_bad_auth_option_is_one_line(tmp_path: Path) -> None:
    write_app(tmp_path).close()
    out = subprocess.run(
        [sys.executable, "-m", "omniq", "dashboard", "--app", "dashapp:oq", "--auth", "nocolon"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.strip() == "omniq: error: --auth: expected 'user:password'"


@pytest.mark.parametrize("missing", ["starlette", "jinja2", "uvicorn"])
def test_without_the_web_extra_the_error_says_what_to_install(tmp_path: Path, missing: str) -> None:
    write_app(tmp_path).close()
    probe = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "from omniq.cli import main\n"
        "sys.exit(main(['dashboard', '--app', 'dashapp:oq']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("omniq: error: ")
    assert "needs the web extra: pip install 'omniq[web]'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_it_cleanly_with_a_live_stream_open(tmp_path: Path, signum: int) -> None:
    write_app(tmp_path).close()
    with dashboard_process(tmp_path) as (base, proc):
        with urllib.request.urlopen(f"{base}/api/stream", timeout=10) as stream:
            assert stream.readline() == b"event: overview\n"  # a page watching live
            proc.send_signal(signum)
            assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
