"""PostgreSQL storage: the task queue, results, events and schedules in one schema.

Every component works standalone from a URL::

    async with AsyncPostgresQueue("postgresql://postgres@127.0.0.1/app") as queue:
        await queue.enqueue([task])

or on the shared pool of a :class:`omniq.backend.postgres.PostgresBackend`. Blocking twins
(``PostgresQueue``, ``PostgresResultStorage``…) run the same coroutines on a private loop.

Each operation is one statement, so one round trip and its own transaction: batches travel
as arrays (``unnest``), the writes that belong together are data-modifying CTEs of one
statement, and the ``NOTIFY`` that wakes workers commits with the write it announces.
Claims lock their rows with ``FOR UPDATE SKIP LOCKED``: concurrent workers never wait on
each other and never take the same task. The events of a batch whose tasks log the same
ones (an ``enqueue_many`` on the same pool) are stored once, as an event group its tasks
point at (see ``sql/postgres/0003_event_groups.sql``).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import operator
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Self

import asyncpg
import msgspec

from omniq._sync import sync_twin
from omniq.errors import StorageError
from omniq.models import Schedule, Task, TaskEvent, TaskResult, TaskStatus
from omniq.storage._rows import dt, task_from_row, ts, unreadable_from_row
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
    event_of,
)
from omniq.storage.postgres.connection import PostgresBackend

__all__ = [
    "AsyncPostgresEventStorage",
    "AsyncPostgresQueue",
    "AsyncPostgresResultStorage",
    "AsyncPostgresScheduleStorage",
    "PostgresEventStorage",
    "PostgresQueue",
    "PostgresResultStorage",
    "PostgresScheduleStorage",
]

logger = logging.getLogger("omniq")

_ENCODER = msgspec.msgpack.Encoder()
_RESULT_DECODER = msgspec.msgpack.Decoder(TaskResult)
_EVENT_DECODER = msgspec.msgpack.Decoder(TaskEvent)
_SCHEDULE_DECODER = msgspec.msgpack.Decoder(Schedule)
_CLAIMABLE_TARGETS = frozenset({TaskStatus.PENDING, TaskStatus.RETRYING, TaskStatus.SCHEDULED})
_FINAL = "('complete', 'failed', 'cancelled', 'expired')"
_TASK_COLUMNS = (
    "seq, id, status, priority, attempts, worker_id, lease_ts, due_ts, updated_ts, data, lost_runs"
)
_TASK_WIDTH = _TASK_COLUMNS.count(",") + 1
_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# How long a result waiter trusts notifications before it looks again anyway.
_RESULT_BACKSTOP = 1.0


def _task(row: Sequence[Any]) -> Task:
    return task_from_row(row, "postgres")


class _PostgresComponent(BaseStorage):
    """Connection handling shared by the four components.

    Built from a URL, a component makes its own bundle (one pool); built by a
    :class:`~omniq.backend.postgres.PostgresBackend`, it shares that bundle's pool.
    """

    def __init__(
        self,
        url: str | None = None,
        settings: Any = None,
        *,
        namespace: str | None = None,
        bundle: PostgresBackend | None = None,
    ) -> None:
        self.settings = settings
        if bundle is None:
            url = url or getattr(settings, "postgres_url", None) or _DEFAULT_URL
            bundle = PostgresBackend(url, settings, namespace=namespace)
        self.url = url or bundle.url
        self._pg = bundle
        self._connected = False
        self._sql: dict[str, str] = {}

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def connect(self) -> None:
        """Open the pool (shared through the bundle) and create the schema if needed."""
        if self._connected:
            return
        await self._pg.connect()
        self._connected = True

    async def close(self) -> None:
        """Release the pool. Safe to call twice."""
        if not self._connected:
            return
        self._connected = False
        await self._pg.close()

    async def _db(self) -> PostgresBackend:
        if not self._connected:
            await self.connect()
        return self._pg

    def _q(self, template: str) -> str:
        """``template`` with ``{s}`` as this namespace's schema (built once per template)."""
        sql = self._sql.get(template)
        if sql is None:
            sql = self._sql[template] = template.replace("{s}", self._pg.schema)
        return sql

    @property
    def namespace(self) -> str:
        """The namespace, which names the schema the tables live in."""
        return self._pg.namespace

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._pg!r})"


# -- the task queue ----------------------------------------------------------------------

_ENQUEUE = """
WITH new AS (
    INSERT INTO {s}.tasks (id, queue, status, priority, due_ts, lease_ts, worker_id,
                            attempts, has_deps, updated_ts, data)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::float8[],
                         $6::float8[], $7::text[], $8::int[], $9::bool[], $10::float8[],
                         $11::bytea[])
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), deps AS (
    INSERT INTO {s}.task_deps (depends_on, task_id)
    SELECT * FROM unnest($12::text[], $13::text[])
    ON CONFLICT DO NOTHING
), logged AS (
    INSERT INTO {s}.events (task_id, ts, data)
    SELECT e.task_id, e.ts, e.data
    FROM unnest($14::text[], $15::float8[], $16::bytea[]) WITH ORDINALITY AS e(task_id, ts, data, n)
    WHERE e.task_id IN (SELECT id FROM new)
    ORDER BY e.n
)
SELECT pg_notify($17, '') FROM (SELECT 1 FROM new LIMIT 1) AS stored
"""

