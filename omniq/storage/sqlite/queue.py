"""The SQLite task queue: one row per task, a claim in one short write transaction.

Claims walk the ``tasks_claim`` index per queue (``sql/queries.sql``); ``wait`` wakes at
once for work enqueued in-process and watches the database's WAL files for work committed
by other processes. A finish whose results (and events) share the queue's connection
writes them with the acks in one transaction.
"""

from __future__ import annotations

import builtins
import functools
import json
import logging
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from omniq._limits import Limit, LimitedClaim
from omniq._sync import StorageTwin, blocking
from omniq.errors import StorageError
from omniq.models import Progress, Task, TaskResult, TaskStatus
from omniq.storage._component import Finished, QueueComponent
from omniq.storage._rows import (
    counts_by_queue,
    decode_progress,
    encode_progress,
    task_from_row,
    unreadable_from_row,
)
from omniq.storage._rows import dt as _dt
from omniq.storage._rows import ts as _ts
from omniq.storage.base import Ack, Finish, UnreadableTask
from omniq.storage.sqlite._base import ENCODER, Row
from omniq.storage.sqlite._fleet import SQLiteFleet
from omniq.storage.sqlite._limits import LQ, claim_limited, name_limited_tasks, write_limits
from omniq.storage.sqlite.connection import QUERIES as _Q
from omniq.storage.sqlite.connection import SQLiteConnection
from omniq.storage.sqlite.events import AsyncSQLiteEventStorage, event_row
from omniq.storage.sqlite.results import AsyncSQLiteResultStorage, result_rows

__all__ = ["AsyncSQLiteQueue", "SQLiteQueue"]

logger = logging.getLogger("omniq")

#: The result of an ack that stores none (``ack_many``).
_NO_RESULT = TaskResult(task_id="", status=TaskStatus.COMPLETE)
_CLAIMABLE_TARGETS = frozenset({TaskStatus.PENDING, TaskStatus.RETRYING, TaskStatus.SCHEDULED})


def _task_from_row(row: Row) -> Task:
    return task_from_row(row, "sqlite")


def _task_or_unreadable(conn: sqlite3.Connection, row: Row) -> Task:
    """The row's task, or, when its record cannot be decoded, an UnreadableTask of what
    the columns say: one bad record must neither block claims nor hide a listing."""
    try:
        return _task_from_row(row)
    except StorageError as exc:
        (queue,) = conn.execute(_Q["queue_of_task"], (row[0],)).fetchone()
        return unreadable_from_row(row, str(exc), queue)


def _task_params(task: Task) -> tuple[Any, ...]:
    return (
        task.id,
        task.queue,
        task.status.value,
        task.priority,
        _ts(task.due_at or task.created_at),
        None if task.lease_expires_at is None else _ts(task.lease_expires_at),
        task.worker_id,
        task.attempts,
        1 if task.depends_on else 0,
        _ts(task.updated_at or task.created_at),
        ENCODER.encode(task),
    )


#: The claim of the tasks a claim under limits picked (:picked, a JSON list of seqs).
_LIMITED_CLAIM = _Q["claim"].format(pick="SELECT value FROM json_each(:picked)")

#: One queue's candidates inside the claim over several. Only statements of queries.sql,
#: placeholder names (:q0, :q1…) and ranks are formatted in; every value is bound.
_SUBQUERY = "SELECT * FROM ({})"


@functools.cache
def _claim_sql(queue_count: int, strict: bool = False) -> str:
    """The claim over ``queue_count`` queues (``:q0``, ``:q1``…): one ordered sub-query
    per queue, so each is a walk of ``tasks_claim`` that stops at ``:limit``; with
    ``strict``, each candidate carries its queue's position and that sorts first."""
    if queue_count == 1:
        candidates = _Q["claim_candidates"].format(queue=":q0")
    elif strict:
        candidates = " UNION ALL ".join(
            _SUBQUERY.format(_Q["claim_candidates_ranked"].format(queue=f":q{i}", rank=i))
            for i in range(queue_count)
        )
    else:
        candidates = " UNION ALL ".join(
            _SUBQUERY.format(_Q["claim_candidates"].format(queue=f":q{i}"))
            for i in range(queue_count)
        )
    pick = _Q["claim_pick_in_list_order" if strict else "claim_pick"]
    return _Q["claim"].format(pick=pick.format(candidates=candidates))


