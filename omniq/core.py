"""The orchestrator: ``AsyncOmniQ`` (written once, async) and ``OmniQ`` (its blocking twin).

``AsyncOmniQ`` owns the three storage components (task queue, results, events; each on
its own backend if you like), the serializer and the event logger, and implements the
public API of SPEC §2 on top of the storage primitives of ``omniq.storage.base``.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

import msgspec

from omniq import _callables, _fork, _sync
from omniq._ids import new_task_id, new_task_ids
from omniq._loops import LoopBinding
from omniq.backend import backend_for_url
from omniq.config import Duration, LoggingConfig, Settings, parse_duration
from omniq.decisions import (
    CANCELLED,
    cancelled_result,
    enqueued_events,
    final_result,
    is_expired,
    unnamed_events,
)
from omniq.errors import (
    ConfigError,
    DependencyFailedError,
    ResultTimeoutError,
    SerializationError,
    StorageConnectionError,
    StorageError,
    TaskArgumentError,
    TaskNotFoundError,
)
from omniq.events import AsyncEventLogger, AsyncEventProcessor
from omniq.models import (
    FINAL_STATUSES,
    WAITING_STATUSES,
    ErrorInfo,
    EventType,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    utcnow,
)
from omniq.serialization import SerializationManager
from omniq.storage._bundle import Components
from omniq.storage.base import (
    BaseEventStorage,
    BaseResultStorage,
    BaseScheduleStorage,
    BaseStorage,
    BaseTaskQueue,
)

if TYPE_CHECKING:
    from omniq.scheduling import AsyncScheduler
    from omniq.workers.pool import AsyncWorkerPool

__all__ = ["AsyncOmniQ", "AsyncTaskFunction"]

logger = logging.getLogger("omniq")

P = ParamSpec("P")
R = TypeVar("R")
#: A duration argument: seconds, a ``timedelta`` or a string like ``"30s"``, ``"5m"``.
Seconds = Duration
Component = Literal["task_queue", "result_storage", "event_storage"]
#: How long a ``get_result`` waiter gives a task that just became final to show its
#: result: one ended by ``cancel()`` or its ttl stores it right after the status change.
_RESULT_GRACE = timedelta(seconds=1)

#: ``submit``'s options; ``@oq.task`` takes them all, ``enqueue_many`` all but ``depends_on``
#: and ``task_id``.
SUBMIT_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "delay",
        "eta",
        "ttl",
        "max_retries",
        "retry_delay",
        "timeout",
        "result_ttl",
        "depends_on",
        "task_id",
    }
)
# Keyword arguments that, given to enqueue(), were meant for submit().
_SUBMIT_WORDS = SUBMIT_OPTIONS | {"args", "kwargs"}

_KINDS: dict[Component, type[BaseStorage]] = {
    "task_queue": BaseTaskQueue,
    "result_storage": BaseResultStorage,
    "event_storage": BaseEventStorage,
}


def _seconds(value: Seconds | None, name: str) -> float | None:
    if value is None:
        return None
    return parse_duration(value, field=f"argument {name}")


def _argument_error(spec: _callables.ArgSpec, problem: tuple[str, str | None]) -> TaskArgumentError:
    """The error for a call ``spec`` refuses, with a hint when the keyword at fault is
    one of submit's options (``enqueue(send, "hi", eta=...)``)."""
    message, keyword = problem
    text = f"task {spec.name}() {message}"
    if keyword in _SUBMIT_WORDS:
        text += (
            f"; did you mean submit(..., {keyword}=...)? enqueue() and .delay() pass every "
            "keyword argument to the task; options go through submit()"
        )
    return TaskArgumentError(text)


def _check_option_names(where: str, options: Iterable[str], allowed: frozenset[str]) -> None:
    """ConfigError for an option name ``where`` does not take, with the nearest one."""
    unknown = sorted(set(options) - allowed)
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"{where} does not take {unknown[0]!r}{hint}; its options are {', '.join(sorted(allowed))}"
    )


