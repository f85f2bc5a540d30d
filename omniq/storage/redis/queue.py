"""The task queue on Redis: every state change one Lua script call."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from omniq._limits import Limit, LimitedClaim
from omniq._sync import StorageTwin, blocking
from omniq.errors import StorageError
from omniq.models import Progress, Task, TaskEvent, TaskStatus, utcnow
from omniq.storage._component import Finished, QueueComponent
from omniq.storage._rows import decode_progress, encode_progress
from omniq.storage.base import Ack, Finish, UnreadableTask, unreadable_task
from omniq.storage.redis._codec import (
    _ALL_STATUSES,
    _ENCODER,
    _FETCHED,
    _STATUSES,
    _ack_args,
    _claimed_task,
    _decode_task,
    _decode_tasks,
    _dt,
    _EventGroups,
    _finish_args,
    _parse_dependents,
    _shared_args,
    _shared_fields,
    _sortms,
    _text,
    _us,
)
from omniq.storage.redis._fleet import RedisFleet
from omniq.storage.redis._resp import NoScriptError, ResponseError
from omniq.storage.redis._scripts import SHAS
from omniq.storage.redis.connection import MAX_BULK_BYTES, Command, RedisConnection, too_large
from omniq.storage.redis.events import AsyncRedisEventStorage
from omniq.storage.redis.results import AsyncRedisResultStorage

logger = logging.getLogger("omniq")

#: Tasks per enqueue script call; a batch sends all its calls in one pipeline.
_ENQUEUE_CHUNK = 250
#: How long a worker's wait for cancel notices blocks before it looks again (seconds).
_CANCEL_WAIT = 10
#: The claim script's trailing argument for queue_order="strict" (left out otherwise).
_STRICT = ("1",)


class AsyncRedisQueue(RedisFleet, QueueComponent[RedisConnection]):
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
    # Requests pipeline on the one connection: from 64 coroutines, 8 writes out stored
    # 26-28k tasks/s where 1 stored 23k (the client builds tasks while Redis runs scripts).
    enqueue_writes_in_flight = 8
    result_storage_class = AsyncRedisResultStorage
    event_storage_class = AsyncRedisEventStorage
    enqueues_with_events = True

    async def enqueue(self, tasks: Sequence[Task]) -> builtins.list[str]:
        """Store ``tasks`` (existing ids are left unchanged): one script call per 250
        tasks, each written as soon as it is built, all in one round trip."""
        return await self._enqueue_with_events(tasks, None)

    async def _enqueue_with_events(
        self, tasks: Sequence[Task], events: Sequence[Sequence[TaskEvent]] | None
    ) -> builtins.list[str]:
        """Tasks and their events in the same script calls: no separate write."""
        if not tasks:
            return []
        client = self.connection if self._connected else await self._conn()
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
        client = self.connection if self._connected else await self._conn()
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
        client = await self._conn()
        keys = [f"{self._prefix}q:{queue}:wake" for queue in names]
        lease_us = round(lease_seconds * 1_000_000)
        claim = (SHAS["claim"], 0, self._prefix, "", lease_us, worker_id, limit, len(names))
        commands = [
            ("BLPOP", *keys, f"{timeout:.3f}"),
            ("EVALSHA", *claim, *names, *(_STRICT if strict else ())),
        ]

        async def hand_back(replies: builtins.list[Any]) -> None:
            flat = replies[-1]
            if isinstance(flat, list) and len(flat) > 2:  # now, lease, then 5 per task
                body = flat[2 : len(flat) - (len(flat) - 2) % 5]  # no held marker
                ids = [_text(task_id) for task_id in body[::5]]
                await self.release(ids, worker_id, now=utcnow())

        try:
            _, flat = await client.block_many(timeout, commands, abandoned=hand_back)
        except TimeoutError:
            return []  # the server went quiet: a spurious wake-up, the caller looks again
        if isinstance(flat, NoScriptError):  # scripts flushed (server restarted)
            await client.load_scripts()
            return await self._claim_or_hand_back(
                queues, worker_id, limit=limit, lease_seconds=lease_seconds, strict=strict
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
        if len(flat) % 5:  # limits held tasks back: the reply ends with until when
            claimed = LimitedClaim((), held_until_of(flat[-1]))
            flat = flat[:-1]
        for i in range(0, len(flat), 5):
            task_id, data, attempts, due, lost = flat[i : i + 5]
            try:
                task = _claimed_task(task_id, data, attempts, due, lost, worker_id, now, lease_at)
            except StorageError as exc:
                reason = str(exc)
                logger.error("%s; handing it to the worker to fail", reason)
                claimed.append(
                    await self._unreadable(
                        _text(task_id),
                        reason,
                        attempts=attempts if isinstance(attempts, int) else 1,
                        worker_id=worker_id,
                        lease_expires_at=lease_at,
                        now=now,
                    )
                )
                continue
            claimed.append(task)
        return claimed

    async def _unreadable(self, task_id: str, reason: str, **fields: Any) -> UnreadableTask:
        """A task whose record cannot be decoded, as an UnreadableTask of ``fields`` (the
        hash's other fields) in the queue its hash names."""
        client = await self._conn()
        queue = await client.call("HGET", f"{self._prefix}t:{task_id}", "q")
        return unreadable_task(task_id, reason, queue=_text(queue or b"default"), **fields)

    async def renew(
        self, task_ids: Collection[str], worker_id: str, *, lease_seconds: float, now: datetime
    ) -> set[str]:
        """Extend the leases ``worker_id`` still holds (one script call)."""
        if not task_ids:
            return set()
        client = await self._conn()
        lease_at = _us(now + timedelta(seconds=lease_seconds))
        held = await client.script("renew", _us(now), lease_at, worker_id, *task_ids)
        return {_text(task_id) for task_id in held}

    async def ack_many(self, acks: Sequence[Ack], *, now: datetime) -> builtins.list[bool]:
        """Finish the tasks still held by their workers (one script call)."""
        if not acks:
            return []
        client = self.connection if self._connected else await self._conn()
        done = await client.script("ack", *_ack_args(acks, now))
        return [bool(flag) for flag in done]

    async def _finish_together(
        self, items: Sequence[Finish], log_events: bool, now: datetime
    ) -> Finished:
        """Acks with their results and events in one script call, atomically; the
        dependents lookup in the same round trip."""
        client = self.connection if self._connected else await self._conn()
        ids = [item.ack.task_id for item in items]
        commands: builtins.list[Command] = [
            ("EVALSHA", SHAS["finish"], 0, client.prefix, *_finish_args(
                items, now, log_events=log_events
            )),
            ("EVALSHA", SHAS["dependents"], 0, client.prefix, *ids),
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
        client = await self._conn()
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
        client = await self._conn()
        due = _us(due_at)
        changed = await client.script("retry", _us(now), task_id, worker_id, due, _sortms(due))
        return bool(changed)

    async def release(self, task_ids: Collection[str], worker_id: str, *, now: datetime) -> int:
        """Hand back held tasks, giving back the attempt their claim counted."""
        if not task_ids:
            return 0
        client = await self._conn()
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
        client = await self._conn()
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
        client = await self._conn()
        found = _decode_tasks(await client.script("fetch", task_id))
        return found[0] if found else None

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task | None]:
        """Several tasks in one script call, in order (None for unknown ids)."""
        if not task_ids:
            return []
        client = await self._conn()
        found = {task.id: task for task in _decode_tasks(await client.script("fetch", *task_ids))}
        return [found.get(task_id) for task_id in task_ids]

    async def list(
        self, *, queue: str | None = None, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Tasks, newest first, filtered by queue and status (read from the status sets)."""
        if limit <= 0:
            return []
        client = await self._conn()
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
                        # No `u`: untouched since enqueue, whose time is in the record.
                        now=_dt(updated) if updated else utcnow(),
                    )
                )
        return tasks

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts per queue and status (one script call over the status sets)."""
        client = await self._conn()
        flat = await client.script("stats", *_ALL_STATUSES)
        counts: dict[str, dict[str, int]] = {}
        for i in range(0, len(flat), 3):
            counts.setdefault(_text(flat[i]), {})[_text(flat[i + 1])] = int(flat[i + 2])
        return counts

    async def dependents_many(self, task_ids: Sequence[str]) -> dict[str, builtins.list[Task]]:
        """Dependents of several tasks in one script call (ids without any are omitted)."""
        if not task_ids:
            return {}
        client = await self._conn()
        return _parse_dependents(await client.script("dependents", *task_ids))

    async def next_due_at(self, queues: Sequence[str]) -> datetime | None:
        """The earliest ready time (due time or lease expiry) in ``queues``."""
        if not queues:
            return None
        client = await self._conn()
        earliest = await client.script("next_due", *dict.fromkeys(queues))
        return None if earliest is None else _dt(earliest)

    async def delete_finished(self, before: datetime) -> int:
        """Delete finished tasks last updated before ``before``, 1,000 per script call."""
        client = await self._conn()
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
        client = await self._conn()
        keys = [f"{self._prefix}q:{queue}:wake" for queue in dict.fromkeys(queues)]
        try:
            await client.block(timeout, "BLPOP", *keys, f"{timeout:.3f}")
        except TimeoutError:
            return  # the server went quiet: a spurious wake-up, the caller looks again

    async def set_progress(self, updates: Mapping[str, Progress]) -> None:
        """Store tasks' progress (``pg:{id}`` keys) in one script call."""
        if not updates:
            return
        args: builtins.list[Any] = []
        for task_id, progress in updates.items():
            args += (task_id, encode_progress(progress))
        await (await self._conn()).script("progress_set", *args)

    async def get_progress(self, task_ids: Sequence[str]) -> dict[str, Progress]:
        """The progress of ``task_ids`` in one script call."""
        if not task_ids:
            return {}
        flat = await (await self._conn()).script("progress_get", *task_ids)
        found = {}
        for i in range(0, len(flat), 2):
            progress = decode_progress(flat[i + 1])
            if progress is not None:
                found[_text(flat[i])] = progress
        return found

    # -- limits (lua/claim.lua's claim_limited) -------------------------------------------

    async def set_limit(self, key: str, limit: Limit | None) -> None:
        """Store (None: remove) the limit of ``key``; claims apply it from now on."""
        client = await self._conn()
        if limit is None:  # its log goes too (it would expire anyway)
            await client.call("HDEL", f"{self._prefix}limits", key)
            await client.call("DEL", f"{self._prefix}ls:{key}")
        else:
            await client.call("HSET", f"{self._prefix}limits", key, limit.encode())
        kind, _, queue = key.partition(":")
        if kind == "q":  # a limit removed may free waiting tasks: wake the queue's workers
            await client.call("LPUSH", f"{self._prefix}q:{queue}:wake", "1")

    async def get_limits(self) -> dict[str, Limit]:
        """The limits stored, by key."""
        flat = await (await self._conn()).call("HGETALL", f"{self._prefix}limits")
        return {_text(flat[i]): Limit.decode(_text(flat[i + 1])) for i in range(0, len(flat), 2)}

    async def register_task_limits(self, limits: Mapping[str, Limit]) -> None:
        """Note the limits of task names before tasks carrying them are stored."""
        pairs = [item for key, limit in limits.items() for item in (key, limit.encode())]
        await (await self._conn()).call("HSET", f"{self._prefix}limits", *pairs)


def held_until_of(marker: Any) -> datetime | None:
    """The time in a claim reply's held marker (``H`` and microseconds, or ``H`` alone)."""
    text = _text(marker)[1:]
    return _dt(text) if text else None


class RedisQueue(StorageTwin[AsyncRedisQueue]):
    """Blocking twin of :class:`AsyncRedisQueue`: the same methods, without ``await``."""

    async_class = AsyncRedisQueue
    ack = blocking(AsyncRedisQueue.ack)
    ack_many = blocking(AsyncRedisQueue.ack_many)
    claim = blocking(AsyncRedisQueue.claim)
    delete_finished = blocking(AsyncRedisQueue.delete_finished)
    dependents = blocking(AsyncRedisQueue.dependents)
    dependents_many = blocking(AsyncRedisQueue.dependents_many)
    enqueue = blocking(AsyncRedisQueue.enqueue)
    enqueue_logged = blocking(AsyncRedisQueue.enqueue_logged)
    finish = blocking(AsyncRedisQueue.finish)
    get = blocking(AsyncRedisQueue.get)
    get_many = blocking(AsyncRedisQueue.get_many)
    list = blocking(AsyncRedisQueue.list)
    next_due_at = blocking(AsyncRedisQueue.next_due_at)
    release = blocking(AsyncRedisQueue.release)
    renew = blocking(AsyncRedisQueue.renew)
    retry = blocking(AsyncRedisQueue.retry)
    stats = blocking(AsyncRedisQueue.stats)
    transition = blocking(AsyncRedisQueue.transition)
    wait = blocking(AsyncRedisQueue.wait)
    wait_and_claim = blocking(AsyncRedisQueue.wait_and_claim)
    watch_cancels = blocking(AsyncRedisQueue.watch_cancels)
    requeue = blocking(AsyncRedisQueue.requeue)
    register_worker = blocking(AsyncRedisQueue.register_worker)
    deregister_worker = blocking(AsyncRedisQueue.deregister_worker)
    list_workers = blocking(AsyncRedisQueue.list_workers)
    set_progress = blocking(AsyncRedisQueue.set_progress)
    get_progress = blocking(AsyncRedisQueue.get_progress)
    set_limit = blocking(AsyncRedisQueue.set_limit)
    register_task_limits = blocking(AsyncRedisQueue.register_task_limits)
    get_limits = blocking(AsyncRedisQueue.get_limits)