class AsyncSQLiteQueue(SQLiteFleet, QueueComponent[SQLiteConnection]):
    """The task queue on SQLite.

    ``wait`` wakes at once for work enqueued through the same connection and within a few
    milliseconds for work committed by another process (it watches the database's WAL
    files instead of querying).

    Example::

        async with AsyncSQLiteQueue("sqlite:///jobs.db") as queue:
            await queue.enqueue([Task(id="t1", func="app.tasks:send")])
            tasks = await queue.claim(["default"], "w1", limit=8, lease_seconds=30, now=utcnow())
    """

    notifies = True
    result_storage_class = AsyncSQLiteResultStorage
    event_storage_class = AsyncSQLiteEventStorage

    async def enqueue(self, tasks: Sequence[Task]) -> list[str]:
        """Store ``tasks`` (existing ids are left unchanged) in one transaction."""
        if not tasks:
            return []
        rows = [_task_params(task) for task in tasks]
        deps = [(dep, task.id) for task in tasks for dep in task.depends_on]
        insert, insert_dep = _Q["insert_task"], _Q["insert_dep"]

        limited = any(t.rate_limit is not None or t.max_concurrency is not None for t in tasks)

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(insert, rows)
            if deps:
                conn.executemany(insert_dep, deps)
            if limited:
                name_limited_tasks(conn, tasks)

        db = await self._conn()
        if len(rows) == 1 and not deps and not limited:
            # A single statement is its own atomic transaction.
            await db.run(lambda conn: conn.execute(insert, rows[0]).close(), "enqueueing")
        else:
            await db.write(write, "enqueueing")
        db.notify_work()
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
    ) -> list[Task]:
        """Lease up to ``limit`` claimable tasks in one ``BEGIN IMMEDIATE`` transaction
        (with ``strict``, the earlier listed queues first)."""
        if limit <= 0 or not queues:
            return []
        queues = list(dict.fromkeys(queues))
        strict = strict and len(queues) > 1  # one queue: both orders are the same
        now_ts = _ts(now)
        params: dict[str, Any] = {f"q{i}": queue for i, queue in enumerate(queues)}
        params.update(worker=worker_id, lease=now_ts + lease_seconds, now=now_ts, limit=limit)
        sql = _claim_sql(len(queues), strict)
        rank = {queue: i for i, queue in enumerate(queues)} if strict else None

        def claim(conn: sqlite3.Connection) -> list[Task]:
            gate = None
            specs = conn.execute(LQ["limits"]).fetchall()
            if specs:  # limits are set: only what they let start (sqlite/_limits.py)
                picked, gate = claim_limited(
                    conn,
                    {key: Limit.decode(spec) for key, spec in specs},
                    queues,
                    strict=strict,
                    limit=limit,
                    now=now_ts,
                )
                pick = {**params, "picked": json.dumps(picked)}
                rows = conn.execute(_LIMITED_CLAIM, pick).fetchall() if picked else []
            else:
                rows = conn.execute(sql, params).fetchall()
            rows.sort(key=lambda row: (-row[3], row[7], row[0]))
            claimed = [_task_or_unreadable(conn, row) for row in rows]
            if rank is not None:
                # RETURNING gives rows in no set order and without their queue: the
                # record's queue puts them in list order (a stable sort keeps the rest).
                claimed.sort(key=lambda task: rank.get(task.queue, len(rank)))
            for task in claimed:
                if isinstance(task, UnreadableTask):
                    logger.error("%s; handing it to the worker to fail", task.reason)
            if gate is not None and gate.held:
                until = None if gate.until is None else _dt(gate.until)
                return LimitedClaim(claimed, until)
            return claimed

        return await (await self._conn()).write(claim, "claiming tasks")

    async def renew(
        self, task_ids: Collection[str], worker_id: str, *, lease_seconds: float, now: datetime
    ) -> set[str]:
        """Extend the leases ``worker_id`` still holds (one statement for all)."""
        if not task_ids:
            return set()
        now_ts = _ts(now)
        params = {
            "ids": json.dumps(list(task_ids)),
            "worker": worker_id,
            "lease": now_ts + lease_seconds,
            "now": now_ts,
        }
        sql = _Q["renew"]

        def renew(conn: sqlite3.Connection) -> set[str]:
            return {row[0] for row in conn.execute(sql, params).fetchall()}

        return await (await self._conn()).run(renew, "renewing leases")

    async def ack_many(self, acks: Sequence[Ack], *, now: datetime) -> list[bool]:
        """Finish the tasks still held by their workers, in one transaction."""
        return await self._finish([Finish(ack, _NO_RESULT) for ack in acks], now=now)

    async def _finish_together(
        self, items: Sequence[Finish], log_events: bool, now: datetime
    ) -> Finished:
        """Acks, then the results and events of the acknowledged tasks, in one transaction."""
        flags = await self._finish(items, now=now, events=log_events)
        done = [item.ack.task_id for item, ok in zip(items, flags, strict=True) if ok]
        self.connection.notify_results(done)
        return flags, (await self.dependents_many(done) if done else {})

    async def _finish(
        self, items: Sequence[Finish], *, now: datetime, events: bool = False
    ) -> builtins.list[bool]:
        """Ack each item still held by its worker, and (for the results of an item that
        is not ``_NO_RESULT``) store its result and, with ``events``, its events."""
        if not items:
            return []
        now_ts, sql = _ts(now), _Q["ack"]
        put_sql, event_sql = _Q["put_result"], _Q["append_event"]
        groups: dict[tuple[str, str, int], builtins.list[str]] = {}
        for item in items:
            ack = item.ack
            key = (ack.worker_id, TaskStatus(ack.status).value, 0 if ack.ran else 1)
            groups.setdefault(key, []).append(ack.task_id)
        params = [
            {"ids": json.dumps(ids), "worker": worker, "status": status, "now": now_ts,
             "unrun": unrun}
            for (worker, status, unrun), ids in groups.items()
        ]  # fmt: skip

        def finish(conn: sqlite3.Connection) -> builtins.list[bool]:
            done = {
                (group["worker"], group["status"], group["unrun"], row[0])
                for group in params
                for row in conn.execute(sql, group).fetchall()
            }
            flags = []
            for item in items:  # an ack repeated in one batch took effect once
                ack = item.ack
                key = (ack.worker_id, TaskStatus(ack.status).value, 0 if ack.ran else 1)
                flags.append((*key, ack.task_id) in done)
                done.discard((*key, ack.task_id))
            won = [item for item, ok in zip(items, flags, strict=True) if ok]
            rows = result_rows([item.result for item in won if item.result is not _NO_RESULT])
            if rows:
                conn.executemany(put_sql, rows).close()
            if events:
                logged = [event_row(event) for item in won for event in item.events]
                if logged:
                    conn.executemany(event_sql, logged).close()
            return flags

        db = await self._conn()
        single = len(params) == 1 and all(item.result is _NO_RESULT for item in items)
        return await (db.run if single else db.write)(finish, "acknowledging tasks")

    async def retry(self, task_id: str, worker_id: str, *, due_at: datetime, now: datetime) -> bool:
        """Move a held task to ``RETRYING``, due at ``due_at``."""
        params = {"id": task_id, "worker": worker_id, "due": _ts(due_at), "now": _ts(now)}
        sql = _Q["retry"]
        db = await self._conn()
        changed = await db.run(lambda conn: conn.execute(sql, params).rowcount, "retrying")
        if changed:
            db.notify_work()
        return changed > 0

    async def release(self, task_ids: Collection[str], worker_id: str, *, now: datetime) -> int:
        """Hand back held tasks, giving back the attempt their claim counted."""
        if not task_ids:
            return 0
        params = {"ids": json.dumps(list(task_ids)), "worker": worker_id, "now": _ts(now)}
        sql = _Q["release"]
        db = await self._conn()
        count = await db.run(lambda conn: conn.execute(sql, params).rowcount, "releasing")
        if count:
            db.notify_work()
        return int(count)

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
        params = {
            "id": task_id,
            "from_statuses": json.dumps([TaskStatus(s).value for s in from_statuses]),
            "to_status": TaskStatus(to_status).value,
            "due": None if due_at is None else _ts(due_at),
            "now": _ts(now),
        }
        sql = _Q["transition"]

        def transition(conn: sqlite3.Connection) -> Row | None:
            rows = conn.execute(sql, params).fetchall()
            return tuple(rows[0]) if rows else None

        db = await self._conn()
        row = await db.run(transition, "changing a task's status")
        if row is None:
            return None
        if to_status in _CLAIMABLE_TARGETS:
            db.notify_work()
        return _task_from_row(row)

    async def get(self, task_id: str) -> Task | None:
        """The task as stored, or None."""
        return (await self.get_many([task_id]))[0]

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Several tasks in one query, in order (None for unknown ids)."""
        if not task_ids:
            return []
        sql, ids = _Q["get_tasks"], json.dumps(list(task_ids))
        db = await self._conn()
        rows = await db.run(lambda conn: conn.execute(sql, (ids,)).fetchall(), "reading tasks")
        found = {row[1]: _task_from_row(row) for row in rows}
        return [found.get(task_id) for task_id in task_ids]

    async def list(
        self, *, queue: str | None = None, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Tasks, newest first, filtered by queue and status."""
        clauses: builtins.list[str] = []
        params: dict[str, Any] = {"limit": limit}
        if queue is not None:
            clauses.append("queue = :queue")
            params["queue"] = queue
        if status is not None:
            clauses.append("status = :status")
            params["status"] = TaskStatus(status).value
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = _Q["list_tasks"].format(where=where)

        def listing(conn: sqlite3.Connection) -> builtins.list[Task]:
            return [_task_or_unreadable(conn, row) for row in conn.execute(sql, params)]

        db = await self._conn()
        return await db.run(listing, "listing tasks")

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts per queue and status."""
        sql = _Q["stats"]
        db = await self._conn()
        rows = await db.run(lambda conn: conn.execute(sql).fetchall(), "counting tasks")
        return counts_by_queue(rows)

    async def dependents_many(self, task_ids: Sequence[str]) -> dict[str, builtins.list[Task]]:
        """Dependents of several tasks in one query."""
        if not task_ids:
            return {}
        sql, ids = _Q["dependents"], json.dumps(list(task_ids))
        db = await self._conn()
        rows = await db.run(lambda conn: conn.execute(sql, (ids,)).fetchall(), "reading deps")
        found: dict[str, builtins.list[Task]] = {}
        for row in rows:
            found.setdefault(row[0], []).append(_task_from_row(row[1:]))
        return found

    async def next_due_at(self, queues: Sequence[str]) -> datetime | None:
        """The earliest ready time (due time or lease expiry) in ``queues``."""
        if not queues:
            return None
        sql, names = _Q["next_ready"], list(dict.fromkeys(queues))

        def earliest(conn: sqlite3.Connection) -> float | None:
            times = [conn.execute(sql, (name,)).fetchone()[0] for name in names]
            known = [ts for ts in times if ts is not None]
            return min(known) if known else None

        ts = await (await self._conn()).run(earliest, "reading due times")
        return None if ts is None else _dt(ts)

    async def delete_finished(self, before: datetime) -> int:
        """Delete finished tasks last updated before ``before`` (and their dependency rows)."""
        params = {"before": _ts(before)}
        deps_sql, sql = _Q["delete_finished_deps"], _Q["delete_finished"]

        def delete(conn: sqlite3.Connection) -> int:
            conn.execute(deps_sql, params)
            return int(conn.execute(sql, params).rowcount)

        return await (await self._conn()).write(delete, "deleting finished tasks")

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when work may have arrived (any queue), or after ``timeout``."""
        if timeout <= 0:
            return
        await (await self._conn()).wait_for_work(timeout)

    async def set_progress(self, updates: Mapping[str, Progress]) -> None:
        """Store tasks' progress in their rows' ``progress`` column (one transaction)."""
        if not updates:
            return
        sql = _Q["set_progress"]
        rows = [(encode_progress(progress), task_id) for task_id, progress in updates.items()]
        db = await self._conn()
        await db.write(lambda conn: conn.executemany(sql, rows).close(), "storing progress")

    async def get_progress(self, task_ids: Sequence[str]) -> dict[str, Progress]:
        """The progress of ``task_ids`` in one query."""
        if not task_ids:
            return {}
        sql, ids = _Q["get_progress"], json.dumps(list(task_ids))
        db = await self._conn()
        rows = await db.run(lambda conn: conn.execute(sql, (ids,)).fetchall(), "reading progress")
        found = {task_id: decode_progress(data) for task_id, data in rows}
        return {task_id: progress for task_id, progress in found.items() if progress is not None}

    # -- limits (sqlite/_limits.py) ----------------------------------------------------

    async def set_limit(self, key: str, limit: Limit | None) -> None:
        """Store (None: remove) the limit of ``key``; claims apply it from now on."""
        await (await self._conn()).write(
            lambda conn: write_limits(conn, {key: limit}), "storing a limit"
        )
        self.connection.notify_work()  # a limit removed may free waiting tasks

    async def get_limits(self) -> dict[str, Limit]:
        """The limits stored, by key."""
        db = await self._conn()
        rows = await db.run(lambda conn: conn.execute(LQ["limits"]).fetchall(), "reading limits")
        return {key: Limit.decode(spec) for key, spec in rows}

    async def register_task_limits(self, limits: Mapping[str, Limit]) -> None:
        """Note the limits of task names before tasks carrying them are stored."""
        await (await self._conn()).write(
            lambda conn: write_limits(conn, limits), "storing task limits"
        )