# The same, for a batch whose tasks differ only in id and data (enqueue_many, and any single
# task without dependencies): the shared columns go once, as scalars. asyncpg encodes an
# array element by element, with a few abstract-class checks each: for 1,000 tasks, 2
# arrays of 1,000 instead of 16 halve the client's work.
_ENQUEUE_UNIFORM = """
WITH new AS (
    INSERT INTO {s}.tasks (id, queue, status, priority, due_ts, lease_ts, worker_id,
                            attempts, has_deps, updated_ts, data)
    SELECT t.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, t.data
    FROM unnest($1::text[], $2::bytea[]) AS t(id, data)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT pg_notify($12, '') FROM (SELECT 1 FROM new LIMIT 1) AS stored
"""

# A uniform batch with its events: they are the same for every task but for the id, so
# they are stored once, as an event group the new tasks point at (schema version 3), their
# records without the task id (readers put it back).
_ENQUEUE_UNIFORM_LOGGED = """
WITH grp AS MATERIALIZED (
    SELECT nextval('{s}.event_group_ids') AS id
), new AS (
    INSERT INTO {s}.tasks (id, queue, status, priority, due_ts, lease_ts, worker_id,
                            attempts, has_deps, updated_ts, data, event_group)
    SELECT t.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, t.data, grp.id
    FROM unnest($1::text[], $2::bytea[]) AS t(id, data), grp
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), logged AS (
    INSERT INTO {s}.event_groups (id, ts, tasks, stamps, data)
    SELECT grp.id, (SELECT min(stamp) FROM unnest($12::float8[]) AS stamp), stored.n, $12, $13
    FROM grp, (SELECT count(*) AS n FROM new) AS stored
    WHERE stored.n > 0
)
SELECT pg_notify($14, '') FROM (SELECT 1 FROM new LIMIT 1) AS stored
"""

# A claim should be an ordered scan of tasks_claim that stops after LIMIT rows. The
# planner took another path whenever tasks_ready looked cheaper: a bitmap scan of every
# ready row of the queue, then a sort, per claim (9 ms with 10,000 ready against 0.3 ms;
# a fresh table, before autovacuum's first ANALYZE, always looked that way). So, for one
# queue, the readiness test is written so that no index can take it ({ready}), and the
# queue is matched with "=" ("= ANY(array)" cannot give PostgreSQL 15 an ordered scan).
# The scan walks past the queue's running tasks and past not-yet-due tasks of a higher
# priority than the ready ones; both are few in the usual queue.
_CLAIM_UPDATE = f"""
UPDATE {{s}}.tasks AS t
SET status = 'running', worker_id = $4, lease_ts = $5, attempts = t.attempts + 1,
    lost_runs = t.lost_runs + (t.status = 'running')::int, updated_ts = $2
FROM picked WHERE t.seq = picked.seq
RETURNING {", ".join("t." + c for c in _TASK_COLUMNS.split(", "))}
"""
_CLAIM_TEMPLATE = (
    """
WITH picked AS (
    SELECT seq FROM {s}.tasks
    WHERE {match} AND ready_ts IS NOT NULL AND {ready}
    ORDER BY priority DESC, due_ts, seq
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)"""
    + _CLAIM_UPDATE
)
_CLAIM_ONE = _CLAIM_TEMPLATE.replace("{match}", "queue = $1::text").replace(
    "{ready}", "(ready_ts <= $2) IS TRUE"
)
_CLAIM_ANY = _CLAIM_TEMPLATE.replace("{match}", "queue = ANY($1::text[])").replace(
    "{ready}", "ready_ts <= $2"
)

# A strict claim (queue_order="strict": the worker's list order first) keeps what the
# comment above is about: per queue, an ordered scan of tasks_claim matched with "=" that
# stops after LIMIT rows, here one per queue through a LATERAL join over the array WITH
# ORDINALITY, in list order. EXPLAIN ANALYZE (PostgreSQL 15, 10,000 ready tasks in
# "high" and "low", limit 8, 5 runs each): 0.16-0.38 ms whether the tasks are split
# 5,000/5,000, 0/10,000 or 3/10,000, where the merged "= ANY" form above takes 3-15 ms
# (a scan of every ready row, then a sort). Claiming queue by queue from the client would
# use the same scans but cost a round trip for each queue that falls short.
# The outer ORDER BY is the rank alone, on purpose: PostgreSQL knows an ordinality column
# is sorted, so no Sort node comes between the LIMIT and the nested loop, which hands out
# each queue's rows in its sub-query's index order and locks a row only when the LIMIT
# takes it. With the full key (rank, priority, due, seq) an Incremental Sort appears
# instead, which reads (and locks, until the statement ends) rows of the next queues to
# fill its first batch: 11 rows locked for 8 taken with 3 ready in "high".
_CLAIM_IN_LIST_ORDER = (
    """
WITH picked AS (
    SELECT c.seq FROM unnest($1::text[]) WITH ORDINALITY AS q(name, rank)
    CROSS JOIN LATERAL (
        SELECT seq FROM {s}.tasks
        WHERE queue = q.name AND ready_ts IS NOT NULL AND (ready_ts <= $2) IS TRUE
        ORDER BY priority DESC, due_ts, seq
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY q.rank
    LIMIT $3
)"""
    + _CLAIM_UPDATE
)

# ``unrun`` is 1 for an ack whose claim did not run the task (``Ack.ran`` is False).
_ACK = """
UPDATE {s}.tasks AS t SET status = a.status, lease_ts = NULL, updated_ts = $5,
    attempts = t.attempts - a.unrun
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS a(id, worker, status, unrun)
WHERE t.id = a.id AND t.worker_id = a.worker AND t.status = 'running'
RETURNING t.id, a.worker, a.status
"""