def _component(component: Component, spec: Any) -> Any:
    """A storage argument checked at construction: a URL, None, False (events only) or
    a storage instance of the right kind; a blocking twin (``SQLiteQueue``) stands for
    the async instance it drives."""
    if spec is None or isinstance(spec, str):
        return spec
    if spec is False:
        if component == "event_storage":
            return spec
        raise ConfigError(f"argument {component}=False: only event_storage can be off")
    inner = _sync.twin_target(spec)
    if inner is not None:
        if _sync.twin_in_use(spec):
            # Its connections belong to its own loop; this client runs another.
            raise ConfigError(
                f"argument {component}={spec!r}: this {type(spec).__name__} is open on its "
                "own event loop; pass it unconnected (the client connects and closes it), "
                "or close it first"
            )
        spec = inner
    kind = _KINDS[component]
    if isinstance(spec, kind):
        return spec
    fits = [name for name, other in _KINDS.items() if isinstance(spec, other)]
    hint = f"; pass it as {fits[0]}=..." if fits else ""
    raise ConfigError(
        f"argument {component}={spec!r}: expected a URL, a {kind.__name__} instance "
        f"(async or blocking) or None{hint}"
    )


def _options_probe() -> None:
    """A stand-in task function: ``@oq.task`` builds one task of it to check its options."""


