"""Global limits on the file backend (SPEC §8 "Limits"): one limits record,
``limits/state``, changed only by compare-and-set (:meth:`Store.update`: a lock on local
disk, a conditional write on an object store).

It holds each key's limit, the log of start times of each rate-limited key and, per
task name with a cap, the ids of the tasks claimed under it. Its directory is listed
with the ready and running ones a claim lists anyway (on an object store, one more
request beside them, not after them); while it is empty, the claim is the one of before.
Otherwise the claim reads the first candidates' records (their names and limits), then
decides in one update of the limits record which of them may start, logging their
starts, and leases those as any claim does. A task the claim then fails to lease (taken
by another worker meanwhile) leaves its start in the log: the window errs on the side
of fewer starts. Running tasks of a key with a cap are counted from the records of the
tasks claimed under it (``RUNNING`` with a live lease), so a worker that dies holding a
slot gives it back when its lease lapses; tasks that were running before the cap was
set are not counted.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import msgspec

from omniq._limits import Gate, Limit, queue_key, task_key
from omniq.errors import StorageError
from omniq.models import TaskStatus
from omniq.storage.file._layout import Entry, decode_record, record_path, to_us, token
from omniq.storage.file._store import Change, Store

__all__ = ["LIMITS_DIR", "claim_limited", "write_limits"]

LIMITS_DIR = "limits"
_PATH = f"{LIMITS_DIR}/state"
#: How many claimable entries a claim under limits looks at, at most: the candidates
#: behind more held-back tasks than this wait for a later claim.
SCAN = 500


#: How long a task a claim took under a cap may stay unleased (the claim leases it right
#: after its update of the limits record) before its slot is given back.
_LEASING = 10.0


class _State(msgspec.Struct, kw_only=True):
    specs: dict[str, str] = {}
    starts: dict[str, list[float]] = {}
    #: Per key with a cap: the tasks claimed under it, with the time they were taken.
    holders: dict[str, dict[str, float]] = {}


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_State)


def _decode(data: bytes | None) -> _State:
    if data is None:
        return _State()
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise StorageError(f"file backend: the limits record cannot be decoded: {exc}") from exc


def _stored(state: _State) -> bytes | None:
    """The bytes to store (None deletes the record: no limit left, claims as before)."""
    return _ENCODER.encode(state) if state.specs else None


async def write_limits(store: Store, limits: Mapping[str, Limit | None]) -> None:
    """Store (a None removes, with its log) the limits of these keys."""

    def change(current: bytes | None) -> Change[None]:
        state = _decode(current)
        for key, limit in limits.items():
            if limit is None:
                state.specs.pop(key, None)
                state.starts.pop(key, None)
                state.holders.pop(key, None)
            else:
                state.specs[key] = limit.encode()
        return Change(None, data=_stored(state))

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
    # (entry, queue, id, the name of a task carrying a limit); one that cannot be read
    # goes as a task without limits (the lease that follows hands it over to fail).
    candidates: list[tuple[Entry, str, str | None, str | None]] = []
    for entry, raw in zip(entries, records, strict=True):
        queue = queue_names.get(entry.path.split("/")[1], "")
        if raw is None:
            continue
        try:
            task = decode_record(raw).task
        except StorageError:
            candidates.append((entry, queue, None, None))
            continue
        limited = task.rate_limit is not None or task.max_concurrency is not None
        candidates.append((entry, task.queue, task.id, task.func if limited else None))
    dead = await _finished_holders(store, _decode(await store.read(_PATH)), now_us)

    def decide(current: bytes | None) -> Change[tuple[list[Entry], Gate]]:
        state = _decode(current)
        specs = {key: Limit.decode(spec) for key, spec in state.specs.items()}
        gate = Gate(specs, now)
        picks: list[Entry] = []
        taken: dict[str, list[str]] = {}
        for entry, queue, task_id, name in candidates:
            if len(picks) >= limit:
                break
            if queue_key(queue) in gate.blocked or (name and task_key(name) in gate.blocked):
                continue
            keys = gate.keys(queue, name)
            for key in gate.needs(keys):
                spec = specs[key]
                starts = sorted(ts for ts in state.starts.get(key, ()) if ts > now - spec.per)
                running = sum(1 for held in state.holders.get(key, {}) if held not in dead)
                gate.load(key, starts, running)
            if gate.admit(keys):
                picks.append(entry)
                for key in keys:
                    if task_id is not None and specs[key].concurrency is not None:
                        taken.setdefault(key, []).append(task_id)
        for key in list(state.starts):  # the log keeps what is still in its window
            kept = specs.get(key)
            if kept is None or kept.rate is None:
                del state.starts[key]
                continue
            state.starts[key] = [ts for ts in state.starts[key] if ts > now - kept.per]
        for key in gate.rated():
            state.starts.setdefault(key, []).extend([now] * gate.windows[key].taken)
        for key in list(state.holders):
            if key not in specs:
                del state.holders[key]
                continue
            state.holders[key] = {
                held: at for held, at in state.holders[key].items() if held not in dead
            }
        for key, ids in taken.items():  # a lapsed holder taken again is listed once
            state.holders.setdefault(key, {}).update(dict.fromkeys(ids, now))
        return Change((picks, gate), data=_stored(state))

    return await store.update(_PATH, decide)


async def _finished_holders(store: Store, state: _State, now_us: int) -> set[str]:
    """The ids among the tasks claimed under caps that hold no slot any more: gone,
    final, running with a lapsed lease, or still waiting long after their claim took
    them (its lease of them failed). One the claim took but has not leased yet holds
    its slot."""
    taken_at = {task_id: at for ids in state.holders.values() for task_id, at in ids.items()}
    held = sorted(taken_at)
    if not held:
        return set()
    dead = set()
    for task_id, raw in zip(
        held, await store.read_many([record_path(token(t)) for t in held]), strict=True
    ):
        task = None if raw is None else decode_record(raw).task
        if task is None or task.status.is_final:
            dead.add(task_id)
        elif task.status is not TaskStatus.RUNNING:
            if taken_at[task_id] < now_us / 1e6 - _LEASING:
                dead.add(task_id)
        elif task.lease_expires_at is None or to_us(task.lease_expires_at) <= now_us:
            dead.add(task_id)
    return dead
