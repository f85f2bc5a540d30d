"""The OmniQ application the benchmark worker runs (``--app benchmarks.apps.omniq_app:oq``).

Built from environment variables the harness sets (only known ``OMNIQ_<FIELD>`` names are
read by OmniQ's settings, so these ``OMNIQ_BENCH_*`` names do not collide):

- ``OMNIQ_BENCH_QUEUE_URL``: URL of the task queue and the result storage;
- ``OMNIQ_BENCH_EVENTS``: ``1`` (events on the same URL, the default) or ``0`` (off);
- ``OMNIQ_BENCH_NAMESPACE``: settings namespace (default ``bench``).
"""

from __future__ import annotations

import os

from omniq import AsyncOmniQ, OmniQ

DEFAULT_URL = "redis://127.0.0.1:6379/15"


def app_kwargs(url: str, events: bool, namespace: str = "bench") -> dict[str, object]:
    """Constructor arguments shared by the producer and the worker."""
    return {
        "task_queue": url,
        "result_storage": url,
        "event_storage": url if events else False,
        "namespace": namespace,
    }


def make_async(url: str, events: bool, namespace: str = "bench") -> AsyncOmniQ:
    """An :class:`AsyncOmniQ` on ``url`` (nothing is opened until first use)."""
    return AsyncOmniQ(**app_kwargs(url, events, namespace))  # type: ignore[arg-type]


def make_sync(url: str, events: bool, namespace: str = "bench") -> OmniQ:
    """The sync twin of :func:`make_async`."""
    return OmniQ(**app_kwargs(url, events, namespace))  # type: ignore[arg-type]


oq = make_async(
    os.environ.get("OMNIQ_BENCH_QUEUE_URL", DEFAULT_URL),
    os.environ.get("OMNIQ_BENCH_EVENTS", "1") != "0",
    os.environ.get("OMNIQ_BENCH_NAMESPACE", "bench"),
)