def _misplaced_settings(value: object) -> ConfigError:
    """The error for a first positional argument that is not a ``Settings``."""
    target = _sync.twin_target(value)
    fits = [name for name, kind in _KINDS.items() if isinstance(target or value, kind)]
    if fits:
        hint = f"a storage goes by keyword: pass it as {fits[0]}=..."
    elif isinstance(value, str):
        hint = (
            "a URL goes by keyword: pass it as task_queue=..., result_storage=... "
            "or event_storage=..."
        )
    else:
        hint = "expected a Settings (or None); Settings fields can also be passed as keywords"
    return ConfigError(f"argument settings={value!r}: {hint}")


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
            raise _misplaced_settings(settings)
        if settings is None:
            settings = Settings.load(**overrides)
        elif overrides:
            settings = settings.replace(**overrides)
        self.settings = settings
        self._specs: dict[Component, Any] = {
            "task_queue": _component("task_queue", task_queue),
            "result_storage": _component("result_storage", result_storage),
            "event_storage": _component("event_storage", event_storage),
        }
        self.serializer = SerializationManager(
            mode=settings.serializer, secret_key=settings.secret_key
        )
        self._backends: dict[str, Components] = {}
        self._owned: list[BaseStorage] = []
        self._queue: BaseTaskQueue | None = None
        self._results: BaseResultStorage | None = None
        self._event_store: BaseEventStorage | None = None
        self._schedules: BaseScheduleStorage | None = None
        self.events = AsyncEventLogger(
            None,
            flush_interval=settings.event_flush_interval,
            batch_size=settings.event_batch_size,
        )
        self._registry: dict[str, Callable[..., Any]] = {}
        self._is_connected = False
        # The event loop the client runs on: it follows its caller to a new one.
        self._bound = LoopBinding("this AsyncOmniQ")
        self._connect_lock: asyncio.Lock | None = None
        self._pools: set[AsyncWorkerPool] = set()
        self._scheduler: AsyncScheduler | None = None
        # Storage instances given to this client and connected before a fork: unusable
        # in the child (their connections are the parent's), so refused there.
        self._inherited_instances: set[Component] = set()
        _fork.track(self)

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
        # Connected, and on the running loop (or asked outside any loop): a caller on a
        # new loop reads False, so its call goes through connect(), which follows it.
        if not self._is_connected:
            return False
        running = asyncio._get_running_loop()
        return running is None or running is self._bound.loop

    async def connect(self) -> None:
        """Open the storages (done on first use too). Safe to call twice.

        A client follows its caller from one event loop to the next (``asyncio.run``
        twice, a loop per test): its storages reconnect on the new loop. It serves one
        loop at a time: a call from another loop while the first still runs (in another
        thread) raises ``EventLoopError``.
        """
        if self._connected:
            return
        self._follow_loop()
        if self._is_connected:
            return  # on a new loop: the storages follow by themselves
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._is_connected:  # another caller connected while this one waited
                return  # type: ignore[unreachable]
            LoggingConfig.from_settings(self.settings).apply()
            try:
                self._queue = await self._open("task_queue", BaseTaskQueue)
                self._results = await self._open("result_storage", BaseResultStorage)
                events = await self._open("event_storage", BaseEventStorage)
            except BaseException:
                await self._close_storages()
                raise
            self._event_store = events
            self.events.storage = events
            self._is_connected = True

    def _follow_loop(self) -> None:
        if self._bound.moved():
            # The old loop ended its pools (asyncio.run cancels their tasks); the storages
            # and the event logger follow to the new loop by themselves.
            self._pools = set()
            self._connect_lock = None

    async def _open_schedules(self) -> AsyncScheduler:
        """The scheduler, on the schedule store of the task queue's backend."""
        if self._scheduler is not None:
            return self._scheduler
        from omniq.errors import ScheduleError
        from omniq.scheduling import AsyncScheduler

        spec = self._specs["task_queue"]
        if isinstance(spec, BaseStorage):
            store = getattr(spec, "schedule_storage", None)
            if not isinstance(store, BaseScheduleStorage):
                raise ScheduleError(
                    "schedules live on the task queue's backend: pass task_queue as a URL "
                    "(or a queue with a schedule_storage attribute) to use them"
                )
        else:
            url = spec if isinstance(spec, str) else self.settings.storage_url("task_queue")
            assert url is not None
            store = self._backend(url).schedule_storage()
        await store.connect()
        self._owned.append(store)
        self._schedules = store
        self._scheduler = AsyncScheduler(self, store)
        return self._scheduler

    async def _open(self, component: Component, kind: type[Any]) -> Any:
        spec = self._specs[component]
        if spec is False:
            if component != "event_storage":
                raise ConfigError(f"argument {component}=False: only event_storage can be off")
            return None
        if isinstance(spec, BaseStorage):
            if not isinstance(spec, kind):
                raise ConfigError(f"argument {component}: expected a {kind.__name__} instance")
            if component in self._inherited_instances:
                raise ConfigError(
                    f"argument {component}: this storage instance was connected in the "
                    "parent before this process was forked; its connections are the "
                    "parent's. Create the client in the child, or pass URLs (a client "
                    "built from URLs reconnects in a forked child by itself)"
                )
            await spec.connect()
            self._owned.append(spec)
            return spec
        if spec is None:
            url = self.settings.storage_url(component)
            if url is None:
                return None
        elif isinstance(spec, str):
            url = spec
        else:
            raise ConfigError(
                f"argument {component}={spec!r}: expected a URL, a storage instance or None"
            )
        backend = self._backend(url)
        storage = getattr(backend, component)()
        await storage.connect()
        self._owned.append(storage)
        return storage

    def _after_fork_in_child(self) -> list[Any]:
        """In a forked child: forget the parent's connections, pools and buffered events
        (the parent writes those); the next call connects anew."""
        dropped: list[Any] = [
            self._backends,
            self._owned,
            self.events,
            self._pools,
            self._scheduler,
            self._connect_lock,
        ]
        if self._is_connected:
            self._inherited_instances = {
                component
                for component, spec in self._specs.items()
                if isinstance(spec, BaseStorage) and spec in self._owned
            }
        self._backends = {}
        self._owned = []
        self._queue = self._results = self._event_store = self._schedules = None
        self._scheduler = None
        self._pools = set()
        self._connect_lock = None
        self._is_connected = False
        # The parent's loop may still look like it runs (in a thread that did not come).
        self._bound = LoopBinding("this AsyncOmniQ")
        self.events = self._fresh_event_logger()
        return dropped

    def _fresh_event_logger(self) -> AsyncEventLogger:
        """A logger without storage (``connect`` gives it one), keeping the handlers."""
        fresh = AsyncEventLogger(
            None,
            flush_interval=self.settings.event_flush_interval,
            batch_size=self.settings.event_batch_size,
        )
        for handler in self.events._handlers:
            fresh.add_handler(handler)
        return fresh

    def _backend(self, url: str) -> Components:
        backend = self._backends.get(url)
        if backend is None:
            backend = self._backends[url] = backend_for_url(url, self.settings)
        return backend

    async def close(self) -> None:
        """Stop this client's running worker pools (gracefully, as ``pool.stop()``),
        flush events and release the storages. Safe to call twice.

        Closing is not final: a later call on this client connects again, with the same
        settings and storages (and needs ``close()`` again to release them).
        """
        if not self._is_connected:
            return
        self._follow_loop()
        for pool in list(self._pools):
            # A pool left running would go on with closed storages; its tasks would stay
            # leased (and run again elsewhere) when their lease ran out.
            await pool.stop()
        try:
            await self.events.close()
        finally:
            await self._close_storages()
            self._is_connected = False
            await self._bound.detach()
            self.events = self._fresh_event_logger()

    async def _close_storages(self) -> None:
        owned, self._owned = self._owned, []
        for storage in reversed(owned):
            try:
                await storage.close()
            except Exception:
                logger.exception("closing %r failed", storage)
        self._queue = self._results = self._event_store = self._schedules = None
        self._scheduler = None

    async def __aenter__(self) -> AsyncOmniQ:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def queue(self) -> BaseTaskQueue:
        """The connected task queue component."""
        if self._queue is None:
            raise ConfigError("AsyncOmniQ is not connected: await connect() first")
        return self._queue

    @property
    def results(self) -> BaseResultStorage:
        """The connected result storage component."""
        if self._results is None:
            raise ConfigError("AsyncOmniQ is not connected: await connect() first")
        return self._results

    @property
    def event_storage(self) -> BaseEventStorage | None:
        """The connected event storage, or None when events are off."""
        return self._event_store

    # -- submitting --------------------------------------------------------------------

    def _build_task(
        self,
        func: Callable[..., Any] | str,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        *,
        now: datetime,
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
    ) -> Task:
        settings = self.settings
        path, carried, spec = self._task_function(func)
        payload = self._call_payload(carried, args, kwargs)
        if spec is not None:
            problem = spec.problem(args, kwargs)
            if problem is not None:
                raise _argument_error(spec, problem)
        if eta is not None:
            if not isinstance(eta, datetime) or eta.tzinfo is None:
                raise ConfigError(f"argument eta={eta!r}: expected an aware datetime")
            if delay is not None:
                raise ConfigError("arguments delay and eta: give one, not both")
            due_at: datetime | None = eta.astimezone(UTC)
        else:
            seconds = _seconds(delay, "delay")
            due_at = now + timedelta(seconds=seconds) if seconds else None
        ttl_s = _seconds(ttl, "ttl") if ttl is not None else settings.task_ttl
        deps = tuple(depends_on)
        if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
            raise ConfigError(f"argument max_retries={max_retries!r}: expected an integer >= 0")
        if not isinstance(priority, int):
            raise ConfigError(f"argument priority={priority!r}: expected an integer")
        return Task(
            id=task_id or new_task_id(),
            func=path,
            payload=payload,
            queue=queue or settings.default_queue,
            priority=priority,
            status=TaskStatus.SCHEDULED if (due_at is not None or deps) else TaskStatus.PENDING,
            max_retries=settings.max_retries if max_retries is None else max_retries,
            retry_delay=(
                settings.retry_delay
                if retry_delay is None
                else _seconds(retry_delay, "retry_delay") or 0.0
            ),
            timeout=settings.task_timeout if timeout is None else _seconds(timeout, "timeout"),
            due_at=due_at,
            expires_at=now + timedelta(seconds=ttl_s) if ttl_s else None,
            result_ttl=(
                settings.result_ttl if result_ttl is None else _seconds(result_ttl, "result_ttl")
            ),
            depends_on=deps,
            created_at=now,
        )

    def _task_function(
        self, func: Callable[..., Any] | str
    ) -> tuple[str, Any, _callables.ArgSpec | None]:
        """The import path a task records, the callable itself when it must travel in
        the payload (it has no importable path), and the signature its arguments are
        checked against (None: unknown here, or not inspectable; not checked).

        A string is a name registered with ``@oq.task``, ``"module:qualname"`` or
        ``"package.module.function"``; one the producer can import is checked and
        stored as ``"module:qualname"``, one it cannot is stored as given (the worker
        resolves it).
        """
        if isinstance(func, str):
            registered = self._registry.get(func)
            if registered is not None:
                return func, None, _callables.arg_spec(registered)
            if ":" in func or _callables.is_dotted_path(func):
                stored, target = _callables.locate(func)
                return stored, None, None if target is None else _callables.arg_spec(target)
            raise ConfigError(
                f"task function {func!r}: expected 'package.module:qualname', "
                "'package.module.function' or a name registered with @oq.task"
            )
        if callable(func):
            found = _callables.callable_path(func)
            spec = _callables.arg_spec(func)
            return (found, None, spec) if found else (_callables.describe(func), func, spec)
        raise ConfigError(
            f"task function {func!r}: expected a callable, 'module:qualname' or "
            "'package.module.function'"
        )

    def _call_payload(
        self, carried: Any, args: Sequence[Any], kwargs: dict[str, Any] | None
    ) -> bytes:
        if not isinstance(args, (tuple, list)):
            raise ConfigError(f"args={args!r}: expected a tuple or list of arguments")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ConfigError(f"kwargs={kwargs!r}: expected a dict of keyword arguments")
        return self.serializer.dumps_call(carried, tuple(args), kwargs or {})

    async def _store_new(
        self, tasks: Sequence[Task], now: datetime, *, log_later: bool = False
    ) -> list[str]:
        """Store new tasks and log their ``ENQUEUED`` (and ``SCHEDULED``) events.

        When the queue can write into the event storage (the same Redis), the events go
        in the same call as their tasks: no second write, and never one without the other.
        Otherwise the logger writes them in the background.

        ``log_later``: events that cannot go with the tasks are left to the caller, who
        logs them with :meth:`_log_stored` once it knows they are its to log (several
        workers may store the same schedule tick; only the one that claims it logs).
        """
        queue, events = self.queue, self.events
        storage = events.storage
        if self._events_ride_enqueue():
            assert storage is not None
            ids = await queue.enqueue_logged(tasks, unnamed_events(tasks, now), storage)
            if events._handlers and not log_later:
                events.announce(event for task in tasks for event in enqueued_events(task, now))
            return ids
        ids = await queue.enqueue(tasks)
        if not log_later and (events.enabled or events._handlers):
            events.log_many(event for task in tasks for event in enqueued_events(task, now))
        return ids

    def _events_ride_enqueue(self) -> bool:
        """True when the queue writes new tasks' events in the call that stores them."""
        storage = self.events.storage
        return storage is not None and self.queue.writes_events(storage)

    def _log_stored(self, tasks: Sequence[Task], now: datetime) -> None:
        """The events of tasks stored with ``_store_new(log_later=True)``: logged now, or
        only handed to this client's handlers where the store already wrote them."""
        events = self.events
        if not (events.enabled or events._handlers):
            return
        fresh = (event for task in tasks for event in enqueued_events(task, now))
        if self._events_ride_enqueue():
            if events._handlers:
                events.announce(fresh)
        else:
            events.log_many(fresh)

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
        if not self._connected:
            await self.connect()
        now = utcnow()
        task = self._build_task(
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
        queue_store = self.queue
        if task_id is not None and await queue_store.get(task_id) is not None:
            return task_id
        if task.depends_on:
            return await self._submit_dependent(task, now)
        await self._store_new([task], now)
        return task.id

    async def _submit_dependent(self, task: Task, now: datetime) -> str:
        queue_store = self.queue
        deps = await queue_store.get_many(list(task.depends_on))
        for dep_id, dep in zip(task.depends_on, deps, strict=True):
            if dep is None:
                raise TaskNotFoundError(f"task {task.id} depends on {dep_id}, which does not exist")
        await self._store_new([task], now)
        # Dependencies may have finished before the dependent was stored: settle it now,
        # so no completion is missed between the check and the insert.
        await self._settle_dependent(task.id)
        return task.id

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
        self, func: Callable[..., Any] | str, args_list: Iterable[Sequence[Any]], **options: Any
    ) -> list[str]:
        """One task per argument tuple in ``args_list``, in as few round trips as possible.

        ``options`` are :meth:`submit`'s, but ``task_id`` and ``depends_on``. Each tuple
        is checked against the function's signature as in :meth:`submit`.
        """
        if not self._connected:
            await self.connect()
        if "task_id" in options or "depends_on" in options:
            raise ConfigError("enqueue_many does not take task_id or depends_on; use submit")
        _check_option_names("enqueue_many()", options, SUBMIT_OPTIONS)
        now = utcnow()
        calls = iter(args_list)
        first = next(calls, None)
        if first is None:
            return []
        # Options are checked once; the other tasks differ from the first only in id and
        # arguments.
        proto = self._build_task(func, first, None, now=now, **options)
        _, carried, spec = self._task_function(func)
        replace = msgspec.structs.replace
        payload = self._call_payload
        rest = list(calls)
        tasks = [proto]
        tasks += [
            replace(proto, id=task_id, payload=payload(carried, args, None))
            for task_id, args in zip(new_task_ids(len(rest)), rest, strict=True)
        ]
        if spec is not None:
            # Without keyword arguments only the count can differ: one check per count.
            arities = {len(first)}
            for args in rest:
                if len(args) not in arities:
                    problem = spec.problem(args, None)
                    if problem is not None:
                        raise _argument_error(spec, problem)
                    arities.add(len(args))
        return await self._store_new(tasks, now)

    # -- reading -----------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        """The task with its current status and attempts, or None.

        A task that never started and is past its ``ttl`` reads ``EXPIRED`` (it is
        expired here, with its result and event, if no worker did it yet).
        """
        if not self._connected:
            await self.connect()
        task = await self.queue.get(task_id)
        if task is not None and is_expired(task, utcnow()):
            task = await self._expire(task)
        return task

    async def _expire(self, task: Task) -> Task | None:
        """Expire a waiting task past its ttl (no queue serves it, or none did yet), and
        return it as it now stands."""
        message = f"not started within its ttl (expired at {task.expires_at})"
        error = ErrorInfo(type="omniq.TaskExpired", message=message)
        await self._finish_waiting(task.id, TaskStatus.EXPIRED, error, EventType.EXPIRED, utcnow())
        return await self.queue.get(task.id)

    def _decode_result(self, stored: TaskResult) -> TaskResult:
        data = stored.result
        if data is None or not isinstance(data, bytes):
            return stored
        try:
            value = self.serializer.loads(data)
        except SerializationError as exc:
            error = ErrorInfo(type="omniq.errors.SerializationError", message=str(exc))
            return msgspec.structs.replace(stored, result=None, error=stored.error or error)
        return msgspec.structs.replace(stored, result=value)

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
        if not self._connected:
            await self.connect()
        stored = await self.results.get(task_id)
        if stored is None and wait:
            limit = _seconds(timeout, "timeout")
            loop = asyncio.get_running_loop()
            deadline = None if limit is None else loop.time() + limit
            while stored is None:
                now = utcnow()
                look_again, gone = await self._while_no_result(task_id, now)
                if gone:
                    # Results are stored before tasks are acknowledged: read once more.
                    stored = await self.results.get(task_id)
                    break
                remaining = 60.0 if deadline is None else deadline - loop.time()
                if remaining <= 0:
                    raise ResultTimeoutError(f"no result for task {task_id} within {limit} s")
                chunk = min(remaining, 60.0)
                if look_again is not None:
                    chunk = min(chunk, max(0.001, (look_again - now).total_seconds()))
                stored = await self.results.wait(task_id, chunk)
        return None if stored is None else self._decode_result(stored)

    async def _while_no_result(self, task_id: str, now: datetime) -> tuple[datetime | None, bool]:
        """What a ``get_result`` waiter that found no result should do: (when to look at
        the task again, None for "at leisure"; True when no result is coming).

        A final task's result was stored before it became final, but for a task ended
        by ``cancel()`` or ``ttl``: that result follows the status change at once, so a
        task final for under a second is given that second. Raises TaskNotFoundError for
        an id the queue does not hold.
        """
        try:
            task = await self.queue.get(task_id)
        except StorageConnectionError:
            raise
        except StorageError:
            return None, False  # an unreadable record: its worker will store a result
        if task is None:
            raise TaskNotFoundError(
                f"task {task_id} does not exist (never enqueued, or cleaned up)"
            )
        if is_expired(task, now):
            task = await self._expire(task) or task
        if task.status in FINAL_STATUSES:
            settled = (task.updated_at or task.created_at) + _RESULT_GRACE
            return (settled, False) if now < settled else (None, True)
        if task.expires_at is not None and task.attempts == 0:
            return task.expires_at, False
        return None, False

    async def get_events(self, task_id: str) -> list[TaskEvent]:
        """The task's lifecycle events, oldest first (``[]`` with events off)."""
        if not self._connected:
            await self.connect()
        await self.events.flush()
        return await AsyncEventProcessor(self._event_store).get(task_id)

    async def list_tasks(
        self, *, queue: str | None = None, status: TaskStatus | str | None = None, limit: int = 100
    ) -> list[Task]:
        """Tasks, newest first, filtered by queue and status (a task that never started
        and is past its ttl is expired as it is listed, as ``get_task`` does)."""
        if not self._connected:
            await self.connect()
        if status is not None:
            try:
                status = TaskStatus(status)
            except ValueError:
                choices = ", ".join(s.value for s in TaskStatus)
                raise ConfigError(f"status={status!r}: expected one of {choices}") from None
        tasks = await self.queue.list(queue=queue, status=status, limit=limit)
        now = utcnow()
        if not any(is_expired(task, now) for task in tasks):
            return tasks
        listed = []
        for task in tasks:
            if is_expired(task, now):
                expired = await self._expire(task)
                if expired is None or (status is not None and expired.status is not status):
                    continue
                task = expired
            listed.append(task)
        return listed

    async def stats(self) -> dict[str, dict[str, int]]:
        """Task counts per queue and status."""
        if not self._connected:
            await self.connect()
        return await self.queue.stats()

    # -- finishing (shared with the workers) ---------------------------------------------

    async def _finish_waiting(
        self, task_id: str, status: TaskStatus, error: ErrorInfo, event: EventType, now: datetime
    ) -> bool:
        """Move a task that is not running to a final state, with result, event and
        dependents settled. False if it was not waiting (or running, for cancel)."""
        from_statuses = set(WAITING_STATUSES)
        if status is TaskStatus.CANCELLED:
            from_statuses.add(TaskStatus.RUNNING)
        task = await self.queue.transition(
            task_id, from_statuses=from_statuses, to_status=status, now=now
        )
        if task is None:
            return False
        result = (
            cancelled_result(task, now=now)
            if error is CANCELLED
            else final_result(task, status, error=error, now=now)
        )
        await self.results.put(result)
        await self._log_now(
            TaskEvent(
                task_id=task_id,
                event_type=event,
                timestamp=now,
                attempt=task.attempts,
                message=error.message,
                queue=task.queue,
            )
        )
        await self._on_finished([(task_id, status)])
        return True

    async def _log_now(self, event: TaskEvent) -> None:
        """Log an event and store it before returning (a task's final event is stored
        no later than its result is read); the logger keeps it if the store fails."""
        events = self.events
        if events.storage is None:
            events.announce((event,))
            return
        events.log(event)
        await events.flush()

    async def _on_finished(
        self,
        finished: Sequence[tuple[str, TaskStatus]],
        found: dict[str, list[Task]] | None = None,
    ) -> None:
        """Release or cancel the dependents of tasks that just reached a final state
        (``found``: their dependents, when the caller already looked them up)."""
        if not finished:
            return
        if found is None:
            found = await self.queue.dependents_many([task_id for task_id, _ in finished])
        if not found:
            return
        for task_id, status in finished:
            for dependent in found.get(task_id, ()):
                if dependent.status is not TaskStatus.SCHEDULED:
                    continue
                if status is TaskStatus.COMPLETE:
                    await self._settle_dependent(dependent.id)
                else:
                    exc = DependencyFailedError(task_id, status.value)
                    await self._finish_waiting(
                        dependent.id,
                        TaskStatus.CANCELLED,
                        ErrorInfo.from_exception(exc, with_traceback=False),
                        EventType.CANCELLED,
                        utcnow(),
                    )

    async def _settle_dependent(self, task_id: str) -> None:
        task = await self.queue.get(task_id)
        if task is None or task.status is not TaskStatus.SCHEDULED or not task.depends_on:
            return
        deps = await self.queue.get_many(list(task.depends_on))
        for dep_id, dep in zip(task.depends_on, deps, strict=True):
            dep_status = dep.status if dep is not None else None
            if dep_status in FINAL_STATUSES and dep_status is not TaskStatus.COMPLETE:
                assert dep_status is not None
                exc = DependencyFailedError(dep_id, dep_status.value)
                await self._finish_waiting(
                    task_id,
                    TaskStatus.CANCELLED,
                    ErrorInfo.from_exception(exc, with_traceback=False),
                    EventType.CANCELLED,
                    utcnow(),
                )
                return
        if all(dep is not None and dep.status is TaskStatus.COMPLETE for dep in deps):
            # The backend wakes idle workers when the task becomes claimable.
            await self.queue.transition(
                task_id,
                from_statuses={TaskStatus.SCHEDULED},
                to_status=TaskStatus.PENDING,
                now=utcnow(),
                due_at=task.due_at,
            )

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
        if not self._connected:
            await self.connect()
        cancelled = await self._finish_waiting(
            task_id, TaskStatus.CANCELLED, CANCELLED, EventType.CANCELLED, utcnow()
        )
        if cancelled:
            # Pools in other processes hear of it through the queue (watch_cancels).
            for pool in list(self._pools):
                pool.cancel_local(task_id)
        return cancelled

    async def cleanup(self) -> dict[str, int]:
        """Drop expired results, finished tasks past ``result_ttl`` and old events."""
        if not self._connected:
            await self.connect()
        now = utcnow()
        counts = {"results": await self.results.delete_expired(now)}
        retention = self.settings.result_ttl
        counts["tasks"] = (
            await self.queue.delete_finished(now - timedelta(seconds=retention)) if retention else 0
        )
        event_ttl = self.settings.event_ttl
        counts["events"] = (
            await self._event_store.delete_before(now - timedelta(seconds=event_ttl))
            if self._event_store is not None and event_ttl
            else 0
        )
        return counts

    # -- schedules -----------------------------------------------------------------------

    async def schedule(
        self,
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
        if not self._connected:
            await self.connect()
        scheduler = await self._open_schedules()
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
        if not self._connected:
            await self.connect()
        return await (await self._open_schedules()).pause(schedule_id)

    async def resume_schedule(self, schedule_id: str) -> bool:
        """Let a paused schedule fire again (from its next tick after now); False if unknown."""
        if not self._connected:
            await self.connect()
        return await (await self._open_schedules()).resume(schedule_id)

    async def remove_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; False if unknown."""
        if not self._connected:
            await self.connect()
        return await (await self._open_schedules()).remove(schedule_id)

    async def list_schedules(self) -> list[Schedule]:
        """All schedules, by id."""
        if not self._connected:
            await self.connect()
        return await (await self._open_schedules()).list()

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """One schedule, or None."""
        if not self._connected:
            await self.connect()
        return await (await self._open_schedules()).get(schedule_id)

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
        _check_option_names("@oq.task()", task_options, SUBMIT_OPTIONS)

        def register(f: Callable[P, R]) -> AsyncTaskFunction[P, R]:
            task_name = name or _callables.callable_path(f) or _callables.describe(f)
            # Bad option values fail now, not at the first delay(): build one task with
            # them (of a stand-in function: ``f`` may be a closure dill cannot carry).
            self._build_task(_options_probe, (), None, now=utcnow(), **task_options)
            self._registry[task_name] = f
            return self._wrap_task(f, task_name, task_options)

        return register(func) if func is not None else register

    def _wrap_task(
        self, func: Callable[P, R], name: str, options: dict[str, Any]
    ) -> AsyncTaskFunction[P, R]:
        return AsyncTaskFunction(self, func, name, options)

    def resolve(self, name: str) -> Callable[..., Any]:
        """The callable behind a task's ``func`` name: registered first, then imported."""
        found = self._registry.get(name)
        return found if found is not None else _callables.resolve(name)

    def worker(
        self,
        *,
        worker_type: str | None = None,
        concurrency: int | None = None,
        queues: Sequence[str] | str | None = None,
        queue_order: str | None = None,
    ) -> AsyncWorkerPool:
        """A worker pool over this client's storages (not started).

        ``worker_type``: ``"async"``, ``"thread"``, ``"process"`` or ``"gevent"``.
        ``queues``: a name, a list of names or ``"a,b"``; None is the ``default_queue``
        setting. ``queue_order``: ``"merged"`` or ``"strict"``; None is the
        ``queue_order`` setting (``"merged"`` unless configured). Any other value raises
        ``ConfigError`` (a ``ValueError``).

        With ``"merged"``, several queues are served as one, not in the order listed: on
        every backend a claim takes, across all of them, the tasks of higher
        ``priority`` first, then the earlier due time (a task not delayed is due when
        enqueued), then the earlier enqueued. So ``queues=["high", "low"]`` runs an older
        ``low`` task before a newer ``high`` one of the same priority.

        With ``"strict"``, the list order comes first, as in an RQ worker: each claim
        takes from the first listed queue that has claimable work and fills its batch
        from the next queues only when the earlier ones have nothing more to claim
        (within a queue: priority, then due time, then enqueue order). So
        ``worker(queues=["high", "low"], queue_order="strict")`` starts a ``low`` task
        only when ``high`` has nothing claimable, and a steady flow into ``high`` can keep
        ``low`` waiting indefinitely: run a worker of its own for ``low`` if it must
        progress. A pool with ``concurrency`` above 1 may start a ``low`` task in a batch
        that ``high`` could not fill, and keeps running it when ``high`` work arrives.

        A ``"gevent"`` worker runs its tasks as greenlets of one thread: a task that
        computes without yielding (CPU-bound, or blocked in a call gevent does not
        patch) holds up every other task of that worker until it returns, even past its
        timeout, which is reported (with a WARNING in the log) but cannot stop it. Run
        CPU-bound work in ``"process"`` workers.

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
