"""``OmniQ``: the blocking API, every method one call into :class:`AsyncOmniQ`.

No logic lives here. Each ``OmniQ`` owns a private event loop
(:class:`omniq._sync.LoopThread`) and runs the async client's coroutines there, so
connections survive from one call to the next. The calling thread runs the loop while
nothing else needs it (a call costs about what it costs in asyncio); a background worker
moves the loop to its own thread. Unwritten events do not: they are written during later
calls, or by a timer thread when no call comes within the logger's flush interval.
Calling it from inside a running event loop raises ``SyncInAsyncError`` pointing to
``AsyncOmniQ``, except in an IPython/Jupyter cell: the call runs on the client's loop
thread and the cell waits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from omniq import _fork
from omniq._greenlets import threading_patched
from omniq._ids import IdStr
from omniq._sync import LoopThread, blocking
from omniq.config import Duration, Settings
from omniq.core import AsyncOmniQ, AsyncTaskFunction, AsyncTaskHandle
from omniq.models import TaskStatus
from omniq.storage.base import BaseEventStorage, BaseResultStorage, BaseTaskQueue
from omniq.workers.sync import WorkerPool

__all__ = ["OmniQ", "TaskFunction", "TaskHandle"]

logger = logging.getLogger("omniq")
# How long a client left open may hold up exit (or its collection) writing its events.
_LEFT_OPEN_FLUSH_SECONDS = 10.0

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class TaskHandle(IdStr, Generic[R]):
    """The task a ``.delay()``/``.submit()`` of an ``OmniQ`` task function enqueued: its
    id (a ``str``), typed with what the function returns; the blocking twin of
    :class:`~omniq.AsyncTaskHandle`.

    A handle is the task id wherever an id goes (``get_result(handle)``,
    ``depends_on=[handle]``, a dict key, JSON, a task's argument): it compares, hashes and
    prints as the id, and is stored, pickled and encoded as that plain ``str``.

    Example::

        @oq.task
        def add(a: int, b: int) -> int:
            return a + b

        handle = add.delay(1, 2)             # TaskHandle[int]
        total = handle.result(timeout=10)    # int, for mypy and editors too
    """

    __slots__ = ("_inner", "_runner")

    _inner: AsyncTaskHandle[R]
    _runner: LoopThread

    def __new__(cls, inner: AsyncTaskHandle[R], runner: LoopThread) -> TaskHandle[R]:
        """Wrap the async handle ``inner``, running its calls on ``runner``."""
        handle = super().__new__(cls, str(inner))
        handle._inner = inner
        handle._runner = runner
        return handle

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, name={self.name!r})"

    @property
    def name(self) -> str:
        """The registered name of the task's function."""
        return self._inner.name

    @property
    def task_id(self) -> str:
        """The task id as a plain ``str``."""
        return str(self)

    def result(self, timeout: Duration | None = None) -> R:
        """Block until the task finishes and return its value (``timeout`` in seconds, a
        ``timedelta`` or a string like ``"30s"``; None waits as long as it takes).

        Raises :class:`~omniq.errors.TaskFailedError` when the task ended ``FAILED``,
        ``CANCELLED`` or ``EXPIRED`` (its ``error`` says why),
        :class:`~omniq.errors.ResultTimeoutError` (a ``TimeoutError``) when ``timeout``
        runs out first, and :class:`~omniq.errors.TaskNotFoundError` when the task or
        its result is gone (cleaned up, past ``result_ttl``), as ``get_result`` would.
        """
        return self._runner.run(self._inner.result(timeout))

    def status(self) -> TaskStatus:
        """The task's current status; ``TaskNotFoundError`` once it is gone."""
        return self._runner.run(self._inner.status())

    def cancel(self) -> bool:
        """Cancel the task, as ``OmniQ.cancel``: True if it ends ``CANCELLED``, False when
        it had already finished."""
        return self._runner.run(self._inner.cancel())


class TaskFunction(Generic[P, R]):
    """A function registered with ``@oq.task`` on ``OmniQ``: callable, plus blocking
    ``delay``/``submit``, which enqueue it and return a :class:`TaskHandle` typed with
    its return value."""

    def __init__(self, inner: AsyncTaskFunction[P, R], runner: LoopThread) -> None:
        functools.update_wrapper(self, inner.__omniq_func__)
        self.__omniq_func__ = inner.__omniq_func__
        self._inner = inner
        self._runner = runner
        self.name = inner.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__omniq_func__(*args, **kwargs)

    # As AsyncTaskFunction's: an async def's handle carries the awaited value's type.
    @overload
    def delay(
        self: TaskFunction[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> TaskHandle[T]: ...

    @overload
    def delay(self: TaskFunction[P, T], *args: P.args, **kwargs: P.kwargs) -> TaskHandle[T]: ...

    def delay(self, *args: Any, **kwargs: Any) -> TaskHandle[Any]:
        """Enqueue a call with the registered options; returns its handle (the task id)."""
        inner: AsyncTaskFunction[..., Any] = self._inner
        return TaskHandle(self._runner.run(inner.delay(*args, **kwargs)), self._runner)

    @overload
    def submit(
        self: TaskFunction[P, Awaitable[T]],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> TaskHandle[T]: ...

    @overload
    def submit(
        self: TaskFunction[P, T],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> TaskHandle[T]: ...

    def submit(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> TaskHandle[Any]:
        """Enqueue a call with per-call options over the registered ones; returns its
        handle (the task id)."""
        inner: AsyncTaskFunction[..., Any] = self._inner
        return TaskHandle(self._runner.run(inner.submit(args, kwargs, **options)), self._runner)


class OmniQ:
    """The blocking OmniQ client: the same methods as :class:`AsyncOmniQ`, without ``await``.

    Example::

        with OmniQ() as oq:                     # SQLite under .omniq/
            task_id = oq.enqueue(send_email, "ada@example.com")
            oq.worker().run(burst=True)
            print(oq.get_result(task_id).result)
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        task_queue: str | BaseTaskQueue | None = None,
        result_storage: str | BaseResultStorage | None = None,
        event_storage: str | BaseEventStorage | Literal[False] | None = None,
        **overrides: Any,
    ) -> None:
        self._async = AsyncOmniQ(
            settings,
            task_queue=task_queue,
            result_storage=result_storage,
            event_storage=event_storage,
            **overrides,
        )
        self._runner = LoopThread("omniq-loop", async_name="AsyncOmniQ")
        if threading_patched():
            _import_what_spawns_processes()
        # Never closed: its buffered events are written when it is collected or at exit.
        self._left_open = weakref.finalize(self, _flush_left_open, self._runner, self._async)
        self._flush_at_multiprocessing_exit()
        _fork.track(self)

    @classmethod
    def from_env(cls, **overrides: Any) -> OmniQ:
        """A client on the layered settings, spelled out: ``cls(Settings.load(**overrides))``.

        Defaults < the YAML file named by ``OMNIQ_CONFIG`` < ``OMNIQ_*`` variables <
        ``overrides`` (Settings fields), as :meth:`AsyncOmniQ.from_env`.

        Example::

            with OmniQ.from_env(max_workers=4) as oq:
                oq.enqueue(send_email, "ada@example.com")
        """
        return cls(Settings.load(**overrides))

    def _flush_at_multiprocessing_exit(self) -> None:
        # multiprocessing ends the children it forks with os._exit: no atexit, so the
        # finalizer above would not run there. Its own exit hooks do run.
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            mp_util.Finalize(self, self._left_open, exitpriority=0)

    def _after_fork_in_child(self) -> list[Any]:
        """In a forked child: have the child's own events written when it ends."""
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            # A child multiprocessing starts drops the exit hooks it inherited after this
            # runs; the callbacks registered here run after that.
            mp_util.register_after_fork(self, OmniQ._flush_at_multiprocessing_exit)
        return []

    @property
    def settings(self) -> Settings:
        """The settings in force."""
        return self._async.settings

    @property
    def async_client(self) -> AsyncOmniQ:
        """The async client this one drives (use it only on this client's loop)."""
        return self._async

    connect = blocking(AsyncOmniQ.connect)

    def close(self) -> None:
        """Flush events, release the storages and stop the private loop.

        Closing is not final: a later call on this client starts a new loop and connects
        again (and needs ``close()`` again to release them).
        """
        self._left_open.detach()
        try:
            self._runner.run(self._async.close())
        finally:
            self._runner.stop()

    def __enter__(self) -> OmniQ:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    submit = blocking(AsyncOmniQ.submit)

    enqueue = blocking(AsyncOmniQ.enqueue)

    enqueue_many = blocking(AsyncOmniQ.enqueue_many)

    get_task = blocking(AsyncOmniQ.get_task)

    get_result = blocking(AsyncOmniQ.get_result)

    get_events = blocking(AsyncOmniQ.get_events)

    list_tasks = blocking(AsyncOmniQ.list_tasks)

    stats = blocking(AsyncOmniQ.stats)

    cancel = blocking(AsyncOmniQ.cancel)

    cleanup = blocking(AsyncOmniQ.cleanup)

    schedule = blocking(AsyncOmniQ.schedule)

    pause_schedule = blocking(AsyncOmniQ.pause_schedule)

    resume_schedule = blocking(AsyncOmniQ.resume_schedule)

    remove_schedule = blocking(AsyncOmniQ.remove_schedule)

    list_schedules = blocking(AsyncOmniQ.list_schedules)

    get_schedule = blocking(AsyncOmniQ.get_schedule)

    requeue = blocking(AsyncOmniQ.requeue)

    requeue_all = blocking(AsyncOmniQ.requeue_all)

    list_workers = blocking(AsyncOmniQ.list_workers)

    @overload
    def task(self, func: Callable[P, R], /) -> TaskFunction[P, R]: ...

    @overload
    def task(
        self, func: None = None, /, *, name: str | None = None, **task_options: Any
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...

    def task(
        self, func: Callable[P, R] | None = None, /, *, name: str | None = None, **task_options: Any
    ) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
        """Register a task function; it stays callable and gains blocking ``delay``/``submit``.

        ``task_options`` are :meth:`submit`'s options, checked here (``ConfigError``).
        """
        decorate = self._async.task(name=name, **task_options)  # checks the option names

        def register(f: Callable[P, R]) -> TaskFunction[P, R]:
            inner: AsyncTaskFunction[P, R] = decorate(f)
            return TaskFunction(inner, self._runner)

        return register(func) if func is not None else register

    def resolve(self, name: str) -> Callable[..., Any]:
        """The callable behind a task's ``func`` name."""
        return self._async.resolve(name)

    def worker(
        self,
        *,
        worker_type: str | None = None,
        concurrency: int | None = None,
        queues: Sequence[str] | str | None = None,
        queue_order: str | None = None,
    ) -> WorkerPool:
        """A blocking worker pool over this client's storages (not started).

        As :meth:`AsyncOmniQ.worker`: with ``queue_order="merged"`` (the default)
        several ``queues`` are served in one order (by priority, then due time, then
        enqueue order), not in the order listed; with ``queue_order="strict"`` the first
        listed queue with claimable work goes first. A ``"gevent"`` task that never
        yields holds up its whole worker, even past its timeout.
        """
        pool = self._async.worker(
            worker_type=worker_type,
            concurrency=concurrency,
            queues=queues,
            queue_order=queue_order,
        )
        return WorkerPool(pool, self._runner)

    limit_queue = blocking(AsyncOmniQ.limit_queue)

    list_limits = blocking(AsyncOmniQ.list_limits)


def _flush_left_open(runner: LoopThread, client: AsyncOmniQ) -> None:
    """Write the buffered events of a client the program never closed.

    A script that ends without ``close()`` or ``with`` (or drops its client) has its
    tasks stored already, but events written in the background (SQLite, file) could
    still be in memory. Runs at interpreter exit or when the client is collected.
    """
    if not (client.engine.connected and client.events.pending):
        return
    try:
        runner.run(asyncio.wait_for(client.events.flush(), _LEFT_OPEN_FLUSH_SECONDS))
    except Exception as exc:
        logger.warning("writing the events of a client left open failed: %s", exc)


def _import_what_spawns_processes() -> None:
    """Under gevent: import here, in the caller's thread, the modules whose import runs
    a subprocess, before they are imported on the loop's thread.

    gevent's ``subprocess`` only works in the thread of its default hub (child watchers
    exist on the default loop only), and under gevent the loop runs on a thread of its
    own. croniter runs ``file`` at import (``platform.architecture()``), and the loop
    imports it for the first schedule or worker pool.
    """
    import omniq.scheduling  # noqa: F401
