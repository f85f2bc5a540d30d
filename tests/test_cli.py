"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from omniq import OmniQ
from tests.conftest import REPO_ROOT


def omniq(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "omniq", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    done = omniq("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "summary:" in done.stdout
    assert "complete" in done.stdout and "failed" in done.stdout
    assert "retry" in done.stdout  # the retried task's events are shown
    assert (tmp_path / ".omniq" / "omniq.db").exists()


def test_enqueue_worker_status_events(tmp_path: Path) -> None:
    enq = omniq("enqueue", "tests.conformance.tasks:add", "2", "40", cwd=tmp_path)
    assert enq.returncode == 0, enq.stderr
    task_id = enq.stdout.strip()
    work = omniq("worker", "--burst", "--concurrency", "2", cwd=tmp_path)
    assert work.returncode == 0, work.stderr
    status = omniq("status", task_id, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "complete" in status.stdout and "42" in status.stdout
    events = omniq("events", task_id, cwd=tmp_path)
    assert [line.split()[1] for line in events.stdout.splitlines()] == [
        "enqueued",
        "executing",
        "complete",
    ]
    stats = omniq("stats", cwd=tmp_path)
    assert "default: complete=1" in stats.stdout


def test_environment_and_yaml_configure_the_cli(tmp_path: Path) -> None:
    (tmp_path / "omniq.yaml").write_text("base_dir: from_yaml\n")
    enq = omniq(
        "--config", "omniq.yaml", "enqueue", "tests.conformance.tasks:add", "1", "1", cwd=tmp_path
    )
    assert enq.returncode == 0, enq.stderr
    assert (tmp_path / "from_yaml" / "omniq.db").exists()
    enq = omniq(
        "enqueue",
        "tests.conformance.tasks:add",
        "1",
        "1",
        cwd=tmp_path,
        env={"OMNIQ_BASE_DIR": "from_env"},
    )
    assert (tmp_path / "from_env" / "omniq.db").exists()


def test_unknown_omniq_variables_are_warned_about_on_stderr(tmp_path: Path) -> None:
    env = {
        "OMNIQ_MAX_WORKER": "8",  # a typo: warned about, with the name meant
        "OMNIQ_BACKEND": "file",  # a setting (the shorthand): used, not warned about
        "OMNIQ_APP": "",  # read by the CLI itself
    }
    done = omniq("enqueue", "tests.conformance.tasks:add", "1", "2", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, done.stderr
    assert "OMNIQ_MAX_WORKER is not an OmniQ setting" in warnings[0]
    assert "did you mean OMNIQ_MAX_WORKERS?" in warnings[0]
    assert (tmp_path / ".omniq" / "task_queue").is_dir()  # OMNIQ_BACKEND=file took effect


def readme_cli_example() -> dict[str, list[str]]:
    """The commands of the README's command-line example, by command name."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Workers from the command line", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line) for line in block.splitlines() if line.startswith("omniq ")]
    return {command[1]: command[1:] for command in commands}


_MYAPP_QUEUE = """
from omniq import OmniQ

# Not the default store: a command that does not name this app does not see its tasks.
oq = OmniQ(base_dir="myapp-state", event_storage="sqlite:///myapp-state/events.db")
"""


def test_the_readme_cli_example_reaches_the_apps_store(tmp_path: Path) -> None:
    # The example used to enqueue and ask for status without --app: into the SQLite
    # default, while the worker started with --app watched the app's store.
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "queue.py").write_text(_MYAPP_QUEUE)
    (tmp_path / "myapp" / "tasks.py").write_text("def add(a, b):\n    return a + b\n")
    example = readme_cli_example()
    assert set(example) >= {"worker", "enqueue", "status", "events", "schedules"}

    enq = omniq(*example["enqueue"], cwd=tmp_path)
    assert enq.returncode == 0, enq.stderr
    task_id = enq.stdout.strip()
    work = omniq(*example["worker"], "--burst", cwd=tmp_path)
    assert work.returncode == 0, work.stderr
    status = omniq(*[task_id if a == "<task-id>" else a for a in example["status"]], cwd=tmp_path)
    assert "status    complete" in status.stdout and "result    5" in status.stdout, (
        status.stdout + status.stderr
    )
    events = omniq(*[task_id if a == "<task-id>" else a for a in example["events"]], cwd=tmp_path)
    assert [line.split()[1] for line in events.stdout.splitlines()] == [
        "enqueued",
        "executing",
        "complete",
    ], events.stdout + events.stderr
    schedules = omniq(*example["schedules"], cwd=tmp_path)
    assert schedules.returncode == 0 and schedules.stdout.strip() == "no schedules"
    assert not (tmp_path / ".omniq").exists()  # nothing went to the default store
    # OMNIQ_APP, and --app before the command's name, name the app too.
    for args, env in [
        (("status", task_id), {"OMNIQ_APP": "myapp.queue:oq"}),
        (("--app", "myapp.queue:oq", "stats"), {}),
    ]:
        done = omniq(*args, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert "complete" in done.stdout, done.stdout
    assert not (tmp_path / ".omniq").exists()


@pytest.mark.parametrize(
    ("loop", "expected"),
    [
        ("asyncio", "asyncio"),
        ("uvloop", "uvloop"),
        # The default: uvloop when it is installed (it is, with the [dev] extra).
        (None, "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"),
    ],
)
def test_worker_runs_on_the_loop_chosen(tmp_path: Path, loop: str | None, expected: str) -> None:
    enq = omniq("enqueue", "tests.conformance.tasks:loop_module", cwd=tmp_path)
    assert enq.returncode == 0, enq.stderr
    chosen = ("--loop", loop) if loop else ()
    work = omniq("worker", "--burst", *chosen, "--log-level", "INFO", cwd=tmp_path)
    assert work.returncode == 0, work.stderr
    assert f"loop={expected}" in work.stderr
    status = omniq("status", enq.stdout.strip(), cwd=tmp_path)
    assert "complete" in status.stdout and repr(expected) in status.stdout, status.stdout


def test_a_gevent_worker_stays_on_asyncio_by_default(tmp_path: Path) -> None:
    work = omniq(
        "worker", "--burst", "--worker-type", "gevent", "--log-level", "INFO", cwd=tmp_path
    )
    assert work.returncode == 0, work.stderr
    assert "type=gevent" in work.stderr and "loop=asyncio" in work.stderr


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (("status", "no-such-id"), {}, "no task no-such-id"),
        (("worker", "--app", "nowhere.module:oq"), {}, "cannot import"),
        (("worker", "--app", "tests.conformance.tasks:add"), {}, "expected an OmniQ"),
        (("stats",), {"OMNIQ_MAX_WORKERS": "many"}, "OMNIQ_MAX_WORKERS"),
        (("--config", "missing.yaml", "stats"), {}, "missing.yaml"),
        (("worker", "--worker-type", "gevent", "--loop", "uvloop"), {}, "gevent"),
        (("worker", "--burst"), {"OMNIQ_QUEUE_ORDER": "lifo"}, "OMNIQ_QUEUE_ORDER='lifo'"),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], needle: str
) -> None:
    done = omniq(*args, cwd=tmp_path, env=env)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("omniq: error:") and needle in lines[0]


# What pip writes as the ``omniq`` console script: run as a file, it puts its own
# directory (the venv's bin/) first on sys.path, not the current directory.
_CONSOLE_SCRIPT = """
import re, sys
from omniq.cli import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""


def test_the_console_script_imports_tasks_from_the_current_directory(tmp_path: Path) -> None:
    # With `omniq` (not `python -m omniq`) and no --app, the worker failed the task with
    # "No module named 'tasks'": the current directory was not on sys.path.
    script = tmp_path / "bin" / "omniq"
    script.parent.mkdir()
    script.write_text(_CONSOLE_SCRIPT)
    project = tmp_path / "project"
    project.mkdir()
    (project / "tasks.py").write_text("def add(a, b):\n    return a + b\n")
    (project / "omniq.yaml").write_text("base_dir: state\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), "--config", "omniq.yaml", *args],
            cwd=project,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    enq = run("enqueue", "tasks:add", "4", "5")
    assert enq.returncode == 0, enq.stderr
    work = run("worker", "--burst")
    assert work.returncode == 0, work.stderr
    status = run("status", enq.stdout.strip())
    assert "complete" in status.stdout and "result    9" in status.stdout, status.stdout


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--log-level", "LOUD", "stats"), "--log-level 'LOUD'"),
        (("stats", "--log-level", "LOUD"), "--log-level 'LOUD'"),
        (("--config", "missing.yaml", "stats"), "--config 'missing.yaml'"),
        (("worker", "--queue-order", "fifo"), "--queue-order 'fifo'"),
    ],
)
def test_a_bad_option_is_reported_as_the_option(
    tmp_path: Path, args: tuple[str, ...], option: str
) -> None:
    # They used to be reported as the variables they set ("environment variable
    # OMNIQ_LOG_LEVEL", "(from OMNIQ_CONFIG)"), which the user never wrote.
    done = omniq(*args, cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"omniq: error: {option}: ")
    assert "OMNIQ_" not in line and "environment" not in line


@pytest.mark.parametrize(
    ("args", "env", "first"),
    [
        ((), {}, "low"),  # merged: the older task first, whatever the list order
        (("--queue-order", "strict"), {}, "high"),
        ((), {"OMNIQ_QUEUE_ORDER": "strict"}, "high"),
        (("--queue-order", "merged"), {"OMNIQ_QUEUE_ORDER": "strict"}, "low"),  # flag wins
    ],
)
def test_worker_queue_order_from_the_flag_or_the_environment(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], first: str
) -> None:
    ran = tmp_path / "ran"
    with OmniQ(base_dir=str(tmp_path / ".omniq")) as oq:  # the CLI's default store here
        for queue in ("low", "high"):
            oq.submit("tests.conformance.tasks:append_line", (str(ran), queue), queue=queue)
    options = ("--burst", "--concurrency", "1", "--queues", "high,low", *args)
    work = omniq("worker", *options, cwd=tmp_path, env=env)
    assert work.returncode == 0, work.stderr
    second = "high" if first == "low" else "low"
    assert [line.split()[0] for line in ran.read_text().splitlines()] == [first, second]


@contextlib.contextmanager
def worker_process(cwd: Path, *args: str, **env: str) -> Iterator[subprocess.Popen[str]]:
    """``omniq worker --log-level INFO *args`` in ``cwd``, stderr piped; killed if still
    up."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq", "worker", "--log-level", "INFO", *args],
        cwd=cwd,
        env=full_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_worker_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with worker_process(tmp_path, OMNIQ_POLL_INTERVAL="0.05") as proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        line = ""
        while "started" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "started" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


_GATED_APP = """
import asyncio, pathlib
from omniq import AsyncOmniQ

class GatedClient(AsyncOmniQ):
    async def connect(self) -> None:
        pathlib.Path("connecting").touch()
        while not pathlib.Path("go").exists():
            await asyncio.sleep(0.01)
        await super().connect()

oq = GatedClient()
"""


def test_a_sigterm_while_the_worker_starts_up_stops_it(tmp_path: Path) -> None:
    # A signal that arrives before the pool runs (here: while the client connects, as
    # on a slow host) must not be lost: the worker used to start and run on regardless.
    (tmp_path / "gated_app.py").write_text(_GATED_APP)
    with worker_process(tmp_path, "--app", "gated_app:oq") as proc:
        deadline = time.monotonic() + 30
        while not (tmp_path / "connecting").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no connect"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)  # the signal is handled while connect() is still waiting
        (tmp_path / "go").touch()
        assert proc.wait(timeout=30) == 0


def test_a_second_sigterm_stops_the_worker_at_once(tmp_path: Path) -> None:
    # The first signal lets running tasks finish (here: never, within a minute); the
    # second stops now, still handing the unfinished task back.
    marker = tmp_path / "started"
    queued = omniq(
        "enqueue",
        "tests.conformance.tasks:wait_for_file",
        str(tmp_path / "never"),
        str(marker),
        cwd=tmp_path,
    )
    assert queued.returncode == 0, queued.stderr
    with worker_process(tmp_path, OMNIQ_SHUTDOWN_TIMEOUT="60") as proc:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # the graceful stop is under way
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        _, err = proc.communicate()
        assert "handed back 1 unfinished tasks" in err, err
    status = omniq("status", queued.stdout.strip(), cwd=tmp_path)
    assert "pending" in status.stdout, status.stdout


@pytest.mark.parametrize("level", ["WARNING", "INFO", "DEBUG"])
def test_a_worker_says_what_goes_wrong_at_its_log_level(tmp_path: Path, level: str) -> None:
    # One task that fails for good, one that times out and is retried: the worker's log
    # names each failed attempt (with the traceback from INFO), each retry and timeout,
    # and from DEBUG each start and finish.
    failing = omniq("enqueue", "tests.conformance.tasks:fail", "no luck", cwd=tmp_path)
    slow = omniq(
        "enqueue",
        "tests.conformance.tasks:sleep_async",
        "5",
        "--timeout",
        "0.2",
        "--max-retries",
        "1",
        cwd=tmp_path,
        env={"OMNIQ_RETRY_DELAY": "0"},
    )
    assert failing.returncode == 0 and slow.returncode == 0, failing.stderr + slow.stderr
    failing_id, slow_id = failing.stdout.strip(), slow.stdout.strip()
    work = omniq("worker", "--burst", "--log-level", level, cwd=tmp_path)
    assert work.returncode == 0, work.stderr
    log = work.stderr
    failed = [line for line in log.splitlines() if failing_id in line and "failed" in line]
    assert len(failed) == 1, log
    assert "WARNING" in failed[0] and "attempt 1" in failed[0]
    assert "ValueError: no luck" in failed[0] and "tests.conformance.tasks:fail" in failed[0]
    assert log.count(f"task {slow_id} (tests.conformance.tasks:sleep_async): attempt") >= 3
    assert f"{slow_id} (tests.conformance.tasks:sleep_async): attempt 1 timed out" in log
    assert f"{slow_id} (tests.conformance.tasks:sleep_async): attempt 2 timed out" in log
    shown = level in ("INFO", "DEBUG")
    assert ("Traceback (most recent call last)" in log) is shown
    assert (f"task {slow_id} (tests.conformance.tasks:sleep_async): retry 1" in log) is shown
    assert (f"{failing_id} (tests.conformance.tasks:fail): attempt 1 started" in log) is (
        level == "DEBUG"
    )


def test_status_prints_the_progress(tmp_path: Path) -> None:
    enq = omniq("enqueue", "tests.conformance.progress_tasks:tight_loop", "250", cwd=tmp_path)
    assert enq.returncode == 0, enq.stderr
    task_id = enq.stdout.strip()
    work = omniq("worker", "--burst", cwd=tmp_path)
    assert work.returncode == 0, work.stderr
    status = omniq("status", task_id, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    [line] = [line for line in status.stdout.splitlines() if line.startswith("progress")]
    assert line.split()[1:3] == ["250/250", "(100%)"], status.stdout
