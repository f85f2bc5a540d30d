"""The engine under the client: a task's life from its submit to its final result.

:class:`Engine` owns what one client works with: its storages, its event logger, the
task builder, the scheduler and the registry of its running worker pools. It stores new
tasks with their events, finishes tasks that are not running (a cancel, an expiry, a
failed dependency) with their result and event, releases or cancels dependents, and
reads results back. ``AsyncOmniQ`` is the facade over it; the worker pools and the
scheduler use it through its methods, never a client's private members. The decisions
themselves (a final result, the events an enqueue logs, what a worker does with a task
it claimed) are pure functions in :mod:`omniq.decisions`.

An engine follows its caller from one event loop to the next (:mod:`omniq._loops`) and
starts afresh in a forked child (:mod:`omniq._fork`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from omniq import _dependents, _fork, _requeue, _result_wait
from omniq._building import TaskBuilder
from omniq._enqueue_batching import EnqueueBatcher
from omniq._limits import Limit, queue_key, task_limits
from omniq._loops import LoopBinding
from omniq._storages import Component, Storages
from omniq._tracing import Tracing
from omniq._urls import is_shared_store
from omniq.config import LoggingConfig, Settings
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
    SerializationError,
    TaskNotFoundError,
)
from omniq.events import AsyncEventLogger, AsyncEventProcessor
from omniq.models import (
    WAITING_STATUSES,
    ErrorInfo,
    EventType,
    LimitInfo,
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
    from omniq.scheduling import AsyncScheduler

__all__ = ["KEY_FILE", "Engine", "RunningPool", "serializer_for"]

logger = logging.getLogger("omniq")


#: The file under ``base_dir`` that holds the signing key of an embedded store.
KEY_FILE = "secret_key"


def serializer_for(settings: Settings, queue: Any) -> SerializationManager:
    """The serializer of a client whose task queue is ``queue`` (its argument: a URL, a
    storage instance, or None for the settings' URL).

    Decided once, from where the tasks are kept. With ``secret_key`` every dill payload
    is signed with it. Without it, a queue in this host's own files (SQLite, local files,
    memory) signs with a key kept in ``base_dir`` (made on first use, mode 0600): who can
    write that store can already act as its user. On a shared store (a server, an object
    store; or an instance whose URL is unknown) dill is refused unless
    ``allow_unsigned_dill``: anyone who can write there could otherwise run code in every
    worker. See SECURITY.md.
    """
    url = queue if isinstance(queue, str) else getattr(queue, "url", None)
    if queue is None:
        url = settings.storage_url("task_queue")
    key_file = None
    if not settings.secret_key and isinstance(url, str) and not is_shared_store(url):
        base = os.path.abspath(os.path.expanduser(settings.base_dir))
        key_file = os.path.join(base, KEY_FILE)
    return SerializationManager(
        mode=settings.serializer,
        secret_key=settings.secret_key,
        key_file=key_file,
        allow_unsigned_dill=settings.allow_unsigned_dill,
    )


class RunningPool(Protocol):
    """What the engine asks of a running worker pool."""

    async def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully."""

    def cancel_local(self, task_id: str) -> bool:
        """Stop running ``task_id`` here (it was settled elsewhere)."""

    def wake(self) -> None:
        """Look at the schedules and the queue again now."""


