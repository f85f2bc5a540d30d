"""Huey 3.5 on Redis DB 15 (RedisHuey), on SQLite (SqliteHuey) and on local files
(FileHuey): ``huey_consumer``."""

from __future__ import annotations

from typing import Any

from benchmarks.adapters.base import Adapter, WorkerCommand, cli


class HueyAdapter(Adapter):
    """Huey's consumer with N worker threads and its default polling settings."""

    library = "huey"
    dist = "huey"
    backends = ("redis", "sqlite", "file")
    is_async = False
    has_backlog = True
    backlog_settles_in_worker = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app: Any = None

    def worker_setting(self, concurrency: int) -> str:
        """Worker type and count (and, on files, what FileHuey's storage does)."""
        setting = (
            f"huey_consumer -k thread -w {concurrency} (default 1 worker); "
            "polling defaults -d 0.1 -m 10 -b 1.15"
        )
        if self.backend == "file":
            # Said in the report because OmniQ's file backend does not: FileHuey serialises
            # every operation of every process (producer and consumer threads) on one flock.
            setting += "; FileHuey: one flock around every storage operation"
        return setting

    def child_env(self) -> dict[str, str]:
        """Backend, SQLite file and FileHuey directory (both in the repetition's workdir, so
        the drain's storage figure counts them)."""
        return {
            "BENCH_HUEY_BACKEND": self.backend,
            "BENCH_HUEY_SQLITE": str(self.workdir / "huey.db"),
            "BENCH_HUEY_FILE": str(self.workdir / "huey-files"),
        }

    async def open(self) -> None:
        """Import the Huey instance."""
        from benchmarks.apps import huey_app

        self._app = huey_app

    def enqueue(self, kind: str, index: int = 0) -> None:
        """Calling a task enqueues it."""
        task = getattr(self._app, kind)
        if kind == "latency":
            task(index)
        else:
            task()

    def enqueue_backlog(self, count: int) -> None:
        """``noop.schedule(delay=BACKLOG_DELAY)``, one call per task (Huey has no bulk API).
        Huey puts each in its queue; its consumer moves it to the schedule when it dequeues
        it, and from then on reads only the schedule's due entries."""
        from benchmarks.workloads import BACKLOG_DELAY

        for _ in range(count):
            self._app.noop.schedule(delay=BACKLOG_DELAY)

    def backlog_unsettled(self) -> int:
        """Tasks still in Huey's queue (the probes are drained by then: the backlog's)."""
        return int(self._app.huey.pending_count())

    def worker(self, concurrency: int) -> WorkerCommand:
        """``huey_consumer benchmarks.apps.huey_app.huey -k thread -w N -q``."""
        return WorkerCommand(
            [
                cli("huey_consumer"),
                "benchmarks.apps.huey_app.huey",
                "-k",
                "thread",
                "-w",
                str(concurrency),
                "-q",
            ]
        )
