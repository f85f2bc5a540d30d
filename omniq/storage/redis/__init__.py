"""Redis storage: the task queue, results, events and schedules on one Redis server.

Every component works standalone from a URL::

    async with AsyncRedisQueue("redis://127.0.0.1:6379/0", namespace="myapp") as queue:
        await queue.enqueue([task])

or on the shared client of a :class:`omniq.backend.redis.RedisBackend`. Blocking twins
(``RedisQueue``, ``RedisResultStorage``…) run the same coroutines on a private loop.

Key layout. Everything lives under ``{namespace}:`` (``settings.namespace``, or
``?namespace=`` in the URL), so applications share a server safely; a namespace may not
contain ``:``. Times are integer microseconds since the epoch, kept as decimal strings.

=================================  ======  ==============================================
key                                type    holds
=================================  ======  ==============================================
``t:{id}``                         hash    one task: ``d1``..``d8`` the msgpack-encoded
                                           ``Task`` as enqueued (its id left out: the key
                                           holds it), in pieces of at most 64
                                           bytes (one field ``d`` when larger than 512
                                           bytes), and its mutable fields ``s`` status,
                                           ``a`` attempts, ``w`` worker, ``l`` lease expiry,
                                           ``due``, ``u`` updated; plus ``q`` queue, ``p``
                                           priority, ``seq`` enqueue order, ``m`` ready-set
                                           member, ``x`` has dependencies, ``eb`` its
                                           enqueue's event group (a field that would be
                                           empty is left out, and read as empty).
                                           Every value under 64 bytes keeps the hash a
                                           compact listpack: a queued task with events off
                                           takes about 760 bytes in all, about twice that
                                           as a hash table
``seq``                            string  enqueue counter (ties in claim order)
``queues``                         set     every queue name seen (for stats and list)
``q:{queue}:ready``                zset    claimable tasks: score ``-priority``, member
                                           ``{due ms:013}{seq:013x}{id}``, so one ``ZRANGE``
                                           gives priority, then due time, then enqueue order
``q:{queue}:delayed``              zset    waiting tasks not yet due, by due time
``q:{queue}:leases``               zset    running tasks, by lease expiry
``q:{queue}:s:{status}``           zset    the queue's tasks in one status, by ``seq``
                                           (``stats`` and ``list`` never scan)
``q:{queue}:wake``                 list    wake-up tokens for blocked workers (max 16)
``deps:{id}``                      set     ids of the tasks that depend on ``id``
``finished``                       zset    tasks in a final state, by update time
``r:{id}``                         string  a result; native expiry (``PX``) from
                                           ``expires_at``
``results:exp``                    zset    results with an expiry, by ``expires_at``
``rw:{id}``                        list    result-ready token for ``wait`` (short expiry)
``e:{id}``                         list    a task's events, each ``{timestamp:016}`` +
                                           msgpack
``events``                         zset    task ids by their oldest event (``delete_before``)
``eb:{n}``                         hash    events an enqueue logged for a group of tasks
                                           (``1``, ``2``… items as in ``e:{id}`` without
                                           the task id; ``n`` how many tasks point at it
                                           by their hash's ``eb`` field); a task's own
                                           list takes them over when the task is deleted
``events:b``                       zset    those groups by their oldest event
``s:{id}``                         hash    a schedule: ``d`` msgpack, ``v`` version
``schedules``                      zset    schedule ids (score 0: by id)
``schedules:due``                  zset    unpaused schedules by ``next_run_at``
=================================  ======  ==============================================

Every state change of a task is one Lua script (``omniq/storage/redis/lua``), loaded once and
called by SHA: a claim promotes due delayed tasks and expired leases into the ready set,
then leases the best ``limit`` tasks across the queues, all in one ``EVALSHA`` (a
strict claim takes the queues one by one, in the order listed). Enqueue,
retry, release and transitions push a token to the queue's wake list; an idle worker
blocks on those lists (``BLPOP``) on a connection kept for blocking calls, and a result
``wait`` blocks the same way on ``rw:{id}``. A claim that takes everything claimable
drops the queue's leftover tokens, so an idle worker never spins on stale ones. Scripts
touch keys they build from the prefix, so the layout targets a single Redis server (not
a cluster). Run it with ``maxmemory-policy noeviction`` and, for durability across
restarts, ``appendonly yes`` (``appendfsync always`` loses nothing acknowledged).
A claim promotes at most 1,000 due delayed tasks and 1,000 expired leases per queue per
call; a larger backlog moves over the next claims.

The client (``omniq.storage.redis.connection``) shares one pipelined connection per process
for ordinary requests and gives each blocking call its own; see there for its retries.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import operator
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

import msgspec

from omniq._sync import sync_twin
from omniq.errors import StorageError
from omniq.models import Schedule, Task, TaskEvent, TaskResult, TaskStatus, utcnow
from omniq.storage.base import (
    Ack,
    BaseEventStorage,
    BaseResultStorage,
    BaseScheduleStorage,
    BaseStorage,
    BaseTaskQueue,
    Finish,
    UnreadableTask,
    event_fields_but_task_id,
    unreadable_task,
)
from omniq.storage.redis._resp import NoScriptError, ResponseError
from omniq.storage.redis.connection import (
    _SHAS,
    MAX_BULK_BYTES,
    Command,
    RedisClient,
    split_namespace,
    too_large,
)

if TYPE_CHECKING:
    from omniq.backend.base import Backend

__all__ = [
    "AsyncRedisEventStorage",
    "AsyncRedisQueue",
    "AsyncRedisResultStorage",
    "AsyncRedisScheduleStorage",
    "RedisClient",
    "RedisEventStorage",
    "RedisQueue",
    "RedisResultStorage",
    "RedisScheduleStorage",
    "split_namespace",
]

logger = logging.getLogger("omniq")

_ENCODER = msgspec.msgpack.Encoder()
_TASK_DECODER = msgspec.msgpack.Decoder(Task)
_RESULT_DECODER = msgspec.msgpack.Decoder(TaskResult)
_EVENT_DECODER = msgspec.msgpack.Decoder(TaskEvent)
_SCHEDULE_DECODER = msgspec.msgpack.Decoder(Schedule)
_STATUSES = {status.value.encode(): status for status in TaskStatus}
_ALL_STATUSES = tuple(status.value for status in TaskStatus)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

#: Tasks per enqueue script call; a batch sends all its calls in one pipeline.
_ENQUEUE_CHUNK = 250
#: How long a worker's wait for cancel notices blocks before it looks again (seconds).
_CANCEL_WAIT = 10
#: Results of ``wait`` keep their wake-up token this long at most (milliseconds).
_RESULT_TOKEN_MS = 60_000
#: The claim script's trailing argument for queue_order="strict" (left out otherwise).
_STRICT = ("1",)


def _us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_US


def _dt(us: bytes | str | int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def _sortkey(us: int) -> str:
    """A time as the fixed-width string that orders event entries."""
    return f"{max(us, 0):016d}"


def _sortms(us: int) -> str:
    """A time as the fixed-width millisecond prefix of a ready-set member."""
    return f"{max(us, 0) // 1000:013d}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ack_args(acks: Sequence[Ack], now: datetime) -> builtins.list[Any]:
    args: builtins.list[Any] = [_us(now)]
    for ack in acks:
        args += (ack.task_id, ack.worker_id, TaskStatus(ack.status).value, 1 if ack.ran else 0)
    return args


def _finish_args(items: Sequence[Finish], now: datetime, *, log_events: bool) -> builtins.list[Any]:
    """``finish.lua``'s arguments (after the prefix)."""
    args: builtins.list[Any] = [_us(now), _RESULT_TOKEN_MS, 1 if log_events else 0]
    for ack, result, events in items:
        expires = "" if result.expires_at is None else _us(result.expires_at)
        args += (
            ack.task_id,
            ack.worker_id,
            TaskStatus(ack.status).value,
            1 if ack.ran else 0,
            _ENCODER.encode(result),
            expires,
        )
        if log_events and events:
            args.append(len(events))
            args += map(_event_item, events)
        else:
            args.append(0)
    return args


