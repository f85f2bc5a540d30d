"""The faults of a chaos run, drawn from the run's seeded random generator.

Each fault is recorded with its time and, when it hits one worker, that worker's pid, so
the audit can tell which runs it could have made repeat.

Killing a worker *inside a write* (``kill_in_write``) is aimed rather than left to
chance: the injector watches the ledger, and the moment a body logs its end it SIGKILLs
that body's worker process 0-30 ms later, while the worker is storing the result and
acknowledging the task (a SQLite transaction, a file rename, a Redis script, an S3 PUT).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from tests.chaos.servers import Backend
from tests.chaos.workers import WORKER_TYPES, WorkerFleet

__all__ = ["GLOBAL_KINDS", "Fault", "FaultInjector", "fault_kinds"]

#: Faults that hit every worker's connections at once (no pid).
GLOBAL_KINDS = frozenset({"restart", "drop_all", "drop_one"})


@dataclass
class Fault:
    """One fault: its kind, when it struck, and the worker pid it hit (None: all)."""

    kind: str
    at: float
    pid: int | None = None
    detail: str = ""


def fault_kinds(backend: Backend) -> dict[str, int]:
    """The faults ``backend`` can take, with their relative weights."""
    kinds = {"sigkill": 4, "sigterm": 2, "kill_in_write": 3}
    if backend.proxy is not None:
        kinds.update(drop_all=2, drop_one=3, latency=2)
    if backend.restartable:
        kinds["restart"] = 1
    return kinds


class FaultInjector:
    """Strikes one fault at a time, and starts a new worker for each one it stopped."""

    def __init__(
        self, rng: random.Random, backend: Backend, fleet: WorkerFleet, ledger: Path
    ) -> None:
        self.rng = rng
        self.backend = backend
        self.fleet = fleet
        self.ledger = ledger
        self.kinds = fault_kinds(backend)
        self.faults: list[Fault] = []

    def start_worker(self) -> None:
        """Start a worker of a type drawn at random."""
        self.fleet.start(self.rng.choice(WORKER_TYPES))

    async def strike(self) -> None:
        """Draw one fault and strike it; return when it is over."""
        kinds = sorted(self.kinds)
        kind = self.rng.choices(kinds, weights=[self.kinds[k] for k in kinds])[0]
        await getattr(self, f"_{kind}")()

    def _pick(self) -> int | None:
        running = self.fleet.running()
        if not running:
            return None
        return self.rng.randrange(len(running))

    async def _sigkill(self) -> None:
        index = self._pick()
        if index is None:
            return
        worker = self.fleet.running()[index]
        self.faults.append(Fault("sigkill", time.time(), worker.proc.pid, worker.worker_type))
        self.fleet.signal(worker, signal.SIGKILL)
        await asyncio.sleep(self.rng.uniform(0, 1))
        self.start_worker()

    async def _sigterm(self) -> None:
        index = self._pick()
        if index is None:
            return
        worker = self.fleet.running()[index]
        self.faults.append(Fault("sigterm", time.time(), worker.proc.pid, worker.worker_type))
        self.fleet.signal(worker, signal.SIGTERM)
        self.start_worker()

    async def _kill_in_write(self) -> None:
        delay = self.rng.uniform(0, 0.03)
        pids = {w.proc.pid for w in self.fleet.running()}
        target = await asyncio.to_thread(self._next_end, pids, 5.0)
        if target is None:
            return
        await asyncio.sleep(delay)
        worker = self.fleet.workers.get(target)
        if worker is None or worker.proc.poll() is not None:
            return
        self.faults.append(
            Fault(
                "kill_in_write", time.time(), target, f"{worker.worker_type} +{delay * 1000:.0f} ms"
            )
        )
        self.fleet.signal(worker, signal.SIGKILL)
        self.start_worker()

    def _next_end(self, pids: set[int], within: float) -> int | None:
        """The worker pid (of ``pids``) whose body next logs its end, within ``within`` s."""
        sizes = {path: path.stat().st_size for path in self.ledger.glob("*.jsonl")}
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for path in self.ledger.glob("*.jsonl"):
                size = path.stat().st_size
                old = sizes.get(path, 0)
                if size <= old:
                    continue
                sizes[path] = size
                with open(path, "rb") as handle:
                    handle.seek(old)
                    fresh = handle.read(size - old)
                for raw in fresh.splitlines():
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue
                    if entry["e"] != "end":
                        continue
                    # A process worker's body runs in its child: the worker is the parent.
                    pid = entry["pid"]
                    owner = pid if pid in pids else self._parent(pid)
                    if owner in pids:
                        return owner
            time.sleep(0.002)  # polling files: there is no notification to wait on
        return None

    @staticmethod
    def _parent(pid: int) -> int | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return int(stat.rsplit(")", 1)[1].split()[1])

    async def _restart(self) -> None:
        down = self.rng.uniform(0.5, 3)
        self.faults.append(Fault("restart", time.time(), None, f"down {down:.1f} s"))
        await asyncio.to_thread(self.backend.kill_server)
        await asyncio.sleep(down)
        await asyncio.to_thread(self.backend.start_server)

    async def _drop_all(self) -> None:
        assert self.backend.proxy is not None
        count = self.backend.proxy.drop_all()
        self.faults.append(Fault("drop_all", time.time(), None, f"{count} connections"))

    async def _drop_one(self) -> None:
        assert self.backend.proxy is not None
        count = self.backend.proxy.drop_one(self.rng)
        if count:
            self.faults.append(Fault("drop_one", time.time(), None))

    async def _latency(self) -> None:
        assert self.backend.proxy is not None
        latency, length = self.rng.uniform(0.02, 0.3), self.rng.uniform(1, 4)
        self.faults.append(Fault("latency", time.time(), None, f"{latency * 1000:.0f} ms"))
        self.backend.proxy.set_latency(latency)
        await asyncio.sleep(length)
        self.backend.proxy.set_latency(0)
