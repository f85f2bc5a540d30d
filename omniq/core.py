"""The client: ``AsyncOmniQ`` (written once, async); ``OmniQ`` is its blocking twin.

``AsyncOmniQ`` is the facade of SPEC §2: each public method checks its arguments and
hands the work to the client's :class:`~omniq.engine.Engine`, which owns the storages
(each on its own backend if you like), the event logger and the task lifecycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from omniq._building import checked_status, seconds
from omniq._ids import plain_id
from omniq._storages import checked_components, client_settings
from omniq._task_functions import AsyncTaskFunction, AsyncTaskHandle
from omniq.config import Duration, Settings
from omniq.engine import Engine
from omniq.events import AsyncEventLogger
from omniq.models import (
    LimitInfo,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    WorkerInfo,
    utcnow,
)
from omniq.serialization import SerializationManager
from omniq.storage.base import BaseEventStorage, BaseResultStorage, BaseTaskQueue

if TYPE_CHECKING:
    from omniq.workers.pool import AsyncWorkerPool

__all__ = ["AsyncOmniQ", "AsyncTaskFunction", "AsyncTaskHandle"]

P = ParamSpec("P")
R = TypeVar("R")
#: A duration argument: seconds, a ``timedelta`` or a string like ``"30s"``, ``"5m"``.
Seconds = Duration


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
        self.settings = client_settings(settings, overrides)
        #: The task lifecycle under this facade (storages, events, scheduler, pools).
        self.engine = Engine(
            self.settings, checked_components(task_queue, result_storage, event_storage)
        )

    @classmethod
    def from_env(cls, **overrides: Any) -> AsyncOmniQ:
        """A client on the layered settings: defaults < the YAML file named by
        ``OMNIQ_CONFIG`` < ``OMNIQ_*`` variables < ``overrides`` (Settings fields).

        The same as ``AsyncOmniQ(**overrides)``, said plainly where it matters."""
        return cls(Settings.load(**overrides))

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the storages (done on first use too). Safe to call twice.

        A client follows its caller to a new event loop (its storages reconnect there),
        one loop at a time: a call from a second running loop raises ``EventLoopError``.
        """
        await self.engine.connect()

    async def close(self) -> None:
        """Stop this client's running worker pools (as ``pool.stop()``), flush events
        and release the storages. Safe to call twice; a later call connects again."""
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
        rate_limit: str | None = None,
        max_concurrency: int | None = None,
    ) -> str:
        """Enqueue ``func(*args, **kwargs)`` with options; return the task id.

        Durations (``delay``, ``ttl``, ``retry_delay``, ``timeout``, ``result_ttl``: how
        long this task's result is kept) are seconds, a ``timedelta`` or a string like
        ``"30s"``; ``eta`` an aware ``datetime``. ``func`` is a callable,
        ``"module:qualname"``, ``"package.module.function"`` or a name registered with
        ``@oq.task``; when it is known here, the arguments are checked against its
        signature (``TaskArgumentError`` names the one that does not fit), else the worker
        resolves it. Idempotent on ``task_id``: an existing id is returned, nothing changes
        (the first task's call and options stay). ``depends_on`` ids must exist, else
        ``TaskNotFoundError``. ``rate_limit`` (``"N/s"``, ``"N/m"``, ``"N/h"``) and
        ``max_concurrency`` limit every task of this function name across all workers
        (usually given once, to ``@oq.task``; see :meth:`limit_queue`).

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
            rate_limit=rate_limit,
            max_concurrency=max_concurrency,
        )
        if engine.tracing is None:
            return await engine.submit(task, now, given_id=task_id is not None)
        with engine.tracing.publishing([task]) as (traced,):
            return await engine.submit(traced, now, given_id=task_id is not None)

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
        if not tasks:
            return []
        if engine.tracing is None:
            return await engine.store_new(tasks, now)
        with engine.tracing.publishing(tasks) as traced:
            return await engine.store_new(traced, now)

    # -- reading -----------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        """The task with its current status and attempts, or None; ``progress`` holds
        what it last reported (``omniq.current_task().progress``), or None.

        A task that never started and is past its ``ttl`` reads ``EXPIRED`` (it is
        expired here, with its result and event, if no worker did it yet).
        """
        return await (await self._ready()).get_task(plain_id(task_id))

    async def get_result(
        self, task_id: str, *, wait: bool = False, timeout: Seconds | None = None
    ) -> TaskResult | None:
        """The task's result once it is final (``COMPLETE``, ``FAILED``, ``CANCELLED``,
        ``EXPIRED``), else None; with ``wait=True`` block until then, or raise
        ``ResultTimeoutError`` (a ``TimeoutError``) after ``timeout`` seconds.

        A waiter waits for nothing that cannot come: an unknown id raises
        ``TaskNotFoundError``, a task past its ``ttl`` ends ``EXPIRED``, a finished task
        whose result is gone (past ``result_ttl``) returns None.
        """
        limit = seconds(timeout, "timeout")
        return await (await self._ready()).get_result(plain_id(task_id), wait=wait, timeout=limit)

    async def get_events(self, task_id: str) -> list[TaskEvent]:
        """The task's lifecycle events, oldest first (``[]`` with events off)."""
        return await (await self._ready()).get_events(plain_id(task_id))

    async def list_tasks(
        self, *, queue: str | None = None, status: TaskStatus | str | None = None, limit: int = 100
    ) -> list[Task]:
        """Tasks, newest first, filtered by queue and status (a task that never started
        and is past its ttl is expired as it is listed, as ``get_task`` does)."""
        wanted = checked_status(status)
        return await (await self._ready()).list_tasks(queue, wanted, limit)

    async def stats(self) -> dict[str, dict[str, int]]:
        """Task counts per queue and status."""
        return await (await self._ready()).queue.stats()

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task: True if it ends ``CANCELLED``, False for a finished or unknown id.

        A waiting task never runs; a running one is taken from its worker at once and
        stopped as its worker type can (README, "Worker types": a ``thread`` runs on,
        its outcome dropped). Exactly one of cancel and finish wins.
        """
        return await (await self._ready()).cancel(plain_id(task_id))

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
            return AsyncTaskFunction(self, f, builder.register(f, name), task_options)

        return register(func) if func is not None else register

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
        """A worker pool over this client's storages (not started): an AsyncWorkerPool.

        ``worker_type``: ``"async"``, ``"thread"``, ``"process"`` or ``"gevent"`` (README,
        "Worker types": what each stops on a timeout or a cancel; a gevent task that never
        yields stalls its whole worker). ``queues``: a name, a list or ``"a,b"`` (default:
        the ``default_queue`` setting). ``queue_order``: ``"merged"`` (by priority, due
        time, enqueue order across the queues) or ``"strict"`` (the first listed queue
        with work first; it can starve the next ones). Bad values raise ``ConfigError``.

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

    # -- running it in production ----------------------------------------------------------

    async def requeue(self, task_id: str) -> bool:
        """Run a ``FAILED``, ``CANCELLED`` or ``EXPIRED`` task again: it goes back
        ``PENDING`` with a fresh attempt budget (``attempts`` 0, due now, no ttl) and
        True is returned; False for a task in any other status, or an unknown id.

        Its old result is removed (``get_result(wait=True)`` waits for the new run) and
        a ``REQUEUED`` event joins its earlier ones. Of two racing requeues, or a
        requeue racing a worker, one wins. A task with ``depends_on`` waits for its
        dependencies again; dependents cancelled because this task failed stay
        cancelled (requeue them too).
        """
        return await (await self._ready()).requeue(plain_id(task_id))

    async def requeue_all(
        self, *, status: TaskStatus | str = TaskStatus.FAILED, queue: str | None = None
    ) -> int:
        """:meth:`requeue` every task in ``status`` (``failed`` by default; ``cancelled``
        or ``expired`` too), of ``queue`` only when given; how many were requeued. Works
        a page at a time: each requeued task leaves the listing."""
        count = 0
        while True:
            page = await self.list_tasks(queue=queue, status=status, limit=500)
            done = sum([await self.requeue(task.id) for task in page])
            count += done
            if not done:
                return count

    async def list_workers(self) -> list[WorkerInfo]:
        """The worker pools running now on this client's task queue, in any process or
        host, by id: each registers when it starts, beats every third of its
        ``lease_seconds``, and deregisters when it stops; one that died drops out once
        a ``lease_seconds`` has passed without a heartbeat."""
        return await (await self._ready()).list_workers()

    # -- limits ------------------------------------------------------------------------

    async def list_limits(self) -> list[LimitInfo]:
        """The global limits stored in the backend (SPEC §8 "Limits"), as
        :class:`~omniq.models.LimitInfo` items: each queue's set with :meth:`limit_queue`
        (``scope="queue"``), then each task name's from ``@oq.task(rate_limit=...,
        max_concurrency=...)`` (``scope="task"``, stored when a task of that name is first
        submitted), each by name. Reading them starts nothing and takes no slot.

        Example::

            for info in await oq.list_limits():
                print(info.scope, info.name, info.rate_limit, info.max_concurrency)
        """
        return await (await self._ready()).list_limits()

    async def limit_queue(
        self,
        queue: str,
        *,
        rate_limit: str | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        """Cap how often tasks of ``queue`` start (``rate_limit``: ``"N/s"``, ``"N/m"``,
        ``"N/h"``) and how many run at once (``max_concurrency``), across every worker
        that shares the backend, including workers started before the call. The limits
        are stored in the backend; ``limit_queue(queue)`` with neither removes them. A
        task held back by a limit stays waiting (no attempt spent). A bad value raises
        ``ConfigError``.

        Example::

            await oq.limit_queue("mail", rate_limit="100/m", max_concurrency=4)
            await oq.limit_queue("mail")          # no limits again
        """
        await (await self._ready()).limit_queue(
            queue, rate_limit=rate_limit, max_concurrency=max_concurrency
        )
