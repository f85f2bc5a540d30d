"""The ``process`` worker type: each task runs in one of ``concurrency`` child processes.

For CPU-bound work, or work that must not share the worker's interpreter. The children
are started with the ``spawn`` method (no state inherited from the worker's event loop
and threads) when the pool starts, and each runs one call at a time: plain functions
directly, coroutine functions under ``asyncio.run``. The function travels by import path
when it has one, otherwise by value with dill (lambdas, closures, ``__main__``); the
arguments travel as the pool decoded them from the task's payload, so the payload's
signature and the serializer's strict mode were checked before anything reaches a child.

Timeout and cancel: a call past its timeout, or a cancelled one, has its child killed
(SIGKILL) and replaced; the timeout raises ``TaskTimeoutError`` and counts as a failed
attempt. A child that dies under a task (``os._exit``, a segfault, the OOM killer) fails
that attempt with ``WorkerError("worker process died (exit code N) ...")`` and is
replaced too, so a task that kills its worker every time ends ``FAILED`` once its
attempts are used up while the pool carries on.

Children ignore SIGINT and SIGTERM (the worker process decides when they stop) and exit
by themselves if the worker process disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from omniq._greenlets import threading_patched
from omniq.context import TaskContext, current_task
from omniq.errors import ConfigError, TaskTimeoutError, WorkerError
from omniq.models import Task
from omniq.workers._child import (
    PROGRESS,
    READY,
    decode_progress,
    decode_reply,
    died_message,
    encode_call,
    process_main,
)
from omniq.workers.executors import BaseExecutor

__all__ = ["ProcessWorker"]

logger = logging.getLogger("omniq.worker")

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 5.0


class _Stopping(Exception):
    """A child was being started while the pool stopped."""


class _Child:
    """One child process and the parent's end of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection, *, greenlets: bool) -> None:
        self.process = process
        self.conn = conn
        # Under gevent the calls run in greenlets of the loop's thread (threads are
        # greenlets there): they wait for a reply in gevent's selector, not in a read
        # that would hold the loop's whole thread for the task's length.
        self.greenlets = greenlets
        self.task_id: str | None = None
        self.cancelled = False

    def call(self, request: bytes, context: TaskContext | None = None) -> bytes:
        """Send a request and wait for the reply (blocking; runs on a thread); the
        progress the child sends on the way goes to ``context``."""
        self.conn.send_bytes(request)
        while True:
            if self.greenlets:
                wait([self.conn])
            reply = self.conn.recv_bytes()
            if reply[:1] != PROGRESS:
                return reply
            if context is not None:
                context.relay(*decode_progress(reply))

    def kill(self) -> None:
        """SIGKILL the child; a thread waiting on its pipe then sees EOF."""
        with contextlib.suppress(Exception):
            self.process.kill()

    def reap(self, timeout: float | None = None) -> int | None:
        """Wait for the child to exit (blocking) and return its exit code."""
        deadline = time.monotonic() + (_STOP_TIMEOUT if timeout is None else timeout)
        self.process.join(timeout)
        code = self.process.exitcode
        # multiprocessing reaps finished children whenever it starts a new one (a
        # replacement, on another thread): when that waitpid wins the race, ours sees no
        # child and the code shows up on the shared handle a moment later.
        while code is None and time.monotonic() < deadline:
            time.sleep(0.005)
            code = self.process.exitcode
        with contextlib.suppress(Exception):
            self.conn.close()
        return code


