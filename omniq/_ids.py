"""Time-ordered task ids (UUID version 7 layout), so ids sort in creation order."""

from __future__ import annotations

import os
import random
import threading
import time

__all__ = ["new_task_id", "new_task_ids"]

_lock = threading.Lock()
# Ids need uniqueness, not secrecy: the Mersenne Twister is ample and far cheaper than
# a system call per id. Re-seeded after fork so children do not repeat their parent.
_rng = random.Random()
_random_bits = _rng.getrandbits
os.register_at_fork(after_in_child=_rng.seed)
_last_ms = 0
_seq = 0


def new_task_id() -> str:
    """A new UUIDv7-formatted id: 48-bit milliseconds, 12-bit sequence, 62 random bits.

    Ids made in one process are strictly increasing, which keeps enqueue order visible
    to backends that sort by id.
    """
    return new_task_ids(1)[0]


def new_task_ids(count: int) -> list[str]:
    """``count`` new ids (see :func:`new_task_id`), in order: one clock read and one
    lock for the whole batch, for ``enqueue_many``."""
    global _last_ms, _seq
    if count <= 0:
        return []
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms, seq = _last_ms, _seq + 1
        else:
            seq = 0
        stamps = []
        for _ in range(count):
            if seq > 0xFFF:
                ms, seq = ms + 1, 0
            stamps.append((ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62))
            seq += 1
        _last_ms, _seq = ms, seq - 1
    ids = []
    for stamp in stamps:
        h = f"{stamp | _random_bits(62):032x}"
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids
