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
- ``process`` (``omniq.workers.process``): child processes; a timeout or a cancel kills
  the child and a fresh one replaces it.
- ``gevent`` (``omniq.workers.gevent``): greenlets in a monkey-patched child process;
  ``gevent.Timeout`` is raised in the greenlet at its next cooperative yield.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
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


class AsyncWorker(BaseExecutor):
    """Coroutine functions on the event loop; plain functions on a thread pool."""

    name = "async"

    def __init__(self, concurrency: int) -> None:
        super().__init__(concurrency)
        self._threads: ThreadPoolExecutor | None = None

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
            if wait:
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
        loop = asyncio.get_running_loop()
        call = functools.partial(func, *args, **kwargs)
        future = loop.run_in_executor(self._threads, call)
        try:
            value = await (future if timeout is None else asyncio.wait_for(future, timeout))
        except TimeoutError:
            raise TaskTimeoutError(
                f"task ran longer than its timeout of {timeout} s (its thread cannot be "
                "stopped and finishes in the background)"
            ) from None
        if inspect.isawaitable(value):
            # A plain function that returned a coroutine: finish it on the loop.
            return await value
        return value


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
