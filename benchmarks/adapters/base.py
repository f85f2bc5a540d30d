"""What the harness needs from each library: enqueue calls and a worker command line.

An adapter lives in the benchmark's child process (one per repetition). It imports its
library lazily in :meth:`Adapter.open`, after the harness has set the environment that the
library's app module reads.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Brokers and the instrumentation counters (the task bodies read the same variable).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
#: The PostgreSQL database every Postgres row uses; dropped and re-created per repetition.
POSTGRES_DB = os.environ.get("BENCH_POSTGRES_DB", "qbench")
POSTGRES_SERVER = os.environ.get("BENCH_POSTGRES_SERVER", "postgresql://postgres@127.0.0.1:5432")
POSTGRES_URL = f"{POSTGRES_SERVER}/{POSTGRES_DB}"
#: The NATS server (JetStream) of the NATS rows; their streams are deleted per repetition.
NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")

#: Task kinds; every library's app module defines one task per kind.
KINDS = ("noop", "drain", "latency", "sleep")


@dataclass(frozen=True)
class WorkerCommand:
    """How to start exactly one worker process of a library."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def cli(name: str) -> str:
    """Path of a console script installed beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"console script {name!r} not found; install the bench extra")
    return found


class Adapter:
    """One library on one backend, as seen by the producer.

    Subclasses set the class attributes and implement either the async methods
    (:attr:`is_async` true: ``aenqueue``/``aenqueue_bulk``) or the sync ones.
    """

    #: Library name as given to ``--peers`` (``omniq`` for OmniQ itself).
    library: ClassVar[str]
    #: Distribution whose version is reported.
    dist: ClassVar[str]
    #: Backends this adapter supports.
    backends: ClassVar[tuple[str, ...]] = ("redis",)
    is_async: ClassVar[bool] = True
    has_bulk: ClassVar[bool] = False
    #: Whether the library can hold a backlog its worker leaves alone for now (delayed tasks,
    #: or another queue): the ``backlog`` workload (``aenqueue_backlog``, ``enqueue_backlog``).
    has_backlog: ClassVar[bool] = False
    #: Whether delayed tasks reach their waiting place only through a worker: Huey stores a
    #: delayed task in its queue and its consumer moves it to the schedule when it dequeues
    #: it. The backlog workload then runs a worker until :meth:`backlog_unsettled` is 0.
    backlog_settles_in_worker: ClassVar[bool] = False
    #: Extra workloads beyond enqueue/drain/latency/sleep/memory/enqueue-concurrent
    #: (``bulk``, ``sync``).
    extra_workloads: ClassVar[tuple[str, ...]] = ()
    #: Part of the worker setting that does not depend on concurrency.
    notes: ClassVar[str] = ""

    def __init__(self, label: str, backend: str, workdir: Path) -> None:
        self.label = label
        self.backend = backend
        self.workdir = workdir

    # -- description -------------------------------------------------------------
    @classmethod
    def version(cls) -> str:
        """Installed version of the library."""
        try:
            return importlib.metadata.version(cls.dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    @classmethod
    def workloads(cls) -> tuple[str, ...]:
        """Workloads this library can run."""
        base = ("enqueue", "drain", "latency", "sleep", "memory", "enqueue-concurrent")
        extra = (("bulk",) if cls.has_bulk else ()) + (("backlog",) if cls.has_backlog else ())
        return base + extra + cls.extra_workloads

    def worker_setting(self, concurrency: int) -> str:
        """One line saying how the worker was configured (the report's column)."""
        raise NotImplementedError

    def child_env(self) -> dict[str, str]:
        """Environment the producer (and the worker) need before the library is imported."""
        return {}

    # -- producer ----------------------------------------------------------------
    async def open(self) -> None:
        """Import the library and connect the producer."""

    async def close(self) -> None:
        """Release the producer's connections."""

    async def aenqueue(self, kind: str, index: int = 0) -> None:
        """Enqueue one task of ``kind`` (async libraries)."""
        raise NotImplementedError

    def enqueue(self, kind: str, index: int = 0) -> None:
        """Enqueue one task of ``kind`` (sync libraries)."""
        raise NotImplementedError

    async def aenqueue_bulk(self, kind: str, count: int) -> None:
        """Enqueue ``count`` tasks of ``kind`` in one bulk call (async)."""
        raise NotImplementedError

    def enqueue_bulk(self, kind: str, count: int) -> None:
        """Enqueue ``count`` tasks of ``kind`` in one bulk call (sync)."""
        raise NotImplementedError

    async def aenqueue_backlog(self, count: int) -> None:
        """Enqueue ``count`` no-op tasks the worker must not claim during the backlog
        workload's measurement (delayed far ahead, or on a queue it does not read); async."""
        raise NotImplementedError

    def enqueue_backlog(self, count: int) -> None:
        """The same for sync libraries."""
        raise NotImplementedError

    def backlog_unsettled(self) -> int:
        """Backlog tasks a worker has yet to move to their waiting place (see
        :attr:`backlog_settles_in_worker`)."""
        return 0

    # -- worker ------------------------------------------------------------------
    def worker(self, concurrency: int) -> WorkerCommand:
        """The command line of one worker process with this concurrency."""
        raise NotImplementedError
