"""What new users trip over (issue 30), on every backend: mistakes fail at enqueue, and
the forms users naturally pass (dotted paths, "30s", blocking components) are accepted."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ, OmniQ, TaskStatus
from omniq.config import Settings
from omniq.errors import ConfigError, ResultTimeoutError, TaskArgumentError
from omniq.models import utcnow
from tests.conformance import tasks
from tests.conformance.conftest import MakeOQ, task_marker
from tests.conftest import unique_name

WHEN = datetime(2030, 1, 1, tzinfo=UTC)


async def assert_nothing_stored(oq: AsyncOmniQ) -> None:
    assert await oq.list_tasks() == []


# -- 1. arguments are checked against the function at enqueue ------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("eta", WHEN), ("max_retries", 3), ("timeout", 10), ("args", (1, 2)), ("queue", "io")],
)
async def test_enqueue_refuses_a_submit_option_passed_as_a_task_argument(
    oq: AsyncOmniQ, option: str, value: Any
) -> None:
    with pytest.raises(TaskArgumentError) as caught:
        await oq.enqueue(tasks.record, "hi", **{option: value})
    message = str(caught.value)
    assert f"unexpected keyword argument '{option}'" in message
    assert f"did you mean submit(..., {option}=...)?" in message
    # Caught as a configuration mistake and as the TypeError the same call would raise.
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value, TypeError)
    await assert_nothing_stored(oq)


async def test_every_way_in_checks_the_arguments(oq: AsyncOmniQ) -> None:
    @oq.task
    def greet(name: str) -> str:
        return f"hello {name}"

    # Calls made only when awaited: a coroutine never awaited would warn in a later test.
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: oq.enqueue(tasks.add, 1),  # missing b
        lambda: oq.enqueue(tasks.add, 1, 2, 3),  # one too many
        lambda: oq.submit(tasks.add, (1, 2), {"c": 3}),
        lambda: oq.submit(tasks.add, (1,), {"a": 1}),  # a twice
        lambda: oq.enqueue("tests.conformance.tasks:add", 1, 2, eta=WHEN),  # importable path
        lambda: oq.enqueue("tests.conformance.tasks.add", 1),  # a dotted path
        lambda: oq.enqueue_many(tasks.add, [(1, 2), (3, 4), (5,)]),  # the odd one out
        lambda: oq.schedule(tasks.add, (1,), interval=60),
        lambda: greet.delay("ada", timeout=3),
        lambda: greet.submit(("ada", "lovelace")),
    ]
    for attempt in attempts:
        with pytest.raises(TaskArgumentError):
            await attempt()
    with pytest.raises(TaskArgumentError, match=r"task add\(\) missing required argument: 'b'"):
        await oq.enqueue(tasks.add, 1)
    with pytest.raises(TaskArgumentError, match="takes 2 positional arguments but 3 were given"):
        await oq.enqueue_many(tasks.add, [(1, 2), (3, 4, 5)])
    with pytest.raises(TaskArgumentError, match="did you mean submit"):
        await greet.delay("ada", timeout=3)
    await assert_nothing_stored(oq)
    assert await oq.list_schedules() == []


async def test_calls_that_bind_still_run(dill_oq: AsyncOmniQ) -> None:
    oq = dill_oq

    class Greeter:
        def __init__(self, greeting: str) -> None:
            self.greeting = greeting

        def greet(self, name: str, *, punctuation: str = "!") -> str:
            return f"{self.greeting} {name}{punctuation}"

    ids = [
        # A function taking **kwargs takes any keyword, options' names included.
        await oq.enqueue(tasks.echo, 1, eta="soon", timeout=3),
        await oq.submit(tasks.add, (), {"a": 1, "b": 2}),
        # Builtins without a readable signature pass unchecked.
        await oq.enqueue(max, 3, 7),
        # A bound method: its self is given already.
        await oq.enqueue(Greeter("hi").greet, "ada", punctuation="?"),
        await oq.enqueue(lambda *numbers: sum(numbers), 1, 2, 3),
    ]
    ids += await oq.enqueue_many(tasks.echo, [(), (1,), (1, 2, 3)])
    await oq.worker().run(burst=True)
    results = [await oq.get_result(task_id) for task_id in ids]
    assert [r.status for r in results] == [TaskStatus.COMPLETE] * len(ids)
    assert results[0].result == ((1,), {"eta": "soon", "timeout": 3})
    assert [r.result for r in results[1:5]] == [3, 7, "hi ada?", 6]


async def test_a_path_the_producer_cannot_import_is_stored_unchecked(oq: AsyncOmniQ) -> None:
    # SPEC §2: the producer need not have the code; the worker says what is missing.
    colon = await oq.enqueue("tests.conformance.nowhere:add", 1, 2, eta=WHEN)
    dotted = await oq.enqueue("tests.conformance.nowhere.add", 1, 2, 3)
    assert (await oq.get_task(dotted)).func == "tests.conformance.nowhere.add"
    await oq.worker().run(burst=True)
    for task_id in (colon, dotted):
        result = await oq.get_result(task_id)
        assert result.status is TaskStatus.FAILED
        assert result.error.type == "omniq.errors.TaskImportError"
        assert "tests.conformance.nowhere" in result.error.message


# -- 2. result_ttl is a submit option ----------------------------------------------------


async def test_result_ttl_per_task_through_submit_and_delay(oq: AsyncOmniQ) -> None:
    @oq.task(result_ttl=3600)
    def double(x: int) -> int:
        return 2 * x

    by_submit = await oq.submit(tasks.add, (1, 2), result_ttl=60)
    by_delay = await double.delay(21)
    by_task_submit = await double.submit((4,), result_ttl="2m")
    await oq.worker().run(burst=True)
    for task_id, ttl in ((by_submit, 60), (by_delay, 3600), (by_task_submit, 120)):
        result = await oq.get_result(task_id)
        assert result.status is TaskStatus.COMPLETE
        assert result.expires_at == result.finished_at + timedelta(seconds=ttl)


def test_the_blocking_client_takes_result_ttl(tmp_path: Path) -> None:
    with OmniQ(base_dir=str(tmp_path)) as oq:
        task_id = oq.submit(tasks.add, (1, 2), result_ttl="1h")
        oq.worker().run(burst=True)
        result = oq.get_result(task_id)
        assert result.expires_at == result.finished_at + timedelta(hours=1)


# -- 3. "package.module.function" --------------------------------------------------------


async def test_a_dotted_path_is_accepted_and_stored_as_module_colon_qualname(
    oq: AsyncOmniQ,
) -> None:
    task_id = await oq.enqueue("tests.conformance.tasks.add", 2, 3)
    method = await oq.enqueue("tests.conformance.tasks.Labels.label", "x")
    assert (await oq.get_task(task_id)).func == "tests.conformance.tasks:add"
    assert (await oq.get_task(method)).func == "tests.conformance.tasks:Labels.label"
    await oq.worker().run(burst=True)
    assert (await oq.get_result(task_id)).result == 5
    assert (await oq.get_result(method)).result == "label x"


@pytest.fixture
def late_module(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A module name nobody can import yet, and the directory to create it in."""
    name = unique_name("omniq_late_")
    directory = tmp_path / "late"
    directory.mkdir()
    yield name, directory
    sys.modules.pop(name, None)
    if str(directory) in sys.path:
        sys.path.remove(str(directory))