class _RedisComponent(BaseStorage):
    """Connection handling shared by the four components.

    Built from a URL, a component opens its own client on :meth:`connect`; built by a
    :class:`~omniq.backend.redis.RedisBackend`, it connects through the bundle.
    """

    def __init__(
        self,
        url: str | None = None,
        settings: Any = None,
        *,
        namespace: str | None = None,
        client: RedisClient | None = None,
        bundle: Backend | None = None,
    ) -> None:
        self.settings = settings
        if client is None:
            if url is None:
                url = getattr(settings, "redis_url", None) or "redis://127.0.0.1:6379/0"
            _, url_namespace = split_namespace(url)
            if namespace is None and url_namespace is None:
                namespace = getattr(settings, "namespace", None)
            client = RedisClient(url, namespace=namespace)
        self.url = url if url is not None else client.url
        self.client = client
        self._prefix = client.prefix
        self._bundle = bundle
        self._connected = False

    @property
    def namespace(self) -> str:
        """The key prefix (without its ``:``)."""
        return self.client.namespace

    async def connect(self) -> None:
        """Open the client (through the bundle when there is one). Safe to call twice."""
        if self._connected:
            return
        if self._bundle is not None:
            await self._bundle.connect()
        else:
            await self.client.open()
        self._connected = True

    async def close(self) -> None:
        """Release the client. Safe to call twice."""
        if not self._connected:
            return
        self._connected = False
        if self._bundle is not None:
            await self._bundle.close()
        else:
            await self.client.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def _client(self) -> RedisClient:
        if not self._connected or not self.client.is_open:
            await self.connect()
        return self.client

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client.url!r}, namespace={self.namespace!r})"


