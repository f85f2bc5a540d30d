"""The limits ledger: one record holding every limit of a store, the start log of each
rate-limited key and the tasks claimed under each cap, for the backends that enforce
limits by compare-and-set on one record (file, NATS; SPEC §8 "Limits").

A claim under limits reads the candidates it would take (in claim order), decides with
:func:`decide` which of them the limits let start, and writes the ledger back only if
nobody changed it since it read it; then it leases those tasks. A start the claim then
fails to lease (another worker took the task meanwhile) stays logged: the window errs
on the side of fewer starts. Running tasks of a key with a cap are the tasks claimed
under it that still run with a live lease (:func:`holds_slot`), so a worker that dies
holding a slot gives it back when its lease lapses; tasks that were running before the
cap was set are not counted. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import msgspec

from omniq._limits import Gate, Limit, queue_key, task_key
from omniq.errors import StorageError
from omniq.models import Task, TaskStatus

__all__ = [
    "Candidate",
    "Ledger",
    "decide",
    "decode",
    "encode",
    "holds_slot",
    "limits_of",
    "set_limits",
]

#: How long a task a claim took under a cap may stay unleased (the claim leases it right
#: after it wrote the ledger) before its slot is given back.
LEASING = 10.0

C = TypeVar("C")
#: A candidate: what the backend leases (an entry, an id), its queue, its task id, and
#: its name when the task carries a limit (None otherwise).
Candidate = tuple[C, str, str | None, str | None]


class Ledger(msgspec.Struct, kw_only=True):
    """The record: ``specs`` (key -> ``Limit.encode()``), ``starts`` (key -> start
    times, epoch seconds), ``holders`` (key with a cap -> task id -> time taken)."""

    specs: dict[str, str] = {}
    starts: dict[str, list[float]] = {}
    holders: dict[str, dict[str, float]] = {}


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Ledger)


def decode(data: bytes | None, where: str) -> Ledger:
    """The ledger in ``data`` (an empty one for None or no bytes); StorageError naming
    ``where`` when it is damaged."""
    if not data:
        return Ledger()
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"{where}: the limits record cannot be decoded: {exc}") from exc


def encode(ledger: Ledger) -> bytes | None:
    """The bytes to store; None when no limit is left (the backend deletes the record,
    and claims run as they do without limits)."""
    return _ENCODER.encode(ledger) if ledger.specs else None


def limits_of(ledger: Ledger) -> dict[str, Limit]:
    """The limits the ledger stores, by key."""
    return {key: Limit.decode(spec) for key, spec in ledger.specs.items()}


def set_limits(ledger: Ledger, limits: Mapping[str, Limit | None]) -> None:
    """Store (a None removes, with its log and holders) the limits of these keys."""
    for key, limit in limits.items():
        if limit is None:
            ledger.specs.pop(key, None)
            ledger.starts.pop(key, None)
            ledger.holders.pop(key, None)
        else:
            ledger.specs[key] = limit.encode()


def carried_name(task: Task) -> str | None:
    """The name of a task carrying a limit (None for one without)."""
    limited = task.rate_limit is not None or task.max_concurrency is not None
    return task.func if limited else None


def holders(ledger: Ledger) -> dict[str, float]:
    """Every task claimed under a cap, with the time it was taken."""
    return {task_id: at for ids in ledger.holders.values() for task_id, at in ids.items()}


def holds_slot(
    taken_at: float, status: TaskStatus | None, lease_us: int | None, now: float
) -> bool:
    """Whether a task claimed under a cap still holds its slot: it runs with a live
    lease, or it still waits just after its claim took it (the lease is on its way).
    ``status`` None: the task is gone."""
    if status is None or status.is_final:
        return False
    if status is not TaskStatus.RUNNING:
        return taken_at >= now - LEASING
    return lease_us is not None and lease_us > now * 1e6


def decide(
    ledger: Ledger,
    candidates: Sequence[Candidate[C]],
    *,
    limit: int,
    now: float,
    dead: set[str],
) -> tuple[list[C], Gate]:
    """Which candidates (in claim order) start now, at most ``limit``, and the gate that
    decided; ``ledger`` takes their starts and holders (``dead``: holders that no longer
    hold a slot, dropped)."""
    specs = {key: Limit.decode(spec) for key, spec in ledger.specs.items()}
    gate = Gate(specs, now)
    picks: list[C] = []
    taken: dict[str, list[str]] = {}
    for item, queue, task_id, name in candidates:
        if len(picks) >= limit:
            break
        if queue_key(queue) in gate.blocked or (name and task_key(name) in gate.blocked):
            continue
        keys = gate.keys(queue, name)
        for key in gate.needs(keys):
            spec = specs[key]
            starts = sorted(ts for ts in ledger.starts.get(key, ()) if ts > now - spec.per)
            running = sum(1 for held in ledger.holders.get(key, {}) if held not in dead)
            gate.load(key, starts, running)
        if gate.admit(keys):
            picks.append(item)
            for key in keys:
                if task_id is not None and specs[key].concurrency is not None:
                    taken.setdefault(key, []).append(task_id)
    for key in list(ledger.starts):  # the log keeps what is still in its window
        kept = specs.get(key)
        if kept is None or kept.rate is None:
            del ledger.starts[key]
            continue
        ledger.starts[key] = [ts for ts in ledger.starts[key] if ts > now - kept.per]
    for key in gate.rated():
        ledger.starts.setdefault(key, []).extend([now] * gate.windows[key].taken)
    for key in list(ledger.holders):
        if key not in specs:
            del ledger.holders[key]
            continue
        ledger.holders[key] = {
            held: at for held, at in ledger.holders[key].items() if held not in dead
        }
    for key, ids in taken.items():  # a lapsed holder taken again is listed once
        ledger.holders.setdefault(key, {}).update(dict.fromkeys(ids, now))
    return picks, gate
