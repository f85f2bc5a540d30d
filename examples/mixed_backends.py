"""One client over three backends: the task queue on Redis, the results on PostgreSQL,
the event log in a SQLite file (blocking API).

Each of the three components is chosen by its own URL, so each can live where it fits:
the queue where claims are fast (Redis), the results where the rest of your data is
(PostgreSQL), the lifecycle log somewhere cheap (a local SQLite file, or ``file://`` /
``s3://`` for the file store). Nothing else in the code changes.

The URLs come from the environment, with loopback defaults::

    REDIS_URL=redis://127.0.0.1:6379/0
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
    EVENTS_URL=sqlite:///omniq-events.db        # relative to the current directory

``OMNIQ_NAMESPACE`` (a setting, read from the environment like every ``OMNIQ_*``) keeps
applications apart on a shared server: the Redis key prefix and the PostgreSQL schema
(created with its tables on first connect). Needs ``pip install 'omniq[redis,postgres]'``.

Run it::

    python examples/mixed_backends.py
    OMNIQ_NAMESPACE=shop REDIS_URL=redis://cache:6379/1 python examples/mixed_backends.py

A worker on another host runs the same tasks by building the same client:
``omniq worker --app mixed_backends:oq`` (from examples/, with the same variables).
"""

from __future__ import annotations

import os
import zlib

from omniq import OmniQ

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
EVENTS_URL = os.environ.get("EVENTS_URL", "sqlite:///omniq-events.db")

oq = OmniQ(task_queue=REDIS_URL, result_storage=DATABASE_URL, event_storage=EVENTS_URL)


# name= gives the task the same name in every process: run as a script this module is
# __main__, imported by `omniq worker --app mixed_backends:oq` it is mixed_backends, and
# a name made from the module would differ between the two.
@oq.task(name="quote", max_retries=3, retry_delay="1s")
def quote(symbol: str) -> float:
    """A stand-in for a call to a pricing service: a price made from the symbol."""
    return round(10 + zlib.crc32(symbol.encode()) % 90_000 / 100, 2)


def main(symbols: tuple[str, ...] = ("ACME", "GLOBEX", "INITECH")) -> dict[str, float]:
    """Price ``symbols`` with a worker running in the background; print where each part
    of a task's life is kept."""
    with oq:
        with oq.worker(concurrency=4):  # a worker on its own thread, for the block
            handles = {symbol: quote.delay(symbol) for symbol in symbols}
            prices = {symbol: handle.result(timeout=30) for symbol, handle in handles.items()}
        # The pool has stopped: every event it logged is written by now (while it runs,
        # events reach the store within about a second).
        first = next(iter(handles.values()))
        task = oq.get_task(first)  # the task record: Redis
        result = oq.get_result(first)  # its result: PostgreSQL
        events = oq.get_events(first)  # its lifecycle: the SQLite file
        assert task is not None and result is not None
    print(f"prices: {prices}")
    print(f"task {first}: status {task.status.value} (queue: {REDIS_URL})")
    print(f"  result {result.result} (results: {DATABASE_URL})")
    print(f"  events {[event.event_type.value for event in events]} (events: {EVENTS_URL})")
    return prices


if __name__ == "__main__":
    main()
