"""OmniQ on uvloop: uvicorn and many services run their event loop on it.

uvloop's transports implement the asyncio interfaces without subclassing them, so a
backend that checks ``isinstance(transport, asyncio.Transport)`` breaks only there.
"""

from __future__ import annotations

from pathlib import Path

import uvloop

from omniq import AsyncOmniQ, TaskStatus
from tests.conformance import tasks
from tests.conftest import (
    NATS_URL,
    POSTGRES_URL,
    REDIS_URL,
    delete_nats_namespace,
    delete_redis_namespace,
    drop_postgres_schema,
)


def test_enqueue_wait_and_run_on_uvloop(
    backend_name: str, store_url: str, namespace: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        oq = AsyncOmniQ(
            task_queue=store_url,
            result_storage=store_url,
            event_storage=store_url,
            namespace=namespace,
            base_dir=str(tmp_path / ".omniq"),
            poll_interval=0.2,
        )
        try:
            async with oq:
                # The worker starts idle, so it is woken by the enqueue (the blocking
                # wait path), then runs a batch enqueued at once.
                async with oq.worker(concurrency=4):
                    first = await oq.enqueue(tasks.async_add, 1, 2)
                    result = await oq.get_result(first, wait=True, timeout=20)
                    assert result is not None and result.result == 3
                    ids = await oq.enqueue_many(tasks.add, [(i, i) for i in range(20)])
                    results = [await oq.get_result(i, wait=True, timeout=20) for i in ids]
                assert [r.result for r in results if r is not None] == [2 * i for i in range(20)]
                assert all(r is not None and r.status is TaskStatus.COMPLETE for r in results)
        finally:
            if backend_name == "redis":
                await delete_redis_namespace(REDIS_URL, namespace)
            if backend_name == "postgres":
                await drop_postgres_schema(POSTGRES_URL, namespace)
            if backend_name == "nats":
                await delete_nats_namespace(NATS_URL, namespace)

    uvloop.run(scenario())