def _decode_task(
    task_id: bytes | str,
    data: bytes,
    status: bytes,
    attempts: bytes | int,
    worker: bytes,
    lease: bytes,
    due: bytes,
    updated: bytes,
    lost: bytes = b"",
) -> Task:
    """A stored task: the record as enqueued with the mutable fields applied."""
    try:
        base = _TASK_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(
            f"redis: task {_text(task_id)}: its stored record is corrupt: {exc}"
        ) from exc
    updated_at = base.updated_at
    if int(updated) != _us(updated_at or base.created_at):
        updated_at = _dt(updated)
    return msgspec.structs.replace(
        base,
        id=_text(task_id),
        status=_STATUSES[status],
        attempts=int(attempts),
        lost_runs=int(lost or 0),
        worker_id=worker.decode() or None,
        lease_expires_at=_dt(lease) if lease else None,
        due_at=_dt(due) if due else None,
        updated_at=updated_at,
    )


#: Items per task in the reply of a script that fetches tasks (``fetch()`` in common.lua).
_FETCHED = 9


def _decode_tasks(flat: Sequence[Any]) -> builtins.list[Task]:
    """Tasks from a script's flat reply of ``id, d, s, a, w, l, due, u, lr`` groups."""
    return [_decode_task(*flat[i : i + _FETCHED]) for i in range(0, len(flat), _FETCHED)]


#: The fields :func:`_shared_args` reads.
_shared_fields = operator.attrgetter(
    "queue", "priority", "status", "attempts", "worker_id", "lease_expires_at", "due_at",
    "updated_at", "created_at", "depends_on",
)  # fmt: skip


def _shared_args(task: Task) -> tuple[Any, ...]:
    """A task's ``enqueue.lua`` fields that the tasks after it may share (sent once)."""
    lease, due = task.lease_expires_at, task.due_at
    updated = task.updated_at or task.created_at
    return (
        task.queue,
        task.priority,
        task.status.value,
        task.attempts,
        task.worker_id or "",
        "" if lease is None else _us(lease),
        "" if due is None else _us(due),
        _us(updated),
        len(task.depends_on),
        *task.depends_on,
    )


def _event_item(event: TaskEvent) -> bytes:
    """An event as stored in its task's list: a fixed-width time, then the record."""
    return b"%016d" % max(_us(event.timestamp), 0) + _ENCODER.encode(event)


class _EventGroups:
    """The events of one ``enqueue.lua`` call, stored once per group of tasks that log the
    same events apart from their ids (every task of a plain bulk enqueue: one group)."""

    def __init__(self) -> None:
        self.numbers: dict[tuple[Any, ...], int] = {}
        self.args: builtins.list[Any] = []
        # The list the task before logged, and its group: the tasks of a bulk enqueue
        # share one list (see ``enqueue_logged``), found here without building a key.
        self._last: tuple[Sequence[TaskEvent], int] = ((), 0)

    def number(self, events: Sequence[TaskEvent]) -> int:
        """The group of a task that logs ``events`` (0: none), added when new."""
        if not events:
            return 0
        last, found = self._last
        if events is last:
            return found
        key = tuple(map(event_fields_but_task_id, events))
        found = self.numbers.get(key) or 0
        if not found:
            found = self.numbers[key] = len(self.numbers) + 1
            self.args.append(len(events))
            self.args += [_event_item(msgspec.structs.replace(e, task_id="")) for e in events]
        self._last = (events, found)
        return found


def _parse_dependents(flat: Sequence[Any]) -> dict[str, builtins.list[Task]]:
    """The dependents script's reply: parents without dependents are omitted."""
    found: dict[str, builtins.list[Task]] = {}
    i = 0
    while i < len(flat):
        parent, count = _text(flat[i]), int(flat[i + 1])
        i += 2
        if count:
            found[parent] = _decode_tasks(flat[i : i + _FETCHED * count])
            i += _FETCHED * count
    return found


