"""Task functions the dashboard tests enqueue by import path."""

from __future__ import annotations

import time
from pathlib import Path

import omniq


def add(a: int, b: int) -> int:
    return a + b


def boom(reason: str) -> None:
    raise ValueError(f"boom: {reason}")


def report_progress() -> str:
    ctx = omniq.current_task()
    assert ctx is not None
    ctx.progress(3, 10, "step <3>")
    return "reported"


def fail_until_marked(marker: str) -> str:
    """Fails while the file ``marker`` is missing, succeeds once it exists."""
    if not Path(marker).exists():
        raise RuntimeError("marker missing: first run fails")
    return "second run ok"


class Opaque:
    """Travels only as a dill pickle."""

    def __init__(self, value: int) -> None:
        self.value = value


def take(value: object) -> None:
    return None


# The README screenshot's tasks.


def send_email(to: str) -> str:
    return f"sent to {to}"


def build_report(month: str) -> str:
    return f"report {month}"


def charge_card(invoice: str) -> None:
    raise RuntimeError(f"card declined for invoice {invoice}")


def resize_image(name: str) -> str:
    return name


def step_until_marked(marker: str) -> str:
    """Reports 1 of 4 steps, waits (at most a minute) for the file ``marker``, then
    reports 4 of 4."""
    ctx = omniq.current_task()
    assert ctx is not None
    ctx.progress(1, 4, "step 1")
    deadline = time.monotonic() + 60
    while not Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    ctx.progress(4, 4, "all done")
    return "stepped"
