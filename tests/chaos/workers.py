"""The chaos run's worker processes: real ``python -m omniq worker`` CLI processes, on
the reliability tests' app (``tests.conformance._apps``)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chaos.ledger import LEDGER_ENV
from tests.conftest import REPO_ROOT

__all__ = ["WORKER_TYPES", "Worker", "WorkerFleet"]

#: The worker types a run mixes (gevent when it is installed).
WORKER_TYPES: tuple[str, ...] = ("async", "thread", "process") + (
    ("gevent",) if importlib.util.find_spec("gevent") else ()
)


@dataclass
class Worker:
    """One worker process and its type."""

    proc: subprocess.Popen[bytes]
    worker_type: str
    log: Path
    stopping: bool = False


class WorkerFleet:
    """Starts, signals and reaps the worker processes of one run."""

    def __init__(
        self,
        run_dir: Path,
        *,
        url: str,
        namespace: str,
        storage_options: dict[str, Any],
        settings: dict[str, Any],
        concurrency: int,
    ) -> None:
        self.run_dir = run_dir
        self.concurrency = concurrency
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
        env.update(
            OMNIQ_TEST_URL=url,
            OMNIQ_TEST_NAMESPACE=namespace,
            OMNIQ_TEST_STORAGE_OPTIONS=json.dumps(storage_options),
            OMNIQ_BASE_DIR=str(run_dir / ".omniq"),
            OMNIQ_LOG_LEVEL="INFO",
            PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
        )
        env[LEDGER_ENV] = str(run_dir / "ledger")
        env.update({f"OMNIQ_{key.upper()}": str(value) for key, value in settings.items()})
        self.env = env
        self.workers: dict[int, Worker] = {}
        self.started = 0

    def start(self, worker_type: str) -> Worker:
        """Start one worker of ``worker_type``."""
        self.started += 1
        log = self.run_dir / "workers" / f"{self.started:03d}-{worker_type}.log"
        command = [
            sys.executable, "-m", "omniq", "worker",
            "--app", "tests.conformance._apps:oq",
            "--worker-type", worker_type,
            "--concurrency", str(self.concurrency),
        ]  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command, env=self.env, cwd=self.run_dir, stdout=out, stderr=subprocess.STDOUT
            )
        worker = self.workers[proc.pid] = Worker(proc, worker_type, log)
        return worker

    def reap(self) -> None:
        """Forget the workers that have exited."""
        for pid, worker in list(self.workers.items()):
            if worker.proc.poll() is not None:
                del self.workers[pid]

    def running(self) -> list[Worker]:
        """The workers alive and not asked to stop, oldest first."""
        self.reap()
        return [w for w in self.workers.values() if not w.stopping]

    def signal(self, worker: Worker, signum: int) -> None:
        """Send ``signum`` to ``worker`` (SIGTERM: it stops gracefully)."""
        if signum != signal.SIGKILL:
            worker.stopping = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.proc.pid, signum)
        if signum == signal.SIGKILL:
            worker.proc.wait()

    def stop_all(self, timeout: float) -> list[int]:
        """SIGTERM every worker and wait up to ``timeout``; SIGKILL what is left and
        return those pids."""
        for worker in list(self.workers.values()):
            self.signal(worker, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in list(self.workers.values()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
        stuck = [w.proc.pid for w in self.workers.values() if w.proc.poll() is None]
        for worker in list(self.workers.values()):
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        self.reap()
        return stuck