class AsyncRedisQueue(_RedisComponent, BaseTaskQueue):
    """The task queue on Redis.

    Claims are one Lua script call each (leasing up to ``limit`` tasks); ``wait`` blocks
    on the queues' wake lists, so an idle worker sends a few commands per second at most
    and wakes within milliseconds of an enqueue.

    Example::

        async with AsyncRedisQueue("redis://127.0.0.1:6379/0", namespace="myapp") as queue:
            await queue.enqueue([Task(id="t1", func="app.tasks:send")])
            tasks = await queue.claim(["default"], "w1", limit=8, lease_seconds=30, now=utcnow())
    """

    notifies = True

    async def enqueue(self, tasks: Sequence[Task]) -> builtins.list[str]:
        """Store ``tasks`` (existing ids are left unchanged): one script call per 250
        tasks, each written as soon as it is built, all in one round trip."""
        return await self._enqueue(tasks, None)

    def writes_events(self, event_storage: BaseEventStorage) -> bool:
        """True when ``event_storage`` is the event log on this queue's client."""
        return self._shares_client(event_storage, AsyncRedisEventStorage)

    def _shares_client(self, storage: BaseStorage, kind: type[_RedisComponent]) -> bool:
        # One client means one connection: writes to both can go in one script call.
        return isinstance(storage, kind) and storage.client is self.client

    async def enqueue_logged(
        self,
        tasks: Sequence[Task],
        events: Sequence[Sequence[TaskEvent]],
        event_storage: BaseEventStorage,
    ) -> builtins.list[str]:
        """Tasks and their events in the same script calls, when the event log shares
        this client: no separate write, and an event is stored exactly when its task is."""
        if not self.writes_events(event_storage):
            return await super().enqueue_logged(tasks, events, event_storage)
        return await self._enqueue(tasks, events)

    async def _enqueue(
        self, tasks: Sequence[Task], events: Sequence[Sequence[TaskEvent]] | None
    ) -> builtins.list[str]:
        if not tasks:
            return []
        client = self.client if self._connected else await self._client()
        now = time.time_ns() // 1000
        if len(tasks) > _ENQUEUE_CHUNK:
            # Each chunk is sent as soon as it is built: find an oversized task first, so
            # that the error leaves the whole batch unstored.
            for task in tasks:
                if len(task.payload) > MAX_BULK_BYTES:
                    raise too_large(f"task {task.id} (its arguments)", len(task.payload))

        def calls() -> Iterator[builtins.list[Any]]:
            for start in range(0, len(tasks), _ENQUEUE_CHUNK):
                chunk = tasks[start : start + _ENQUEUE_CHUNK]
                args: builtins.list[Any] = []
                groups = _EventGroups()
                last: tuple[Any, ...] = ()
                sort_time, sortms = None, ""
                for offset, task in enumerate(chunk):
                    # A bulk enqueue's tasks hold the same field values (the same
                    # objects): compared as they are, converted once per run.
                    fields = _shared_fields(task)
                    if fields == last:
                        args.append(0)  # the fields of the task before
                    else:
                        shared = _shared_args(task)
                        args += (len(shared), *shared)
                        last = fields
                    when = task.created_at if task.due_at is None else task.due_at
                    if when is not sort_time:
                        sort_time, sortms = when, _sortms(_us(when))
                    # The record leaves the id out (the hash's key holds it; readers put
                    # it back): 36 bytes less makes a plain task's record two 64-byte
                    # pieces instead of three, one hash field fewer to write and keep.
                    record = _ENCODER.encode(msgspec.structs.replace(task, id=""))
                    if len(record) > MAX_BULK_BYTES:
                        raise too_large(f"task {task.id} (its arguments)", len(record))
                    args += (task.id, record, sortms)
                    args.append(groups.number(events[start + offset]) if events else 0)
                yield [now, len(chunk), len(groups.numbers), *groups.args, *args]

        if len(tasks) == 1:
            await client.script("enqueue", *next(calls()))
            return [tasks[0].id]
        await client.scripts("enqueue", calls())
        return [task.id for task in tasks]

    async def claim(
        self,
        queues: Sequence[str],
        worker_id: str,
        *,
        limit: int,
        lease_seconds: float,
        now: datetime,
        strict: bool = False,
    ) -> builtins.list[Task]:
        """Lease up to ``limit`` claimable tasks in one script call (with ``strict``, the
        earlier listed queues first)."""
        if limit <= 0 or not queues:
            return []
        client = self.client if self._connected else await self._client()
        names = list(dict.fromkeys(queues))
        lease_at = now + timedelta(seconds=lease_seconds)
        order = _STRICT if strict else ()
        flat = await client.script(
            "claim", _us(now), _us(lease_at), worker_id, limit, len(names), *names, *order
        )
        return await self._claimed(flat, worker_id, now, lease_at)

    async def wait_and_claim(
        self,
        queues: Sequence[str],
        worker_id: str,
        *,
        limit: int,
        lease_seconds: float,
        timeout: float,
        strict: bool = False,
    ) -> builtins.list[Task]:
        """Block on the wake lists, then claim, in one pipeline on a blocking connection.

        Redis runs the claim the moment the ``BLPOP`` returns, so a waiting worker gets
        its task one round trip after the enqueue instead of two. The claim reads the
        server's clock, as the client cannot know when the wait will end. A caller
        cancelled while it waits (a worker stopping or nudged) may have claimed on the
        server already: those tasks are handed back at once (``release``), not left
        until their lease runs out.
        """
        names = list(dict.fromkeys(queues))
        if timeout < 0.001 or not names or limit <= 0:
            return await super().wait_and_claim(
                queues,
                worker_id,
                limit=limit,
                lease_seconds=lease_seconds,
                timeout=timeout,
                strict=strict,
            )
        client = await self._client()
        keys = [f"{self._prefix}q:{queue}:wake" for queue in names]
        lease_us = round(lease_seconds * 1_000_000)
        claim = (_SHAS["claim"], 0, self._prefix, "", lease_us, worker_id, limit, len(names))
        commands = [
            ("BLPOP", *keys, f"{timeout:.3f}"),
            ("EVALSHA", *claim, *names, *(_STRICT if strict else ())),
        ]

        async def hand_back(replies: builtins.list[Any]) -> None:
            flat = replies[-1]
            if isinstance(flat, list) and len(flat) > 2:  # now, lease, then 5 per task
                ids = [_text(task_id) for task_id in flat[2::5]]
                await self.release(ids, worker_id, now=utcnow())

        try:
            _, flat = await client.block_many(timeout, commands, abandoned=hand_back)
        except TimeoutError:
            return []  # the server went quiet: a spurious wake-up, the caller looks again
        if isinstance(flat, NoScriptError):  # scripts flushed (server restarted)
            await client.load_scripts()
            return await self.claim(
                queues,
                worker_id,
                limit=limit,
                lease_seconds=lease_seconds,
                now=utcnow(),
                strict=strict,
            )
        if isinstance(flat, ResponseError):
            raise StorageError(f"redis: script claim: {flat}") from flat
        now, lease_at = _dt(flat[0]), _dt(flat[1])
        return await self._claimed(flat[2:], worker_id, now, lease_at)

    async def _claimed(
        self, flat: Sequence[Any], worker_id: str, now: datetime, lease_at: datetime
    ) -> builtins.list[Task]:
        """Tasks from a claim's reply (a corrupt record as an :class:`UnreadableTask`)."""
        claimed: builtins.list[Task] = []
        for i in range(0, len(flat), 5):
            task_id, data, attempts, due, lost = flat[i : i + 5]
            try:
                base = _TASK_DECODER.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                name = _text(task_id)
                reason = f"redis: task {name}: its stored record is corrupt: {exc}"
                logger.error("%s; handing it to the worker to fail", reason)
                claimed.append(
                    await self._unreadable(
                        name,
                        reason,
                        attempts=int(attempts),
                        worker_id=worker_id,
                        lease_expires_at=lease_at,
                        now=now,
                    )
                )
                continue
            claimed.append(
                msgspec.structs.replace(
                    base,
                    id=_text(task_id),
                    status=TaskStatus.RUNNING,
                    attempts=attempts,
                    lost_runs=int(lost),
                    worker_id=worker_id,
                    lease_expires_at=lease_at,
                    due_at=_dt(due) if due else None,
                    updated_at=now,
                )
            )
        return claimed

    async def _unreadable(self, task_id: str, reason: str, **fields: Any) -> UnreadableTask:
        """A task whose record cannot be decoded, as an UnreadableTask of ``fields`` (the
        hash's other fields) in the queue its hash names."""
        client = await self._client()
        queue = await client.call("HGET", f"{self._prefix}t:{task_id}", "q")
        return unreadable_task(task_id, reason, queue=_text(queue or b"default"), **fields)

    async def renew(
        self, task_ids: Collection[str], worker_id: str, *, lease_seconds: float, now: datetime
    ) -> set[str]:
        """Extend the leases ``worker_id`` still holds (one script call)."""
        if not task_ids:
            return set()
        client = await self._client()
        lease_at = _us(now + timedelta(seconds=lease_seconds))
        held = await client.script("renew", _us(now), lease_at, worker_id, *task_ids)
        return {_text(task_id) for task_id in held}

    async def ack_many(self, acks: Sequence[Ack], *, now: datetime) -> builtins.list[bool]:
        """Finish the tasks still held by their workers (one script call)."""
        if not acks:
            return []
        client = self.client if self._connected else await self._client()
        done = await client.script("ack", *_ack_args(acks, now))
        return [bool(flag) for flag in done]

    def finish_logs_events(self, event_storage: BaseEventStorage) -> bool:
        """True when ``event_storage`` is the event log on this queue's client."""
        return self._shares_client(event_storage, AsyncRedisEventStorage)

    async def finish(
        self,
        items: Sequence[Finish],
        result_storage: BaseResultStorage,
        event_storage: BaseEventStorage | None = None,
        *,
        now: datetime,
    ) -> tuple[builtins.list[bool], dict[str, builtins.list[Task]]]:
        """Acks with their results and events in one script call, atomically, when the
        results live on this client; the dependents lookup in the same round trip."""
        if not (items and self._shares_client(result_storage, AsyncRedisResultStorage)):
            return await super().finish(items, result_storage, event_storage, now=now)
        client = self.client if self._connected else await self._client()
        log_events = event_storage is not None and self.finish_logs_events(event_storage)
        ids = [item.ack.task_id for item in items]
        commands: builtins.list[Command] = [
            ("EVALSHA", _SHAS["finish"], 0, client.prefix, *_finish_args(
                items, now, log_events=log_events
            )),
            ("EVALSHA", _SHAS["dependents"], 0, client.prefix, *ids),
        ]  # fmt: skip
        replies = await client.execute(commands)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # Scripts flushed (server restarted): reload, then redo in order.
            await client.load_scripts()
            replies = await client.execute(commands)
        for reply, what in zip(replies, ("finishing tasks", "finding dependents"), strict=True):
            if isinstance(reply, ResponseError):
                raise StorageError(f"redis: {what}: {reply}") from reply
        acked = [bool(flag) for flag in replies[0]]
        found = _parse_dependents(replies[1])
        return acked, {
            task_id: found[task_id]
            for task_id, ok in zip(ids, acked, strict=True)
            if ok and task_id in found
        }

    async def watch_cancels(
        self,
        worker_id: str,
        held: Callable[[], Collection[str]],
        notice: Callable[[str], None],
    ) -> None:
        """Block on this worker's cancel list (``wc:{worker}``): a transition that takes
        a running task from its worker (a cancel) pushes the task's id there in the same
        script, so the worker hears of it one round trip later."""
        key = f"{self._prefix}wc:{worker_id}"
        client = await self._client()
        try:
            while True:
                try:
                    reply = await client.block(_CANCEL_WAIT, "BLPOP", key, _CANCEL_WAIT)
                except TimeoutError:
                    continue  # the server went quiet; look again
                except StorageError as exc:
                    logger.debug("redis: waiting for cancels: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                if reply:
                    notice(_text(reply[1]))
        finally:
            with contextlib.suppress(Exception):
                await client.call("DEL", key)

    async def retry(self, task_id: str, worker_id: str, *, due_at: datetime, now: datetime) -> bool:
        """Move a held task to ``RETRYING``, due at ``due_at``."""
        client = await self._client()
        due = _us(due_at)
        changed = await client.script("retry", _us(now), task_id, worker_id, due, _sortms(due))
        return bool(changed)

    async def release(self, task_ids: Collection[str], worker_id: str, *, now: datetime) -> int:
        """Hand back held tasks, giving back the attempt their claim counted."""
        if not task_ids:
            return 0
        client = await self._client()
        return int(await client.script("release", _us(now), worker_id, *task_ids))

    async def transition(
        self,
        task_id: str,
        *,
        from_statuses: Collection[TaskStatus],
        to_status: TaskStatus,
        now: datetime,
        due_at: datetime | None = None,
    ) -> Task | None:
        """Compare-and-set the status of one task; clears its lease."""
        if not from_statuses:
            return None
        client = await self._client()
        due = None if due_at is None else _us(due_at)
        flat = await client.script(
            "transition",
            _us(now),
            task_id,
            TaskStatus(to_status).value,
            "" if due is None else due,
            "" if due is None else _sortms(due),
            *(TaskStatus(status).value for status in from_statuses),
        )
        if not flat:
            return None
        return _decode_tasks(flat)[0]

    async def get(self, task_id: str) -> Task | None:
        """The task as stored, or None."""
        client = await self._client()
        found = _decode_tasks(await client.script("fetch", task_id))
        return found[0] if found else None

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task | None]:
        """Several tasks in one script call, in order (None for unknown ids)."""
        if not task_ids:
            return []
        client = await self._client()
        found = {task.id: task for task in _decode_tasks(await client.script("fetch", *task_ids))}
        return [found.get(task_id) for task_id in task_ids]

    async def list(
        self, *, queue: str | None = None, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Tasks, newest first, filtered by queue and status (read from the status sets)."""
        if limit <= 0:
            return []
        client = await self._client()
        statuses = _ALL_STATUSES if status is None else (TaskStatus(status).value,)
        flat = await client.script("list", limit, queue or "", *statuses)
        tasks: builtins.list[Task] = []
        for i in range(0, len(flat), _FETCHED):
            fields = flat[i : i + _FETCHED]
            try:
                tasks.append(_decode_task(*fields))
            except StorageError as exc:
                # Listed as what its hash's fields say: one bad record must not hide the rest.
                task_id, _, state, attempts, worker, lease, _, updated, _ = fields
                tasks.append(
                    await self._unreadable(
                        _text(task_id),
                        str(exc),
                        status=_STATUSES[state],
                        attempts=int(attempts),
                        worker_id=worker.decode() or None,
                        lease_expires_at=_dt(lease) if lease else None,
                        now=_dt(updated),
                    )
                )
        return tasks

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts per queue and status (one script call over the status sets)."""
        client = await self._client()
        flat = await client.script("stats", *_ALL_STATUSES)
        counts: dict[str, dict[str, int]] = {}
        for i in range(0, len(flat), 3):
            counts.setdefault(_text(flat[i]), {})[_text(flat[i + 1])] = int(flat[i + 2])
        return counts

    async def dependents(self, task_id: str) -> builtins.list[Task]:
        """Tasks whose ``depends_on`` names ``task_id``, in enqueue order."""
        return (await self.dependents_many([task_id])).get(task_id, [])

    async def dependents_many(self, task_ids: Sequence[str]) -> dict[str, builtins.list[Task]]:
        """Dependents of several tasks in one script call (ids without any are omitted)."""
        if not task_ids:
            return {}
        client = await self._client()
        return _parse_dependents(await client.script("dependents", *task_ids))

    async def next_due_at(self, queues: Sequence[str]) -> datetime | None:
        """The earliest ready time (due time or lease expiry) in ``queues``."""
        if not queues:
            return None
        client = await self._client()
        earliest = await client.script("next_due", *dict.fromkeys(queues))
        return None if earliest is None else _dt(earliest)

    async def delete_finished(self, before: datetime) -> int:
        """Delete finished tasks last updated before ``before``, 1,000 per script call."""
        client = await self._client()
        cutoff, total = _us(before), 0
        while True:
            deleted, seen = await client.script("delete_finished", cutoff, 1000)
            total += int(deleted)
            if int(seen) < 1000:
                return total

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block on the queues' wake lists (``BLPOP``) until a token or ``timeout``."""
        if timeout < 0.001 or not queues:
            return
        client = await self._client()
        keys = [f"{self._prefix}q:{queue}:wake" for queue in dict.fromkeys(queues)]
        try:
            await client.block(timeout, "BLPOP", *keys, f"{timeout:.3f}")
        except TimeoutError:
            return  # the server went quiet: a spurious wake-up, the caller looks again


class AsyncRedisResultStorage(_RedisComponent, BaseResultStorage):
    """Task results on Redis, one key each with native expiry from ``expires_at``.

    ``wait`` blocks on a per-result token list that ``put_many`` fills, so a waiter wakes
    within milliseconds of the result being stored.
    """

    def result_command(self, results: Sequence[TaskResult]) -> Command:
        """The one script call that stores ``results`` (sent alone or with an ack)."""
        args: builtins.list[Any] = [time.time_ns() // 1000]
        for result in results:
            expires = "" if result.expires_at is None else _us(result.expires_at)
            record = _ENCODER.encode(result)
            if len(record) > MAX_BULK_BYTES:
                raise too_large(f"the result of task {result.task_id}", len(record))
            args += (result.task_id, record, expires, _RESULT_TOKEN_MS)
        return ("EVALSHA", _SHAS["put_results"], 0, self._prefix, *args)

    async def put_many(self, results: Sequence[TaskResult]) -> None:
        """Store (or replace) results in one round trip."""
        if not results:
            return
        client = await self._client()
        command = self.result_command(results)
        await client.script("put_results", *command[4:])

    async def get(self, task_id: str) -> TaskResult | None:
        """The stored result, or None (also once it expired)."""
        client = await self._client()
        data = await client.call("GET", f"{self._prefix}r:{task_id}")
        if data is None:
            return None
        try:
            return _RESULT_DECODER.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StorageError(f"redis: result of task {task_id} is corrupt: {exc}") from exc

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Block until the result exists (``BLMOVE`` on its token list) or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        client = await self._client()
        token = f"{self._prefix}rw:{task_id}"
        rotate = True
        while True:
            result = await self.get(task_id)
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining < 0.001:
                return None
            # Rotating the token (source = destination) leaves it for every other waiter
            # on the same result; a token that outlived its result is consumed instead.
            command = ("BLMOVE", token, token, "LEFT", "LEFT") if rotate else ("BLPOP", token)
            try:
                woke = await client.block(remaining, *command, f"{remaining:.3f}")
            except TimeoutError:
                woke = None
            rotate = woke is None

    async def delete_expired(self, now: datetime) -> int:
        """Delete results whose ``expires_at`` is at or before ``now``."""
        client = await self._client()
        total = 0
        while True:
            deleted = int(await client.script("delete_results", _us(now), 1000))
            total += deleted
            if deleted < 1000:
                return total


class AsyncRedisEventStorage(_RedisComponent, BaseEventStorage):
    """The task event log on Redis: one list per task, indexed by its oldest event, plus
    the events an enqueue on the same client stored once for a group of its tasks."""

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Append events atomically (``MULTI``/``EXEC``, one round trip)."""
        if not events:
            return
        client = await self._client()
        prefix = self._prefix
        per_task: dict[str, builtins.list[bytes]] = {}
        oldest: dict[str, int] = {}
        for event in events:
            item = _event_item(event)
            stamp = int(item[:16])
            per_task.setdefault(event.task_id, []).append(item)
            if stamp < oldest.get(event.task_id, stamp + 1):
                oldest[event.task_id] = stamp
        commands: builtins.list[Command] = [("MULTI",)]
        commands.extend(("RPUSH", f"{prefix}e:{tid}", *items) for tid, items in per_task.items())
        index: builtins.list[Any] = [f"{prefix}events", "LT"]
        for tid, stamp in oldest.items():
            index += (stamp, tid)
        commands.append(("ZADD", *index))
        commands.append(("EXEC",))
        replies = await client.execute(commands)
        applied = replies[-1]
        failed = [reply for reply in replies if isinstance(reply, ResponseError)]
        if isinstance(applied, list):
            failed += [reply for reply in applied if isinstance(reply, ResponseError)]
        if failed or not isinstance(applied, list):
            raise StorageError(f"redis: appending events: {failed or applied}")

    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first."""
        client = await self._client()
        grouped, own = await client.script("events_get", task_id)
        try:
            events = [_EVENT_DECODER.decode(memoryview(item)[16:]) for item in grouped + own]
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StorageError(f"redis: events of task {task_id} are corrupt: {exc}") from exc
        # Events an enqueue stored for a group of tasks leave the id out.
        events = [
            event if event.task_id else msgspec.structs.replace(event, task_id=task_id)
            for event in events
        ]
        # Lists keep append order; concurrent writers may append slightly out of time order.
        # The sort is stable: events of one time keep the order they were logged in.
        events.sort(key=lambda event: event.timestamp)
        return events

    async def delete_before(self, before: datetime) -> int:
        """Delete events older than ``before`` (in batches of 500 tasks)."""
        client = await self._client()
        cutoff, total = _sortkey(_us(before)), 0
        while True:
            deleted, seen = await client.script("delete_events", cutoff, 500)
            total += int(deleted)
            if int(seen) < 500:
                return total


def _decode_schedule(data: bytes) -> Schedule:
    try:
        return _SCHEDULE_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"redis: a schedule record is corrupt: {exc}") from exc


class AsyncRedisScheduleStorage(_RedisComponent, BaseScheduleStorage):
    """Schedules on Redis; every write is a compare-and-set on a version (Lua)."""

    async def _put(self, schedule: Schedule, expected_version: bytes | str = "") -> bool:
        client = await self._client()
        next_run = "" if schedule.next_run_at is None else _us(schedule.next_run_at)
        record = _ENCODER.encode(schedule)
        if len(record) > MAX_BULK_BYTES:
            raise too_large(f"schedule {schedule.id} (its task)", len(record))
        written = await client.script(
            "schedule_put",
            schedule.id,
            record,
            next_run,
            "1" if schedule.paused else "0",
            expected_version,
        )
        return bool(written)

    async def _read(self, schedule_id: str) -> tuple[Schedule, bytes] | None:
        client = await self._client()
        data, version = await client.call("HMGET", f"{self._prefix}s:{schedule_id}", "d", "v")
        if data is None:
            return None
        return _decode_schedule(data), version

    async def upsert(self, schedule: Schedule) -> None:
        """Insert or replace the schedule with this id."""
        await self._put(schedule)

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        found = await self._read(schedule_id)
        return None if found is None else found[0]

    async def list(self) -> builtins.list[Schedule]:
        """All schedules, by id."""
        client = await self._client()
        return [_decode_schedule(data) for data in await client.script("schedule_get", "all")]

    async def delete(self, schedule_id: str) -> bool:
        """Remove a schedule; False if it did not exist."""
        client = await self._client()
        return bool(await client.script("schedule_delete", schedule_id))

    async def update(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule | None:
        """Apply field changes (retried if another writer got in between)."""
        while True:
            found = await self._read(schedule_id)
            if found is None:
                return None
            schedule = msgspec.structs.replace(found[0], **dict(changes))
            if await self._put(schedule, found[1]):
                return schedule

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[Schedule]:
        """Unpaused schedules due at or before ``now``, earliest first."""
        if limit <= 0:
            return []
        client = await self._client()
        blobs = await client.script("schedule_get", "due", _us(now), limit)
        return [_decode_schedule(data) for data in blobs]

    async def advance(
        self,
        schedule_id: str,
        *,
        expected_next_run_at: datetime,
        next_run_at: datetime | None,
        last_run_at: datetime,
    ) -> bool:
        """Claim one tick: a compare-and-set on the schedule's version."""
        while True:
            found = await self._read(schedule_id)
            if found is None:
                return False
            schedule, version = found
            if schedule.next_run_at is None or schedule.next_run_at != expected_next_run_at:
                return False
            new = msgspec.structs.replace(
                schedule, next_run_at=next_run_at, last_run_at=last_run_at, runs=schedule.runs + 1
            )
            if await self._put(new, version):
                return True


RedisQueue = sync_twin(AsyncRedisQueue, "RedisQueue")
RedisResultStorage = sync_twin(AsyncRedisResultStorage, "RedisResultStorage")
RedisEventStorage = sync_twin(AsyncRedisEventStorage, "RedisEventStorage")
RedisScheduleStorage = sync_twin(AsyncRedisScheduleStorage, "RedisScheduleStorage")
