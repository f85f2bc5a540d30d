"""Global limits on the file backend (SPEC §8 "Limits"): the limits ledger
(:mod:`omniq._limit_ledger`) in one record, ``limits/state``, changed only by
compare-and-set (:meth:`Store.update`: a lock on local disk, a conditional write on an
object store).

Its directory is listed with the ready and running ones a claim lists anyway (on an
object store, one more request beside them, not after them); while it is empty, the
claim is the one of before. Otherwise the claim reads the first candidates' records
(their names and limits) and its holders' records, decides in one update of the ledger
which candidates may start, and leases those as any claim does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

from omniq import _limit_ledger as ledger
from omniq._limits import Gate, Limit, queue_key
from omniq.errors import StorageError
from omniq.storage.file._layout import Entry, decode_record, record_path, to_us, token
from omniq.storage.file._store import KEEP, Change, Store

__all__ = ["LIMITS_DIR", "claim_limited", "read_limits", "write_limits"]

LIMITS_DIR = "limits"
_PATH = f"{LIMITS_DIR}/state"
_WHERE = "file backend"
#: How many claimable entries a claim under limits looks at, at most: the candidates
#: behind more held-back tasks than this wait for a later claim.
SCAN = 500


async def read_limits(store: Store) -> dict[str, Limit]:
    """The limits stored, by key (one read of the ledger)."""
    return ledger.limits_of(ledger.decode(await store.read(_PATH), _WHERE))


async def write_limits(store: Store, limits: Mapping[str, Limit | None]) -> None:
    """Store (a None removes, with its log) the limits of these keys."""

    def change(current: bytes | None) -> Change[None]:
        state = ledger.decode(current, _WHERE)
        ledger.set_limits(state, limits)
        return Change(None, data=ledger.encode(state))

    await store.update(_PATH, change)


async def claim_limited(
    store: Store,
    found: Iterator[Entry],
    queue_names: Mapping[str, str],
    *,
    limit: int,
    now_us: int,
) -> tuple[list[Entry], Gate]:
    """Which of the claimable entries ``found`` (in claim order) the limits let start
    now, at most ``limit``, their starts logged; and the gate that decided."""
    now = now_us / 1e6
    snapshot = await store.read(_PATH)
    dead = await _dead_holders(store, ledger.decode(snapshot, _WHERE), now)
    # Candidates a page at a time, until the ledger as read lets ``limit`` of them start
    # (or SCAN were looked at): a claim reads the records it needs, not the backlog's.
    candidates: list[ledger.Candidate[Entry]] = []
    page, looked = max(2 * limit, 16), 0
    while looked < SCAN:
        entries = list(itertools.islice(found, min(page, SCAN - looked)))
        if not entries:
            break
        looked += len(entries)
        candidates += await _candidates(store, entries, queue_names)
        trial = ledger.decode(snapshot, _WHERE)
        picks, gate = ledger.decide(trial, candidates, limit=limit, now=now, dead=dead)
        if len(picks) >= limit or all(queue_key(q) in gate.blocked for q in queue_names.values()):
            break  # enough, or every queue is held back by its own limit

    def decide(current: bytes | None) -> Change[tuple[list[Entry], Gate]]:
        state = ledger.decode(current, _WHERE)
        picked = ledger.decide(state, candidates, limit=limit, now=now, dead=dead)
        new = ledger.encode(state)
        # A claim that changed nothing writes nothing: a write would wake the waiting
        # workers, held back themselves, into a claim each.
        return Change(picked, data=KEEP if new == current else new)

    return await store.update(_PATH, decide)


async def _candidates(
    store: Store, entries: list[Entry], queue_names: Mapping[str, str]
) -> list[ledger.Candidate[Entry]]:
    """The entries with their queue, id and limited name, from their records; one whose
    record cannot be read goes as a task without limits (its lease hands it over to
    fail), one whose record is gone is left out."""
    records = await store.read_many([record_path(entry.token) for entry in entries])
    found: list[ledger.Candidate[Entry]] = []
    for entry, raw in zip(entries, records, strict=True):
        if raw is None:
            continue
        try:
            task = decode_record(raw).task
        except StorageError:
            found.append((entry, queue_names.get(entry.path.split("/")[1], ""), None, None))
            continue
        found.append((entry, task.queue, task.id, ledger.carried_name(task)))
    return found


async def _dead_holders(store: Store, state: ledger.Ledger, now: float) -> set[str]:
    """The tasks claimed under caps that hold no slot any more (from their records)."""
    taken_at = ledger.holders(state)
    held = sorted(taken_at)
    if not held:
        return set()
    raws = await store.read_many([record_path(token(task_id)) for task_id in held])
    dead = set()
    for task_id, raw in zip(held, raws, strict=True):
        try:
            task = None if raw is None else decode_record(raw).task
        except StorageError:
            task = None  # a damaged record holds no slot
        lease = None if task is None or task.lease_expires_at is None else task.lease_expires_at
        if not ledger.holds_slot(
            taken_at[task_id],
            None if task is None else task.status,
            None if lease is None else to_us(lease),
            now,
        ):
            dead.add(task_id)
    return dead
