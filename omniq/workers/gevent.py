"""The ``gevent`` worker type: many blocking-I/O tasks at once on greenlets.

gevent only makes blocking calls (``time.sleep``, sockets, ``requests`` ...) cooperative
after ``gevent.monkey.patch_all()``, which must run before anything else is imported and
does not mix with the worker's asyncio event loop. So the greenlets live in one dedicated
child process (``python -c`` that patches first thing, then serves calls); the worker
talks to it over a socket pair with asyncio streams, and every call runs in a greenlet of
a ``gevent.pool.Pool(concurrency)``. Hundreds of calls can be in flight at once.

Functions travel like in the ``process`` type: by import path, or by value with dill;
the task's payload was decoded (and its signature checked) by the pool beforehand.

Coroutine functions run on one asyncio event loop that lives in its own greenlet of the
child (its selector is gevent-patched, so it yields to the other greenlets). A consequence:
a plain task function that calls ``asyncio.run`` itself fails once an async task has run
in the same gevent worker ("cannot be called from a running event loop").

Timeout: ``gevent.Timeout`` is raised in the greenlet at its next cooperative yield and
the attempt fails with ``TaskTimeoutError``. A greenlet that never yields (CPU-bound, or
blocking in a call gevent does not patch) cannot be interrupted: the worker reports the
timeout a grace period later (and logs a WARNING naming the task) while the greenlet
runs on. Until it returns, it holds the child's only OS thread: every other greenlet of
that worker (its other tasks, at any concurrency) waits, even after the timeout was
reported. CPU-bound work belongs in ``process`` workers.
Cancel: the greenlet is killed (``GreenletExit``) at its next cooperative yield.
If the child process dies, the calls in flight fail with ``WorkerError`` and the next
call starts a new child.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import os
import pickle  # nosec B403 # only over the socketpair to the worker's own child
import socket
import subprocess  # nosec B404 # starts this interpreter as the gevent child, no shell
import sys
from collections.abc import Callable
from typing import Any, Final

from omniq._greenlets import threading_patched
from omniq.context import TaskContext, current_task
from omniq.errors import ConfigError, TaskTimeoutError, WorkerError
from omniq.models import Task
from omniq.workers._child import decode_reply, died_message, encode_call
from omniq.workers.executors import BaseExecutor

__all__ = ["GeventWorker"]

logger = logging.getLogger("omniq.worker")

_HEADER: Final = 4
_START_TIMEOUT: Final = 60.0
_STOP_TIMEOUT: Final = 5.0
#: How long past a timeout the worker waits for a greenlet that does not yield.
TIMEOUT_GRACE: Final = 1.0
_BOOT: Final = (
    "from gevent import monkey; monkey.patch_all()\n"
    "import sys\n"
    "from omniq.workers.gevent import child_main\n"
    "child_main(int(sys.argv[1]), int(sys.argv[2]))\n"
)


def _frame(message: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(_HEADER, "big") + body


class GeventWorker(BaseExecutor):
    """Runs each task in a greenlet of a gevent child process.

    Example::

        await oq.worker(worker_type="gevent", concurrency=500).run(burst=True)
    """

    name = "gevent"

    def __init__(self, concurrency: int) -> None:
        if threading_patched():
            # gevent's subprocess starts children only from the main thread's hub, and
            # a patched process runs the pool's loop on a thread of its own.
            raise ConfigError(
                "worker_type='gevent' cannot start from a process gevent has "
                "monkey-patched; there, worker_type='thread' already runs each task in "
                "a greenlet (threads are greenlets), or run `omniq worker --worker-type "
                "gevent` as a process of its own"
            )
        super().__init__(concurrency)
        self._process: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._by_task: dict[str, int] = {}
        # The contexts of the calls in flight, for the progress their greenlets send.
        self._contexts: dict[int, TaskContext] = {}
        self._ids = itertools.count(1)
        self._lock: asyncio.Lock | None = None

    # -- the child -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the gevent child process and wait until it serves calls."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._process is not None and self._process.poll() is None:
                return
            await self._start_child()

    async def _start_child(self) -> None:
        if importlib.util.find_spec("gevent") is None:
            raise ConfigError("worker_type='gevent' needs gevent: pip install 'omniq[gevent]'")
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p or os.getcwd() for p in sys.path])
        try:
            process = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), str(self.concurrency)],
                pass_fds=(theirs.fileno(),),
                env=env,
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                hello = await self._read(reader)
            if hello != ("ready",):
                raise EOFError
        except (EOFError, TimeoutError, asyncio.IncompleteReadError):
            process.kill()
            code = await asyncio.to_thread(process.wait)
            writer.close()
            raise WorkerError(
                f"the gevent worker process failed to start (exit code {code}); "
                "see its output above"
            ) from None
        self._process = process
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read_loop(reader, process))

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Any:
        size = int.from_bytes(await reader.readexactly(_HEADER), "big")
        return pickle.loads(await reader.readexactly(size))  # nosec B301 # its own child, socketpair

    async def _read_loop(
        self, reader: asyncio.StreamReader, process: subprocess.Popen[bytes]
    ) -> None:
        try:
            while True:
                message = await self._read(reader)
                if message[0] == "progress":
                    context = self._contexts.get(message[1])
                    if context is not None:
                        context.relay(*message[2])
                    continue
                call_id, reply = message
                future = self._pending.get(call_id)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (asyncio.IncompleteReadError, OSError, EOFError):
            pass
        # The child is gone: fail what was in flight, start afresh on the next call.
        code = await asyncio.to_thread(process.wait)
        if self._process is process:
            self._process = None
            if self._writer is not None:
                self._writer.close()
            self._writer = None
        error = died_message(code)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._writer is None:
            raise WorkerError("the gevent worker process is not running")
        self._writer.write(_frame(message))

    async def stop(self, *, wait: bool = True) -> None:
        """Stop the child: with ``wait=True`` it finishes running greenlets first."""
        process, writer = self._process, self._writer
        self._process = self._writer = None
        if process is None:
            return
        if wait and writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                writer.write(_frame(("stop",)))
                await writer.drain()
            try:
                await asyncio.to_thread(process.wait, _STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
        else:
            process.kill()
        await asyncio.to_thread(process.wait)
        if writer is not None:
            writer.close()
        if self._reader_task is not None:
            with contextlib.suppress(Exception):
                await self._reader_task
            self._reader_task = None

    # -- calls -----------------------------------------------------------------------------

    async def run(
        self,
        task: Task,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Run the call in a greenlet of the child; see the module docstring for timeouts."""
        context = current_task()
        request = encode_call(func, args, kwargs, context)
        if self._process is None:
            await self.start()
        call_id = next(self._ids)
        if context is not None:
            self._contexts[call_id] = context
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        self._by_task[task.id] = call_id
        try:
            self._send(("call", call_id, request, timeout))
            assert self._writer is not None
            await self._writer.drain()
            try:
                async with asyncio.timeout(None if timeout is None else timeout + TIMEOUT_GRACE):
                    reply = await future
            except TimeoutError:
                self._cancel_call(call_id)
                # The failure alone reads like any timeout; what it leaves behind does
                # not: a greenlet still running, and stalling the whole worker.
                logger.warning(
                    "task %s (%s) overran its timeout of %s s and its greenlet did not "
                    "yield to gevent (CPU-bound, or blocked in a call gevent does not patch; "
                    "or another task holds the worker): it runs on, and until it returns "
                    "every other task of this gevent worker is stalled; run CPU-bound work "
                    "in a process worker",
                    task.id,
                    task.func,
                    timeout,
                )
                raise TaskTimeoutError(
                    f"task ran longer than its timeout of {timeout} s and did not yield to "
                    "gevent (CPU-bound, or blocked in a call gevent does not patch); it "
                    "finishes in the background"
                ) from None
            except asyncio.CancelledError:
                self._cancel_call(call_id)
                raise
        finally:
            self._pending.pop(call_id, None)
            self._contexts.pop(call_id, None)
            if self._by_task.get(task.id) == call_id:
                del self._by_task[task.id]
        return decode_reply(reply)

    def _cancel_call(self, call_id: int) -> None:
        with contextlib.suppress(WorkerError, OSError, RuntimeError):
            self._send(("cancel", call_id))

    async def cancel(self, task_id: str) -> None:
        """Kill the greenlet running ``task_id`` at its next cooperative yield."""
        call_id = self._by_task.get(task_id)
        if call_id is None:
            return
        self._cancel_call(call_id)
        future = self._pending.get(call_id)
        if future is not None and not future.done():
            future.set_exception(WorkerError("task was cancelled; its greenlet was killed"))


