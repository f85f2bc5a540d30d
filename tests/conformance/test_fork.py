"""A client connected before ``fork()`` (multiprocessing's default start method on Linux,
prefork servers) works in the child, and the parent's keeps working, on every backend."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ, OmniQ, TaskStatus
from tests.conformance import tasks


def _enqueue_in_child(client: OmniQ, out: Any) -> None:
    try:
        out.put(("ok", client.enqueue(tasks.add, 3, 4)))
        client.close()
    except BaseException as exc:
        out.put(("error", repr(exc)))


def _fork_and_enqueue(options: dict[str, Any]) -> tuple[str, tuple[str, str], str]:
    with OmniQ(**options) as client:
        first = client.enqueue(tasks.add, 1, 2)  # connected before the fork
        context = multiprocessing.get_context("fork")
        out = context.SimpleQueue()
        child = context.Process(target=_enqueue_in_child, args=(client, out))
        child.start()
        child.join(60)
        if child.exitcode is None:
            child.kill()
            child.join()
            outcome = ("error", "the child hung")
        elif out.empty():
            outcome = ("error", f"the child exited with {child.exitcode}")
        else:
            outcome = out.get()
        third = client.enqueue(tasks.add, 5, 6)  # the parent's connections still work
    return first, outcome, third


@pytest.mark.cross_process
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
async def test_a_client_connected_before_a_fork_works_in_the_child(
    oq: AsyncOmniQ, store_url: str, namespace: str, tmp_path: Path
) -> None:
    options = {
        "task_queue": store_url,
        "result_storage": store_url,
        "event_storage": store_url,
        "namespace": namespace,
        "base_dir": str(tmp_path / ".omniq"),
    }
    # Forked from a plain thread: the test's event loop runs in this one.
    first, (outcome, second), third = await asyncio.to_thread(_fork_and_enqueue, options)
    assert outcome == "ok", second
    await oq.worker().run(burst=True)
    for task_id, expected in ((first, 3), (second, 7), (third, 11)):
        result = await oq.get_result(task_id)
        assert result is not None and result.status is TaskStatus.COMPLETE
        assert result.result == expected
