"""A client connected before ``fork()`` (multiprocessing's default start method on Linux,
prefork servers) works in the child, and the parent's keeps working, on every backend."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ, EventType, OmniQ, TaskStatus
from tests.conformance import tasks


def _options(store_url: str, namespace: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """An OmniQ's arguments for the test's store (picklable: children rebuild it)."""
    return {
        "task_queue": store_url,
        "result_storage": store_url,
        "event_storage": store_url,
        "namespace": namespace,
        "base_dir": str(tmp_path / ".omniq"),
        **extra,
    }


def _enqueue_in_child(client: OmniQ, out: Any) -> None:
    try:
        out.put(("ok", client.enqueue(tasks.add, 3, 4)))
        client.close()
    except BaseException as exc:
        out.put(("error", repr(exc)))


def _enqueue_in_child_left_open(client: OmniQ, out: Any) -> None:
    try:
        out.put(("ok", client.enqueue(tasks.add, 3, 4)))
    except BaseException as exc:
        out.put(("error", repr(exc)))
    # No close(): multiprocessing ends the child with os._exit, so atexit does not run.


_kept_to_exit: list[OmniQ] = []


def _new_client_enqueues_left_open(options: dict[str, Any], out: Any) -> None:
    client = OmniQ(**options)
    _kept_to_exit.append(client)  # not collected (which would write its events) before exit
    try:
        out.put(("ok", client.enqueue(tasks.add, 3, 4)))
    except BaseException as exc:
        out.put(("error", repr(exc)))


def _fork_and_enqueue(
    options: dict[str, Any], child_target: Any = _enqueue_in_child
) -> tuple[str, tuple[str, str], str]:
    with OmniQ(**options) as client:
        first = client.enqueue(tasks.add, 1, 2)  # connected before the fork
        context = multiprocessing.get_context("fork")
        out = context.SimpleQueue()
        child = context.Process(target=child_target, args=(client, out))
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
    options = _options(store_url, namespace, tmp_path)
    # Forked from a plain thread: the test's event loop runs in this one.
    first, (outcome, second), third = await asyncio.to_thread(_fork_and_enqueue, options)
    assert outcome == "ok", second
    await oq.worker().run(burst=True)
    for task_id, expected in ((first, 3), (second, 7), (third, 11)):
        result = await oq.get_result(task_id)
        assert result is not None and result.status is TaskStatus.COMPLETE
        assert result.result == expected


@pytest.mark.cross_process
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
async def test_a_forked_child_that_never_closes_its_client_keeps_its_events(
    oq: AsyncOmniQ, store_url: str, namespace: str, tmp_path: Path
) -> None:
    # No timer write before the child exits.
    options = _options(store_url, namespace, tmp_path, event_flush_interval=60.0)
    _, (outcome, in_child), _ = await asyncio.to_thread(
        _fork_and_enqueue, options, _enqueue_in_child_left_open
    )
    assert outcome == "ok", in_child
    events = await oq.get_events(in_child)
    assert [event.event_type for event in events] == [EventType.ENQUEUED]


@pytest.mark.cross_process
async def test_a_forkserver_child_that_never_closes_its_client_keeps_its_events(
    oq: AsyncOmniQ, store_url: str, namespace: str, tmp_path: Path
) -> None:
    # The client is made in the child; multiprocessing ends it with os._exit all the same.
    options = _options(store_url, namespace, tmp_path, event_flush_interval=60.0)
    context = multiprocessing.get_context("forkserver")
    out = context.SimpleQueue()
    child = context.Process(target=_new_client_enqueues_left_open, args=(options, out))
    child.start()
    await asyncio.to_thread(child.join, 60)
    assert child.exitcode == 0
    outcome, in_child = out.get()
    assert outcome == "ok", in_child
    events = await oq.get_events(in_child)
    assert [event.event_type for event in events] == [EventType.ENQUEUED]
