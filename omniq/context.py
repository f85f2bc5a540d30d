"""The running task's context: :func:`current_task` and :class:`TaskContext`.

A worker sets the context around each call it runs, in every worker type: a context
variable on the worker's event loop (coroutine functions, and plain functions on the
worker's threads, which run in a copy of it), and in the child process of the
``process`` and ``gevent`` types, where the child builds the same context and sends the
progress to the worker, which stores it.

Example::

    @oq.task
    def resize(paths: list[str]) -> None:
        ctx = omniq.current_task()
        for done, path in enumerate(paths, 1):
            shrink(path)
            ctx.progress(done, len(paths), message=path)
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable
from decimal import Decimal
from numbers import Integral, Real
from typing import Final

from omniq.errors import ConfigError

__all__ = [
    "ProgressSink",
    "TaskContext",
    "current_task",
    "reset_current_task",
    "set_current_task",
]

#: Where a context's reports go: ``(task_id, done, total, message, unix time)``. Called on
#: the task's own thread (or greenlet): it must never block.
ProgressSink = Callable[[str, "int | float", "int | float | None", "str | None", float], None]

_current: Final[contextvars.ContextVar[TaskContext | None]] = contextvars.ContextVar(
    "omniq_current_task", default=None
)


def _number(name: str, value: object) -> int | float:
    """``value`` as a plain int or float (from a numpy number, a Decimal…), checked."""
    if type(value) is int and value >= 0:
        return value  # the common case, checked first: progress may be called in a tight loop
    if isinstance(value, bool) or not isinstance(value, Real | Decimal) or not math.isfinite(value):
        raise ConfigError(f"progress: {name}={value!r}: expected a finite number")
    if value < 0:
        raise ConfigError(f"progress: {name}={value!r}: expected a number >= 0")
    return int(value) if isinstance(value, Integral) else float(value)


class TaskContext:
    """The task a worker is running: its ``task_id``, ``attempt`` (1 on the first run),
    ``queue`` and ``worker_id``, and :meth:`progress` to report how far it got.

    Obtained with :func:`current_task` inside the task; it is only valid while the task
    runs (reports made after its run ended are dropped).
    """

    __slots__ = ("_open", "_sink", "attempt", "queue", "task_id", "worker_id")

    def __init__(
        self,
        task_id: str,
        attempt: int,
        queue: str,
        worker_id: str,
        sink: ProgressSink | None = None,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.queue = queue
        self.worker_id = worker_id
        self._sink = sink
        self._open = True

    def __repr__(self) -> str:
        return (
            f"TaskContext(task_id={self.task_id!r}, attempt={self.attempt}, "
            f"queue={self.queue!r}, worker_id={self.worker_id!r})"
        )

    def progress(
        self, done: int | float, total: int | float | None = None, message: str | None = None
    ) -> None:
        """Record that the task got ``done`` (out of ``total``, if known) far, with an
        optional ``message``. Never blocks: the worker keeps the latest report and
        stores it a few times a second at most, and once more when the task ends, so a
        call in a tight loop costs little. Raises ``ConfigError`` for a negative or
        non-number ``done``/``total`` or a non-string ``message``.
        """
        done = _number("done", done)
        if total is not None:
            total = _number("total", total)
        if message is not None and not isinstance(message, str):
            raise ConfigError(f"progress: message={message!r}: expected a string or None")
        if self._open and self._sink is not None:
            self._sink(self.task_id, done, total, message, time.time())

    def relay(
        self, done: int | float, total: int | float | None, message: str | None, at: float
    ) -> None:
        """Pass on a report made (and checked) elsewhere at unix time ``at``: what a
        worker does with the reports its child process sends."""
        if self._open and self._sink is not None:
            self._sink(self.task_id, done, total, message, at)

    def close(self) -> None:
        """End the context: the run is over, later reports are dropped (a thread the
        worker could not stop may run on)."""
        self._open = False

    @property
    def closed(self) -> bool:
        """True once the run is over (:meth:`close`)."""
        return not self._open


def current_task() -> TaskContext | None:
    """The :class:`TaskContext` of the task running in this context (any worker type,
    sync or async function), or None outside a task."""
    return _current.get()


def set_current_task(context: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    """Make ``context`` the current task (for workers); returns the token to reset it."""
    return _current.set(context)


def reset_current_task(token: contextvars.Token[TaskContext | None]) -> None:
    """Undo :func:`set_current_task`."""
    _current.reset(token)
