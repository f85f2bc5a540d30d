"""Run the plan: one fresh child process per repetition, isolated and time-boxed.

For every repetition of every cell (library x backend x workload) the parent:

1. ``FLUSHDB`` on Redis DB 15 (brokers and the instrumentation counters live there),
   drops and re-creates the PostgreSQL database ``qbench`` for Postgres cells, deletes the
   benchmark's JetStream streams and buckets for NATS cells, and
   removes the repetition's working directory (SQLite files, file-backend directories);
2. starts ``python -m benchmarks.harness --child SPEC RESULT`` in its own session (own
   process group), with a hard timeout per workload;
3. afterwards SIGTERMs, then SIGKILLs the whole group (producer, worker and the worker's
   own children), reads the JSON the child wrote and removes the working directory.

The child builds the adapter, runs :func:`benchmarks.workloads.run` and writes its metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from benchmarks.adapters import REGISTRY
from benchmarks.adapters.base import REDIS_URL, REPO_ROOT
from benchmarks.workloads import Spec

WORKLOADS = (
    "enqueue",
    "bulk",
    "drain",
    "latency",
    "sleep",
    "memory",
    "sync",
    "ratelimit",
    "enqueue-concurrent",
    "backlog",
)
BACKENDS = ("redis", "sqlite", "file", "postgres", "nats")
SIZES = {"enqueue": 10_000, "bulk": 10_000, "drain": 10_000, "latency": 500, "sleep": 2_000}
SIZES["sync"] = 10_000
QUICK_SIZES = {"enqueue": 1_000, "bulk": 2_000, "drain": 1_000, "latency": 50, "sleep": 300}
QUICK_SIZES["sync"] = 1_000
TIMEOUTS = {"enqueue": 180, "bulk": 120, "drain": 420, "latency": 180, "sleep": 240}
TIMEOUTS["sync"] = 300
# The drain under a rate limit (OmniQ only): 5 windows of the limit, then a few.
SIZES["ratelimit"], QUICK_SIZES["ratelimit"], TIMEOUTS["ratelimit"] = 5_000, 2_000, 120
# Many producers at once: OmniQ measures two clients (async, then blocking) in one child.
SIZES["enqueue-concurrent"], QUICK_SIZES["enqueue-concurrent"] = 10_000, 1_000
TIMEOUTS["enqueue-concurrent"] = 300
# The backlog's size (the probe beside it is benchmarks.workloads.BACKLOG_PROBE); --backlog
# changes it. The timeout covers filling a million one call at a time (Huey) and two drains.
SIZES["backlog"], QUICK_SIZES["backlog"], TIMEOUTS["backlog"] = 1_000_000, 20_000, 1200
WORK_ROOT = REPO_ROOT / "benchmarks" / ".work"


@dataclass(frozen=True)
class Cell:
    """One library on one backend running one workload (``memory`` rides on ``drain``)."""

    label: str
    backend: str
    workload: str


def plan(backends: Iterable[str], workloads: Iterable[str], labels: Iterable[str]) -> list[Cell]:
    """Cells to run, in report order; ``memory`` is measured by the drain repetitions."""
    wanted = list(dict.fromkeys("drain" if w == "memory" else w for w in workloads))
    cells: list[Cell] = []
    for backend in backends:
        for workload in wanted:
            for label in labels:
                entry = REGISTRY[label]
                if backend not in entry.backends:
                    continue
                if workload not in entry.load().workloads():
                    continue
                cells.append(Cell(label, backend, workload))
    return cells


def _flush_redis() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


def _kill_group(pgid: int) -> None:
    for sig, pause in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def run_repetition(
    cell: Cell, run: int, quick: bool, seed: int, sizes: dict[str, int] | None = None
) -> dict[str, Any]:
    """Run one repetition of ``cell`` in a fresh child process and return its record
    (``sizes`` overrides the workloads' default N, as ``--backlog`` does)."""
    name = f"{cell.label}-{cell.backend}-{cell.workload}-run{run}"
    workdir = WORK_ROOT / "work" / name
    logs = WORK_ROOT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    log_path = logs / f"{name}.log"
    log_path.unlink(missing_ok=True)
    sizes = {**(QUICK_SIZES if quick else SIZES), **(sizes or {})}
    spec = Spec(
        label=cell.label,
        backend=cell.backend,
        workload=cell.workload,
        run=run,
        n=sizes[cell.workload],
        workdir=str(workdir),
        log_path=str(log_path),
        seed=seed,
        timeout=TIMEOUTS[cell.workload],
    )
    spec_path = workdir.parent / f"{name}.spec.json"
    result_path = workdir.parent / f"{name}.result.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    result_path.unlink(missing_ok=True)
    _flush_redis()
    if cell.backend == "postgres":
        from benchmarks import pg

        pg.reset_database()
    if cell.backend == "nats":
        from benchmarks import natsjs

        natsjs.reset_streams()

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    record: dict[str, Any] = {
        "label": cell.label,
        "library": REGISTRY[cell.label].library,
        "backend": cell.backend,
        "workload": cell.workload,
        "run": run,
        "quick": quick,
        "load_before": os.getloadavg()[0],
    }
    started = time.monotonic()
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.harness",
                "--child",
                str(spec_path),
                str(result_path),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = False
        try:
            child.wait(spec.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(child.pid)
            child.wait()
    record["seconds"] = time.monotonic() - started
    if result_path.exists():
        record.update(json.loads(result_path.read_text()))
    else:
        record["ok"] = False
        record["error"] = (
            f"timed out after {spec.timeout:.0f} s"
            if timed_out
            else f"child exited with code {child.returncode} and no result (see {log_path})"
        )
    if timed_out and record.get("ok"):
        record["ok"] = False
        record["error"] = f"timed out after {spec.timeout:.0f} s"
    shutil.rmtree(workdir, ignore_errors=True)
    spec_path.unlink(missing_ok=True)
    result_path.unlink(missing_ok=True)
    return record


def run_plan(
    cells: list[Cell],
    runs: int,
    quick: bool,
    on_step: Callable[[int, int, str], None],
    on_record: Callable[[dict[str, Any]], None],
    seed: int = 20261128,
    sizes: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """All repetitions, run-major (so slow drift of a shared VM spreads across cells)."""
    records: list[dict[str, Any]] = []
    total = len(cells) * runs
    step = 0
    for run in range(1, runs + 1):
        for cell in cells:
            on_step(step, total, f"{cell.label}/{cell.backend}/{cell.workload} run {run}")
            record = run_repetition(cell, run, quick, seed + run, sizes)
            records.append(record)
            on_record(record)
            step += 1
    on_step(total, total, "done")
    return records


# -- child side ------------------------------------------------------------------------
def child_main(spec_path: str, result_path: str) -> int:
    """Entry of the per-repetition child: run the workload, write the JSON result."""
    spec = Spec(**json.loads(Path(spec_path).read_text()))
    entry = REGISTRY[spec.label]
    result: dict[str, Any] = {}
    try:
        cls = entry.load()
        adapter = cls(spec.label, spec.backend, Path(spec.workdir))
        os.environ.update(adapter.child_env())
        from benchmarks.workloads import CONCURRENCY, run

        result["version"] = cls.version()
        result["worker_setting"] = adapter.worker_setting(CONCURRENCY.get(spec.workload, 32))
        result["metrics"] = run(adapter, spec)
        result["ok"] = True
    except Exception as exc:
        traceback.print_exc()
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}".strip()[:500]
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2], sys.argv[3]))
    sys.exit("usage: python -m benchmarks.harness --child SPEC RESULT (use python -m benchmarks)")
