"""Plumbing shared by the worker types that run tasks in child processes.

The ``process`` and ``gevent`` worker types hand each call to a child process over a
private pipe or socket. Both ends belong to the same worker, so the wire is trusted: the
task's stored payload was already decoded and checked (signature, strict mode) by the
pool before the call gets here, and only the decoded call crosses the pipe.

Wire format:

- a request is one tag byte and a pickle of ``(how, target, args, kwargs)``: ``how`` is
  ``"path"`` (``target`` is ``"module:qualname"``, imported in the child) or ``"object"``
  (``target`` is the callable itself). Tag ``P`` is the standard pickle, tag ``D`` dill,
  used when the standard pickle cannot carry the call (lambdas, closures, ``__main__``).
- a reply is a tag byte and a pickle of ``("ok", value)`` or ``("err", _RemoteError)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import pickle  # nosec B403 # only over the pipes between a worker and its own children
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from omniq._callables import callable_path, resolve
from omniq.context import TaskContext, reset_current_task, set_current_task
from omniq.errors import SerializationError, WorkerError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = [
    "PROGRESS",
    "ChildProgress",
    "context_fields",
    "decode_call",
    "decode_progress",
    "decode_request",
    "decode_reply",
    "encode_call",
    "encode_error",
    "encode_progress",
    "encode_value",
    "invoke",
    "process_main",
    "run_in_context",
]

_PICKLE: Final = b"P"
_DILL: Final = b"D"
READY: Final = b"R"
#: The tag of a progress message (child to worker), sent before the call's reply.
PROGRESS: Final = b"G"
_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL


def _dumps(value: Any) -> bytes:
    """Standard pickle when it carries ``value`` faithfully, else dill."""
    try:
        data = pickle.dumps(value, protocol=_PROTOCOL)
    except Exception:  # nosec B110 # not picklable: dill below carries it (or says why not)
        pass
    else:
        # A reference into ``__main__`` would resolve to another module in the child.
        if b"__main__" not in data:
            return _PICKLE + data
    import dill  # nosec B403 # as pickle above: the worker's own pipes

    body: bytes = dill.dumps(value, protocol=_PROTOCOL, recurse=True)
    return _DILL + body


def _loads(data: bytes) -> Any:
    tag, body = data[:1], memoryview(data)[1:]
    if tag == _PICKLE:
        return pickle.loads(body)  # nosec B301 # written by this worker or its own child
    if tag == _DILL:
        import dill  # nosec B403 # as pickle above

        return dill.loads(body)  # nosec B301 # written by this worker or its own child
    raise SerializationError(f"unknown worker wire tag {tag!r}")


def encode_call(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context: TaskContext | None = None,
) -> bytes:
    """Encode a call for a child process; SerializationError if it cannot travel.
    ``context`` (the running task's) travels with it, for ``current_task()`` there."""
    path = callable_path(func)
    where = None if context is None else context_fields(context)
    call = (
        ("path", path, args, kwargs, where)
        if path is not None
        else ("object", func, args, kwargs, where)
    )
    try:
        return _dumps(call)
    except Exception as exc:
        raise SerializationError(
            f"the call cannot be sent to a worker process: {type(exc).__name__}: {exc}"
        ) from exc


def decode_call(data: bytes) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """The ``(func, args, kwargs)`` of a request made by :func:`encode_call`."""
    func, args, kwargs, _ = decode_request(data)
    return func, args, kwargs


def decode_request(
    data: bytes,
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], ContextFields | None]:
    """The ``(func, args, kwargs, context fields)`` of a request made by :func:`encode_call`."""
    how, target, args, kwargs, where = _loads(data)
    func = resolve(target) if how == "path" else target
    return func, args, kwargs, where


