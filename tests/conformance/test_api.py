"""SPEC §2 and §3 through the public async API, on every backend."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ, EventType, Retry, TaskStatus
from omniq.errors import (
    ConfigError,
    ResultTimeoutError,
    StorageConnectionError,
    TaskNotFoundError,
)
from omniq.models import utcnow
from omniq.storage.base import Ack
from tests.conformance import tasks
from tests.conformance.conftest import MakeOQ


def kinds(events: list) -> list[EventType]:
    return [event.event_type for event in events]


async def test_enqueue_run_and_read_result(oq: AsyncOmniQ) -> None:
    sync_id = await oq.enqueue(tasks.add, 2, 3)
    async_id = await oq.enqueue(tasks.async_add, 4, 5)
    assert (await oq.get_task(sync_id)).status is TaskStatus.PENDING
    assert await oq.get_result(sync_id) is None

    await oq.worker(concurrency=4).run(burst=True)

    for task_id, value in ((sync_id, 5), (async_id, 9)):
        result = await oq.get_result(task_id)
        assert result is not None
        assert result.status is TaskStatus.COMPLETE
        assert result.result == value
        assert result.error is None
        assert result.attempts == 1
        assert result.started_at is not None and result.finished_at >= result.started_at
        task = await oq.get_task(task_id)
        assert task.status is TaskStatus.COMPLETE
        assert task.attempts == 1
        events = await oq.get_events(task_id)
        assert kinds(events) == [EventType.ENQUEUED, EventType.EXECUTING, EventType.COMPLETE]
        assert events[1].worker_id and events[2].worker_id == events[1].worker_id
        assert all(e.timestamp.tzinfo is not None for e in events)


async def test_import_path_string_and_unknown_path(oq: AsyncOmniQ) -> None:
    good = await oq.enqueue("tests.conformance.tasks:add", 1, 1)
    missing = await oq.enqueue("tests.conformance.nowhere:add", 1, 1)
    absent_attr = await oq.enqueue("tests.conformance.tasks:no_such_function")
    after = await oq.enqueue(tasks.add, 2, 2)

    await oq.worker(concurrency=1).run(burst=True)

    assert (await oq.get_result(good)).result == 2
    assert (await oq.get_result(after)).result == 4  # the worker carried on
    for task_id, needle in (
        (missing, "tests.conformance.nowhere"),
        (absent_attr, "no_such_function"),
    ):
        result = await oq.get_result(task_id)
        assert result.status is TaskStatus.FAILED
        assert result.error.type == "omniq.errors.TaskImportError"
        assert needle in result.error.message


async def test_arguments_keep_their_types(oq: AsyncOmniQ) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    uid = uuid.uuid4()
    args = ((1, 2), {3, 4}, Decimal("1.10"), uid, date(2026, 1, 2), when, b"\x00\xff")
    task_id = await oq.submit(tasks.echo, args, {"key": (5, 6), "nested": {"k": [1, (2,)]}})
    await oq.worker().run(burst=True)
    got_args, got_kwargs = (await oq.get_result(task_id)).result
    assert tuple(got_args) == args
    assert [type(a) for a in got_args] == [type(a) for a in args]
    assert got_kwargs == {"key": (5, 6), "nested": {"k": [1, (2,)]}}
    assert type(got_kwargs["key"]) is tuple


async def test_lambda_and_closure_travel_by_value(dill_oq: AsyncOmniQ) -> None:
    oq = dill_oq
    factor = 7
    closure_id = await oq.enqueue(lambda x: x * factor, 6)
    await oq.worker().run(burst=True)
    assert (await oq.get_result(closure_id)).result == 42


async def test_failure_retries_with_backoff_then_fails(oq: AsyncOmniQ) -> None:
    task_id = await oq.submit(tasks.fail, ("nope",), max_retries=2, retry_delay=0.01)
    await oq.worker().run(burst=True)
    # Retries are delayed, so one burst may not reach them all: run until final.
    for _ in range(50):
        if (await oq.get_result(task_id)) is not None:
            break
        await asyncio.sleep(0.02)
        await oq.worker().run(burst=True)
    result = await oq.get_result(task_id)
    assert result.status is TaskStatus.FAILED
    assert result.attempts == 3
    assert result.error.type == "builtins.ValueError"
    assert result.error.message == "nope"
    assert "ValueError" in result.error.traceback
    assert (await oq.get_task(task_id)).attempts == 3
    assert kinds(await oq.get_events(task_id)) == [
        EventType.ENQUEUED,
        EventType.EXECUTING,
        EventType.ERROR,
        EventType.RETRY,
        EventType.EXECUTING,
        EventType.ERROR,
        EventType.RETRY,
        EventType.EXECUTING,
        EventType.ERROR,
    ]


async def test_flaky_task_succeeds_on_retry(oq: AsyncOmniQ) -> None:
    key = uuid.uuid4().hex
    task_id = await oq.submit(tasks.flaky, (key, 1), max_retries=3, retry_delay=0)
    async with oq.worker():
        result = await oq.get_result(task_id, wait=True, timeout=10)
    assert result.status is TaskStatus.COMPLETE
    assert result.result == "ok after 2"
    assert result.attempts == 2


async def test_explicit_retry_request(oq: AsyncOmniQ) -> None:
    key = uuid.uuid4().hex
    task_id = await oq.submit(tasks.ask_retry, (key,), max_retries=1)
    async with oq.worker():
        result = await oq.get_result(task_id, wait=True, timeout=10)
    assert result.result == "retried"
    assert EventType.RETRY in kinds(await oq.get_events(task_id))


async def test_retry_request_without_attempts_left_fails(oq: AsyncOmniQ) -> None:
    key = uuid.uuid4().hex
    task_id = await oq.submit(tasks.ask_retry, (key,), max_retries=0)
    await oq.worker().run(burst=True)
    result = await oq.get_result(task_id)
    assert result.status is TaskStatus.FAILED
    assert result.error.type == "omniq.retry.Retry"
    assert Retry.__name__ == "Retry"


async def test_timeout_stops_an_async_task(oq: AsyncOmniQ) -> None:
    task_id = await oq.submit(tasks.sleep_async, (30,), timeout=0.2)
    await oq.worker().run(burst=True)
    result = await oq.get_result(task_id)
    assert result.status is TaskStatus.FAILED
    assert result.error.type == "omniq.errors.TaskTimeoutError"
    assert kinds(await oq.get_events(task_id))[-2:] == [EventType.TIMEOUT, EventType.ERROR]


async def test_priority_then_enqueue_order(oq: AsyncOmniQ) -> None:
    label = uuid.uuid4().hex
    await oq.submit(tasks.record, (f"{label}-low1",), priority=0)
    await oq.submit(tasks.record, (f"{label}-high",), priority=5)
    await oq.submit(tasks.record, (f"{label}-low2",), priority=0)
    await oq.submit(tasks.record, (f"{label}-mid",), priority=1)
    await oq.worker(concurrency=1).run(burst=True)
    order = [value for _, value in tasks.CALLS if value.startswith(label)]
    assert order == [f"{label}-high", f"{label}-mid", f"{label}-low1", f"{label}-low2"]


async def test_queues_are_separate(oq: AsyncOmniQ) -> None:
    a = await oq.submit(tasks.add, (1, 2), queue="alpha")
    b = await oq.submit(tasks.add, (3, 4), queue="beta")
    await oq.worker(queues=["alpha"]).run(burst=True)
    assert (await oq.get_result(a)).result == 3
    assert await oq.get_result(b) is None
    assert (await oq.get_task(b)).queue == "beta"
    await oq.worker(queues="beta").run(burst=True)
    assert (await oq.get_result(b)).result == 7


async def test_get_result_waits_and_times_out(oq: AsyncOmniQ) -> None:
    task_id = await oq.enqueue(tasks.add, 20, 22)
    with pytest.raises(ResultTimeoutError) as caught:
        await oq.get_result(task_id, wait=True, timeout=0.2)
    assert isinstance(caught.value, TimeoutError)
    async with oq.worker():
        result = await oq.get_result(task_id, wait=True, timeout=10)
    assert result.result == 42


async def test_cancel_waiting_task(oq: AsyncOmniQ) -> None:
    task_id = await oq.enqueue(tasks.record, "never")
    assert await oq.cancel(task_id) is True
    assert await oq.cancel(task_id) is False
    assert await oq.cancel("no-such-task") is False
    await oq.worker().run(burst=True)
    assert ("record", "never") not in tasks.CALLS
    result = await oq.get_result(task_id)
    assert result.status is TaskStatus.CANCELLED
    assert (await oq.get_task(task_id)).status is TaskStatus.CANCELLED
    assert kinds(await oq.get_events(task_id)) == [EventType.ENQUEUED, EventType.CANCELLED]


async def test_cancel_finished_task_is_refused(oq: AsyncOmniQ) -> None:
    task_id = await oq.enqueue(tasks.add, 1, 2)
    await oq.worker().run(burst=True)
    assert await oq.cancel(task_id) is False
    assert (await oq.get_result(task_id)).status is TaskStatus.COMPLETE


async def test_cancel_running_async_task(oq: AsyncOmniQ, tmp_path) -> None:
    marker = tmp_path / "started"
    task_id = await oq.enqueue(tasks.wait_for_file, str(tmp_path / "never"), str(marker))
    pool = oq.worker()
    async with pool:
        for _ in range(500):
            if marker.exists():
                break
            await asyncio.sleep(0.01)
        assert marker.exists()
        assert await oq.cancel(task_id) is True
        result = await oq.get_result(task_id, wait=True, timeout=5)
    assert result.status is TaskStatus.CANCELLED
    assert (await oq.get_task(task_id)).status is TaskStatus.CANCELLED
    assert pool.counts["cancelled"] == 1  # the worker counts the run it stopped


async def test_idempotent_submit(oq: AsyncOmniQ) -> None:
    first = await oq.submit(tasks.add, (1, 2), task_id="fixed-id")
    second = await oq.submit(tasks.add, (100, 200), task_id="fixed-id")
    assert first == second == "fixed-id"
    await oq.worker().run(burst=True)
    assert (await oq.get_result("fixed-id")).result == 3
    assert kinds(await oq.get_events("fixed-id")).count(EventType.ENQUEUED) == 1


async def test_enqueue_many(oq: AsyncOmniQ) -> None:
    ids = await oq.enqueue_many(tasks.add, [(i, i) for i in range(50)], queue="bulk")
    assert len(ids) == len(set(ids)) == 50
    assert (await oq.stats())["bulk"]["pending"] == 50
    await oq.worker(queues="bulk", concurrency=8).run(burst=True)
    results = [await oq.get_result(task_id) for task_id in ids]
    assert [r.result for r in results] == [2 * i for i in range(50)]
    assert await oq.enqueue_many(tasks.add, []) == []


async def test_enqueue_events_reach_storage_and_handlers(oq: AsyncOmniQ) -> None:
    seen: list[tuple[str, EventType]] = []
    oq.events.add_handler(lambda event: seen.append((event.task_id, event.event_type)))
    one = await oq.enqueue(tasks.add, 1, 1)
    many = await oq.enqueue_many(tasks.add, [(i, i) for i in range(3)])
    later = await oq.submit(tasks.add, (2, 2), delay=60)
    enqueued = [(task_id, EventType.ENQUEUED) for task_id in (one, *many, later)]
    assert seen == [*enqueued, (later, EventType.SCHEDULED)]
    for task_id in (one, *many):
        assert kinds(await oq.get_events(task_id)) == [EventType.ENQUEUED]
    assert kinds(await oq.get_events(later)) == [EventType.ENQUEUED, EventType.SCHEDULED]


async def test_concurrent_submits_are_each_stored_with_their_events(oq: AsyncOmniQ) -> None:
    # Calls that arrive while another's write is out are stored together (one write):
    # each still gets its own task stored, its own events, and its own error.
    plain = [oq.enqueue(tasks.add, i, i) for i in range(40)]
    delayed = [oq.submit(tasks.add, (i, 0), delay=60, queue="later") for i in range(5)]
    wrong_arguments = oq.enqueue(tasks.add, 1, 2, 3)
    found = await asyncio.gather(*plain, *delayed, wrong_arguments, return_exceptions=True)
    *ids, refused = found
    assert isinstance(refused, Exception)
    assert all(isinstance(task_id, str) for task_id in ids)
    assert len(set(ids)) == 45
    stats = await oq.stats()
    assert stats["default"]["pending"] == 40
    assert stats["later"]["scheduled"] == 5
    for task_id in ids[:40]:
        assert kinds(await oq.get_events(task_id)) == [EventType.ENQUEUED]
    for task_id in ids[40:]:
        assert kinds(await oq.get_events(task_id)) == [EventType.ENQUEUED, EventType.SCHEDULED]
    await oq.worker(concurrency=8).run(burst=True)
    results = [await oq.get_result(task_id) for task_id in ids[:40]]
    assert [r.result for r in results] == [2 * i for i in range(40)]


async def test_list_tasks_and_stats(oq: AsyncOmniQ) -> None:
    done = await oq.enqueue(tasks.add, 1, 1)
    await oq.worker().run(burst=True)
    waiting = [await oq.enqueue(tasks.add, i, i) for i in range(3)]
    other = await oq.submit(tasks.add, (0, 0), queue="other")
    stats = await oq.stats()
    assert stats["default"] == {"complete": 1, "pending": 3}
    assert stats["other"] == {"pending": 1}
    pending = await oq.list_tasks(status=TaskStatus.PENDING)
    assert {t.id for t in pending} == {*waiting, other}
    assert [t.id for t in await oq.list_tasks(queue="default", status="pending")] == waiting[::-1]
    assert len(await oq.list_tasks(limit=2)) == 2
    assert [t.id for t in await oq.list_tasks(status="complete")] == [done]
    with pytest.raises(ConfigError):
        await oq.list_tasks(status="bogus")


async def test_delayed_task_does_not_run_early(oq: AsyncOmniQ) -> None:
    task_id = await oq.submit(tasks.add, (1, 1), delay=0.6)
    eta_id = await oq.submit(tasks.add, (2, 2), eta=utcnow() + timedelta(hours=1))
    assert (await oq.get_task(task_id)).status is TaskStatus.SCHEDULED
    await oq.worker().run(burst=True)
    assert await oq.get_result(task_id) is None
    started = utcnow()
    async with oq.worker():
        result = await oq.get_result(task_id, wait=True, timeout=10)
    assert result.started_at >= (await oq.get_task(task_id)).created_at + timedelta(seconds=0.6)
    assert result.started_at >= started
    assert await oq.get_result(eta_id) is None
    assert kinds(await oq.get_events(task_id))[:2] == [EventType.ENQUEUED, EventType.SCHEDULED]
    with pytest.raises(ConfigError):
        await oq.submit(tasks.add, (1, 1), eta=datetime(2030, 1, 1))  # naive


async def test_ttl_expires_a_task_that_did_not_start(oq: AsyncOmniQ) -> None:
    label = uuid.uuid4().hex
    task_id = await oq.submit(tasks.record, (label,), ttl=0.05)
    await asyncio.sleep(0.1)
    await oq.worker().run(burst=True)
    assert ("record", label) not in tasks.CALLS
    result = await oq.get_result(task_id)
    assert result.status is TaskStatus.EXPIRED
    assert result.attempts == 0  # it never ran
    assert result.started_at is None
    stored = await oq.queue.get(task_id)  # as the worker left it: one truth everywhere
    assert (stored.status, stored.attempts) == (TaskStatus.EXPIRED, 0)
    task = await oq.get_task(task_id)
    assert (task.status, task.attempts) == (TaskStatus.EXPIRED, 0)
    [listed] = await oq.list_tasks(status=TaskStatus.EXPIRED)
    assert (listed.id, listed.attempts) == (task_id, 0)
    events = await oq.get_events(task_id)
    assert kinds(events) == [EventType.ENQUEUED, EventType.EXPIRED]
    assert events[-1].attempt == 0


async def test_ttl_passes_on_a_queue_no_worker_serves(oq: AsyncOmniQ) -> None:
    # Nobody claims from "nobody": the ttl still ends the task, as it is read.
    listed_id = await oq.submit(tasks.add, (5, 6), queue="nobody", ttl=0.2)
    task_id = await oq.submit(tasks.add, (1, 2), queue="nobody", ttl=0.3)
    dependent = await oq.submit(tasks.add, (3, 4), depends_on=[task_id])
    assert (await oq.get_task(task_id)).status is TaskStatus.PENDING
    # A waiter is released when the ttl passes, not left waiting for its own timeout.
    result = await oq.get_result(task_id, wait=True, timeout=10)
    assert result.status is TaskStatus.EXPIRED
    assert result.attempts == 0 and result.error.type == "omniq.TaskExpired"
    task = await oq.get_task(task_id)
    assert (task.status, task.attempts) == (TaskStatus.EXPIRED, 0)
    assert kinds(await oq.get_events(task_id)) == [EventType.ENQUEUED, EventType.EXPIRED]
    # A listing shows an expired task as expired.
    listed = {t.id: t.status for t in await oq.list_tasks(queue="nobody")}
    assert listed == {task_id: TaskStatus.EXPIRED, listed_id: TaskStatus.EXPIRED}
    assert await oq.list_tasks(queue="nobody", status="pending") == []
    # Its dependent hears of it, as from a worker.
    cancelled = await oq.get_result(dependent, wait=True, timeout=5)
    assert cancelled.status is TaskStatus.CANCELLED
    assert task_id in cancelled.error.message


async def test_dependencies_run_in_order(oq: AsyncOmniQ) -> None:
    label = uuid.uuid4().hex
    top = await oq.submit(tasks.record, (f"{label}-a",))
    left = await oq.submit(tasks.record, (f"{label}-b",), depends_on=[top])
    right = await oq.submit(tasks.record, (f"{label}-c",), depends_on=[top])
    bottom = await oq.submit(tasks.record, (f"{label}-d",), depends_on=[left, right])
    assert (await oq.get_task(bottom)).status is TaskStatus.SCHEDULED
    async with oq.worker(concurrency=4):
        result = await oq.get_result(bottom, wait=True, timeout=10)
    assert result.status is TaskStatus.COMPLETE
    order = [value for _, value in tasks.CALLS if value.startswith(label)]
    assert order[0] == f"{label}-a" and order[-1] == f"{label}-d"
    assert sorted(order[1:3]) == [f"{label}-b", f"{label}-c"]


async def test_a_burst_run_also_runs_the_dependents_it_releases(oq: AsyncOmniQ) -> None:
    first = await oq.submit(tasks.add, (1, 1))
    second = await oq.submit(tasks.add, (2, 2), depends_on=[first])
    third = await oq.submit(tasks.add, (3, 3), depends_on=[second])
    await oq.worker(concurrency=4).run(burst=True)
    # Each was released by a task of the same run: the run does not end before them.
    results = [await oq.get_result(t) for t in (first, second, third)]
    assert [(r.status, r.result) if r else None for r in results] == [
        (TaskStatus.COMPLETE, 2),
        (TaskStatus.COMPLETE, 4),
        (TaskStatus.COMPLETE, 6),
    ]


async def test_failed_dependency_cancels_dependents(oq: AsyncOmniQ) -> None:
    parent = await oq.submit(tasks.fail, ("broken",))
    child = await oq.submit(tasks.add, (1, 1), depends_on=[parent])
    grandchild = await oq.submit(tasks.add, (1, 1), depends_on=[child])
    await oq.worker().run(burst=True)
    for task_id, cause in ((child, parent), (grandchild, child)):
        result = await oq.get_result(task_id)
        assert result.status is TaskStatus.CANCELLED
        assert result.error.type == "omniq.errors.DependencyFailedError"
        assert cause in result.error.message
    assert "failed" in (await oq.get_result(child)).error.message


async def test_dependency_already_complete(oq: AsyncOmniQ) -> None:
    parent = await oq.enqueue(tasks.add, 1, 1)
    await oq.worker().run(burst=True)
    child = await oq.submit(tasks.add, (2, 2), depends_on=[parent])
    assert (await oq.get_task(child)).status is TaskStatus.PENDING
    await oq.worker().run(burst=True)
    assert (await oq.get_result(child)).result == 4


async def test_unknown_dependency_is_refused(oq: AsyncOmniQ) -> None:
    with pytest.raises(TaskNotFoundError, match="no-such-task"):
        await oq.submit(tasks.add, (1, 1), depends_on=["no-such-task"])


async def test_result_ttl_and_cleanup(make_oq: MakeOQ) -> None:
    oq = await make_oq(result_ttl=0.05)
    task_id = await oq.enqueue(tasks.add, 1, 2)
    await oq.worker().run(burst=True)
    await asyncio.sleep(0.1)
    assert await oq.get_result(task_id) is None
    # Waiting cannot bring back a result that expired: None now, not a wait forever.
    assert await asyncio.wait_for(oq.get_result(task_id, wait=True), 5) is None
    counts = await oq.cleanup()
    assert counts["tasks"] == 1
    assert await oq.get_task(task_id) is None
    # Cleaned up, the task is unknown: waiting for it is an error, at once.
    with pytest.raises(TaskNotFoundError, match=task_id):
        await asyncio.wait_for(oq.get_result(task_id, wait=True), 5)


async def test_waiting_for_the_result_of_an_unknown_task_raises_at_once(oq: AsyncOmniQ) -> None:
    with pytest.raises(TaskNotFoundError, match="no-such-task"):
        await asyncio.wait_for(oq.get_result("no-such-task", wait=True), 5)
    assert await oq.get_result("no-such-task") is None  # without wait: just not there


async def test_waiting_for_a_scheduled_task_waits_for_its_result(oq: AsyncOmniQ) -> None:
    # Not final yet (waiting for its dependency): the wait goes on until the result.
    first = await oq.submit(tasks.add, (1, 1), delay=0.3)
    second = await oq.submit(tasks.add, (2, 2), depends_on=[first])
    waiting = asyncio.ensure_future(oq.get_result(second, wait=True, timeout=20))
    async with oq.worker():
        result = await waiting
    assert (result.status, result.result) == (TaskStatus.COMPLETE, 4)


async def test_events_can_be_switched_off(make_oq: MakeOQ) -> None:
    oq = await make_oq(event_storage=False)
    task_id = await oq.enqueue(tasks.add, 1, 2)
    await oq.worker().run(burst=True)
    assert (await oq.get_result(task_id)).result == 3
    assert await oq.get_events(task_id) == []


async def test_two_clients_share_one_store(make_oq: MakeOQ) -> None:
    producer = await make_oq()
    consumer = await make_oq()
    task_id = await producer.enqueue(tasks.add, 5, 5)
    async with consumer.worker():
        result = await producer.get_result(task_id, wait=True, timeout=10)
    assert result.result == 10


async def test_graceful_stop_hands_back_unfinished_leases(oq: AsyncOmniQ, tmp_path) -> None:
    marker = tmp_path / "started"
    task_id = await oq.enqueue(tasks.wait_for_file, str(tmp_path / "go"), str(marker))
    pool = oq.worker()
    await pool.start()
    for _ in range(500):
        if marker.exists():
            break
        await asyncio.sleep(0.01)
    assert marker.exists()
    await pool.stop(timeout=0.1)
    task = await oq.get_task(task_id)
    assert task.status is TaskStatus.PENDING
    assert task.attempts == 0
    (tmp_path / "go").write_text("go")
    await oq.worker().run(burst=True)
    assert (await oq.get_result(task_id)).result == "released"


async def test_tasks_a_claim_brings_back_after_a_stop_are_handed_back_not_run(
    oq: AsyncOmniQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the chaos runner: on a slow store a claim was still out when the worker
    # was asked to stop, and the stopping pool started the tasks it brought back; a
    # run longer than the shutdown timeout was then cut short and ran again elsewhere.
    marker = tmp_path / "ran"
    task_id = await oq.enqueue(tasks.touch, str(marker))
    queue = oq.engine.queue
    claim = queue.claim
    out, back = asyncio.Event(), asyncio.Event()

    async def slow_claim(*args: Any, **kwargs: Any) -> Any:
        out.set()
        await back.wait()
        return await claim(*args, **kwargs)

    monkeypatch.setattr(queue, "claim", slow_claim)
    pool = oq.worker()
    await pool.start()
    await asyncio.wait_for(out.wait(), timeout=10)
    stopping = asyncio.create_task(pool.stop())
    await asyncio.sleep(0.05)  # the stop begins while the claim is out
    back.set()
    await asyncio.wait_for(stopping, timeout=10)
    assert not marker.exists()
    task = await oq.get_task(task_id)
    assert task is not None and task.status is TaskStatus.PENDING
    assert task.attempts == 0


class Outage:
    """Makes a queue's ``renew`` (and ``finish`` when asked) fail while ``on``: the
    store out of reach for this worker, whose leases then run out."""

    def __init__(
        self, queue: Any, monkeypatch: pytest.MonkeyPatch, *, finish: bool, lands: bool = False
    ) -> None:
        self.on = True
        self.writing, self.back = asyncio.Event(), asyncio.Event()
        renew, finish_call = queue.renew, queue.finish

        async def guarded_renew(*args: Any, **kwargs: Any) -> Any:
            if self.on:
                raise StorageConnectionError("the store is out of reach")
            return await renew(*args, **kwargs)

        async def guarded_finish(*args: Any, **kwargs: Any) -> Any:
            if self.on:
                # The write is under way when the store goes: it fails once it is back.
                self.writing.set()
                await self.back.wait()
                if lands:  # or it reaches the store late, and is applied then
                    return await finish_call(*args, **kwargs)
                raise StorageConnectionError("the store went away during the write")
            return await finish_call(*args, **kwargs)

        monkeypatch.setattr(queue, "renew", guarded_renew)
        if finish:
            monkeypatch.setattr(queue, "finish", guarded_finish)

    def end(self) -> None:
        self.on = False
        self.back.set()


async def claimed_back(oq: AsyncOmniQ, task_id: str) -> None:
    """Wait until a claim has taken ``task_id`` back (its second attempt)."""
    for _ in range(2000):
        task = await oq.get_task(task_id)
        if task is not None and task.attempts >= 2:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the task was not claimed back")


def first_words(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


async def test_a_worker_that_claims_back_its_own_lost_task_runs_it_once_at_a_time(
    make_oq: MakeOQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the chaos runner (a Redis restart): a worker whose renewals could not
    # reach the store lost a running task's lease, and its own next claim took the task
    # back. It then ran the task a second time beside the first, and the first run's
    # finish, accepted under the new claim, stored attempts=1 while the task said 2.
    oq = await make_oq(lease_seconds=1)
    release, log = tmp_path / "release", tmp_path / "runs.log"
    task_id = await oq.enqueue(tasks.hold_until_async, str(release), str(log))
    outage = Outage(oq.engine.queue, monkeypatch, finish=False)
    async with oq.worker(concurrency=2):
        await claimed_back(oq, task_id)
        for _ in range(2000):
            if first_words(log).count("start") >= 2:
                break
            await asyncio.sleep(0.01)
        outage.end()
        release.touch()
        result = await oq.get_result(task_id, wait=True, timeout=10)
    # The first run lost its lease: it was stopped before the claim ran the task again.
    assert first_words(log) == ["start", "stopped", "start"]
    task = await oq.get_task(task_id)
    assert task is not None and result is not None
    assert (result.status, result.result) == (TaskStatus.COMPLETE, "released")
    assert (task.attempts, task.lost_runs, result.attempts) == (2, 1, 2)


@pytest.mark.parametrize(
    "writing", ["waiting", "being-written", "landing-late"], ids=lambda writing: writing
)
async def test_a_finished_run_whose_lease_its_worker_claims_back_is_not_run_again(
    make_oq: MakeOQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writing: str
) -> None:
    # The same with the run over and its outcome waiting to be written, or being written
    # (a server restarting), when the claim took the task back: the worker ran it again
    # (a run after its final state) and the old outcome was stored with a stale count.
    # Landing late (the PostgreSQL chaos run, seed 201): the write under way reached the
    # store after the claim and was accepted under it, storing the old run's count.
    oq = await make_oq(lease_seconds=1)
    log = tmp_path / "runs.log"
    task_id = await oq.enqueue(tasks.append_line, str(log), "ran")
    outage = Outage(oq.engine.queue, monkeypatch, finish=True, lands=writing == "landing-late")
    async with oq.worker(concurrency=2):
        if writing == "waiting":
            outage.back.set()  # each write fails at once
        else:
            await asyncio.wait_for(outage.writing.wait(), timeout=10)
        await claimed_back(oq, task_id)
        outage.end()
        await oq.get_result(task_id, wait=True, timeout=10)
    # Read once the worker has stopped: everything it had to write is written.
    result = await oq.get_result(task_id)
    assert first_words(log) == ["ran"]
    task = await oq.get_task(task_id)
    assert task is not None and result is not None
    assert result.status is TaskStatus.COMPLETE
    assert (task.attempts, task.lost_runs, result.attempts) == (2, 1, 2)


async def test_a_stop_while_a_failed_run_stores_its_retry_keeps_the_attempt_it_spent(
    make_oq: MakeOQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the NATS chaos run (seed 203): a run failed, and storing its retry (its
    # events first) hung on a cut connection; a stop then cut that short and handed the
    # task back as unfinished, giving back the attempt the failed run had spent.
    oq = await make_oq()
    storage = oq.engine.events.storage
    assert storage is not None
    append = storage.append
    writing, back = asyncio.Event(), asyncio.Event()

    async def hanging_append(events: Any) -> Any:
        if any(e.event_type is EventType.RETRY for e in events):
            writing.set()
            await back.wait()
        return await append(events)

    monkeypatch.setattr(storage, "append", hanging_append)
    key = f"stop-retry-{uuid.uuid4().hex}"
    task_id = await oq.submit(tasks.flaky, (key, 1), max_retries=1, retry_delay=60)
    pool = oq.worker()
    await pool.start()
    await asyncio.wait_for(writing.wait(), timeout=10)
    stopping = asyncio.create_task(pool.stop(timeout=0))
    await asyncio.sleep(0.2)  # the stop cuts what still runs short
    back.set()
    await asyncio.wait_for(stopping, timeout=10)
    task = await oq.get_task(task_id)
    assert task is not None
    assert (task.status, task.attempts) == (TaskStatus.RETRYING, 1)


async def _started(marker: Path) -> None:
    for _ in range(1000):
        if await asyncio.to_thread(marker.exists):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the task did not start")


async def test_stop_returns_once_a_pool_running_in_another_task_has_stopped(
    oq: AsyncOmniQ, tmp_path: Path
) -> None:
    marker, go = tmp_path / "started", tmp_path / "go"
    task_id = await oq.enqueue(tasks.wait_for_file, str(go), str(marker))
    pool = oq.worker()
    running = asyncio.create_task(pool.run())
    await _started(marker)
    go.write_text("go")
    await pool.stop()
    # Stopped means done: the running task finished and its result is stored.
    assert running.done()
    assert not pool.running
    assert (await oq.get_result(task_id)).result == "released"


async def test_a_second_stop_with_no_timeout_cuts_a_graceful_stop_short(
    make_oq: MakeOQ, tmp_path: Path
) -> None:
    # The worker's second Ctrl-C: the graceful stop (a minute here) gives way at once.
    oq = await make_oq(shutdown_timeout=60)
    marker = tmp_path / "started"
    task_id = await oq.enqueue(tasks.wait_for_file, str(tmp_path / "never"), str(marker))
    pool = oq.worker()
    await pool.start()
    await _started(marker)
    graceful = asyncio.create_task(pool.stop())
    await asyncio.sleep(0.05)
    assert not graceful.done()
    await asyncio.wait_for(pool.stop(timeout=0), timeout=10)
    await asyncio.wait_for(graceful, timeout=10)
    task = await oq.get_task(task_id)
    assert task is not None and task.status is TaskStatus.PENDING  # handed back
    assert task.attempts == 0


async def test_closing_the_client_stops_its_pools_first(make_oq: MakeOQ, tmp_path: Path) -> None:
    oq = await make_oq()
    marker, go = tmp_path / "started", tmp_path / "go"
    task_id = await oq.enqueue(tasks.wait_for_file, str(go), str(marker))
    pool = oq.worker()
    await pool.start()
    await _started(marker)
    go.write_text("go")
    await oq.close()
    # The pool did not go on with closed storages: it let its task finish and stored
    # the outcome before the client closed.
    assert not pool.running
    reader = await make_oq()
    task = await reader.get_task(task_id)
    assert task is not None and task.status is TaskStatus.COMPLETE
    events = [e.event_type for e in await reader.get_events(task_id)]
    assert events[-1] is EventType.COMPLETE


async def test_expired_lease_runs_again_and_counts_an_attempt(make_oq: MakeOQ) -> None:
    oq = await make_oq(lease_seconds=0.2)
    task_id = await oq.submit(tasks.add, (1, 2))  # max_retries=0: a lost run is no failure
    # A worker that claims and then dies: it never renews or acknowledges.
    claimed = await oq.queue.claim(
        ["default"], "dead-worker", limit=1, lease_seconds=0.2, now=utcnow()
    )
    assert [t.id for t in claimed] == [task_id]
    await asyncio.sleep(0.3)
    await oq.worker().run(burst=True)
    result = await oq.get_result(task_id)
    assert result.status is TaskStatus.COMPLETE
    # Every run that started counts, the lost one included, and reads the same everywhere.
    assert result.attempts == 2
    task = await oq.get_task(task_id)
    assert task.attempts == 2 and task.lost_runs == 1
    final = (await oq.get_events(task_id))[-1]
    assert final.event_type is EventType.COMPLETE and final.attempt == 2
    # The dead worker's late acknowledgement is refused.
    assert not (
        await oq.queue.ack_many([Ack(task_id, "dead-worker", TaskStatus.FAILED)], now=utcnow())
    )[0]


async def test_lost_runs_leave_the_retries_alone(make_oq: MakeOQ) -> None:
    # Lost once, then a failing run: max_retries=1 still grants the retry, which succeeds.
    oq = await make_oq(lease_seconds=0.2)
    key = uuid.uuid4().hex
    task_id = await oq.submit(tasks.flaky, (key, 1), max_retries=1, retry_delay=0)
    await oq.queue.claim(["default"], "dead-worker", limit=1, lease_seconds=0.2, now=utcnow())
    await asyncio.sleep(0.3)
    await oq.worker().run(burst=True)
    result = await oq.get_result(task_id)
    assert result.status is TaskStatus.COMPLETE and result.result == "ok after 2"
    assert result.attempts == 3
    assert (await oq.get_task(task_id)).attempts == 3


async def test_lease_lost_too_often_fails_the_task(make_oq: MakeOQ) -> None:
    oq = await make_oq(lease_seconds=0.1, max_lost_runs=2)
    task_id = await oq.submit(tasks.add, (1, 2), max_retries=5)
    for _ in range(3):  # three workers die holding it: one more than allowed
        claimed = await oq.queue.claim(
            ["default"], "dead-worker", limit=1, lease_seconds=0.1, now=utcnow()
        )
        assert [t.id for t in claimed] == [task_id]
        await asyncio.sleep(0.15)
    await oq.worker().run(burst=True)
    result = await oq.get_result(task_id)
    assert result.status is TaskStatus.FAILED
    assert result.error.type == "omniq.WorkerLost"
    assert "3 times" in result.error.message
    # The three lost runs; the claim that failed it did not run it: one truth everywhere.
    assert result.attempts == 3
    task = await oq.get_task(task_id)
    assert task.status is TaskStatus.FAILED and task.attempts == 3
    [listed] = await oq.list_tasks(status=TaskStatus.FAILED)
    assert listed.attempts == 3
    final = (await oq.get_events(task_id))[-1]
    assert final.event_type is EventType.ERROR and final.attempt == 3


async def test_long_task_keeps_its_lease(make_oq: MakeOQ) -> None:
    oq = await make_oq(lease_seconds=0.3)
    task_id = await oq.enqueue(tasks.sleep_async, 1.0)
    thief = await make_oq(lease_seconds=0.3)
    async with oq.worker():
        await asyncio.sleep(0.2)
        for _ in range(8):
            stolen = await thief.queue.claim(
                ["default"], "thief", limit=1, lease_seconds=0.3, now=utcnow()
            )
            assert stolen == []
            await asyncio.sleep(0.1)
        result = await oq.get_result(task_id, wait=True, timeout=10)
    assert result.attempts == 1
    assert kinds(await oq.get_events(task_id)).count(EventType.EXECUTING) == 1


async def test_task_decorator(oq: AsyncOmniQ) -> None:
    @oq.task(name="double", max_retries=2)
    async def double(x: int) -> int:
        return 2 * x

    assert await double(4) == 8
    task_id = await double.delay(21)
    other = await double.submit((5,), queue="default", priority=3)
    assert (await oq.get_task(task_id)).max_retries == 2
    assert (await oq.get_task(other)).priority == 3
    await oq.worker().run(burst=True)
    assert (await oq.get_result(task_id)).result == 42


async def test_thread_worker_runs_blocking_functions_concurrently(oq: AsyncOmniQ) -> None:
    ids = [await oq.enqueue(tasks.sleep_sync, 0.3) for _ in range(8)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await oq.worker(worker_type="thread", concurrency=8).run(burst=True)
    elapsed = loop.time() - started
    assert [(await oq.get_result(i)).result for i in ids] == ["slept"] * 8
    assert elapsed < 8 * 0.3  # ran side by side, not one after another


async def test_result_that_cannot_be_encoded_fails_clearly(make_oq: MakeOQ) -> None:
    oq = await make_oq(serializer="msgspec")
    task_id = await oq.enqueue(tasks.make_unencodable, 3)
    await oq.worker().run(burst=True)
    result = await oq.get_result(task_id)
    assert result.status is TaskStatus.FAILED
    assert result.error.type == "omniq.errors.SerializationError"


async def test_an_idle_worker_shrugs_off_nudges_but_not_an_outside_cancel(oq: AsyncOmniQ) -> None:
    pool = oq.worker(concurrency=2)
    run = asyncio.create_task(pool.run())
    await asyncio.sleep(0.05)  # idle, waiting for work
    for _ in range(5):  # a nudge (a schedule changed) cuts the wait short, nothing more
        pool.wake()
        await asyncio.sleep(0.01)
    task_id = await oq.enqueue(tasks.add, 2, 3)
    assert (await oq.get_result(task_id, wait=True, timeout=10)).result == 5
    assert not run.done()
    # A cancel from outside arriving with a nudge still cancels the run.
    await asyncio.sleep(0.05)
    pool.wake()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 10)
    assert not pool.running
