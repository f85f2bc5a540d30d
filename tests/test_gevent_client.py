"""The blocking client in a process gevent has monkey-patched (a gevent web app, a
gevent gunicorn worker): user scripts run as real processes.

Its loop must run on a real OS thread there, and a greenlet waiting for a call must let
the others run: once a blocking call held up the hub, or the loop ran in a greenlet of
the caller's thread, where its second call saw "a running event loop".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, REPO_ROOT, run_script

# The tasks, importable by an `omniq worker` of its own process too.
_TASKS = """
import os, time

def add(a, b):
    return a + b

def wait_for_go(folder):
    # Finishes only once another greenlet of the script has seen it start.
    open(os.path.join(folder, "started"), "w").close()
    while not os.path.exists(os.path.join(folder, "go")):
        time.sleep(0.01)
    return "went"
"""

_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import contextlib, json, os, subprocess, sys
import gevent
import gtasks
from omniq import OmniQ

def main():
    folder, worker = sys.argv[1], os.environ["GEVENT_TEST_WORKER"]
    worker_type = os.environ.get("GEVENT_TEST_WORKER_TYPE", "thread")
    os.makedirs(folder, exist_ok=True)
    cli = None
    if worker == "cli":
        cli = subprocess.Popen([sys.executable, "-m", "omniq", "worker", "--concurrency", "4"])
    oq = OmniQ.from_env()

    # Several greenlets enqueue at once, each waiting on its own calls.
    expected = {}
    def enqueue_some(n):
        for i in range(5):
            expected[oq.enqueue(gtasks.add, n, i)] = n + i
    gevent.joinall([gevent.spawn(enqueue_some, n) for n in range(8)], raise_error=True)
    if worker == "pool":
        oq.worker(worker_type=worker_type, concurrency=4).run(burst=True)
    results = {task: oq.get_result(task, wait=True, timeout=60).result for task in expected}

    # While the main greenlet waits for a result, another one runs: the task ends only
    # once that one has seen it start.
    waiting = [False]
    seen_while_waiting = []
    def release():
        while not os.path.exists(os.path.join(folder, "started")):
            gevent.sleep(0.01)
        seen_while_waiting.append(waiting[0])
        open(os.path.join(folder, "go"), "w").close()
    background = oq.worker(worker_type=worker_type, concurrency=2) if worker == "pool" else None
    with background or contextlib.nullcontext():
        task = oq.enqueue(gtasks.wait_for_go, folder)
        releaser = gevent.spawn(release)
        waiting[0] = True
        went = oq.get_result(task, wait=True, timeout=60).result
        waiting[0] = False
    releaser.get()
    oq.close()
    if cli is not None:
        cli.terminate()
        cli.wait()
    print(json.dumps({
        "right": results == expected,
        "count": len(results),
        "went": went,
        "seen_while_waiting": seen_while_waiting,
    }))

if __name__ == "__main__":
    main()
"""


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker: str, worker_type: str = "thread"
) -> dict[str, object]:
    (tmp_path / "gtasks.py").write_text(_TASKS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT), str(tmp_path)]))
    monkeypatch.setenv("GEVENT_TEST_WORKER", worker)
    monkeypatch.setenv("GEVENT_TEST_WORKER_TYPE", worker_type)
    run = run_script(tmp_path, _SCRIPT)
    assert run.returncode == 0, run.stderr
    report: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_greenlets_share_the_blocking_client_on_sqlite_with_its_own_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_type: str
) -> None:
    # A process pool's calls wait for their children in gevent's selector: its pipe
    # came non-blocking from gevent's socketpair, and children read EAGAIN and quit.
    monkeypatch.setenv("OMNIQ_BASE_DIR", str(tmp_path / "home"))
    report = _run(tmp_path, monkeypatch, "pool", worker_type)
    assert report == {"right": True, "count": 40, "went": "went", "seen_while_waiting": [True]}