def invoke(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call ``func``; a coroutine function (or a returned coroutine) runs to completion
    under ``asyncio.run``."""
    if inspect.iscoroutinefunction(func):
        return asyncio.run(func(*args, **kwargs))
    value = func(*args, **kwargs)
    if inspect.iscoroutine(value):
        return asyncio.run(value)
    return value


class _RemoteError(NamedTuple):
    """An exception raised in a child: the pickled exception when it survives the trip,
    its type's module and qualname, its message, and the child's traceback."""

    pickled: bytes | None
    module: str
    qualname: str
    message: str
    traceback: str


def encode_value(value: Any) -> bytes:
    """The reply for a call that returned ``value``."""
    try:
        return _dumps(("ok", value))
    except Exception as exc:
        error = SerializationError(
            f"the task's result (type {type(value).__qualname__}) cannot be sent back from "
            f"the worker process: {type(exc).__name__}: {exc}"
        )
        return encode_error(error)


def encode_error(exc: BaseException) -> bytes:
    """The reply for a call that raised ``exc``."""
    kind = type(exc)
    pickled: bytes | None
    try:
        # Rebuilt without calling __init__ (see _rebuild): exceptions whose __init__ takes
        # other arguments than their ``args`` (omniq.Retry) survive the trip.
        pickled = _dumps((kind, exc.args, vars(exc)))
        _rebuild(_loads(pickled))
    except Exception:
        pickled = None
    report = _RemoteError(
        pickled=pickled,
        module=kind.__module__,
        qualname=kind.__qualname__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )
    return _PICKLE + pickle.dumps(("err", report), protocol=_PROTOCOL)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker's child process (set as the
    ``__cause__`` of the re-raised exception, so stored tracebacks show where it happened)."""

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


_stand_ins: dict[tuple[str, str], type[Exception]] = {}


def _stand_in(module: str, qualname: str) -> type[Exception]:
    """An exception class that reports the given module and qualname (for an exception
    whose own class cannot be rebuilt in this process)."""
    key = (module, qualname)
    kind = _stand_ins.get(key)
    if kind is None:
        name = qualname.rpartition(".")[2]
        kind = type(name, (Exception,), {"__module__": module, "__qualname__": qualname})
        _stand_ins[key] = kind
    return kind


def _rebuild(parts: tuple[type[BaseException], tuple[Any, ...], dict[str, Any]]) -> BaseException:
    kind, args, state = parts
    if not (isinstance(kind, type) and issubclass(kind, BaseException)):
        raise TypeError(f"not an exception class: {kind!r}")
    error = kind.__new__(kind, *args)
    error.args = args
    error.__dict__.update(state)
    return error


def decode_reply(data: bytes) -> Any:
    """The value of a reply, or raise the exception the child reported."""
    try:
        kind, body = _loads(data)
    except Exception as exc:
        raise SerializationError(
            f"the worker process sent back a result that cannot be decoded here: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if kind == "ok":
        return body
    report: _RemoteError = body
    error: BaseException | None = None
    if report.pickled is not None:
        try:
            error = _rebuild(_loads(report.pickled))
        except Exception:
            error = None
    if error is None:
        error = _stand_in(report.module, report.qualname)(report.message)
    raise error from RemoteTraceback(report.traceback)


def serve(request: bytes, send: Callable[[bytes], None] | None = None) -> bytes:
    """Run one request and return the reply (never raises an ``Exception``). The task's
    progress goes out through ``send`` (see :class:`ChildProgress`) before the reply."""
    reporter: ChildProgress | None = None
    try:
        func, args, kwargs, where = decode_request(request)
        if where is not None and send is not None:
            reporter = ChildProgress(lambda report: send(encode_progress(report)))
            context = TaskContext(*where, sink=reporter)
            value = run_in_context(context, reporter, invoke, func, args, kwargs)
        else:
            value = invoke(func, args, kwargs)
    except Exception as exc:
        return encode_error(exc)
    return encode_value(value)


def _exit_with_parent(parent: int) -> None:
    # Orphaned (the worker was killed): stop rather than finish work nobody will read.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def ignore_stop_signals() -> None:
    """Leave SIGINT/SIGTERM to the worker process, which stops its children itself:
    a Ctrl-C or a group-wide SIGTERM must not kill tasks the worker lets finish."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def process_main(conn: Connection, parent: int) -> None:
    """Entry point of a ``process`` worker child: serve requests until told to stop
    (an empty message) or until the worker goes away."""
    ignore_stop_signals()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    # Progress is sent from the task's thread and a flush timer's: one sender at a time.
    sending = threading.Lock()

    def send(data: bytes) -> None:
        with sending:
            conn.send_bytes(data)

    try:
        conn.send_bytes(READY)
        while True:
            request = conn.recv_bytes()
            if not request:
                return
            reply = serve(request, send)
            send(reply)
    except (EOFError, OSError):
        return
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def died_message(exitcode: int | None) -> WorkerError:
    """The error for a call whose child process died under it."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        code = f"exit code {exitcode}, {name}"
    else:
        code = f"exit code {exitcode}"
    return WorkerError(f"worker process died ({code}) while running the task")


# -- task context and progress in the child -------------------------------------------------

#: The fields of a ``TaskContext`` that travel with a call: task id, attempt, queue, worker.
ContextFields = tuple[str, int, str, str]
#: One progress report: done, total, message, unix time.
ProgressReport = tuple["int | float", "int | float | None", "str | None", float]


def context_fields(context: TaskContext) -> ContextFields:
    """What a child needs to rebuild ``context``."""
    return (context.task_id, context.attempt, context.queue, context.worker_id)


def encode_progress(report: ProgressReport) -> bytes:
    """A progress message (always the standard pickle: numbers and a string)."""
    return PROGRESS + pickle.dumps(report, protocol=_PROTOCOL)


def decode_progress(data: bytes) -> ProgressReport:
    """The report of a message made by :func:`encode_progress`."""
    report: ProgressReport = pickle.loads(memoryview(data)[1:])  # nosec B301 # its own child
    return report


class ChildProgress:
    """The sink of a context in a child process: keeps the latest report and sends it
    to the worker at most every :attr:`interval` seconds (a timer sends the last one
    of a burst), and what is left when the call ends (:meth:`close`), before its reply.
    A task reporting in a tight loop sends a few messages a second, not one per call.
    """

    #: The shortest time between two messages, in seconds (the worker coalesces again).
    interval: float = 0.1

    def __init__(self, send: Callable[[ProgressReport], None]) -> None:
        self._send = send
        # Held while sending too, so reports leave in the order they were made.
        self._lock = threading.Lock()
        self._latest: ProgressReport | None = None
        self._last_sent = float("-inf")
        self._timer: threading.Timer | None = None
        self._closed = False

    def __call__(
        self,
        task_id: str,
        done: int | float,
        total: int | float | None,
        message: str | None,
        at: float,
    ) -> None:
        with self._lock:
            if self._closed:
                return
            self._latest = (done, total, message, at)
            if self._timer is not None:
                return  # the timer sends it
            wait = self._last_sent + self.interval - time.monotonic()
            if wait > 0:
                self._timer = threading.Timer(wait, self._flush)
                self._timer.daemon = True
                self._timer.start()
                return
            self._send_latest()

    def _send_latest(self) -> None:
        report, self._latest = self._latest, None
        if report is not None:
            self._last_sent = time.monotonic()
            # OSError: the worker is gone, the call's reply will not get there either.
            with contextlib.suppress(OSError):
                self._send(report)

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            self._send_latest()

    def close(self) -> None:
        """Send what is pending, stop the timer, drop later reports."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._send_latest()


def run_in_context(
    context: TaskContext,
    reporter: ChildProgress,
    call: Callable[..., Any],
    *args: Any,
) -> Any:
    """``call(*args)`` with ``context`` as the current task; its progress sent by the
    time this returns."""
    token = set_current_task(context)
    try:
        return call(*args)
    finally:
        reset_current_task(token)
        context.close()
        reporter.close()
