"""CPU-bound work on process workers (blocking API).

Each task counts the primes in one slice of a range with plain Python arithmetic, which
holds the GIL: threads or an asyncio worker would run the slices one after another.
``worker_type="process"`` runs each task in a child process of its own (``concurrency``
of them), so the slices run on as many cores as the machine has.

Run it::

    python examples/cpu_bound.py              # primes below 2,000,000 in 8 slices
    python examples/cpu_bound.py 500000 4     # primes below 500,000 in 4 slices

The tasks go through the embedded default store (SQLite under ``./.omniq``); set
``OMNIQ_BASE_DIR`` to keep it elsewhere. The function travels to the children by its
import path when this file is imported as a module, and by value (dill) when it runs as a
script, as here: both work on process workers, whose children start with ``spawn``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from itertools import pairwise

from omniq import OmniQ, TaskStatus


def count_primes(start: int, stop: int) -> int:
    """How many primes lie in ``[start, stop)``: trial division, on purpose slow."""
    count = 0
    for n in range(max(start, 2), stop):
        if all(n % d for d in range(2, math.isqrt(n) + 1)):
            count += 1
    return count


def main(limit: int = 2_000_000, slices: int = 8) -> int:
    """Count the primes below ``limit`` in ``slices`` tasks on process workers; return the count."""
    bounds = [limit * i // slices for i in range(slices + 1)]
    with OmniQ() as oq:
        ids = oq.enqueue_many(count_primes, list(pairwise(bounds)))
        started = time.perf_counter()
        # One child per core; run(burst=True) returns once every task due now has run.
        oq.worker(worker_type="process", concurrency=os.cpu_count() or 2).run(burst=True)
        elapsed = time.perf_counter() - started
        total = 0
        for task_id in ids:
            result = oq.get_result(task_id)
            assert result is not None and result.status is TaskStatus.COMPLETE, result
            total += result.result
    print(f"{total} primes below {limit:,} ({slices} tasks, {elapsed:.2f} s)")
    return total


if __name__ == "__main__":
    # The guard matters: process workers start their children with ``spawn``, which
    # imports this file again in each child; only the parent may enqueue and run the pool.
    main(*(int(arg) for arg in sys.argv[1:3]))
