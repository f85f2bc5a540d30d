"""One chaos run: start the store, the workers and the load; strike faults for the run's
length; stop them, let the system settle, read everything back and audit it.

The seed fixes the sequence of task kinds and of faults (two generators drawn from it);
the timing of a run on a loaded machine does not replay exactly, so a failure is
replayed by running the same seed again, usually more than once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import json
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from omniq import AsyncOmniQ, Task
from tests.chaos.audit import FINAL, STOP_TIMEOUT, Audit, Stored, audit
from tests.chaos.faults import FaultInjector
from tests.chaos.ledger import read_runs
from tests.chaos.load import SCHEDULES, Load, retrying
from tests.chaos.servers import BACKENDS, Backend
from tests.chaos.workers import WORKER_TYPES, WorkerFleet

__all__ = ["Options", "run"]


@dataclasses.dataclass
class Options:
    """A run's command-line options (see ``python -m tests.chaos --help``)."""

    backend: str
    seconds: float
    seed: int
    workers: int = 4
    concurrency: int = 4
    rate: float | None = None
    fault_gap: tuple[float, float] = (0.5, 3.0)
    settle: float = 180.0
    keep: bool = False


def say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


async def _all_tasks(client: AsyncOmniQ) -> list[Task]:
    tasks = await retrying(lambda: client.list_tasks(limit=10_000_000))
    assert isinstance(tasks, list)
    return tasks


