"""Global limits on SQLite (SPEC §8 "Limits"): enforced inside the claim's write
transaction, which SQLite's write lock makes the only one at a time across every process
that shares the file.

The claim reads the ``limits`` table first; while it is empty, it claims as it did
before limits existed (one small read more inside the same transaction, no round trip).
Otherwise it walks each queue's claimable tasks in claim order, skipping queues and task
names a limit holds back (:class:`omniq._limits.Gate`), logs each start of a rate-limited
key in ``limit_starts`` and counts a key's running tasks from the task rows themselves
(``RUNNING`` with a live lease), so a dead worker's slot comes back with its lease.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from omniq._limits import Gate, Limit, queue_key, task_key
from omniq.models import Task
from omniq.storage._sql import load_queries

__all__ = ["LQ", "claim_limited", "name_limited_tasks", "write_limits"]

#: The statements of ``sql/limits.sql``.
LQ = load_queries("omniq.storage.sqlite", "limits.sql")


def _load(conn: sqlite3.Connection, gate: Gate, keys: Sequence[str]) -> None:
    """Load the windows of ``keys`` into ``gate`` (pruning starts that left them)."""
    now = gate.now
    for key in gate.needs(keys):
        limit = gate.specs[key]
        starts: list[float] = []
        if limit.rate is not None:
            conn.execute(LQ["prune_starts"], (key, now - limit.per)).close()
            starts = [row[0] for row in conn.execute(LQ["starts"], (key, now - limit.per))]
        running = 0
        if limit.concurrency is not None:
            kind, _, name = key.partition(":")
            sql = LQ["running_in_queue" if kind == "q" else "running_of_name"]
            running = conn.execute(sql, (name, now)).fetchone()[0]
        gate.load(key, starts, running)


def claim_limited(
    conn: sqlite3.Connection,
    specs: Mapping[str, Limit],
    queues: Sequence[str],
    *,
    strict: bool,
    limit: int,
    now: float,
) -> tuple[list[int], Gate]:
    """The seqs of up to ``limit`` claimable tasks the limits let start now, in claim
    order (with ``strict``, list order first), and the gate that decided (what it held
    back, until when). Logs their starts; the caller leases them in this transaction."""
    gate = Gate(dict(specs), now)
    open_queues = list(queues)
    picked: list[int] = []
    blocked_names: list[str] = []
    while len(picked) < limit and open_queues:
        params: dict[str, Any] = {
            "now": now,
            "blocked": json.dumps(blocked_names),
            "picked": json.dumps(picked),
            "n": limit - len(picked),
        }
        candidates = []
        for rank, queue in enumerate(open_queues):
            params["queue"] = queue
            for seq, priority, due, name in conn.execute(LQ["candidates"], params):
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
            _load(conn, gate, keys)
            if gate.admit(keys):
                picked.append(seq)
                continue
            # Every candidate is either taken or blocks a key: the loop ends.
            if queue_key(queue) in gate.blocked:
                open_queues.remove(queue)
            if name is not None and task_key(name) in gate.blocked:
                blocked_names.append(name)
    for key in gate.rated():
        conn.executemany(LQ["add_start"], [(key, now)] * gate.windows[key].taken).close()
    return picked, gate


def write_limits(conn: sqlite3.Connection, limits: Mapping[str, Limit | None]) -> None:
    """Store (a None removes) the limits of these keys."""
    for key, limit in limits.items():
        if limit is None:  # its log goes too: no claim prunes a key without a limit
            conn.execute(LQ["drop_limit"], (key,)).close()
            conn.execute(LQ["drop_starts"], (key,)).close()
        else:
            conn.execute(LQ["set_limit"], (key, limit.encode())).close()


def name_limited_tasks(conn: sqlite3.Connection, tasks: Sequence[Task]) -> None:
    """Mark the rows of tasks carrying a limit with their name (in the enqueue's
    transaction): the claim finds their key, and counts their running ones, by it."""
    rows = [
        (task.func, task.id)
        for task in tasks
        if task.rate_limit is not None or task.max_concurrency is not None
    ]
    if rows:
        conn.executemany(LQ["name_tasks"], rows).close()