async def test_a_dotted_path_the_producer_cannot_import_is_resolved_at_the_worker(
    oq: AsyncOmniQ, late_module: tuple[str, Path]
) -> None:
    name, directory = late_module
    task_id = await oq.enqueue(f"{name}.shout", "hi")
    assert (await oq.get_task(task_id)).func == f"{name}.shout"  # stored as given
    # The worker has the code the producer lacked.
    (directory / f"{name}.py").write_text("def shout(text):\n    return text.upper()\n")
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    await oq.worker().run(burst=True)
    assert (await oq.get_result(task_id)).result == "HI"


# -- 4. durations as strings -------------------------------------------------------------


async def test_duration_arguments_take_strings(make_oq: MakeOQ) -> None:
    oq = await make_oq()
    before = utcnow()
    task_id = await oq.submit(
        tasks.add,
        (1, 2),
        delay="1m",
        ttl="2h",
        retry_delay="250ms",
        timeout="30s",
        result_ttl="1d",
    )
    task = await oq.get_task(task_id)
    assert task.status is TaskStatus.SCHEDULED
    assert before + timedelta(seconds=60) <= task.due_at <= utcnow() + timedelta(seconds=60)
    assert task.expires_at - task.created_at == timedelta(hours=2)
    assert (task.retry_delay, task.timeout, task.result_ttl) == (0.25, 30.0, 86400.0)

    many = await oq.enqueue_many(tasks.add, [(1, 1)], timeout="5s")
    assert (await oq.get_task(many[0])).timeout == 5.0
    sid = await oq.schedule(tasks.add, (1, 1), interval="90s", ttl="1h")
    assert (await oq.get_schedule(sid)).interval == 90.0
    with pytest.raises(ResultTimeoutError):
        await oq.get_result(task_id, wait=True, timeout="100ms")

    pool = oq.worker()
    await pool.start()
    await pool.stop(timeout="1s")


