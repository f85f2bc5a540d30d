"""The client: ``AsyncOmniQ`` (written once, async); ``OmniQ`` is its blocking twin.

``AsyncOmniQ`` is the facade of SPEC §2: each public method checks its arguments and
hands the work to the client's :class:`~omniq.engine.Engine`, which owns the storages
(task queue, results, events: each on its own backend if you like), the event logger
and the task lifecycle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

from omniq import _callables
from omniq._building import seconds
from omniq._storages import checked_component, misplaced_settings
from omniq.config import Duration, Settings
from omniq.engine import Engine
from omniq.errors import ConfigError
from omniq.events import AsyncEventLogger, AsyncEventProcessor
from omniq.models import Schedule, Task, TaskEvent, TaskResult, TaskStatus, utcnow
from omniq.serialization import SerializationManager
from omniq.storage.base import BaseEventStorage, BaseResultStorage, BaseTaskQueue

if TYPE_CHECKING:
    from omniq.workers.pool import AsyncWorkerPool

__all__ = ["AsyncOmniQ", "AsyncTaskFunction"]

P = ParamSpec("P")
R = TypeVar("R")
#: A duration argument: seconds, a ``timedelta`` or a string like ``"30s"``, ``"5m"``.
Seconds = Duration


class AsyncTaskFunction(Generic[P, R]):
    """A function registered with ``@oq.task``: still callable, plus ``delay``/``submit``."""

    def __init__(self, oq: AsyncOmniQ, func: Callable[P, R], name: str, options: dict[str, Any]):
        functools.update_wrapper(self, func)
        self.__omniq_func__ = func
        self.oq = oq
        self.name = name
        self.options = options

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__omniq_func__(*args, **kwargs)

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue a call with the registered options; returns the task id."""
        return await self.oq.submit(self.name, args, kwargs, **self.options)

    async def submit(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> str:
        """Enqueue a call with per-call options over the registered ones."""
        return await self.oq.submit(self.name, args, kwargs, **{**self.options, **options})


class AsyncOmniQ:
    """The async OmniQ client: enqueue tasks, read results and events, run workers.

    Example::

        async with AsyncOmniQ() as oq:            # SQLite under .omniq/, nothing to set up
            task_id = await oq.enqueue(send_email, "ada@example.com")
            async with oq.worker(concurrency=8):
                result = await oq.get_result(task_id, wait=True, timeout=10)

    Each storage argument is a URL, a storage instance (async, or its blocking twin
    such as ``SQLiteQueue``, passed unconnected), or None (from settings);
    ``event_storage=False`` switches events off. ``overrides`` are ``Settings`` fields.
    Arguments of the wrong kind raise ``ConfigError`` here. Constructing an instance
    never touches storage: ``connect()`` (or first use) does.
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
        if settings is not None and not isinstance(settings, Settings):
            raise misplaced_settings(settings)
        if settings is None:
            settings = Settings.load(**overrides)
        elif overrides:
            settings = settings.replace(**overrides)
        self.settings = settings
        #: The task lifecycle under this facade (storages, events, scheduler, pools).
        self.engine = Engine(
            settings,
            {
                "task_queue": checked_component("task_queue", task_queue),
                "result_storage": checked_component("result_storage", result_storage),
                "event_storage": checked_component("event_storage", event_storage),
            },
        )

    @classmethod
    def from_env(cls, **overrides: Any) -> AsyncOmniQ:
        """A client on the layered settings, spelled out: ``cls(Settings.load(**overrides))``.

        Defaults < the YAML file named by ``OMNIQ_CONFIG`` < ``OMNIQ_*`` variables <
        ``overrides`` (Settings fields); the storages come from those settings. The same
        as ``AsyncOmniQ(**overrides)``, said plainly where it matters to the reader.

        Example::

            oq = AsyncOmniQ.from_env(max_workers=4)   # OMNIQ_BACKEND=redis, ...
        """
        return cls(Settings.load(**overrides))

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def _connected(self) -> bool:
        return self.engine.connected

    async def connect(self) -> None:
        """Open the storages (done on first use too). Safe to call twice.

        A client follows its caller from one event loop to the next (``asyncio.run``
        twice, a loop per test): its storages reconnect on the new loop. It serves one
        loop at a time: a call from another loop while the first still runs (in another
        thread) raises ``EventLoopError``.
        """
        await self.engine.connect()

    async def close(self) -> None:
        """Stop this client's running worker pools (gracefully, as ``pool.stop()``),
        flush events and release the storages. Safe to call twice.

        Closing is not final: a later call on this client connects again, with the same
        settings and storages (and needs ``close()`` again to release them).
        """
        await self.engine.close()

    async def __aenter__(self) -> AsyncOmniQ:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def serializer(self) -> SerializationManager:
        """The serializer of task calls and results."""
        return self.engine.serializer

    @property
    def events(self) -> AsyncEventLogger:
        """The event logger (``events.add_handler(fn)`` hears every event in-process)."""
        return self.engine.events

    @property
    def queue(self) -> BaseTaskQueue:
        """The connected task queue component."""
        return self.engine.queue

    @property
    def results(self) -> BaseResultStorage:
        """The connected result storage component."""
        return self.engine.results

    @property
    def event_storage(self) -> BaseEventStorage | None:
        """The connected event storage, or None when events are off."""
        return self.engine.event_storage

    async def _ready(self) -> Engine:
        engine = self.engine
        if not engine.connected:
            await engine.connect()
        return engine

    # -- submitting --------------------------------------------------------------------

    async def submit(
        self,
        func: Callable[..., Any] | str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int = 0,
        delay: Seconds | None = None,
        eta: datetime | None = None,
        ttl: Seconds | None = None,
        max_retries: int | None = None,
        retry_delay: Seconds | None = None,
        timeout: Seconds | None = None,
        depends_on: Iterable[str] = (),
        task_id: str | None = None,
        result_ttl: Seconds | None = None,
    ) -> str:
        """Enqueue ``func(*args, **kwargs)`` with options; return the task id.

        Durations (``delay``, ``ttl``, ``retry_delay``, ``timeout``, ``result_ttl``) are
        seconds, a ``timedelta`` or a string like ``"30s"``, ``"5m"``, ``"2h"``; ``eta``
        is an aware ``datetime``. ``result_ttl`` keeps this task's result that long
        (default: the ``result_ttl`` setting).

        ``func`` is a callable, ``"module:qualname"``, ``"package.module.function"`` or a
        name registered with ``@oq.task``. When the function is known here (a callable,
        a registered name, a path this process can import), the arguments are checked
        against its signature: ``TaskArgumentError`` (a ``ConfigError`` and a
        ``TypeError``) names the one that does not fit. A path this process cannot
        import is stored unchecked; the worker resolves it.

        Idempotent on ``task_id``: submitting an id that already exists returns it and
        changes nothing: the first task's function, arguments and options stay, and the
        new ones are dropped without an error (whatever state the first task is in).
        ``depends_on`` ids must exist (``TaskNotFoundError`` otherwise).

        Example::

            await oq.submit(send, ("ada@example.com",), queue="mail", delay="5m",
                            max_retries=3, timeout=30)
        """
        engine = await self._ready()
        now = utcnow()
        task = engine.builder.build(
            func,
            args,
            kwargs,
            now=now,
            queue=queue,
            priority=priority,
            delay=delay,
            eta=eta,
            ttl=ttl,
            max_retries=max_retries,
            retry_delay=retry_delay,
            timeout=timeout,
            depends_on=depends_on,
            task_id=task_id,
            result_ttl=result_ttl,
        )
        return await engine.submit(task, now, given_id=task_id is not None)

    async def enqueue(self, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> str:
        """Enqueue ``func(*args, **kwargs)`` with default options; return the task id.

        Every keyword argument goes to the task: options (``eta``, ``timeout``,
        ``max_retries``…) go through :meth:`submit`. Arguments the function cannot take
        raise ``TaskArgumentError`` here (see :meth:`submit`)::

            await oq.enqueue(send, "hi", eta=when)     # TaskArgumentError: ... did you
                                                       # mean submit(..., eta=...)?
            await oq.submit(send, ("hi",), eta=when)   # what was meant
        """
        return await self.submit(func, args, kwargs)

    async def enqueue_many(
        self,
        /,
        func: Callable[..., Any] | str,
        args_list: Iterable[Sequence[Any]],
        **options: Any,
    ) -> list[str]:
        """One task per argument tuple in ``args_list``, in as few round trips as possible.

        ``options`` are :meth:`submit`'s, but ``task_id`` and ``depends_on``. Each tuple
        is checked against the function's signature as in :meth:`submit`.
        """
        engine = await self._ready()
        now = utcnow()
        tasks = engine.builder.build_many(func, args_list, options, now=now)
        return await engine.store_new(tasks, now) if tasks else []

    # -- reading -----------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        """The task with its current status and attempts, or None.

        A task that never started and is past its ``ttl`` reads ``EXPIRED`` (it is
        expired here, with its result and event, if no worker did it yet).
        """
        return await (await self._ready()).get_task(task_id)

    async def get_result(
        self, task_id: str, *, wait: bool = False, timeout: Seconds | None = None
    ) -> TaskResult | None:
        """The task's result once it is final (``COMPLETE``, ``FAILED``, ``CANCELLED``,
        ``EXPIRED``), else None; with ``wait=True`` block until then, or raise
        ``ResultTimeoutError`` (a ``TimeoutError``) after ``timeout`` seconds.

        With ``wait=True`` nothing is waited for that cannot come: an id the queue does
        not know raises ``TaskNotFoundError``, a task past its ``ttl`` that no worker
        started ends ``EXPIRED`` as its ttl passes, and a task that finished but whose
        result is gone (past ``result_ttl``, or cleaned up) returns None.
        """
        engine = await self._ready()
        stored = await engine.results.get(task_id)
        if stored is None and wait:
            stored = await engine.wait_for_result(task_id, seconds(timeout, "timeout"))
        return None if stored is None else engine.decode_result(stored)

    async def get_events(self, task_id: str) -> list[TaskEvent]:
        """The task's lifecycle events, oldest first (``[]`` with events off)."""
        engine = await self._ready()
        await engine.events.flush()
        return await AsyncEventProcessor(engine.event_storage).get(task_id)

    async def list_tasks(
        self, *, queue: str | None = None, status: TaskStatus | str | None = None, limit: int = 100
    ) -> list[Task]:
        """Tasks, newest first, filtered by queue and status (a task that never started
        and is past its ttl is expired as it is listed, as ``get_task`` does)."""
        engine = await self._ready()
        if status is not None:
            try:
                status = TaskStatus(status)
            except ValueError:
                choices = ", ".join(s.value for s in TaskStatus)
                raise ConfigError(f"status={status!r}: expected one of {choices}") from None
        return await engine.list_tasks(queue, status, limit)

    async def stats(self) -> dict[str, dict[str, int]]:
        """Task counts per queue and status."""
        return await (await self._ready()).queue.stats()

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task: True if it ends ``CANCELLED``, False for a finished or unknown id.

        A waiting task never runs. A running one is taken from its worker at once, and
        the worker hears of it within moments (Redis and PostgreSQL push the cancel to
        it; SQLite and the file backend are looked at five times a second): an ``async``
        task's coroutine is cancelled, a ``process`` or ``gevent`` task's child or
        greenlet is killed, a ``thread`` task's thread runs on to its end (Python cannot
        stop a thread) but its outcome is dropped. Exactly one of cancel and finish
        wins: if the task finished first, this returns False and the task keeps its
        result; if the cancel won, no later finish stores a result.
        """
        return await (await self._ready()).cancel(task_id)

    async def cleanup(self) -> dict[str, int]:
        """Drop expired results, finished tasks past ``result_ttl`` and old events."""
        return await (await self._ready()).cleanup()

    # -- schedules -----------------------------------------------------------------------

    async def schedule(
        self,
        /,
        func: Callable[..., Any] | str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        cron: str | None = None,
        interval: Seconds | None = None,
        timezone: str = "UTC",
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        max_runs: int | None = None,
        schedule_id: str | None = None,
        **task_options: Any,
    ) -> str:
        """Create (or, with the same ``schedule_id``, update) recurring work; return its id.

        Give ``cron`` (a crontab string, read in ``timezone``) or ``interval`` (seconds
        or a timedelta). Running workers fire it: one task per tick.

        Example::

            await oq.schedule(report, cron="0 7 * * mon-fri", timezone="Europe/Paris",
                              schedule_id="daily-report")
        """
        scheduler = await (await self._ready()).open_schedules()
        return await scheduler.schedule(
            func,
            args,
            kwargs,
            cron=cron,
            interval=interval,
            timezone=timezone,
            start_at=start_at,
            end_at=end_at,
            max_runs=max_runs,
            schedule_id=schedule_id,
            **task_options,
        )

    async def pause_schedule(self, schedule_id: str) -> bool:
        """Stop a schedule from firing until resumed; False if unknown."""
        return await (await (await self._ready()).open_schedules()).pause(schedule_id)

    async def resume_schedule(self, schedule_id: str) -> bool:
        """Let a paused schedule fire again (from its next tick after now); False if unknown."""
        return await (await (await self._ready()).open_schedules()).resume(schedule_id)

    async def remove_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; False if unknown."""
        return await (await (await self._ready()).open_schedules()).remove(schedule_id)

    async def list_schedules(self) -> list[Schedule]:
        """All schedules, by id."""
        return await (await (await self._ready()).open_schedules()).list()

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """One schedule, or None."""
        return await (await (await self._ready()).open_schedules()).get(schedule_id)

    # -- functions and workers -----------------------------------------------------------

    @overload
    def task(self, func: Callable[P, R], /) -> AsyncTaskFunction[P, R]: ...

    @overload
    def task(
        self, func: None = None, /, *, name: str | None = None, **task_options: Any
    ) -> Callable[[Callable[P, R]], AsyncTaskFunction[P, R]]: ...

    def task(
        self, func: Callable[P, R] | None = None, /, *, name: str | None = None, **task_options: Any
    ) -> AsyncTaskFunction[P, R] | Callable[[Callable[P, R]], AsyncTaskFunction[P, R]]:
        """Register a task function; it stays callable and gains ``delay``/``submit``.

        ``task_options`` are :meth:`submit`'s options (``queue``, ``max_retries``,
        ``timeout``, ``result_ttl``…), applied to every ``delay``; they are checked here,
        when decorating: an unknown name or a bad value raises ``ConfigError``.

        Example::

            @oq.task(max_retries=3, timeout="30s")
            async def resize(path: str) -> str: ...

            task_id = await resize.delay("cat.png")
        """
        builder = self.engine.builder
        builder.check_options("@oq.task()", task_options, utcnow())

        def register(f: Callable[P, R]) -> AsyncTaskFunction[P, R]:
            task_name = name or _callables.callable_path(f) or _callables.describe(f)
            builder.registry[task_name] = f
            return self._wrap_task(f, task_name, task_options)

        return register(func) if func is not None else register

    def _wrap_task(
        self, func: Callable[P, R], name: str, options: dict[str, Any]
    ) -> AsyncTaskFunction[P, R]:
        return AsyncTaskFunction(self, func, name, options)

    def resolve(self, name: str) -> Callable[..., Any]:
        """The callable behind a task's ``func`` name: registered first, then imported."""
        return self.engine.builder.resolve(name)

    def worker(
        self,
        *,
        worker_type: str | None = None,
        concurrency: int | None = None,
        queues: Sequence[str] | str | None = None,
        queue_order: str | None = None,
    ) -> AsyncWorkerPool:
        """A worker pool over this client's storages (not started).

        ``worker_type``: ``"async"``, ``"thread"``, ``"process"`` or ``"gevent"`` (the
        README's "Worker types" says what each can stop on a timeout or a cancel).
        ``queues``: a name, a list of names or ``"a,b"``; None is the ``default_queue``
        setting. ``queue_order``: ``"merged"`` (the default: the best task across all the
        queues, by priority, then due time, then enqueue order) or ``"strict"`` (the
        first listed queue with claimable work first, as in an RQ worker; a steady flow
        into it can starve the next ones). A bad value raises ``ConfigError``. A
        ``"gevent"`` task that computes without yielding stalls every task of its worker,
        even past its timeout (logged as a WARNING): run CPU-bound work in ``"process"``.

        Example::

            async with oq.worker(queues=["mail", "default"], concurrency=16):
                ...
        """
        from omniq.workers.pool import AsyncWorkerPool

        return AsyncWorkerPool(
            self,
            worker_type=worker_type,
            concurrency=concurrency,
            queues=queues,
            queue_order=queue_order,
        )