_PUT_RESULTS = """
INSERT INTO {s}.results (task_id, expires_ts, data)
SELECT * FROM unnest($1::text[], $2::float8[], $3::bytea[])
ON CONFLICT (task_id) DO UPDATE SET expires_ts = EXCLUDED.expires_ts, data = EXCLUDED.data
RETURNING task_id
"""

# Stored results are announced a few hundred at a time: one NOTIFY per chunk of ids joined
# by newlines, each chunk under PostgreSQL's 8,000-byte payload limit (6,000 plus one id).
# One NOTIFY per result cost the server a queue entry and every listener a message each.
_ANNOUNCE = """
SELECT pg_notify({channel}, string_agg(task_id, E'\\n'))
FROM (
    SELECT task_id, sum(octet_length(task_id) + 1) OVER (ROWS UNBOUNDED PRECEDING) / 6000 AS chunk
    FROM put
) AS stored
GROUP BY chunk
"""

# Acks, and the results and events of the tasks they finished, in one statement: a task
# its worker no longer holds (cancelled, or taken over) keeps the outcome that won.
_FINISH = f"""
WITH acked AS ({_ACK}), put AS (
    INSERT INTO {{s}}.results (task_id, expires_ts, data)
    SELECT r.task_id, r.expires_ts, r.data
    FROM unnest($6::text[], $7::float8[], $8::bytea[]) AS r(task_id, expires_ts, data)
    WHERE r.task_id IN (SELECT id FROM acked)
    ON CONFLICT (task_id) DO UPDATE SET expires_ts = EXCLUDED.expires_ts, data = EXCLUDED.data
    RETURNING task_id
), logged AS (
    INSERT INTO {{s}}.events (task_id, ts, data)
    SELECT e.task_id, e.ts, e.data
    FROM unnest($9::text[], $10::float8[], $11::bytea[])
        WITH ORDINALITY AS e(task_id, ts, data, n)
    WHERE e.task_id IN (SELECT id FROM acked)
    ORDER BY e.n
)
SELECT id, worker, status FROM acked
UNION ALL
SELECT NULL, NULL, NULL FROM ({_ANNOUNCE.format(channel="$12")}) AS announced
"""

_DELETE_FINISHED = f"""
WITH gone AS (
    DELETE FROM {{s}}.tasks WHERE status IN {_FINAL} AND updated_ts < $1
    RETURNING id, event_group
), deps AS (
    DELETE FROM {{s}}.task_deps WHERE task_id IN (SELECT id FROM gone)
), pointing AS (
    SELECT event_group AS id, count(*) AS n FROM gone
    WHERE event_group IS NOT NULL GROUP BY event_group
), moved AS (
    INSERT INTO {{s}}.events (task_id, ts, data)
    SELECT gone.id, e.ts, e.data
    FROM gone JOIN {{s}}.event_groups AS g ON g.id = gone.event_group
    CROSS JOIN LATERAL unnest(g.stamps, g.data) WITH ORDINALITY AS e(ts, data, n)
    ORDER BY gone.id, e.n
), emptied AS (
    DELETE FROM {{s}}.event_groups AS g USING pointing AS p WHERE g.id = p.id AND g.tasks <= p.n
), counted AS (
    UPDATE {{s}}.event_groups AS g SET tasks = g.tasks - p.n
    FROM pointing AS p WHERE g.id = p.id AND g.tasks > p.n
)
SELECT count(*) FROM gone
"""

_QUEUE_OF_TASK = "SELECT queue FROM {s}.tasks WHERE seq = $1"


def _task_row(task: Task) -> tuple[Any, ...]:
    """A task's columns in the enqueue statements' order, all but its data."""
    lease = task.lease_expires_at
    return (
        task.id,
        task.queue,
        task.status.value,
        task.priority,
        ts(task.due_at or task.created_at),
        None if lease is None else ts(lease),
        task.worker_id,
        task.attempts,
        bool(task.depends_on),
        ts(task.updated_at or task.created_at),
    )


def _task_arrays(tasks: Sequence[Task]) -> builtins.list[builtins.list[Any]]:
    """The column arrays of the enqueue statement ($1..$11) for ``tasks``."""
    encode = _ENCODER.encode
    columns = [list(column) for column in zip(*map(_task_row, tasks), strict=True)]
    columns.append([encode(task) for task in tasks])
    return columns


# What tasks of a uniform batch share (compared as objects: the tasks of an enqueue_many are
# copies of one, so the comparison mostly meets the same objects).
_shared_fields = operator.attrgetter(
    "queue", "status", "priority", "due_at", "created_at", "lease_expires_at", "worker_id",
    "attempts", "updated_at", "depends_on",
)  # fmt: skip


def _uniform_args(
    tasks: Sequence[Task], events: Sequence[Sequence[TaskEvent]] | None
) -> tuple[str, tuple[Any, ...]] | None:
    """_ENQUEUE_UNIFORM (or, with events, _ENQUEUE_UNIFORM_LOGGED) and its arguments but
    the channel, or None when the tasks differ in more than id and data, or have
    dependencies, or their events differ in more than the task id."""
    head = tasks[0]
    if head.depends_on:
        return None
    shared = _shared_fields(head)
    if any(_shared_fields(task) != shared for task in tasks[1:]):
        return None
    encode = _ENCODER.encode
    columns = ([task.id for task in tasks], [encode(task) for task in tasks], *_task_row(head)[1:])
    if not events or not any(events):
        return _ENQUEUE_UNIFORM, columns
    first = events[0]
    head_events = [event_fields_but_task_id(event) for event in first]
    if any(
        logged is not first and [event_fields_but_task_id(event) for event in logged] != head_events
        for logged in events[1:]
    ):
        return None
    records = [msgspec.structs.replace(event, task_id="") for event in events[0]]
    stamps = [ts(record.timestamp) for record in records]
    return _ENQUEUE_UNIFORM_LOGGED, (*columns, stamps, [encode(r) for r in records])