@pytest.mark.parametrize("option", ["delay", "ttl", "retry_delay", "timeout", "result_ttl"])
async def test_a_bad_duration_names_the_argument_and_the_forms(oq: AsyncOmniQ, option: str) -> None:
    with pytest.raises(ConfigError, match=rf"argument {option}='5 minutes': .*'30s', '5m'"):
        await oq.submit(tasks.add, (1, 2), **{option: "5 minutes"})
    await assert_nothing_stored(oq)


# -- 5. blocking components for the blocking client ----------------------------------------


def blocking_components(backend_name: str, url: str, namespace: str) -> dict[str, Any]:
    """The blocking twins of the backend under test, each built on its own from a URL."""
    if backend_name == "sqlite":
        from omniq.storage import sqlite as module

        prefix, args, options = "SQLite", (url.removeprefix("sqlite:///"),), {}
    elif backend_name in ("file", "memory", "azure"):
        from omniq.storage import file as module  # type: ignore[no-redef]

        # Azure's storage_options come from OMNIQ_STORAGE_OPTIONS.
        prefix, args, options = "File", (url, Settings.from_env()), {}
    elif backend_name == "redis":
        from omniq.storage import redis as module  # type: ignore[no-redef]

        prefix, args, options = "Redis", (url,), {"namespace": namespace}
    elif backend_name == "nats":
        from omniq.storage import nats as module  # type: ignore[no-redef]

        prefix, args, options = "NATS", (url,), {"namespace": namespace}
    else:
        from omniq.storage import postgres as module  # type: ignore[no-redef]

        prefix, args, options = "Postgres", (url,), {"namespace": namespace}
    kinds = {
        "task_queue": "Queue",
        "result_storage": "ResultStorage",
        "event_storage": "EventStorage",
    }
    return {
        keyword: getattr(module, prefix + kind)(*args, **options) for keyword, kind in kinds.items()
    }


def test_the_blocking_client_takes_blocking_components(
    backend_name: str, store_url: str, namespace: str, make_oq: MakeOQ
) -> None:
    # make_oq: only for its clean-up of the namespace on Redis and PostgreSQL.
    components = blocking_components(backend_name, store_url, namespace)
    with OmniQ(**components) as oq:
        task_id = oq.enqueue(tasks.add, 2, 3)
        oq.worker().run(burst=True)
        assert oq.get_result(task_id).result == 5
        assert [e.event_type.value for e in oq.get_events(task_id)] == [
            "enqueued",
            "executing",
            "complete",
        ]


async def test_the_async_client_takes_blocking_components_too(
    backend_name: str, store_url: str, namespace: str, make_oq: MakeOQ
) -> None:
    components = blocking_components(backend_name, store_url, namespace)
    async with AsyncOmniQ(**components) as oq:
        task_id = await oq.enqueue(tasks.add, 2, 3)
        await oq.worker().run(burst=True)
        assert (await oq.get_result(task_id)).result == 5


def test_storage_urls_reach_a_blocking_client_by_keyword_only(store_url: str) -> None:
    with pytest.raises(ConfigError, match=r"pass it as task_queue=\.\.\."):
        OmniQ(store_url)  # type: ignore[arg-type]


# -- 6. process_tasks(limit) -------------------------------------------------------------