class SQLiteQueue(StorageTwin[AsyncSQLiteQueue]):
    """Blocking twin of :class:`AsyncSQLiteQueue`: the same methods, without ``await``."""

    async_class = AsyncSQLiteQueue
    ack = blocking(AsyncSQLiteQueue.ack)
    ack_many = blocking(AsyncSQLiteQueue.ack_many)
    claim = blocking(AsyncSQLiteQueue.claim)
    delete_finished = blocking(AsyncSQLiteQueue.delete_finished)
    dependents = blocking(AsyncSQLiteQueue.dependents)
    dependents_many = blocking(AsyncSQLiteQueue.dependents_many)
    enqueue = blocking(AsyncSQLiteQueue.enqueue)
    enqueue_logged = blocking(AsyncSQLiteQueue.enqueue_logged)
    finish = blocking(AsyncSQLiteQueue.finish)
    get = blocking(AsyncSQLiteQueue.get)
    get_many = blocking(AsyncSQLiteQueue.get_many)
    list = blocking(AsyncSQLiteQueue.list)
    next_due_at = blocking(AsyncSQLiteQueue.next_due_at)
    release = blocking(AsyncSQLiteQueue.release)
    renew = blocking(AsyncSQLiteQueue.renew)
    retry = blocking(AsyncSQLiteQueue.retry)
    stats = blocking(AsyncSQLiteQueue.stats)
    transition = blocking(AsyncSQLiteQueue.transition)
    wait = blocking(AsyncSQLiteQueue.wait)
    wait_and_claim = blocking(AsyncSQLiteQueue.wait_and_claim)
    watch_cancels = blocking(AsyncSQLiteQueue.watch_cancels)
    requeue = blocking(AsyncSQLiteQueue.requeue)
    register_worker = blocking(AsyncSQLiteQueue.register_worker)
    deregister_worker = blocking(AsyncSQLiteQueue.deregister_worker)
    list_workers = blocking(AsyncSQLiteQueue.list_workers)
    set_progress = blocking(AsyncSQLiteQueue.set_progress)
    get_progress = blocking(AsyncSQLiteQueue.get_progress)
    set_limit = blocking(AsyncSQLiteQueue.set_limit)
    register_task_limits = blocking(AsyncSQLiteQueue.register_task_limits)
    get_limits = blocking(AsyncSQLiteQueue.get_limits)
