"""A dependency graph: fan out, fan in, then one more step (async API, typed handles).

::

    count_words(doc 1) ─┐
    count_words(doc 2) ─┼─> merge(...) ──> report(...)
    count_words(doc 3) ─┘

A task with ``depends_on`` stays ``SCHEDULED`` until every task it depends on is
``COMPLETE``, then runs; if one of them fails (or is cancelled, or expires) it is
cancelled too, with a ``DependencyFailedError`` naming the one that failed. A dependent
gets its dependencies' *ids* (the handles are ids), not their values: it reads what they
returned with ``get_result``, as ``merge`` does here.

Run it::

    python examples/dag.py

The worker runs in this process (``async with oq.worker()``); the store is the embedded
default (SQLite under ``./.omniq``, or ``OMNIQ_BASE_DIR``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

from omniq import AsyncOmniQ

oq = AsyncOmniQ()

DOCUMENTS = [
    "the quick brown fox jumps over the lazy dog",
    "the dog barks and the fox runs",
    "a quick fox is a happy fox",
]


@oq.task
async def count_words(text: str) -> dict[str, int]:
    """Fan-out step: the word counts of one document."""
    return dict(Counter(text.split()))


@oq.task
async def merge(part_ids: Sequence[str]) -> dict[str, int]:
    """Fan-in step: add up the counts the ``count_words`` tasks returned.

    It runs only once all of them are complete, so each result is there to read.
    """
    total: Counter[str] = Counter()
    for part_id in part_ids:
        part = await oq.get_result(part_id)
        assert part is not None  # depends_on guarantees it: every part is COMPLETE
        total.update(part.result)
    return dict(total)


@oq.task
async def report(merged_id: str, top: int = 3) -> dict[str, int]:
    """Last step: the ``top`` most common words of the merged counts, most common first."""
    merged = await oq.get_result(merged_id)
    assert merged is not None
    return dict(Counter(merged.result).most_common(top))


async def main() -> dict[str, int]:
    """Submit the graph, run a worker beside it, and print what flows out at the end."""
    async with oq, oq.worker(concurrency=4):
        # Fan out: one task per document. Each handle is the task id (a str) and knows
        # the task's return type.
        parts = [await count_words.delay(doc) for doc in DOCUMENTS]
        # Fan in: merge waits for every part; the handles go in as its argument (stored
        # as plain ids) and as its dependencies.
        merged = await merge.submit(args=(parts,), depends_on=parts)
        # One more edge: report waits for merge.
        final = await report.submit(args=(merged,), depends_on=[merged])
        top = await final.result(timeout=30)  # dict[str, int], for mypy too
    for word, count in top.items():
        print(f"{word}: {count}")
    return top


if __name__ == "__main__":
    asyncio.run(main())