class AsyncPostgresQueue(_PostgresComponent, BaseTaskQueue):
    """The task queue on PostgreSQL.

    ``wait`` is woken by ``NOTIFY`` from any client of the database, within a
    round trip of the enqueue's commit.

    Example::

        async with AsyncPostgresQueue("postgresql://postgres@127.0.0.1/app") as queue:
            await queue.enqueue([Task(id="t1", func="app.tasks:send")])
            tasks = await queue.claim(["default"], "w1", limit=8, lease_seconds=30, now=utcnow())
    """

    notifies = True

    async def enqueue(self, tasks: Sequence[Task]) -> builtins.list[str]:
        """Store ``tasks`` (existing ids are left unchanged): one statement, one
        transaction, whatever the batch size."""
        return await self._enqueue(tasks, None)

    def writes_events(self, event_storage: BaseEventStorage) -> bool:
        """True when ``event_storage`` lives in this queue's schema on the same pool."""
        return isinstance(event_storage, AsyncPostgresEventStorage) and (
            event_storage._pg is self._pg
        )

    async def enqueue_logged(
        self,
        tasks: Sequence[Task],
        events: Sequence[Sequence[TaskEvent]],
        event_storage: BaseEventStorage,
    ) -> builtins.list[str]:
        """Tasks and the events of the new ones in the same statement, when the event
        log shares this pool: an event is stored exactly when its task is."""
        if not self.writes_events(event_storage):
            return await super().enqueue_logged(tasks, events, event_storage)
        await event_storage.connect()
        return await self._enqueue(tasks, events)

    async def _enqueue(
        self, tasks: Sequence[Task], events: Sequence[Sequence[TaskEvent]] | None
    ) -> builtins.list[str]:
        if not tasks:
            return []
        db = await self._db()
        # An id repeated in the batch is stored (and logged) as its first occurrence.
        first: dict[str, int] = {}
        for index, task in enumerate(tasks):
            first.setdefault(task.id, index)
        unique = [tasks[index] for index in first.values()]
        logged = [events[index] for index in first.values()] if events else None
        uniform = _uniform_args(unique, logged)
        if uniform is not None:
            sql, args = uniform
            await db.execute("enqueueing", self._q(sql), *args, db.work_channel)
            return [task.id for task in tasks]
        arrays = _task_arrays(unique)
        parents = [dep for task in unique for dep in task.depends_on]
        children = [task.id for task in unique for _ in task.depends_on]
        event_ids: builtins.list[str] = []
        event_ts: builtins.list[float] = []
        event_data: builtins.list[bytes] = []
        for index in first.values() if events else ():
            for unnamed in events[index]:  # type: ignore[index]
                event = event_of(tasks[index].id, unnamed)
                event_ids.append(event.task_id)
                event_ts.append(ts(event.timestamp))
                event_data.append(_ENCODER.encode(event))
        await db.execute(
            "enqueueing",
            self._q(_ENQUEUE),
            *arrays,
            parents,
            children,
            event_ids,
            event_ts,
            event_data,
            db.work_channel,
        )
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
        """Lease up to ``limit`` claimable tasks in one statement (``SKIP LOCKED``; with
        ``strict``, the earlier listed queues first)."""
        if limit <= 0 or not queues:
            return []
        now_ts = ts(now)
        names = list(dict.fromkeys(queues))
        one = len(names) == 1
        strict = strict and not one  # one queue: both orders are the same
        db = await self._db()
        rows = await db.fetch(
            "claiming tasks",
            self._q(_CLAIM_ONE if one else _CLAIM_IN_LIST_ORDER if strict else _CLAIM_ANY),
            names[0] if one else names,
            now_ts,
            limit,
            worker_id,
            now_ts + lease_seconds,
        )
        rows.sort(key=lambda row: (-row[3], row[7], row[0]))
        claimed = [await self._task_or_unreadable(db, row) for row in rows]
        if strict:
            # RETURNING gives rows in no set order and without their queue: the record's
            # queue puts them in list order (a stable sort keeps the order within each).
            rank = {name: i for i, name in enumerate(names)}
            claimed.sort(key=lambda task: rank.get(task.queue, len(rank)))
        for task in claimed:
            if isinstance(task, UnreadableTask):
                logger.error("%s; handing it to the worker to fail", task.reason)
        return claimed

    async def _task_or_unreadable(self, db: PostgresBackend, row: Sequence[Any]) -> Task:
        """The row's task, or, when its record cannot be decoded, an UnreadableTask of
        what the columns say: one bad record must neither block claims nor hide a
        listing."""
        try:
            return _task(row)
        except StorageError as exc:
            queue = await db.fetchval(
                "reading a corrupt task's queue", self._q(_QUEUE_OF_TASK), row[0]
            )
            return unreadable_from_row(row, str(exc), queue)

    async def renew(
        self, task_ids: Collection[str], worker_id: str, *, lease_seconds: float, now: datetime
    ) -> set[str]:
        """Extend the leases ``worker_id`` still holds (one statement for all)."""
        if not task_ids:
            return set()
        now_ts = ts(now)
        sql = self._q(
            "UPDATE {s}.tasks SET lease_ts = $1, updated_ts = $2 "
            "WHERE id = ANY($3::text[]) AND worker_id = $4 AND status = 'running' RETURNING id"
        )
        db = await self._db()
        rows = await db.fetch(
            "renewing leases", sql, now_ts + lease_seconds, now_ts, list(task_ids), worker_id
        )
        return {row[0] for row in rows}

    async def ack_many(self, acks: Sequence[Ack], *, now: datetime) -> builtins.list[bool]:
        """Finish the tasks still held by their workers, in one statement."""
        if not acks:
            return []
        db = await self._db()
        rows = await db.fetch("acknowledging tasks", self._q(_ACK), *_ack_arrays(acks), ts(now))
        return _ack_flags(acks, rows)

    def _on_my_pool(self, storage: BaseStorage | None) -> bool:
        return isinstance(storage, _PostgresComponent) and storage._pg is self._pg

    def finish_logs_events(self, event_storage: BaseEventStorage) -> bool:
        """True when the event log is in this queue's schema, on its pool."""
        return isinstance(event_storage, AsyncPostgresEventStorage) and self._on_my_pool(
            event_storage
        )

    async def finish(
        self,
        items: Sequence[Finish],
        result_storage: BaseResultStorage,
        event_storage: BaseEventStorage | None = None,
        *,
        now: datetime,
    ) -> tuple[builtins.list[bool], dict[str, builtins.list[Task]]]:
        """Acks with the results and events of the tasks they finished, in one statement,
        when the results share this pool; then the dependents of the finished tasks."""
        if not (
            isinstance(result_storage, AsyncPostgresResultStorage)
            and self._on_my_pool(result_storage)
        ):
            return await super().finish(items, result_storage, event_storage, now=now)
        if not items:
            return [], {}
        await result_storage.connect()
        acks = [item.ack for item in items]
        events = [e for item in items for e in item.events] if event_storage is not None else []
        db = await self._db()
        rows = await db.fetch(
            "finishing tasks",
            self._q(_FINISH),
            *_ack_arrays(acks),
            ts(now),
            *_result_arrays([item.result for item in items]),
            [event.task_id for event in events],
            [ts(event.timestamp) for event in events],
            [_ENCODER.encode(event) for event in events],
            db.results_channel,
        )
        flags = _ack_flags(acks, [row for row in rows if row[0] is not None])
        done = [ack.task_id for ack, ok in zip(acks, flags, strict=True) if ok]
        return flags, (await self.dependents_many(done) if done else {})

    async def retry(self, task_id: str, worker_id: str, *, due_at: datetime, now: datetime) -> bool:
        """Move a held task to ``RETRYING``, due at ``due_at``."""
        sql = self._q(
            "WITH moved AS (UPDATE {s}.tasks "
            "SET status = 'retrying', due_ts = $1, lease_ts = NULL, updated_ts = $2 "
            "WHERE id = $3 AND worker_id = $4 AND status = 'running' RETURNING id) "
            "SELECT id, pg_notify($5, '') FROM moved"
        )
        db = await self._db()
        rows = await db.fetch(
            "retrying", sql, ts(due_at), ts(now), task_id, worker_id, db.work_channel
        )
        return bool(rows)

    async def release(self, task_ids: Collection[str], worker_id: str, *, now: datetime) -> int:
        """Hand back held tasks, giving back the attempt their claim counted."""
        if not task_ids:
            return 0
        sql = self._q(
            "WITH released AS (UPDATE {s}.tasks "
            "SET status = CASE WHEN attempts > 1 THEN 'retrying' ELSE 'pending' END, "
            "attempts = GREATEST(attempts - 1, 0), lease_ts = NULL, worker_id = NULL, "
            "updated_ts = $1 "
            "WHERE id = ANY($2::text[]) AND worker_id = $3 AND status = 'running' RETURNING id) "
            "SELECT id, pg_notify($4, '') FROM released"
        )
        db = await self._db()
        rows = await db.fetch("releasing", sql, ts(now), list(task_ids), worker_id, db.work_channel)
        return len(rows)

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
        to_status = TaskStatus(to_status)
        # A task taken from its worker (a cancel) is announced on the cancel channel, as
        # "worker\nid", so that worker stops it at once (see watch_cancels). The worker of
        # a task's last run stays on its row: a waiting task's old worker hears too, and
        # finds nothing of it running.
        sql = self._q(
            "WITH moved AS (UPDATE {s}.tasks "
            "SET status = $1, due_ts = COALESCE($2, due_ts), lease_ts = NULL, updated_ts = $3 "
            f"WHERE id = $4 AND status = ANY($5::text[]) RETURNING {_TASK_COLUMNS}) "
            "SELECT moved.*, CASE WHEN $6 THEN pg_notify($7, '') END, "
            "CASE WHEN $8 AND moved.worker_id IS NOT NULL "
            "THEN pg_notify($9, moved.worker_id || E'\\n' || moved.id) END FROM moved"
        )
        statuses = {TaskStatus(s) for s in from_statuses}
        db = await self._db()
        row = await db.fetchrow(
            "changing a task's status",
            sql,
            to_status.value,
            None if due_at is None else ts(due_at),
            ts(now),
            task_id,
            [status.value for status in statuses],
            to_status in _CLAIMABLE_TARGETS,
            db.work_channel,
            TaskStatus.RUNNING in statuses,
            db.cancel_channel,
        )
        return None if row is None else _task(tuple(row)[:_TASK_WIDTH])

    async def get(self, task_id: str) -> Task | None:
        """The task as stored, or None."""
        return (await self.get_many([task_id]))[0]

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task | None]:
        """Several tasks in one query, in order (None for unknown ids)."""
        if not task_ids:
            return []
        sql = self._q(f"SELECT {_TASK_COLUMNS} FROM {{s}}.tasks WHERE id = ANY($1::text[])")
        db = await self._db()
        rows = await db.fetch("reading tasks", sql, list(task_ids))
        found = {row[1]: _task(row) for row in rows}
        return [found.get(task_id) for task_id in task_ids]

    async def list(
        self, *, queue: str | None = None, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Tasks, newest first, filtered by queue and status."""
        sql = self._q(
            f"SELECT {_TASK_COLUMNS} FROM {{s}}.tasks "
            "WHERE ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR status = $2) "
            "ORDER BY seq DESC LIMIT $3"
        )
        db = await self._db()
        rows = await db.fetch(
            "listing tasks", sql, queue, None if status is None else TaskStatus(status).value, limit
        )
        return [await self._task_or_unreadable(db, row) for row in rows]

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts per queue and status."""
        sql = self._q("SELECT queue, status, count(*) FROM {s}.tasks GROUP BY queue, status")
        db = await self._db()
        counts: dict[str, dict[str, int]] = {}
        for queue, status, count in await db.fetch("counting tasks", sql):
            if count:
                counts.setdefault(queue, {})[status] = count
        return counts

    async def dependents(self, task_id: str) -> builtins.list[Task]:
        """Tasks whose ``depends_on`` names ``task_id``."""
        return (await self.dependents_many([task_id])).get(task_id, [])

    async def dependents_many(self, task_ids: Sequence[str]) -> dict[str, builtins.list[Task]]:
        """Dependents of several tasks in one query."""
        if not task_ids:
            return {}
        columns = ", ".join("t." + c for c in _TASK_COLUMNS.split(", "))
        sql = self._q(
            f"SELECT d.depends_on, {columns} FROM {{s}}.task_deps AS d "
            "JOIN {s}.tasks AS t ON t.id = d.task_id "
            "WHERE d.depends_on = ANY($1::text[]) ORDER BY t.seq"
        )
        db = await self._db()
        found: dict[str, builtins.list[Task]] = {}
        for row in await db.fetch("reading dependents", sql, list(task_ids)):
            found.setdefault(row[0], []).append(_task(tuple(row)[1:]))
        return found

    async def next_due_at(self, queues: Sequence[str]) -> datetime | None:
        """The earliest ready time (due time or lease expiry) in ``queues``."""
        if not queues:
            return None
        sql = self._q(
            "SELECT min(ready_ts) FROM {s}.tasks "
            "WHERE queue = ANY($1::text[]) AND ready_ts IS NOT NULL"
        )
        db = await self._db()
        earliest = await db.fetchval("reading due times", sql, list(dict.fromkeys(queues)))
        return None if earliest is None else dt(earliest)

    async def delete_finished(self, before: datetime) -> int:
        """Delete finished tasks last updated before ``before`` (and their dependency rows).

        The events a task's enqueue stored in a group move to rows of their own first:
        the event log outlives the task (its retention is ``delete_before``'s).
        """
        sql = self._q(_DELETE_FINISHED)
        db = await self._db()
        return int(await db.fetchval("deleting finished tasks", sql, ts(before)))

    async def watch_cancels(
        self,
        worker_id: str,
        held: Callable[[], Collection[str]],
        notice: Callable[[str], None],
    ) -> None:
        """Hear cancels on the backend's listening connection: a transition that takes a
        running task from its worker sends a ``NOTIFY`` in the same statement. While the
        listener is down, the held tasks are read instead, and once more when it is back
        (what was announced meanwhile is lost)."""
        db = await self._db()
        db.cancel_watchers[worker_id] = notice
        try:
            # Until the listener is open, cancels are not heard: look once it is.
            missed = True
            while True:
                if await db.listening():
                    if missed:
                        await self._look_at_held(worker_id, held, notice)
                        missed = False
                    await db.listener_lost()
                    missed = True
                else:
                    await asyncio.sleep(self.cancel_poll_interval)
                    await self._look_at_held(worker_id, held, notice)
        finally:
            db.cancel_watchers.pop(worker_id, None)

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when work may have arrived (a ``NOTIFY``), or after ``timeout``."""
        if timeout <= 0:
            return
        await (await self._db()).wait_for_work(timeout)


def _ack_arrays(acks: Sequence[Ack]) -> tuple[list[str], list[str], list[str], list[int]]:
    return (
        [ack.task_id for ack in acks],
        [ack.worker_id for ack in acks],
        [TaskStatus(ack.status).value for ack in acks],
        [0 if ack.ran else 1 for ack in acks],
    )


def _ack_flags(acks: Sequence[Ack], rows: Sequence[Sequence[Any]]) -> builtins.list[bool]:
    """Per ack, whether it took effect; an ack repeated in one batch took effect once."""
    done = {(row[1], row[2], row[0]) for row in rows}
    flags = []
    for ack in acks:
        key = (ack.worker_id, TaskStatus(ack.status).value, ack.task_id)
        flags.append(key in done)
        done.discard(key)
    return flags


def _result_arrays(
    results: Sequence[TaskResult],
) -> tuple[list[str], list[float | None], list[bytes]]:
    """The result columns; a task's last result in the batch wins (one row per task)."""
    latest = {result.task_id: result for result in results}
    return (
        list(latest),
        [None if r.expires_at is None else ts(r.expires_at) for r in latest.values()],
        [_ENCODER.encode(r) for r in latest.values()],
    )


# -- results ---------------------------------------------------------------------------


class AsyncPostgresResultStorage(_PostgresComponent, BaseResultStorage):
    """Task results on PostgreSQL; ``wait`` is woken by the ``NOTIFY`` of the write."""

    async def put_many(self, results: Sequence[TaskResult]) -> None:
        """Store (or replace) results in one statement, announcing them."""
        if not results:
            return
        sql = self._q(f"WITH put AS ({_PUT_RESULTS}) {_ANNOUNCE.format(channel='$4')}")
        db = await self._db()
        await db.execute("storing results", sql, *_result_arrays(results), db.results_channel)

    async def get(self, task_id: str) -> TaskResult | None:
        """The stored result, or None (also once it expired)."""
        sql = self._q("SELECT expires_ts, data FROM {s}.results WHERE task_id = $1")
        db = await self._db()
        row = await db.fetchrow("reading a result", sql, task_id)
        if row is None:
            return None
        expires_ts, data = row
        if expires_ts is not None and expires_ts <= time.time():
            return None
        try:
            return _RESULT_DECODER.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StorageError(f"postgres: result of task {task_id} is corrupt: {exc}") from exc

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Wait for a result: woken by its ``NOTIFY``, with a periodic look as backstop."""
        db = await self._db()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # Listen before looking, so a result stored in between is not missed.
            future = await db.result_future(task_id)
            try:
                result = await self.get(task_id)
                remaining = deadline - loop.time()
                if result is not None or remaining <= 0:
                    return result
                pause = min(remaining, _RESULT_BACKSTOP)
                if future is None:
                    await asyncio.sleep(min(pause, 0.05))
                else:
                    await asyncio.wait({future}, timeout=pause)
            finally:
                if future is not None:
                    db.drop_result_future(task_id, future)

    async def delete_expired(self, now: datetime) -> int:
        """Delete results past their ``expires_at``."""
        sql = self._q("DELETE FROM {s}.results WHERE expires_ts IS NOT NULL AND expires_ts <= $1")
        db = await self._db()
        return await db.execute("deleting expired results", sql, ts(now))


# -- events ------------------------------------------------------------------------------


# A task's events: those of its enqueue's group first (id 0), then its own rows.
_EVENTS_OF_TASK = """
SELECT id, data FROM (
    SELECT 0 AS part, 0::bigint AS id, e.n, e.data
    FROM {s}.tasks AS t JOIN {s}.event_groups AS g ON g.id = t.event_group
    CROSS JOIN LATERAL unnest(g.data) WITH ORDINALITY AS e(data, n)
    WHERE t.id = $1
    UNION ALL
    SELECT 1, id, 0, data FROM {s}.events WHERE task_id = $1
) AS found
ORDER BY part, id, n
"""

# Rows older than the cutoff go; so do a group's old events (the group itself once none
# is left; tasks pointing at a deleted group read no events from it).
_DELETE_EVENTS_BEFORE = """
WITH rows AS (
    DELETE FROM {s}.events WHERE ts < $1 RETURNING 1
), old AS (
    SELECT g.id, g.tasks,
           (SELECT count(*) FROM unnest(g.stamps) AS s WHERE s < $1) AS dropped,
           (SELECT count(*) FROM unnest(g.stamps) AS s WHERE s >= $1) AS kept
    FROM {s}.event_groups AS g WHERE g.ts < $1
), gone AS (
    DELETE FROM {s}.event_groups AS g USING old WHERE g.id = old.id AND old.kept = 0
), trimmed AS (
    UPDATE {s}.event_groups AS g
    SET ts = (SELECT min(s) FROM unnest(g.stamps) AS s WHERE s >= $1),
        stamps = ARRAY(SELECT e.s FROM unnest(g.stamps, g.data) WITH ORDINALITY AS e(s, d, n)
                       WHERE e.s >= $1 ORDER BY e.n),
        data = ARRAY(SELECT e.d FROM unnest(g.stamps, g.data) WITH ORDINALITY AS e(s, d, n)
                     WHERE e.s >= $1 ORDER BY e.n)
    FROM old WHERE g.id = old.id AND old.kept > 0
)
SELECT (SELECT count(*) FROM rows) + coalesce((SELECT sum(tasks * dropped) FROM old), 0)
"""


class AsyncPostgresEventStorage(_PostgresComponent, BaseEventStorage):
    """The task event log on PostgreSQL (append-only, ordered by insertion)."""

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Append events in one statement, in order."""
        if not events:
            return
        sql = self._q(
            "INSERT INTO {s}.events (task_id, ts, data) "
            "SELECT e.task_id, e.ts, e.data "
            "FROM unnest($1::text[], $2::float8[], $3::bytea[]) "
            "WITH ORDINALITY AS e(task_id, ts, data, n) ORDER BY e.n"
        )
        db = await self._db()
        await db.execute(
            "appending events",
            sql,
            [event.task_id for event in events],
            [ts(event.timestamp) for event in events],
            [_ENCODER.encode(event) for event in events],
        )

    async def get(self, task_id: str) -> builtins.list[TaskEvent]:
        """The task's events, oldest first."""
        sql = self._q(_EVENTS_OF_TASK)
        db = await self._db()
        events = []
        for event_id, data in await db.fetch("reading events", sql, task_id):
            try:
                event = _EVENT_DECODER.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                where = f"event {event_id}" if event_id else "an event of the enqueue's group"
                raise StorageError(f"postgres: {where} of task {task_id} is corrupt") from exc
            # An enqueue logs its events without the task id (see _ENQUEUE_UNIFORM*).
            events.append(
                event if event.task_id else msgspec.structs.replace(event, task_id=task_id)
            )
        # Rows come in the order logged, but a deleted task's grouped events moved to rows
        # logged after its later ones. The sort is stable: one time keeps the logged order.
        events.sort(key=lambda event: event.timestamp)
        return events

    async def delete_before(self, before: datetime) -> int:
        """Delete events older than ``before``; an event of a group counts once per task
        still pointing at it."""
        sql = self._q(_DELETE_EVENTS_BEFORE)
        db = await self._db()
        return int(await db.fetchval("deleting events", sql, ts(before)))


# -- schedules ---------------------------------------------------------------------------


def _schedule_params(schedule: Schedule) -> tuple[Any, ...]:
    next_ts = None if schedule.next_run_at is None else ts(schedule.next_run_at)
    return (schedule.id, next_ts, schedule.paused, _ENCODER.encode(schedule))


def _schedule(schedule_id: str, data: bytes) -> Schedule:
    try:
        return _SCHEDULE_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"postgres: schedule {schedule_id} is corrupt: {exc}") from exc


