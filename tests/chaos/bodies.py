"""The task bodies of a chaos run: each records its runs in the ledger (``ledger.py``).

Every body takes the task's own key (the runner submits each task with ``task_id=key``)
so the ledger names the task; schedule ticks share their schedule's key instead (a body
cannot see its task id), and the audit matches them by count.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tests.chaos.ledger import LEDGER_ENV, record_end, record_start

__all__ = ["FlakyError", "flaky", "quick", "quick_async", "slow", "slow_async"]


class FlakyError(Exception):
    """The planned failure of a failing-then-succeeding task."""


def quick(key: str) -> str:
    """Return at once."""
    run = record_start(key)
    record_end(key, run, ok=True)
    return key


async def quick_async(key: str) -> str:
    """Return at once, as a coroutine."""
    run = record_start(key)
    await asyncio.sleep(0)
    record_end(key, run, ok=True)
    return key


def slow(key: str, seconds: float) -> str:
    """Sleep ``seconds`` (longer than the lease: the worker must renew it)."""
    run = record_start(key)
    time.sleep(seconds)
    record_end(key, run, ok=True)
    return key


async def slow_async(key: str, seconds: float) -> str:
    """Sleep ``seconds`` as a coroutine."""
    run = record_start(key)
    await asyncio.sleep(seconds)
    record_end(key, run, ok=True)
    return key


def flaky(key: str, failures: int) -> str:
    """Raise on the first ``failures`` runs, then succeed.

    The failures so far are counted in a file of the key's own (one line each), written
    before raising, so a run lost between the two counts as a failure that did not use
    up a retry: the task then fails fewer times, never more.
    """
    run = record_start(key)
    marks = Path(os.environ[LEDGER_ENV]) / "flaky" / key
    done = len(marks.read_bytes().splitlines()) if marks.exists() else 0
    if done < failures:
        with open(marks, "ab") as handle:
            handle.write(b"x\n")
            handle.flush()
            os.fsync(handle.fileno())
        record_end(key, run, ok=False)
        raise FlakyError(f"{key}: planned failure {done + 1} of {failures}")
    record_end(key, run, ok=True)
    return key
