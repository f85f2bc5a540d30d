"""The benchmark's NATS server: reset before every repetition, and its JetStream size.

Every NATS row (OmniQ, taskiq-nats) keeps its streams and key-value buckets on the server at
:data:`NATS_URL`. Before each repetition the streams the benchmark made (their names hold
``bench`` or ``taskiq``; a KV bucket is a stream named ``KV_<bucket>``) are deleted, as the
peer reference benchmark deletes its NATS stream; streams of anything else on the server
(the test suite's, say) are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats
from nats.js.errors import NotFoundError

from benchmarks.adapters.base import NATS_URL

#: Substrings of the stream names the benchmark's rows create.
_OWNED = ("bench", "taskiq")


def _owned(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _OWNED)


async def _reset() -> None:
    nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name
            if name and _owned(name):
                with contextlib.suppress(NotFoundError):  # deleted meanwhile
                    await js.delete_stream(name)
    finally:
        await nc.close()


def reset_streams() -> None:
    """Delete the benchmark's streams and buckets (no event loop may be running)."""
    asyncio.run(_reset())


async def jetstream_bytes() -> int:
    """Bytes stored in the benchmark's streams (messages and buckets), summed."""
    nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        return sum(
            int(info.state.bytes or 0)
            for info in await js.streams_info()
            if info.config.name and _owned(info.config.name)
        )
    finally:
        await nc.close()