# -- the child process (runs under gevent, monkey-patched) -----------------------------------


def child_main(fd: int, concurrency: int) -> None:  # pragma: no cover - runs in the child
    """Entry point of the gevent child: serve calls on socket ``fd`` until told to stop
    or until the worker goes away. Expects ``gevent.monkey.patch_all()`` to have run."""
    import gevent
    import gevent.lock
    import gevent.pool

    from omniq.workers._child import ignore_stop_signals

    ignore_stop_signals()
    sock = socket.socket(fileno=fd)
    pool = gevent.pool.Pool(concurrency)
    write_lock = gevent.lock.Semaphore()
    running: dict[int, Any] = {}
    loop_holder: list[asyncio.AbstractEventLoop] = []

    def send(message: tuple[Any, ...]) -> None:
        data = _frame(message)
        with write_lock:
            sock.sendall(data)

    def recv_exact(size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = sock.recv(size - len(chunks))
            if not chunk:
                raise EOFError
            chunks += chunk
        return bytes(chunks)

    def event_loop() -> asyncio.AbstractEventLoop:
        if not loop_holder:
            loop = asyncio.new_event_loop()
            gevent.spawn(loop.run_forever)
            loop_holder.append(loop)
        return loop_holder[0]

    def handle(call_id: int, request: bytes, timeout: float | None) -> None:
        from omniq.workers._child import encode_error, encode_value

        def progress(report: tuple[Any, ...]) -> None:
            send(("progress", call_id, report))

        expired = TaskTimeoutError(f"task ran longer than its timeout of {timeout} s")
        try:
            with gevent.Timeout(timeout, expired):
                reply = encode_value(_call(request, event_loop, progress))
        except TaskTimeoutError as exc:
            reply = encode_error(exc)
        except gevent.GreenletExit:
            return  # cancelled: the worker stopped waiting for this call
        except Exception as exc:
            reply = encode_error(exc)
        finally:
            running.pop(call_id, None)
        with contextlib.suppress(OSError):
            send((call_id, reply))

    send(("ready",))
    try:
        while True:
            size = int.from_bytes(recv_exact(_HEADER), "big")
            message = pickle.loads(recv_exact(size))  # nosec B301 # its parent, socketpair
            kind = message[0]
            if kind == "call":
                _, call_id, request, timeout = message
                running[call_id] = pool.spawn(handle, call_id, request, timeout)
            elif kind == "cancel":
                greenlet = running.pop(message[1], None)
                if greenlet is not None:
                    greenlet.kill(block=False)
            elif kind == "stop":
                pool.join(timeout=_STOP_TIMEOUT)
                break
    except (EOFError, OSError):
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _call(
    request: bytes,
    event_loop: Callable[[], asyncio.AbstractEventLoop],
    progress: Callable[[tuple[Any, ...]], None],
) -> Any:  # pragma: no cover - runs in the child
    from omniq.workers._child import ChildProgress, decode_request, run_in_context

    func, args, kwargs, where = decode_request(request)
    if where is None:
        return _invoke(func, args, kwargs, event_loop)
    # The greenlet's own context (greenlets each have one) holds the task; a coroutine
    # sent to the event loop's greenlet takes a copy of it along.
    reporter = ChildProgress(progress)
    context = TaskContext(*where, sink=reporter)
    return run_in_context(context, reporter, _invoke, func, args, kwargs, event_loop)


def _invoke(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    event_loop: Callable[[], asyncio.AbstractEventLoop],
) -> Any:  # pragma: no cover - runs in the child
    import inspect

    if inspect.iscoroutinefunction(func):
        return _await(event_loop(), func(*args, **kwargs))
    value = func(*args, **kwargs)
    if inspect.iscoroutine(value):
        return _await(event_loop(), value)
    return value


def _await(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:  # pragma: no cover - child
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        # A timeout or a kill interrupted the wait: stop the coroutine too.
        future.cancel()
        raise