async def _settle(client: AsyncOmniQ, load: Load, within: float) -> None:
    """Wait until every planned task is in the store and every stored task is final."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        tasks = await _all_tasks(client)
        waiting = [t for t in tasks if t.status not in FINAL]
        missing = set(load.plan) - {t.id for t in tasks}
        if not waiting and not missing:
            return
        say(f"settling: {len(waiting)} not final, {len(missing)} missing")
        await asyncio.sleep(2)
    say("settling timed out: the audit reports what is left")


async def _read_store(client: AsyncOmniQ, ids: set[str]) -> dict[str, Stored]:
    """Every task of ``ids`` with its result and events, a few reads at a time."""
    gate = asyncio.Semaphore(16)
    found: dict[str, Stored] = {}

    async def one(task_id: str) -> None:
        async with gate:
            task = await retrying(lambda: client.get_task(task_id))
            result = await retrying(lambda: client.get_result(task_id))
            events = await retrying(lambda: client.get_events(task_id))
            found[task_id] = Stored(task, result, events)  # type: ignore[arg-type]

    await asyncio.gather(*(one(task_id) for task_id in sorted(ids)))
    return found


def _summary(options: Options, report: Audit, faults: Counter[str], load: Load) -> str:
    fault_text = ", ".join(f"{kind}={n}" for kind, n in sorted(faults.items())) or "none"
    dup_text = ", ".join(f"{cause}={n}" for cause, n in sorted(report.duplicates.items()))
    return (
        f"chaos {options.backend} seed={options.seed} {options.seconds:.0f}s: "
        f"tasks={report.tasks} ticks={report.ticks} runs={report.runs} "
        f"lost_runs={report.lost_runs} | faults: {fault_text} | "
        f"lost={len(report.lost)} duplicates={sum(report.duplicates.values())}"
        f"{f' ({dup_text})' if dup_text else ''} wrong_states={len(report.wrong_states)} "
        f"violations={len(report.violations)} | submit_retries={load.submit_retries} "
        f"no_executing_event={report.missing_executing} "
        f"ticks_without_enqueued={report.ticks_without_enqueued} "
        f"events_lost_with_worker={report.events_lost_with_worker} | "
        f"{'OK' if report.ok else 'FAILED'}"
    )


async def _run(options: Options, backend: Backend, run_dir: Path) -> Audit:
    load_rng = random.Random(options.seed)
    fault_rng = random.Random(options.seed * 7919 + 1)
    namespace = f"chaos{uuid.uuid4().hex[:10]}"
    (run_dir / "ledger" / "flaky").mkdir(parents=True)
    (run_dir / "workers").mkdir()
    await asyncio.to_thread(backend.start)
    lease = backend.lease
    common = {"lease_seconds": lease, "max_lost_runs": 50, "shutdown_timeout": STOP_TIMEOUT}
    client = AsyncOmniQ(
        task_queue=backend.client_url(),
        result_storage=backend.client_url(),
        event_storage=backend.client_url(),
        namespace=namespace,
        storage_options=backend.storage_options(proxied=False),
        base_dir=str(run_dir / ".omniq"),
        poll_interval=0.2,
        **common,
    )
    fleet = WorkerFleet(
        run_dir,
        url=backend.worker_url(),
        namespace=namespace,
        storage_options=backend.storage_options(proxied=True),
        settings={**common, "poll_interval": 0.2},
        concurrency=options.concurrency,
    )
    injector = FaultInjector(fault_rng, backend, fleet, run_dir / "ledger")
    try:
        await retrying(client.connect)
        for index in range(options.workers):
            fleet.start(WORKER_TYPES[index % len(WORKER_TYPES)])
        load = Load(client, load_rng, options.rate or backend.rate, lease)
        await load.add_schedules()
        say(f"faults: {', '.join(sorted(injector.kinds))}; workers: {', '.join(WORKER_TYPES)}")
        deadline = time.monotonic() + options.seconds

        async def strike_faults() -> None:
            while True:
                await asyncio.sleep(fault_rng.uniform(*options.fault_gap))
                if time.monotonic() >= deadline:
                    return
                await injector.strike()

        async def progress() -> None:
            while True:
                await asyncio.sleep(10)
                say(
                    f"{len(load.plan)} tasks submitted, {len(injector.faults)} faults, "
                    f"{len(fleet.running())} workers"
                )

        reporter = asyncio.create_task(progress())
        try:
            await asyncio.gather(load.run(options.seconds), strike_faults())
        finally:
            reporter.cancel()
        say(f"faults stopped: {len(injector.faults)}; {len(load.plan)} tasks submitted; settling")
        await load.remove_schedules()
        for _ in range(options.workers - len(fleet.running())):
            injector.start_worker()
        await _settle(client, load, options.settle)
        stuck = await asyncio.to_thread(fleet.stop_all, 30.0)
        if stuck:
            say(f"workers that did not stop on SIGTERM within 30 s: {stuck}")
        tasks = await _all_tasks(client)
        schedule_ids = {s for s, _, _ in SCHEDULES}
        ticks: dict[str, list[Task]] = {}
        for task in tasks:
            if task.schedule_id in schedule_ids:
                ticks.setdefault(task.schedule_id, []).append(task)
        tick_ids = {t.id for group in ticks.values() for t in group}
        stored = await _read_store(client, set(load.plan) | tick_ids)
        report = audit(
            load.plan,
            stored,
            ticks,
            read_runs(run_dir / "ledger"),
            injector.faults,
            lease=lease,
            listed=[t.id for t in tasks],
        )
        for what, items in (
            ("LOST", report.lost),
            ("WRONG STATE", report.wrong_states),
            ("VIOLATION", report.violations),
        ):
            for item in items[:50]:
                say(f"{what}: {item}")
        (run_dir / "faults.jsonl").write_text(
            "".join(json.dumps(dataclasses.asdict(f)) + "\n" for f in injector.faults)
        )
        faults = Counter(fault.kind for fault in injector.faults)
        print(_summary(options, report, faults, load), flush=True)
        return report
    finally:
        await asyncio.to_thread(fleet.stop_all, 5.0)
        with contextlib.suppress(Exception):
            await client.close()
        await asyncio.to_thread(backend.stop)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(options: Options) -> int:
    """Run one chaos round; 0 when the audit found nothing wrong."""
    if options.backend not in BACKENDS:
        raise SystemExit(f"--backend {options.backend!r}: expected one of {', '.join(BACKENDS)}")
    run_dir = Path(tempfile.mkdtemp(prefix=f"omniq-chaos-{options.backend}-"))
    say(
        f"backend={options.backend} seconds={options.seconds:.0f} seed={options.seed} "
        f"(replay: python -m tests.chaos --backend {options.backend} "
        f"--seconds {options.seconds:.0f} --seed {options.seed}); run dir {run_dir}"
    )
    backend = BACKENDS[options.backend](run_dir)
    ok = False
    # A stack dump on SIGUSR1 (a run that hangs), and the cleanup on SIGTERM as on ^C.
    faulthandler.register(signal.SIGUSR1)
    # asyncpg's pool logs a traceback for each reconnection it retries while the server
    # restarts: expected here, and the runner's own client retries its calls.
    logging.getLogger("asyncpg").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = asyncio.run(_run(options, backend, run_dir))
        ok = report.ok
    finally:
        if ok and not options.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            say(f"kept the run directory (ledger, worker logs): {run_dir}")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: python -m tests.chaos --backend NAME --seconds N [--seed N]")