def test_greenlets_share_the_blocking_client_on_redis_with_a_cli_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_cleanup: str
) -> None:
    monkeypatch.setenv("OMNIQ_BACKEND", "redis")
    monkeypatch.setenv("OMNIQ_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("OMNIQ_NAMESPACE", redis_cleanup)
    report = _run(tmp_path, monkeypatch, "cli")
    assert report == {"right": True, "count": 40, "went": "went", "seen_while_waiting": [True]}


_GEVENT_TYPE_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import sys
from omniq import OmniQ
from omniq.errors import ConfigError

with OmniQ(base_dir=sys.argv[1]) as oq:
    try:
        oq.worker(worker_type="gevent").run(burst=True)
    except ConfigError as exc:
        print("refused:", exc)
"""


def test_the_gevent_worker_type_is_refused_in_a_patched_process(tmp_path: Path) -> None:
    # gevent's subprocess cannot start its child from the loop's thread: a clear error,
    # not a pool that never runs a task.
    run = run_script(tmp_path, _GEVENT_TYPE_SCRIPT)
    assert run.returncode == 0, run.stderr
    assert "refused:" in run.stdout
    assert "worker_type='thread'" in run.stdout


_UNPATCHED_SCRIPT = """
import sys
from omniq import OmniQ

with OmniQ(base_dir=sys.argv[1]) as oq:
    oq.enqueue(print, "hello")
    oq.worker().run(burst=True)
print("gevent" in sys.modules)
"""


def test_a_process_without_gevent_never_imports_it(tmp_path: Path) -> None:
    run = run_script(tmp_path, _UNPATCHED_SCRIPT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "False"


_NESTED_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import asyncio, sys
from omniq import OmniQ
from omniq.errors import SyncInAsyncError

oq = OmniQ(base_dir=sys.argv[1])

@oq.task
def add(a, b):
    return a + b

@oq.task
def fan_out(n):
    return [oq.enqueue(add, i, i) for i in range(n)]

async def blocking_in_a_coroutine():
    try:
        oq.stats()
    except SyncInAsyncError:
        return "refused"
    return "allowed"

if __name__ == "__main__":
    task = oq.enqueue(fan_out, 3)
    with oq.worker(worker_type="thread"):
        children = oq.get_result(task, wait=True, timeout=60).result
        print([oq.get_result(child, wait=True, timeout=60).result for child in children])
    print(asyncio.run(blocking_in_a_coroutine()))
    oq.close()
"""


def test_a_thread_task_uses_the_blocking_client_but_a_coroutine_may_not(tmp_path: Path) -> None:
    # Under gevent a thread worker's task runs in a greenlet of the loop's own thread,
    # where asyncio finds that loop running: that greenlet may wait for it all the same.
    # The greenlet that runs a loop (here asyncio.run's) is still refused.
    run = run_script(tmp_path, _NESTED_SCRIPT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines() == ["[0, 2, 4]", "refused"]


_PATCHED_LATER_SCRIPT = """
import sys
from omniq import OmniQ

# Made before gevent patches, as in an app a gunicorn master preloads before its gevent
# worker forks and patches.
oq = OmniQ(base_dir=sys.argv[1])

from gevent import monkey; monkey.patch_all()
import gevent

@oq.task
def add(a, b):
    return a + b

first, second = oq.enqueue(add, 1, 1), oq.enqueue(add, 2, 2)
tasks = [gevent.spawn(oq.enqueue, add, n, n) for n in range(4)]
gevent.joinall(tasks, raise_error=True)
oq.worker(worker_type="thread").run(burst=True)
ids = [first, second] + [task.value for task in tasks]
print(sorted(oq.get_result(task_id).result for task_id in ids))
oq.close()
"""


def test_a_client_made_before_gevent_patches_serves_greenlets_after(tmp_path: Path) -> None:
    run = run_script(tmp_path, _PATCHED_LATER_SCRIPT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[0, 2, 2, 4, 4, 6]"