class Engine:
    """A client's storages, event logger and task lifecycle (see the module docstring).

    ``specs`` are the client's checked storage arguments.
    """

    def __init__(self, settings: Settings, specs: dict[Component, Any]) -> None:
        self.settings = settings
        self.serializer = serializer_for(settings, specs.get("task_queue"))
        self.builder = TaskBuilder(settings, self.serializer)
        #: The spans of submits and runs (``tracing=True``; None: tracing off).
        self.tracing = Tracing() if settings.tracing else None
        self.storages = Storages(settings, specs)
        self.events = self._fresh_event_logger(None)
        self._pools: set[RunningPool] = set()
        self._scheduler: AsyncScheduler | None = None
        #: True when the queue stores new tasks' events in the write that stores the tasks,
        #: and when it stores finished tasks' events with their results (set at connect).
        self.enqueue_logs_events = False
        self.finish_logs_events = False
        self._is_connected = False
        # The event loop the engine runs on: it follows its caller to a new one.
        self._bound = LoopBinding("this AsyncOmniQ")
        self._connect_lock: asyncio.Lock | None = None
        # Concurrent calls' new tasks, stored together (made on first use, per loop).
        self._enqueues: EnqueueBatcher[Task, Sequence[TaskEvent]] | None = None
        # The task limits this engine told its queue about (see _register_task_limits).
        self._registered_limits: dict[str, Limit] = {}
        _fork.track(self)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected, and on the running loop (or asked outside any loop): a caller on a
        new loop reads False, so its call goes through :meth:`connect`, which follows it."""
        if not self._is_connected:
            return False
        running = asyncio._get_running_loop()
        return running is None or running is self._bound.loop

    async def connect(self) -> None:
        """Open the storages (done on first use too). Safe to call twice.

        Follows its caller from one event loop to the next; a call from another loop
        while the first still runs (in another thread) raises ``EventLoopError``.
        """
        if self.connected:
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
            await self.storages.open()
            self.events.storage = events = self.storages.events
            # Which writes can span two components, decided once: they share a connection.
            queue = self.queue
            self.enqueue_logs_events = events is not None and queue.writes_events(events)
            self.finish_logs_events = events is not None and queue.finish_logs_events(events)
            self._is_connected = True

    def _follow_loop(self) -> None:
        if self._bound.moved():
            # The old loop ended its pools (asyncio.run cancels their tasks); the storages
            # and the event logger follow to the new loop by themselves.
            self._pools = set()
            self._connect_lock = None
            self._enqueues = None

    async def close(self) -> None:
        """Stop the running worker pools (gracefully), flush events and release the
        storages. Safe to call twice; a later call connects again."""
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
            await self.storages.close()
            self._scheduler = None
            self._is_connected = False
            await self._bound.detach()
            self.events = self._fresh_event_logger(self.events)

    def _after_fork_in_child(self) -> list[Any]:
        """In a forked child: forget the parent's connections, pools and buffered events
        (the parent writes those); the next call connects anew."""
        dropped: list[Any] = [
            *self.storages.after_fork(self._is_connected),
            self.events,
            self._pools,
            self._scheduler,
            self._connect_lock,
        ]
        self._scheduler = None
        self._pools = set()
        self._connect_lock = None
        self._is_connected = False
        # The parent's loop may still look like it runs (in a thread that did not come).
        self._bound = LoopBinding("this AsyncOmniQ")
        self.events = self._fresh_event_logger(self.events)
        return dropped

    def _fresh_event_logger(self, old: AsyncEventLogger | None) -> AsyncEventLogger:
        """A logger without storage (``connect`` gives it one), keeping the handlers."""
        fresh = AsyncEventLogger(
            None,
            flush_interval=self.settings.event_flush_interval,
            batch_size=self.settings.event_batch_size,
        )
        for handler in old.handlers if old is not None else ():
            fresh.add_handler(handler)
        return fresh

    @property
    def queue(self) -> BaseTaskQueue:
        """The connected task queue component."""
        if self.storages.queue is None:
            raise ConfigError("AsyncOmniQ is not connected: await connect() first")
        return self.storages.queue

    @property
    def results(self) -> BaseResultStorage:
        """The connected result storage component."""
        if self.storages.results is None:
            raise ConfigError("AsyncOmniQ is not connected: await connect() first")
        return self.storages.results

    @property
    def event_storage(self) -> BaseEventStorage | None:
        """The connected event storage, or None when events are off."""
        return self.storages.events

    # -- worker pools and the scheduler ------------------------------------------------

    def add_pool(self, pool: RunningPool) -> None:
        """A pool started on this engine (stopped with it, told of local cancels)."""
        self._pools.add(pool)

    def discard_pool(self, pool: RunningPool) -> None:
        """A pool that stopped."""
        self._pools.discard(pool)

    def wake_pools(self) -> None:
        """Have every running pool look at the schedules and the queue again now."""
        for pool in list(self._pools):
            pool.wake()

    async def open_schedules(self) -> AsyncScheduler:
        """The scheduler, on the schedule store of the task queue's backend."""
        if self._scheduler is not None:
            return self._scheduler
        from omniq.scheduling import AsyncScheduler

        store = await self.storages.open_schedules()
        self._scheduler = AsyncScheduler(self, store)
        return self._scheduler

    # -- storing new tasks -----------------------------------------------------------------

    async def store_new(
        self, tasks: Sequence[Task], now: datetime, *, log_later: bool = False
    ) -> list[str]:
        """Store new tasks and log their ``ENQUEUED`` (and ``SCHEDULED``) events.

        When the queue can write into the event storage (the same Redis), the events go
        in the same call as their tasks: no second write, and never one without the other.
        Otherwise the logger writes them in the background.

        ``log_later``: events that cannot go with the tasks are left to the caller, who
        logs them with :meth:`log_stored` once it knows they are its to log (several
        workers may store the same schedule tick; only the one that claims it logs).
        """
        events = self.events
        for task in tasks:  # a loop, not any(<generator>): every enqueue passes here
            if task.rate_limit is not None or task.max_concurrency is not None:
                await self._register_task_limits(tasks)
                break
        if self._enqueues is None:
            self._enqueues = EnqueueBatcher(
                self._write_new, max_in_flight=self.queue.enqueue_writes_in_flight
            )
        if self.enqueue_logs_events:
            await self._enqueues.store(tasks, unnamed_events(tasks, now))
            if events.has_handlers and not log_later:
                events.announce(event for task in tasks for event in enqueued_events(task, now))
            return [task.id for task in tasks]
        await self._enqueues.store(tasks, None)
        if not log_later and (events.enabled or events.has_handlers):
            events.log_many(event for task in tasks for event in enqueued_events(task, now))
        return [task.id for task in tasks]

    async def _write_new(self, tasks: list[Task], events: list[Sequence[TaskEvent]] | None) -> None:
        """One write of new tasks, of one or several concurrent calls (the batcher's)."""
        if events is None:
            await self.queue.enqueue(tasks)
            return
        storage = self.events.storage
        assert storage is not None
        await self.queue.enqueue_logged(tasks, events, storage)

    def log_stored(self, tasks: Sequence[Task], now: datetime) -> None:
        """The events of tasks stored with ``store_new(log_later=True)``: logged now, or
        only handed to the handlers where the store already wrote them."""
        events = self.events
        if not (events.enabled or events.has_handlers):
            return
        fresh = (event for task in tasks for event in enqueued_events(task, now))
        if self.enqueue_logs_events:
            if events.has_handlers:
                events.announce(fresh)
        else:
            events.log_many(fresh)

    async def submit(self, task: Task, now: datetime, *, given_id: bool) -> str:
        """Store one built task: an existing id (``given_id``) is left as it is; the
        dependencies of a dependent must exist."""
        if given_id and await self.queue.get(task.id) is not None:
            return task.id
        if not task.depends_on:
            await self.store_new([task], now)
            return task.id
        deps = await self.queue.get_many(list(task.depends_on))
        for dep_id, dep in zip(task.depends_on, deps, strict=True):
            if dep is None:
                raise TaskNotFoundError(f"task {task.id} depends on {dep_id}, which does not exist")
        await self.store_new([task], now)
        # Dependencies may have finished before the dependent was stored: settle it now,
        # so no completion is missed between the check and the insert.
        await self.settle_dependent(task.id)
        return task.id

    # -- finishing tasks that are not running ----------------------------------------------

    async def finish_waiting(
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
        await self.log_now(
            TaskEvent(
                task_id=task_id,
                event_type=event,
                timestamp=now,
                attempt=task.attempts,
                message=error.message,
                queue=task.queue,
            )
        )
        await self.on_finished([(task_id, status)])
        return True

    async def log_now(self, event: TaskEvent) -> None:
        """Log an event and store it before returning (a task's final event is stored
        no later than its result is read); the logger keeps it if the store fails."""
        events = self.events
        if events.storage is None:
            events.announce((event,))
            return
        events.log(event)
        await events.flush()

    async def on_finished(
        self,
        finished: Sequence[tuple[str, TaskStatus]],
        found: dict[str, list[Task]] | None = None,
    ) -> None:
        """Release or cancel the dependents of tasks that just reached a final state
        (``found``: their dependents, when the caller already looked them up)."""
        await _dependents.on_finished(self.queue, finished, found, self._cancel_dependent)

    async def settle_dependent(self, task_id: str) -> None:
        """Release a dependent whose dependencies all completed; cancel one with a
        dependency that ended otherwise."""
        await _dependents.settle(self.queue, task_id, self._cancel_dependent)

    async def sweep_dependents(self, limit: int = _dependents.SWEEP_LIMIT) -> int:
        """Settle the dependents left ``SCHEDULED`` after all their dependencies ended
        (see :func:`omniq._dependents.sweep`); how many were settled."""
        return await _dependents.sweep(self.queue, limit, self._cancel_dependent)

    async def _cancel_dependent(self, task_id: str, dep_id: str, dep_status: TaskStatus) -> None:
        exc = DependencyFailedError(dep_id, dep_status.value)
        await self.finish_waiting(
            task_id,
            TaskStatus.CANCELLED,
            ErrorInfo.from_exception(exc, with_traceback=False),
            EventType.CANCELLED,
            utcnow(),
        )

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task (see ``AsyncOmniQ.cancel``); True if it ends ``CANCELLED``."""
        cancelled = await self.finish_waiting(
            task_id, TaskStatus.CANCELLED, CANCELLED, EventType.CANCELLED, utcnow()
        )
        if cancelled:
            # Pools in other processes hear of it through the queue (watch_cancels).
            for pool in list(self._pools):
                pool.cancel_local(task_id)
        return cancelled

    async def expire(self, task: Task) -> Task | None:
        """Expire a waiting task past its ttl (no queue serves it, or none did yet), and
        return it as it now stands."""
        message = f"not started within its ttl (expired at {task.expires_at})"
        error = ErrorInfo(type="omniq.TaskExpired", message=message)
        await self.finish_waiting(task.id, TaskStatus.EXPIRED, error, EventType.EXPIRED, utcnow())
        return await self.queue.get(task.id)

    async def cleanup(self) -> dict[str, int]:
        """Drop expired results, finished tasks past ``result_ttl`` and old events."""
        now = utcnow()
        counts = {"results": await self.results.delete_expired(now)}
        retention = self.settings.result_ttl
        counts["tasks"] = (
            await self.queue.delete_finished(now - timedelta(seconds=retention)) if retention else 0
        )
        event_ttl = self.settings.event_ttl
        events = self.event_storage
        counts["events"] = (
            await events.delete_before(now - timedelta(seconds=event_ttl))
            if events is not None and event_ttl
            else 0
        )
        return counts

    # -- reading ----------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        """The task as it stands (past its ttl and never started: expired here)."""
        task = await self.queue.get(task_id)
        if task is not None and is_expired(task, utcnow()):
            task = await self.expire(task)
        return None if task is None else (await self.with_progress([task]))[0]

    async def list_tasks(
        self, queue: str | None, status: TaskStatus | None, limit: int
    ) -> list[Task]:
        """Tasks, newest first (those past their ttl and never started expired here)."""
        tasks = await self.with_progress(
            await self.queue.list(queue=queue, status=status, limit=limit)
        )
        now = utcnow()
        if not any(is_expired(task, now) for task in tasks):
            return tasks
        listed = []
        for task in tasks:
            if is_expired(task, now):
                expired = await self.expire(task)
                if expired is None or (status is not None and expired.status is not status):
                    continue
                task = expired
            listed.append(task)
        return listed

    async def with_progress(self, tasks: list[Task]) -> list[Task]:
        """``tasks`` with their stored progress merged in (``Task.progress``)."""
        if not tasks:
            return tasks
        found = await self.queue.get_progress([task.id for task in tasks])
        if not found:
            return tasks
        return [
            task
            if (progress := found.get(task.id)) is None
            else msgspec.structs.replace(task, progress=progress)
            for task in tasks
        ]

    async def get_result(
        self, task_id: str, *, wait: bool, timeout: float | None
    ) -> TaskResult | None:
        """The task's decoded result, or None; with ``wait`` until there is one (see
        ``AsyncOmniQ.get_result``), or ``ResultTimeoutError`` after ``timeout`` seconds."""
        stored = await self.results.get(task_id)
        if stored is None and wait:
            stored = await _result_wait.wait_for_result(
                self.queue, self.results, task_id, timeout, expire=self.expire
            )
        return None if stored is None else self.decode_result(stored)

    async def get_events(self, task_id: str) -> list[TaskEvent]:
        """The task's events, oldest first, those still buffered written first."""
        await self.events.flush()
        return await AsyncEventProcessor(self.event_storage).get(task_id)

    def decode_result(self, stored: TaskResult) -> TaskResult:
        """A stored result with its value decoded (an undecodable one as its error)."""
        data = stored.result
        if data is None or not isinstance(data, bytes):
            return stored
        try:
            value = self.serializer.loads(data)
        except SerializationError as exc:
            error = ErrorInfo(type="omniq.errors.SerializationError", message=str(exc))
            return msgspec.structs.replace(stored, result=None, error=stored.error or error)
        return msgspec.structs.replace(stored, result=value)

    # -- running it in production ------------------------------------------------------------

    async def requeue(self, task_id: str) -> bool:
        """Put a ``FAILED``, ``CANCELLED`` or ``EXPIRED`` task back to run again
        (:func:`omniq._requeue.requeue`); True if this call did."""
        done = await _requeue.requeue(
            self.queue, self.results, task_id, log=self.log_now, settle=self.settle_dependent
        )
        if done:
            self.wake_pools()
        return done

    async def list_workers(self) -> list[WorkerInfo]:
        """The worker pools registered and alive now, by id."""
        return await self.queue.list_workers(now=utcnow())

    # -- limits ----------------------------------------------------------------------------

    async def limit_queue(
        self, queue: str, *, rate_limit: str | None, max_concurrency: int | None
    ) -> None:
        """Store (or, with neither, remove) the limits of ``queue`` in the backend."""
        if not isinstance(queue, str) or not queue:
            raise ConfigError(f"queue={queue!r}: expected a queue name")
        limit = Limit.of(rate_limit, max_concurrency)
        await self.queue.set_limit(queue_key(queue), limit)

    async def list_limits(self) -> list[LimitInfo]:
        """The limits stored in the backend: queues' first, then task names', by name."""
        found = []
        for key, limit in (await self.queue.get_limits()).items():
            kind, _, name = key.partition(":")
            found.append(
                LimitInfo(
                    scope="queue" if kind == "q" else "task",
                    name=name,
                    rate_limit=limit.rate_limit,
                    max_concurrency=limit.concurrency,
                )
            )
        return sorted(found, key=lambda info: (info.scope != "queue", info.name))

    async def _register_task_limits(self, tasks: Sequence[Task]) -> None:
        """Tell the backend, before the tasks are stored, that tasks of these names carry
        limits (once per name and limit per engine): its claims then enforce them."""
        known = self._registered_limits
        fresh = {k: v for k, v in task_limits(tasks).items() if known.get(k) != v}
        if fresh:
            await self.queue.register_task_limits(fresh)
            known.update(fresh)
