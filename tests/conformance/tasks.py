"""Task functions the conformance tests enqueue (importable by worker processes too)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from omniq import Retry

CALLS: list[tuple[str, Any]] = []
ATTEMPTS: dict[str, int] = {}


def add(a: int, b: int) -> int:
    """A plain function."""
    return a + b


async def async_add(a: int, b: int) -> int:
    """A coroutine function."""
    await asyncio.sleep(0)
    return a + b


async def loop_module() -> str:
    """The top-level module of the event loop the task runs on ("asyncio", "uvloop")."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


def record(label: str) -> str:
    """Remember the call order (same process only)."""
    CALLS.append(("record", label))
    return label


async def async_record(label: str) -> str:
    """Remember the call order from a coroutine (same process only)."""
    CALLS.append(("record", label))
    return label


def echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return the arguments exactly as received."""
    return args, kwargs


def fail(message: str = "boom") -> None:
    """Always raises ValueError."""
    raise ValueError(message)


def flaky(key: str, failures: int) -> str:
    """Fails the first ``failures`` times for ``key`` (same process), then succeeds."""
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] <= failures:
        raise RuntimeError(f"attempt {ATTEMPTS[key]} fails")
    return f"ok after {ATTEMPTS[key]}"


def ask_retry(key: str) -> str:
    """Raises Retry once, then succeeds."""
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] == 1:
        raise Retry(delay=0.05)
    return "retried"


async def sleep_async(seconds: float) -> str:
    """Sleeps without blocking the loop."""
    await asyncio.sleep(seconds)
    return "slept"


def sleep_sync(seconds: float) -> str:
    """Blocks its thread."""
    time.sleep(seconds)
    return "slept"


def append_line(path: str, text: str) -> str:
    """Append ``text`` and this process's pid to a file (cross-process evidence)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{text} {os.getpid()}\n")
    return text


async def wait_for_file(path: str, marker: str, timeout: float = 30.0) -> str:
    """Signal start by creating ``marker``, then wait until ``path`` exists."""
    Path(marker).write_text("started")  # noqa: ASYNC240 - a test signal, microseconds
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):  # noqa: ASYNC240 - a cheap stat in a test task
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        await asyncio.sleep(0.01)
    return "released"


class Labels:
    """A namespace class: its static method is reached by a dotted path."""

    @staticmethod
    def label(text: str) -> str:
        """Returns ``"label <text>"``."""
        return f"label {text}"


class Unencodable:
    """A class msgspec cannot encode (for strict-mode and result-encoding tests)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unencodable) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


def make_unencodable(value: int) -> Unencodable:
    """Returns a custom object."""
    return Unencodable(value)


# -- reliability tests (tests/conformance/test_reliability.py) ----------------------------


def getpid() -> int:
    """The pid of the process running the task."""
    return os.getpid()


def exit_process(code: int) -> None:
    """Ends the process running the task at once, as a crash would."""
    os._exit(code)


def hold_until(release: str, log: str, timeout: float = 30.0) -> str:
    """Append ``start <pid>`` to ``log`` (one line per run), then block until ``release``
    exists; ``stopped <pid>`` when stopped before (a greenlet killed)."""
    _log_start(log)
    deadline = time.monotonic() + timeout
    try:
        while not Path(release).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(release)
            time.sleep(0.01)
    except BaseException:
        _log_line(log, f"stopped {os.getpid()}")
        raise
    return "released"


def timed_sleep(seconds: float) -> tuple[float, float]:
    """Blocks in ``time.sleep``; returns its (start, end) on the monotonic clock."""
    start = time.monotonic()
    time.sleep(seconds)
    return start, time.monotonic()


def timed_read(port: int) -> tuple[float, float]:
    """Blocks reading a loopback socket until the server answers; returns (start, end)."""
    import socket

    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        if not sock.recv(16):
            raise ConnectionError("server closed without answering")
    return start, time.monotonic()


def touch(path: str) -> str:
    """Create ``path``; returns it."""
    Path(path).touch()
    return path


class TouchOnLoad:
    """An argument whose unpickling creates a file: evidence that a payload was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return touch, (self.path,)


def _log_line(log: str, line: str) -> None:
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"{line}\n")


def _log_start(log: str) -> None:
    _log_line(log, f"start {os.getpid()}")


async def hold_until_async(release: str, log: str) -> str:
    """:func:`hold_until` as a coroutine (a hard stop or a cancel can cancel it)."""
    await asyncio.to_thread(_log_start, log)
    try:
        while True:
            if await asyncio.to_thread(os.path.exists, release):
                return "released"
            await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        _log_line(log, f"stopped {os.getpid()}")
        raise
