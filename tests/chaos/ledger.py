"""The chaos runs' own record of every task body run, independent of the queue it audits.

Each process appends to its own file (``<dir>/<pid>.jsonl``), one JSON line per event,
flushed and fsync'd before the body goes on: a ``start`` line when a body begins and an
``end`` line (with ``ok``) when it returns or raises. A run killed with its process has a
``start`` and no ``end``; a line cut short by SIGKILL is skipped by the reader.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LEDGER_ENV", "Run", "read_runs", "record_end", "record_start"]

#: The environment variable naming the ledger directory (set by the runner for workers).
LEDGER_ENV = "CHAOS_LEDGER"

_lock = threading.Lock()
_files: dict[int, Any] = {}


def _append(entry: dict[str, Any]) -> None:
    line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
    with _lock:
        pid = os.getpid()
        handle = _files.get(pid)  # keyed by pid: a forked child opens its own file
        if handle is None:
            directory = Path(os.environ[LEDGER_ENV])
            handle = _files[pid] = open(directory / f"{pid}.jsonl", "ab")  # noqa: SIM115
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def record_start(key: str) -> str:
    """Log that the body of ``key`` starts in this process; return the run's id."""
    run = uuid.uuid4().hex[:16]
    _append(
        {
            "k": key,
            "r": run,
            "e": "start",
            "t": time.time(),
            "pid": os.getpid(),
            "ppid": os.getppid(),
        }
    )
    return run


def record_end(key: str, run: str, *, ok: bool) -> None:
    """Log that run ``run`` of ``key`` returned (``ok``) or raised."""
    _append({"k": key, "r": run, "e": "end", "t": time.time(), "ok": ok, "pid": os.getpid()})


@dataclass
class Run:
    """One run of a body: when and where it started, and how it ended (None: never)."""

    key: str
    run: str
    pid: int
    ppid: int
    start: float
    end: float | None = None
    ok: bool | None = None
    #: Filled by the audit: the faults that could have made this run be repeated.
    causes: list[str] = field(default_factory=list)


def read_runs(directory: Path) -> dict[str, list[Run]]:
    """Every run in the ledger files of ``directory``, by key, oldest start first."""
    runs: dict[str, Run] = {}
    ends: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        for raw in path.read_bytes().splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # the line a SIGKILL cut short
            if entry["e"] == "start":
                runs[entry["r"]] = Run(
                    entry["k"], entry["r"], entry["pid"], entry["ppid"], entry["t"]
                )
            else:
                ends.append(entry)
    for entry in ends:
        found = runs.get(entry["r"])
        if found is not None:
            found.end, found.ok = entry["t"], entry["ok"]
    by_key: dict[str, list[Run]] = {}
    for found in runs.values():
        by_key.setdefault(found.key, []).append(found)
    for key_runs in by_key.values():
        key_runs.sort(key=lambda r: r.start)
    return by_key
