"""Task functions of the limits tests (``tests/conformance/test_limits.py``), imported by
the worker processes by their import path."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


def started_at() -> float:
    """The wall-clock time the task started (the same clock on every local process)."""
    return time.time()


def _bump(counter: str, step: int) -> int:
    """Add ``step`` to the count in ``counter`` under an exclusive lock (every process
    that runs a task shares the file); return the new count, and keep the highest ever
    seen in ``counter.peak``."""
    with open(counter, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            text = handle.read().strip()
            count = int(text or 0) + step
            handle.seek(0)
            handle.truncate()
            handle.write(str(count))
            handle.flush()
            peak_path = Path(counter + ".peak")
            peak = int(peak_path.read_text() or 0) if peak_path.exists() else 0
            if count > peak:
                peak_path.write_text(str(count))
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return count


def counted(counter: str, hold: float) -> int:
    """Count itself in ``counter`` while it runs ``hold`` seconds; the count it saw."""
    seen = _bump(counter, 1)
    try:
        time.sleep(hold)
    finally:
        _bump(counter, -1)
    return seen


def hold_counted(counter: str, release: str, log: str) -> int:
    """As :func:`counted`, but holds until ``release`` exists, after writing its pid to
    ``log`` (the test kills the worker that runs it)."""
    seen = _bump(counter, 1)
    with open(log, "a") as handle:
        handle.write(f"start {os.getpid()}\n")
    try:
        while not Path(release).exists():
            time.sleep(0.01)
    finally:
        _bump(counter, -1)
    return seen
