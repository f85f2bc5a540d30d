"""``omniq demo``: the whole job on the embedded default, in a few seconds.

It enqueues a batch of example tasks (sync and async, some failing and retried, one
that always fails), runs a worker in the background with a progress bar, then prints a
summary of results and one retried task's events.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from typing import Any, TextIO

from omniq.core import AsyncOmniQ
from omniq.models import FINAL_STATUSES

__all__ = ["flaky_fetch", "resize_image", "run_demo", "send_report", "summarise"]

_attempts: Counter[str] = Counter()


async def resize_image(name: str, size: int) -> str:
    """An async task: pretend to resize an image."""
    await asyncio.sleep(random.uniform(0.01, 0.05))  # nosec B311 # a demo's pause, not a secret
    return f"{name} resized to {size}px"


def summarise(values: list[int]) -> dict[str, float]:
    """A sync task: a little CPU work."""
    return {"count": len(values), "mean": sum(values) / len(values), "max": max(values)}


def flaky_fetch(url: str) -> str:
    """Fails on its first attempt, then succeeds: shows retries with backoff."""
    _attempts[url] += 1
    if _attempts[url] == 1:
        raise ConnectionError(f"{url}: connection reset (attempt {_attempts[url]})")
    return f"{url}: 200 OK after {_attempts[url]} attempts"


def send_report(recipient: str) -> None:
    """Always fails: shows a task ending FAILED with its error kept."""
    raise ValueError(f"mailbox {recipient!r} does not exist")


class _ProgressBar:
    def __init__(self, total: int, out: TextIO) -> None:
        self.total = total
        self.out = out

    def show(self, done: int, counts: dict[str, int]) -> None:
        width = 30
        filled = int(width * done / self.total) if self.total else width
        detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        self.out.write(
            f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {detail}   "
        )
        self.out.flush()

    def close(self) -> None:
        self.out.write("\n")
        self.out.flush()


async def run_demo(oq: AsyncOmniQ | None = None, *, out: TextIO = sys.stdout) -> dict[str, int]:
    """Run the demo on ``oq`` (default: a fresh ``AsyncOmniQ()``); return status counts."""
    client = oq or AsyncOmniQ()
    try:
        await client.connect()
        queue_url = client.settings.storage_url("task_queue")
        out.write(f"OmniQ demo on {queue_url}\n")
        ids: list[str] = []
        ids += await client.enqueue_many(
            resize_image, [(f"photo-{i}.png", 256 * (1 + i % 3)) for i in range(12)]
        )
        ids += await client.enqueue_many(
            summarise,
            [([random.randint(1, 100) for _ in range(50)],) for _ in range(5)],  # nosec B311 # demo data
        )
        flaky = [
            await client.submit(
                flaky_fetch, (f"https://example.test/{i}",), max_retries=2, retry_delay=0.1
            )
            for i in range(3)
        ]
        doomed = await client.submit(
            send_report, ("nobody@example.test",), max_retries=1, retry_delay=0.1
        )
        ids += [*flaky, doomed]
        out.write(f"enqueued {len(ids)} tasks; running a worker (async, concurrency 8)\n")

        bar = _ProgressBar(len(ids), out)
        async with client.worker(concurrency=8):
            while True:
                statuses = [t.status for t in await client.queue.get_many(ids) if t is not None]
                counts = Counter(s.value for s in statuses)
                done = sum(1 for s in statuses if s in FINAL_STATUSES)
                bar.show(done, dict(counts))
                if done == len(ids):
                    break
                await asyncio.sleep(0.1)
        bar.close()

        final: Counter[str] = Counter()
        out.write("\nresults:\n")
        for task_id in ids:
            result = await client.get_result(task_id)
            if result is None:
                continue
            final[result.status.value] += 1
            if task_id in (ids[0], ids[12], flaky[0], doomed):
                detail = (
                    result.result
                    if result.error is None
                    else f"{result.error.type}: {result.error.message}"
                )
                out.write(
                    f"  {task_id[:8]}… {result.status.value:<8} after {result.attempts} "
                    f"attempt(s): {detail}\n"
                )
        out.write("\nevents of a retried task:\n")
        for event in await client.get_events(flaky[0]):
            note = f"  {event.message}" if event.message else ""
            out.write(f"  {event.timestamp:%H:%M:%S.%f} {event.event_type.value:<9}{note}\n")
        summary: dict[str, Any] = dict(final)
        out.write("\nsummary: " + ", ".join(f"{v} {k}" for k, v in sorted(summary.items())) + "\n")
        return dict(final)
    finally:
        if oq is None:
            await client.close()