async def test_process_tasks_runs_at_most_limit_tasks_due_now(oq: AsyncOmniQ) -> None:
    ids = await oq.enqueue_many(tasks.add, [(i, i) for i in range(7)])
    later = await oq.submit(tasks.add, (1, 1), delay=60)
    pool = oq.worker(concurrency=4)
    assert await pool.process_tasks(limit=3) == 3
    assert (await oq.stats())["default"].get("complete") == 3
    assert await pool.process_tasks(limit=0) == 0
    assert await pool.process_tasks(limit=10) == 4  # the delayed one is not due
    assert await pool.process_tasks() == 0
    assert [(await oq.get_result(i)).result for i in ids] == [2 * i for i in range(7)]
    assert (await oq.get_task(later)).status is TaskStatus.SCHEDULED
    with pytest.raises(ConfigError, match="limit"):
        await pool.process_tasks(limit=-1)


def test_the_blocking_pool_processes_tasks_in_slices(tmp_path: Path) -> None:
    with OmniQ(base_dir=str(tmp_path)) as oq:
        ids = oq.enqueue_many(tasks.add, [(i, 1) for i in range(5)])
        pool = oq.worker(concurrency=2)
        assert [pool.process_tasks(limit=2) for _ in range(4)] == [2, 2, 1, 0]
        assert [oq.get_result(i).result for i in ids] == [1, 2, 3, 4, 5]


# -- 7. documented behaviour -------------------------------------------------------------


async def test_a_closed_client_reconnects_on_its_next_call(oq: AsyncOmniQ) -> None:
    task_id = await oq.enqueue(tasks.add, 1, 2)
    await oq.close()
    assert (await oq.get_task(task_id)).status is TaskStatus.PENDING  # connected again
    await oq.worker().run(burst=True)
    assert (await oq.get_result(task_id)).result == 3


# -- 8. several queues: one order across them (merged), or the list's (strict) ---------------


async def submit_high_and_low(oq: AsyncOmniQ) -> str:
    """Older tasks in "low" (one of a higher priority), newer ones in "high"; the label
    their calls are recorded under."""
    label = task_marker()
    for name, queue, priority in [
        ("low-old", "low", 0),
        ("high-new", "high", 0),
        ("low-urgent", "low", 5),
        ("high-newest", "high", 0),
    ]:
        await oq.submit(tasks.record, (f"{label}-{name}",), queue=queue, priority=priority)
    return label


def run_order(label: str) -> list[str]:
    return [value.removeprefix(f"{label}-") for _, value in tasks.CALLS if value.startswith(label)]


async def test_a_worker_of_several_queues_takes_priority_then_age_not_the_list_order(
    oq: AsyncOmniQ,
) -> None:
    label = await submit_high_and_low(oq)
    pool = oq.worker(queues=["high", "low"], concurrency=1)
    assert pool.queue_order == "merged"
    await pool.run(burst=True)
    assert run_order(label) == ["low-urgent", "low-old", "high-new", "high-newest"]


async def test_queue_order_strict_drains_the_first_listed_queue_first(oq: AsyncOmniQ) -> None:
    label = await submit_high_and_low(oq)
    pool = oq.worker(queues=["high", "low"], queue_order="strict", concurrency=1)
    await pool.run(burst=True)
    assert run_order(label) == ["high-new", "high-newest", "low-urgent", "low-old"]


async def test_queue_order_comes_from_the_settings(make_oq: MakeOQ) -> None:
    oq = await make_oq(queue_order="strict")
    label = await submit_high_and_low(oq)
    pool = oq.worker(queues="high,low", concurrency=1)
    assert pool.queue_order == "strict"
    await pool.run(burst=True)
    assert run_order(label) == ["high-new", "high-newest", "low-urgent", "low-old"]


async def test_queue_order_strict_holds_for_a_running_worker_woken_by_due_work(
    oq: AsyncOmniQ,
) -> None:
    # Due at one instant while the worker idles: the claim made as its wait ends (Redis
    # pipelines it behind the blocking pop) picks "high" though "low" was enqueued first.
    label = task_marker()
    eta = utcnow() + timedelta(seconds=0.5)
    ids = [
        await oq.submit(tasks.record, (f"{label}-{name}",), queue=queue, eta=eta)
        for name, queue in [("low-1", "low"), ("low-2", "low"), ("high-1", "high")]
    ]
    async with oq.worker(queues=["high", "low"], queue_order="strict", concurrency=1):
        for task_id in ids:
            await oq.get_result(task_id, wait=True, timeout=15)
    assert run_order(label) == ["high-1", "low-1", "low-2"]
