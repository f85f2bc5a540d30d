"""Global limits on NATS (SPEC §8 "Limits"): the limits ledger (:mod:`omniq._limit_ledger`)
in one key of the tasks bucket, :data:`LIMITS_KEY`, changed only by compare-and-set on
its revision.

The task index watches that key with the tasks (it is no task: :func:`omniq.storage.
nats._base.key_of` never makes a key with a dot), so a claim knows without a request
whether any limit is stored: while none is, it is the claim of before. Otherwise it
pops its candidates from the index, decides which the limits let start and writes the
ledger back if nobody changed it meanwhile (else it reads it again and decides again),
puts the others back, and leases the chosen as any claim does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from omniq import _limit_ledger as ledger
from omniq._limits import Gate, Limit, queue_key
from omniq.errors import StorageError
from omniq.models import TaskStatus
from omniq.storage.nats._base import Record, task_of
from omniq.storage.nats._index import LIMITS_KEY, TaskIndex
from omniq.storage.nats.connection import NATSConnection

__all__ = ["LIMITS_KEY", "claim_limited", "read_limits", "write_limits"]

_WHERE = "nats"
#: How many claimable tasks a claim under limits looks at, at most.
SCAN = 500
#: Tries of the ledger's compare-and-set against other claims before giving up.
_TRIES = 16

Picked = tuple[str, int, Record]  # id, revision, record


def _subject(conn: NATSConnection) -> str:
    return f"$KV.{conn.tasks_bucket}.{LIMITS_KEY}"


def _stream(conn: NATSConnection) -> str:
    return f"KV_{conn.tasks_bucket}"


async def read_limits(conn: NATSConnection) -> dict[str, Limit]:
    """The limits stored, by key (one direct get of the ledger's last revision)."""
    _, data = await conn.get_last(_stream(conn), _subject(conn))
    return ledger.limits_of(ledger.decode(data, _WHERE))


async def write_limits(
    conn: NATSConnection, limits: Mapping[str, Limit | None], index: TaskIndex | None
) -> None:
    """Store (a None removes, with its log) the limits of these keys; this process's
    ``index`` (if it keeps one) knows at once, the others' when their watch hears it."""
    subject, stream = _subject(conn), _stream(conn)
    for _ in range(_TRIES):
        revision, data = await conn.get_last(stream, subject)
        state = ledger.decode(data, _WHERE)
        ledger.set_limits(state, limits)
        new = ledger.encode(state) or b""
        written = await conn.cas(subject, stream, new, revision)
        if written is not None:
            if index is not None and written > index.limits[0]:
                index.limits = (written, new)
            return
    raise StorageError("nats: storing a limit: the limits record kept changing")


async def claim_limited(
    conn: NATSConnection,
    index: TaskIndex,
    names: Sequence[str],
    *,
    limit: int,
    now_us: int,
    strict: bool,
) -> tuple[list[Picked], Gate]:
    """Up to ``limit`` claimable tasks the limits let start now, popped from the index
    (the others put back), their starts logged in the ledger; and the gate that decided."""
    now = now_us / 1e6
    popped: list[Picked] = []
    chosen: list[Picked] = []  # what the ledger, once written, says this claim takes
    try:
        candidates = _candidates(index, names, limit=limit, now_us=now_us, strict=strict,
                                 popped=popped)  # fmt: skip
        subject, stream = _subject(conn), _stream(conn)
        revision, data = index.limits
        for attempt in range(_TRIES):
            if attempt:  # another claim wrote first: decide again on what it wrote
                revision, data = await conn.get_last(stream, subject)
            state = ledger.decode(data, _WHERE)
            dead = _dead_holders(index, state, now)
            picks, gate = ledger.decide(state, candidates, limit=limit, now=now, dead=dead)
            new = ledger.encode(state) or b""
            if new == (data or b""):
                chosen = picks
                return chosen, gate
            written = await conn.cas(subject, stream, new, revision)
            if written is not None:
                if written > index.limits[0]:
                    index.limits = (written, new)
                chosen = picks
                return chosen, gate
        raise StorageError("nats: claiming under limits: the limits record kept changing")
    finally:
        taken = {picked[0] for picked in chosen}
        for ident, revision, record in popped:
            if ident not in taken:
                index.place(ident, revision, record)


def _candidates(
    index: TaskIndex,
    names: Sequence[str],
    *,
    limit: int,
    now_us: int,
    strict: bool,
    popped: list[Picked],
) -> list[ledger.Candidate[Picked]]:
    """Claimable tasks popped from the index (into ``popped``) a page at a time, in claim
    order, until the ledger as this process last heard it lets ``limit`` of them start
    (or SCAN were looked at, or every queue is held back by its own limit)."""
    now = now_us / 1e6
    heard = index.limits[1]
    dead = _dead_holders(index, ledger.decode(heard, _WHERE), now)
    candidates: list[ledger.Candidate[Picked]] = []
    page = max(2 * limit, 16)
    while len(popped) < SCAN:
        more = index.take(names, min(page, SCAN - len(popped)), now_us, strict=strict)
        if not more:
            break
        popped += more
        for picked in more:
            ident, _, record = picked
            try:
                name = ledger.carried_name(task_of(ident, record))
            except StorageError:
                name = None  # the lease hands it over to fail
            candidates.append((picked, record.queue, ident, name))
        trial = ledger.decode(heard, _WHERE)
        picks, gate = ledger.decide(trial, candidates, limit=limit, now=now, dead=dead)
        if len(picks) >= limit or all(queue_key(q) in gate.blocked for q in names):
            break
    return candidates


def _dead_holders(index: TaskIndex, state: ledger.Ledger, now: float) -> set[str]:
    """The tasks claimed under caps that hold no slot any more, as the index knows them
    (one it has not heard of yet, just claimed elsewhere, holds its slot)."""
    dead = set()
    for task_id, taken_at in ledger.holders(state).items():
        found = index.records.get(task_id)
        if found is None:
            if taken_at < now - ledger.LEASING:
                dead.add(task_id)
            continue
        record = found[1]
        if not ledger.holds_slot(taken_at, TaskStatus(record.status), record.lease or None, now):
            dead.add(task_id)
    return dead