class ProcessWorker(BaseExecutor):
    """Runs each task in one of ``concurrency`` child processes.

    Example::

        await oq.worker(worker_type="process", concurrency=os.cpu_count()).run(burst=True)
    """

    name = "process"
    #: The multiprocessing start method; ``"forkserver"`` also works on POSIX.
    start_method = "spawn"

    def __init__(self, concurrency: int) -> None:
        super().__init__(concurrency)
        try:
            # Any: typeshed's BaseContext lacks the Process/Pipe every real context has.
            self._context: Any = multiprocessing.get_context(self.start_method)
        except ValueError as exc:
            raise ConfigError(f"ProcessWorker.start_method: {exc}") from exc
        self._idle: asyncio.Queue[_Child] | None = None
        self._children: set[_Child] = set()
        self._busy: dict[str, _Child] = {}
        self._threads: ThreadPoolExecutor | None = None
        self._spawning: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._greenlets = threading_patched()

    # -- children ------------------------------------------------------------------------

    def _spawn(self) -> _Child:
        """Start one child and wait until it is ready to take calls (blocking)."""
        parent_end, child_end = self._context.Pipe(duplex=True)
        if self._greenlets:
            # gevent's socketpair() makes non-blocking sockets, and the flag goes with
            # the descriptors to the child: both ends would read EAGAIN, not wait.
            os.set_blocking(parent_end.fileno(), True)
            os.set_blocking(child_end.fileno(), True)
        process = self._context.Process(
            target=process_main,
            args=(child_end, os.getpid()),
            name="omniq-process-worker",
            daemon=True,
        )
        process.start()
        child_end.close()  # so that the child's death reads as EOF here
        child = _Child(process, parent_end, greenlets=self._greenlets)
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            while not parent_end.poll(0.05):
                if self._stopping or time.monotonic() > deadline:
                    raise EOFError
            if parent_end.recv_bytes() != READY:
                raise EOFError
        except (EOFError, OSError):
            child.kill()
            code = child.reap(_STOP_TIMEOUT)
            if self._stopping:
                raise _Stopping from None
            raise WorkerError(
                f"a worker process failed to start (exit code {code}); see its output above"
            ) from None
        return child

    async def _add_child(self) -> None:
        assert self._idle is not None
        loop = asyncio.get_running_loop()
        child = await loop.run_in_executor(self._threads, self._spawn)
        if self._stopping:
            child.kill()
            await loop.run_in_executor(self._threads, child.reap)
            return
        self._children.add(child)
        self._idle.put_nowait(child)

    def _replace(self, child: _Child) -> None:
        """Retire a killed or dead child and start another in the background."""
        self._children.discard(child)
        spawner = asyncio.create_task(self._retire_and_respawn(child))
        self._spawning.add(spawner)
        spawner.add_done_callback(self._spawning.discard)

    async def _retire_and_respawn(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        child.kill()
        await loop.run_in_executor(self._threads, child.reap)
        if self._stopping:
            return
        try:
            await self._add_child()
        except _Stopping:
            pass
        except WorkerError as exc:
            # The pool shrinks by one; the next call waits for a child that is still up.
            logger.error("%s", exc)

    # -- executor interface ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the children and wait until each is ready."""
        if self._idle is not None:
            return
        self._stopping = False
        self._idle = asyncio.Queue()
        # One thread per child waits on its pipe, plus a few to start and reap children.
        self._threads = ThreadPoolExecutor(
            max_workers=self.concurrency + 4, thread_name_prefix="omniq-process"
        )
        results = await asyncio.gather(
            *(self._add_child() for _ in range(self.concurrency)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop(wait=False)
            raise errors[0]

    async def stop(self, *, wait: bool = True) -> None:
        """Stop the children: idle ones are asked to exit (``wait=True``), the rest killed."""
        if self._idle is None:
            return
        self._stopping = True
        idle = self._idle
        self._idle = None
        # Children being started notice ``_stopping`` and are killed rather than added.
        await asyncio.gather(*self._spawning, return_exceptions=True)
        loop = asyncio.get_running_loop()
        busy = set(self._busy.values())
        for child in list(self._children):
            if not wait or child in busy:
                child.kill()
            else:
                with contextlib.suppress(OSError):
                    child.conn.send_bytes(b"")

        def reap(child: _Child) -> None:
            if child.reap(_STOP_TIMEOUT if wait else 1.0) is None:
                child.kill()
                child.reap()

        await asyncio.gather(
            *(loop.run_in_executor(self._threads, reap, c) for c in self._children),
            return_exceptions=True,
        )
        self._children.clear()
        while not idle.empty():
            idle.get_nowait()
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)

    async def run(
        self,
        task: Task,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Run the call in an idle child; see the module docstring for timeouts."""
        context = current_task()
        request = encode_call(func, args, kwargs, context)
        if self._idle is None:
            await self.start()
        assert self._idle is not None
        child = await self._idle.get()
        child.task_id = task.id
        self._busy[task.id] = child
        loop = asyncio.get_running_loop()
        pending = loop.run_in_executor(self._threads, child.call, request, context)
        healthy = False
        try:
            try:
                async with asyncio.timeout(timeout):
                    reply = await pending
            except TimeoutError:
                raise TaskTimeoutError(
                    f"task ran longer than its timeout of {timeout} s; its worker process "
                    "was terminated"
                ) from None
            except (EOFError, OSError):
                if child.cancelled:
                    raise WorkerError(
                        "task was cancelled; its worker process was terminated"
                    ) from None
                code = await loop.run_in_executor(self._threads, child.reap, _STOP_TIMEOUT)
                raise died_message(code) from None
            healthy = True
        finally:
            self._busy.pop(task.id, None)
            child.task_id = None
            if healthy and self._idle is not None:
                self._idle.put_nowait(child)
            elif not healthy:
                self._replace(child)
        return decode_reply(reply)

    async def cancel(self, task_id: str) -> None:
        """Kill the child running ``task_id`` (a replacement takes its place)."""
        child = self._busy.get(task_id)
        if child is not None:
            child.cancelled = True
            child.kill()
