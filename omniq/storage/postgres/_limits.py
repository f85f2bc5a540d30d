"""Global limits on PostgreSQL (SPEC §8 "Limits").

The claim statements run guarded: each also asks whether the ``limits`` table holds a
row, in the same statement (one round trip, as before limits existed). While it is
empty they claim as they always did; when it is not, they claim nothing and end with
one row of NULLs, and the claim runs again here, under limits, in one transaction:
claims under limits take turns on a transaction-scoped advisory lock, walk each queue's
claimable tasks in claim order (``FOR UPDATE SKIP LOCKED``), skip queues and task names
a limit holds back (:class:`omniq._limits.Gate`), log each start of a rate-limited key
in ``limit_starts`` and count a key's running tasks from the task rows (``RUNNING`` with
a live lease), so a dead worker's slot comes back with its lease.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import asyncpg

from omniq._limits import Gate, Limit, queue_key, task_key
from omniq.models import Task
from omniq.storage._sql import load_queries

__all__ = ["claim_limited", "guarded_claims", "limit_statements", "name_limited_tasks"]

_QUERIES = load_queries("omniq.storage.postgres", "limits.sql")

#: The claim statements of queries.sql that run guarded.
CLAIMS = ("claim_one", "claim_any", "claim_in_list_order")


@cache
def limit_statements(schema: str) -> Mapping[str, str]:
    """The statements of ``sql/limits.sql`` for ``schema``."""
    return {name: sql.format(s=schema) for name, sql in _QUERIES.items()}


def _guard(sql: str, schema: str) -> str:
    """A claim statement (``WITH picked AS (…) UPDATE … FROM picked WHERE t.seq =
    picked.seq RETURNING …``) that claims nothing while a limit is stored and then
    returns one row of NULLs (the ``guard_*`` pieces of ``sql/limits.sql``). The scan of
    ``picked`` is left exactly as it was (its plan is what the claim statements'
    comments are about); the limits check is a one-time filter over an empty table."""
    pieces = limit_statements(schema)
    steps = [
        ("WITH picked AS (", pieces["guard_head"]),
        (f")\nUPDATE {schema}.tasks AS t", pieces["guard_update"]),
        ("FROM picked WHERE t.seq = picked.seq", pieces["guard_where"]),
    ]
    for old, new in steps:
        if sql.count(old) != 1:
            raise AssertionError(f"postgres claim statement changed shape: {old!r} not found once")
        sql = sql.replace(old, new)
    return f"{sql}\n{pieces['guard_tail']}"


_GUARDED: dict[str, Mapping[str, str]] = {}


def guarded_claims(schema: str, statements: Mapping[str, str]) -> Mapping[str, str]:
    """The claim statements of ``statements`` guarded for ``schema`` (see :func:`_guard`),
    made once per schema."""
    found = _GUARDED.get(schema)
    if found is None:
        found = _GUARDED[schema] = {name: _guard(statements[name], schema) for name in CLAIMS}
    return found


async def _load(
    conn: asyncpg.Connection, lq: Mapping[str, str], gate: Gate, keys: Sequence[str]
) -> None:
    now = gate.now
    for key in gate.needs(keys):
        limit = gate.specs[key]
        starts: list[float] = []
        if limit.rate is not None:
            starts = [row[0] for row in await conn.fetch(lq["starts"], key, now - limit.per)]
        running = 0
        if limit.concurrency is not None:
            kind, _, name = key.partition(":")
            query = lq["running_in_queue" if kind == "q" else "running_of_name"]
            running = await conn.fetchval(query, name, now)
        gate.load(key, starts, running)


async def claim_limited(
    conn: asyncpg.Connection,
    lq: Mapping[str, str],
    schema: str,
    queues: Sequence[str],
    *,
    strict: bool,
    limit: int,
    now: float,
    worker_id: str,
    lease_until: float,
) -> tuple[list[Any], Gate]:
    """Up to ``limit`` claimable tasks the limits let start now, leased (their rows),
    and the gate that decided; inside the caller's transaction."""
    await conn.execute(lq["lock"], f"omniq-limits:{schema}")
    rows = await conn.fetch(lq["limits"])
    gate = Gate({key: Limit.decode(spec) for key, spec in rows}, now)
    open_queues = list(queues)
    picked: list[int] = []
    blocked_names: list[str] = []
    while len(picked) < limit and open_queues:
        candidates = []
        for rank, queue in enumerate(open_queues):
            found = await conn.fetch(
                lq["candidates"], queue, now, blocked_names, picked, limit - len(picked)
            )
            for seq, priority, due, name in found:
                candidates.append((rank if strict else 0, -priority, due, seq, queue, name))
        if not candidates:
            break
        candidates.sort()
        for *_, seq, queue, name in candidates:
            if len(picked) >= limit:
                break
            if queue not in open_queues or (name is not None and name in blocked_names):
                continue
            keys = gate.keys(queue, name)
            await _load(conn, lq, gate, keys)
            if gate.admit(keys):
                picked.append(seq)
                continue
            # Every candidate is taken or blocks a key: the loop ends.
            if queue_key(queue) in gate.blocked:
                open_queues.remove(queue)
            if name is not None and task_key(name) in gate.blocked:
                blocked_names.append(name)
    logged = [(key, gate.windows[key].taken) for key in gate.rated()]
    keys = [key for key, count in logged for _ in range(count)]
    if keys:
        await conn.execute(lq["add_starts"], keys, [now] * len(keys))
    if not picked:
        return [], gate
    return await conn.fetch(lq["claim_picked"], picked, worker_id, lease_until, now), gate


def name_limited_tasks(tasks: Sequence[Task]) -> tuple[list[str], list[str]] | None:
    """The (ids, names) of the tasks carrying a limit, for ``name_tasks``; None if none."""
    named = [
        (task.id, task.func)
        for task in tasks
        if task.rate_limit is not None or task.max_concurrency is not None
    ]
    if not named:
        return None
    return [task_id for task_id, _ in named], [name for _, name in named]
