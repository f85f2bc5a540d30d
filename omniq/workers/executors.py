"""How a worker pool runs one task's callable: the worker types.

The pool (``omniq.workers.pool``) owns claiming, leases, retries and results; an
executor only runs ``func(*args, **kwargs)`` under a timeout and returns its value or
raises. Worker types register here by name, so ``worker_type="process"`` and
``"gevent"`` plug in without touching the pool.

Timeouts per type:

- ``async``: coroutine functions are cancelled at the timeout (``asyncio.timeout``).
  Plain functions run on a thread pool; at the timeout the task is reported as timed
  out, but Python cannot stop a thread: the call finishes in the background.
- ``thread``: like ``async`` but every plain function gets one of ``concurrency``
  dedicated threads, sized for blocking I/O. Cancelling a running thread task is
  cooperative only: the pool stops waiting for it, the thread runs to its end.

A thread left running that way (timed out, cancelled, or cut by a hard stop) is
*abandoned*: its task already has its outcome, whatever the call returns later is
dropped, and until it returns it holds one of the pool's threads, so the tasks after it
share one thread fewer (and may wait for one, their timeout running). Executors count
them (:attr:`BaseExecutor.abandoned_threads`) and log a WARNING with the task id when a
thread is abandoned and again when it finally ends, so a leak shows. A stop does not
wait for them, but Python joins pool threads at exit: the process ends only when they
have returned (or on SIGKILL).
- ``process`` (``omniq.workers.process``): child processes; a timeout or a cancel kills
  the child and a fresh one replaces it.
- ``gevent`` (``omniq.workers.gevent``): greenlets in a monkey-patched child process;
  ``gevent.Timeout`` is raised in the greenlet at its next cooperative yield.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from omniq.errors import ConfigError, TaskTimeoutError
from omniq.models import Task

__all__ = [
    "AsyncWorker",
    "BaseExecutor",
    "ThreadWorker",
    "create_executor",
    "register_worker_type",
    "worker_types",
]

logger = logging.getLogger("omniq.worker")

_is_coroutine_function: Callable[[Any], bool] = functools.lru_cache(maxsize=4096)(
    inspect.iscoroutinefunction
)


def _is_async(func: Any) -> bool:
    try:
        return _is_coroutine_function(func)
    except TypeError:  # unhashable callable
        return inspect.iscoroutinefunction(func)


class BaseExecutor(ABC):
    """Runs task callables for one worker pool."""

    name: ClassVar[str]

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare resources (threads, processes) before the first task."""

    async def stop(self, *, wait: bool = True) -> None:  # noqa: B027 - optional hook
        """Release resources; with ``wait=False`` do not wait for calls still running."""

    @abstractmethod
    async def run(
        self,
        task: Task,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Run the call and return its value; raise ``TaskTimeoutError`` past ``timeout``."""

    async def cancel(self, task_id: str) -> None:  # noqa: B027 - optional hook
        """Stop a running call where the worker type can (the pool also cancels the
        coroutine awaiting it)."""

    @property
    def abandoned_threads(self) -> int:
        """Threads still running calls whose tasks already ended here (timed out or
        stopped: Python cannot stop a thread); 0 for worker types that can stop a call."""
        return 0


class AsyncWorker(BaseExecutor):
    """Coroutine functions on the event loop; plain functions on a thread pool."""

    name = "async"

    def __init__(self, concurrency: int) -> None:
        super().__init__(concurrency)
        self._threads: ThreadPoolExecutor | None = None
        # Updated from the abandoned threads themselves as they end: under a lock.
        self._abandoned = 0
        self._abandoned_lock = threading.Lock()

    @property
    def abandoned_threads(self) -> int:
        """Threads still running calls whose tasks already ended (see the module doc)."""
        return self._abandoned

    def _thread_count(self) -> int:
        return min(self.concurrency, 32)

    async def start(self) -> None:
        """Create the thread pool for plain functions."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                max_workers=self._thread_count(), thread_name_prefix=f"omniq-{self.name}"
            )

    async def stop(self, *, wait: bool = True) -> None:
        """Shut the thread pool down."""
        threads, self._threads = self._threads, None
        if threads is not None:
            # An abandoned thread may never return: a stop does not wait for it.
            if wait and not self._abandoned:
                await asyncio.to_thread(threads.shutdown, wait=True)
            else:
                threads.shutdown(wait=False, cancel_futures=True)

    async def run(
        self,
        task: Task,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Await coroutine functions here; send plain ones to a thread."""
        if _is_async(func):
            if timeout is None:
                return await func(*args, **kwargs)
            try:
                async with asyncio.timeout(timeout):
                    return await func(*args, **kwargs)
            except TimeoutError:
                raise TaskTimeoutError(f"task ran longer than its timeout of {timeout} s") from None
        if self._threads is None:
            await self.start()
        assert self._threads is not None
        # In a copy of this context, so the call sees its task (omniq.current_task()):
        # an executor's threads do not inherit it.
        call = functools.partial(func, *args, **kwargs)
        running = self._threads.submit(contextvars.copy_context().run, call)
        future = asyncio.wrap_future(running)
        try:
            value = await (future if timeout is None else asyncio.wait_for(future, timeout))
        except TimeoutError:
            self._abandon(task, running, f"ran past its timeout of {timeout} s")
            raise TaskTimeoutError(
                f"task ran longer than its timeout of {timeout} s (its thread cannot be "
                "stopped and finishes in the background)"
            ) from None
        except asyncio.CancelledError:
            self._abandon(task, running, "was stopped")
            raise
        if inspect.isawaitable(value):
            # A plain function that returned a coroutine: finish it on the loop.
            return await value
        return value

    def _abandon(self, task: Task, running: concurrent.futures.Future[Any], why: str) -> None:
        """Count and log a call whose thread goes on after its task ended here (one not
        started yet was cancelled with its future: nothing runs on)."""
        if running.cancel() or running.done():
            return
        since = time.monotonic()
        with self._abandoned_lock:
            self._abandoned += 1
            count = self._abandoned
        logger.warning(
            "task %s (%s) %s, but its thread cannot be stopped: it runs on, abandoned, "
            "holding a worker thread (%d abandoned threads now)",
            task.id,
            task.func,
            why,
            count,
        )

        def ended(_: concurrent.futures.Future[Any]) -> None:
            with self._abandoned_lock:
                self._abandoned -= 1
                left = self._abandoned
            logger.warning(
                "task %s (%s): its abandoned thread ended after %.1f s more (%d abandoned "
                "threads now)",
                task.id,
                task.func,
                time.monotonic() - since,
                left,
            )

        running.add_done_callback(ended)


class ThreadWorker(AsyncWorker):
    """Plain functions on ``concurrency`` dedicated threads (blocking I/O work)."""

    name = "thread"

    def _thread_count(self) -> int:
        return self.concurrency


_REGISTRY: dict[str, str | type[BaseExecutor]] = {
    "async": AsyncWorker,
    "thread": ThreadWorker,
    "process": "omniq.workers.process:ProcessWorker",
    "gevent": "omniq.workers.gevent:GeventWorker",
}


def register_worker_type(name: str, executor: str | type[BaseExecutor]) -> None:
    """Make ``worker_type=name`` use ``executor`` (a class or ``"module:Class"``)."""
    _REGISTRY[name] = executor


def worker_types() -> list[str]:
    """The registered worker type names."""
    return sorted(_REGISTRY)


def executor_class(worker_type: str) -> type[BaseExecutor]:
    """The executor class for ``worker_type``; ConfigError for an unknown name."""
    entry = _REGISTRY.get(worker_type)
    if entry is None:
        raise ConfigError(
            f"worker_type={worker_type!r}: expected one of {', '.join(worker_types())}"
        )
    if isinstance(entry, str):
        import importlib

        module_name, _, attr = entry.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"worker_type={worker_type!r} is not available: {exc}") from exc
        entry = getattr(module, attr)
        assert isinstance(entry, type)
        _REGISTRY[worker_type] = entry
    return entry


def create_executor(worker_type: str, concurrency: int) -> BaseExecutor:
    """An executor of ``worker_type`` for ``concurrency`` simultaneous tasks."""
    return executor_class(worker_type)(concurrency)
