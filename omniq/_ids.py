"""Task ids: time-ordered (UUID version 7 layout), so ids sort in creation order; and
:class:`IdStr`, the ``str`` subclass task handles build on, which travels as its plain id."""

from __future__ import annotations

import os
import random
import threading
import time

__all__ = ["IdStr", "new_task_id", "new_task_ids", "plain_id"]

_lock = threading.Lock()
# Ids need uniqueness, not secrecy: the Mersenne Twister is ample and far cheaper than
# a system call per id. Re-seeded after fork so children do not repeat their parent.
_rng = random.Random()  # nosec B311 # ids must be unique, not secret: no key or token
_random_bits = _rng.getrandbits
os.register_at_fork(after_in_child=_rng.seed)
_VARIANT = 0b10 << 62
_last_ms = 0
_seq = 0


def _reserve(count: int) -> tuple[int, int]:
    """The millisecond and sequence of the first of ``count`` consecutive id positions;
    the positions past 0xFFF run on into the next milliseconds. Call under ``_lock``."""
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        ms, seq = _last_ms, _seq + 1
    else:
        seq = 0
    end = seq + count - 1
    _last_ms, _seq = ms + (end >> 12), end & 0xFFF
    return ms + (seq >> 12), seq & 0xFFF


def new_task_id() -> str:
    """A new UUIDv7-formatted id: 48-bit milliseconds, 12-bit sequence, 62 random bits.

    Ids made in one process are strictly increasing, which keeps enqueue order visible
    to backends that sort by id.
    """
    with _lock:
        ms, seq = _reserve(1)
    h = f"{(ms << 80) | (0x7 << 76) | (seq << 64) | _VARIANT | _random_bits(62):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_task_ids(count: int) -> list[str]:
    """``count`` new ids (see :func:`new_task_id`), in order: one clock read and one
    lock for the whole batch, for ``enqueue_many``."""
    if count <= 0:
        return []
    with _lock:
        ms, seq = _reserve(count)
    ids: list[str] = []
    while count:
        take = min(count, 0x1000 - seq)
        # The id as text: 48-bit ms, version 7, 12-bit sequence, then variant 0b10 and 62
        # random bits; the part before the sequence is the same for a whole millisecond.
        h = f"{ms:012x}"
        head = f"{h[:8]}-{h[8:]}-7"
        tails = [f"{_VARIANT | _random_bits(62):016x}" for _ in range(take)]
        ids += [
            f"{head}{s:03x}-{t[:4]}-{t[4:]}"
            for s, t in zip(range(seq, seq + take), tails, strict=True)
        ]
        count -= take
        ms, seq = ms + 1, 0
    return ids


class IdStr(str):
    """A task id that is a ``str`` subclass (the task handles): equal to, hashed and
    formatted as its id, and stored, pickled and encoded as that plain ``str``.

    Storage and msgspec take only exact ``str`` (msgspec refuses a subclass), so every
    place an id leaves the process turns it into one with :func:`plain_id`, and a pickle
    (a handle passed to another process, or inside a dill payload) carries the id alone:
    the client a handle holds stays behind.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        return (str, (str(self),))

    def __copy__(self) -> IdStr:
        return self

    def __deepcopy__(self, memo: object) -> IdStr:
        return self


def plain_id(task_id: str) -> str:
    """``task_id`` as an exact ``str`` (a task handle gives its id); anything else as it is,
    so a wrong type still fails where it always did, naming itself."""
    return str(task_id) if isinstance(task_id, IdStr) else task_id