_UPSERT_SCHEDULE = (
    "INSERT INTO {s}.schedules (id, next_run_ts, paused, data) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (id) DO UPDATE SET next_run_ts = EXCLUDED.next_run_ts, "
    "paused = EXCLUDED.paused, data = EXCLUDED.data"
)
_LOCK_SCHEDULE = "SELECT data FROM {s}.schedules WHERE id = $1 FOR UPDATE"


class AsyncPostgresScheduleStorage(_PostgresComponent, BaseScheduleStorage):
    """Schedules on PostgreSQL; a tick is claimed under a row lock (``FOR UPDATE``)."""

    async def upsert(self, schedule: Schedule) -> None:
        """Insert or replace the schedule with this id."""
        db = await self._db()
        await db.execute(
            "storing a schedule", self._q(_UPSERT_SCHEDULE), *_schedule_params(schedule)
        )

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        sql = self._q("SELECT data FROM {s}.schedules WHERE id = $1")
        db = await self._db()
        data = await db.fetchval("reading a schedule", sql, schedule_id)
        return None if data is None else _schedule(schedule_id, data)

    async def list(self) -> builtins.list[Schedule]:
        """All schedules, by id."""
        sql = self._q("SELECT id, data FROM {s}.schedules ORDER BY id")
        db = await self._db()
        return [_schedule(row[0], row[1]) for row in await db.fetch("listing schedules", sql)]

    async def delete(self, schedule_id: str) -> bool:
        """Remove a schedule; False if it did not exist."""
        sql = self._q("DELETE FROM {s}.schedules WHERE id = $1")
        db = await self._db()
        return await db.execute("deleting a schedule", sql, schedule_id) > 0

    async def update(self, schedule_id: str, changes: Mapping[str, Any]) -> Schedule | None:
        """Apply field changes under the row's lock; None if the schedule is unknown."""
        lock, put = self._q(_LOCK_SCHEDULE), self._q(_UPSERT_SCHEDULE)

        async def update(conn: asyncpg.Connection) -> Schedule | None:
            data = await conn.fetchval(lock, schedule_id)
            if data is None:
                return None
            schedule = msgspec.structs.replace(_schedule(schedule_id, data), **dict(changes))
            await conn.execute(put, *_schedule_params(schedule))
            return schedule

        return await (await self._db()).transaction("updating a schedule", update)

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[Schedule]:
        """Unpaused schedules due at or before ``now``, earliest first."""
        sql = self._q(
            "SELECT id, data FROM {s}.schedules "
            "WHERE NOT paused AND next_run_ts IS NOT NULL AND next_run_ts <= $1 "
            "ORDER BY next_run_ts, id LIMIT $2"
        )
        db = await self._db()
        rows = await db.fetch("reading due schedules", sql, ts(now), limit)
        return [_schedule(row[0], row[1]) for row in rows]

    async def advance(
        self,
        schedule_id: str,
        *,
        expected_next_run_at: datetime,
        next_run_at: datetime | None,
        last_run_at: datetime,
    ) -> bool:
        """Claim one tick: a compare-and-set on ``next_run_at`` under the row's lock."""
        lock, put = self._q(_LOCK_SCHEDULE), self._q(_UPSERT_SCHEDULE)

        async def advance(conn: asyncpg.Connection) -> bool:
            data = await conn.fetchval(lock, schedule_id)
            if data is None:
                return False
            schedule = _schedule(schedule_id, data)
            if schedule.next_run_at is None or schedule.next_run_at != expected_next_run_at:
                return False
            new = msgspec.structs.replace(
                schedule, next_run_at=next_run_at, last_run_at=last_run_at, runs=schedule.runs + 1
            )
            await conn.execute(put, *_schedule_params(new))
            return True

        return await (await self._db()).transaction("advancing a schedule", advance)


PostgresQueue = sync_twin(AsyncPostgresQueue, "PostgresQueue")
PostgresResultStorage = sync_twin(AsyncPostgresResultStorage, "PostgresResultStorage")
PostgresEventStorage = sync_twin(AsyncPostgresEventStorage, "PostgresEventStorage")
PostgresScheduleStorage = sync_twin(AsyncPostgresScheduleStorage, "PostgresScheduleStorage")
