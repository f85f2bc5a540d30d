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
from omniq._limits import Gate, Limit
from omniq.errors import StorageError
from omniq.storage.file._layout import Entry, decode_record, record_path, to_us, token
from omniq.storage.file._store import Change, Store

__all__ = ["LIMITS_DIR", "claim_limited", "write_limits"]

LIMITS_DIR = "limits"
_PATH = f"{LIMITS_DIR}/state"
_WHERE = "file backend"
#: How many claimable entries a claim under limits looks at, at most: the candidates
#: behind more held-back tasks than this wait for a later claim.
SCAN = 500


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
    entries = list(itertools.islice(found, SCAN))
    records = await store.read_many([record_path(entry.token) for entry in entries])
    # One whose record cannot be read goes as a task without limits (the lease that
    # follows hands it over to fail).
    candidates: list[ledger.Candidate[Entry]] = []
    for entry, raw in zip(entries, records, strict=True):
        if raw is None:
            continue
        try:
            task = decode_record(raw).task
        except StorageError:
            candidates.append((entry, queue_names.get(entry.path.split("/")[1], ""), None, None))
            continue
        candidates.append((entry, task.queue, task.id, ledger.carried_name(task)))
    dead = await _dead_holders(store, ledger.decode(await store.read(_PATH), _WHERE), now)

    def decide(current: bytes | None) -> Change[tuple[list[Entry], Gate]]:
        state = ledger.decode(current, _WHERE)
        picked = ledger.decide(state, candidates, limit=limit, now=now, dead=dead)
        return Change(picked, data=ledger.encode(state))

    return await store.update(_PATH, decide)


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
