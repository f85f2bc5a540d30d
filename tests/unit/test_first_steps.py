"""What new users trip over (issue 30), where no backend is involved: options checked
when decorating, durations everywhere, storage arguments checked at construction, and a
gevent task that overruns its timeout without yielding."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ, OmniQ, Retry, TaskStatus
from omniq.errors import ConfigError, OmniQError
from omniq.storage.sqlite import (
    AsyncSQLiteQueue,
    SQLiteEventStorage,
    SQLiteQueue,
    SQLiteResultStorage,
)
from tests.conformance import tasks
from tests.conftest import run_script


def spin(seconds: float) -> str:
    """CPU-bound: never yields to gevent."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "spun"


# -- @oq.task options are checked when decorating ------------------------------------------


@pytest.mark.parametrize("client", [AsyncOmniQ, OmniQ])
def test_task_options_with_an_unknown_name_fail_when_decorating(
    client: type[Any], tmp_path: Path
) -> None:
    oq = client(base_dir=str(tmp_path / "never"))
    with pytest.raises(
        ConfigError, match=r"does not take 'retries' \(did you mean 'max_retries'\?\)"
    ):
        oq.task(retries=3)
    assert not (tmp_path / "never").exists()  # nothing connected


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"timeout": "soon"}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"priority": "high"}, "priority"),
        ({"result_ttl": "a day"}, "result_ttl"),
        ({"eta": "tomorrow"}, "eta"),
    ],
)
@pytest.mark.parametrize("client", [AsyncOmniQ, OmniQ])
def test_task_options_with_a_bad_value_fail_when_decorating(
    client: type[Any], options: dict[str, Any], named: str, tmp_path: Path
) -> None:
    oq = client(base_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=f"argument {named}="):

        @oq.task(**options)
        def job() -> None: ...


def test_task_options_for_a_closure_under_the_strict_serializer(tmp_path: Path) -> None:
    # Checking the options must not try to carry the function itself.
    oq = AsyncOmniQ(base_dir=str(tmp_path), serializer="msgspec")
    factor = 3

    @oq.task(result_ttl="1h", timeout=5)
    def triple(x: int) -> int:
        return factor * x

    assert triple(2) == 6


async def test_enqueue_many_names_an_unknown_option(tmp_path: Path) -> None:
    async with AsyncOmniQ(base_dir=str(tmp_path)) as oq:
        with pytest.raises(ConfigError, match=r"'max_retry' \(did you mean 'max_retries'\?\)"):
            await oq.enqueue_many(tasks.add, [(1, 2)], max_retry=3)


# -- durations ---------------------------------------------------------------------------


def test_retry_takes_a_duration_string() -> None:
    assert Retry(delay="5s").delay == 5.0
    assert Retry(delay="250ms").delay == 0.25
    assert Retry(delay=timedelta(minutes=1)).delay == 60.0
    with pytest.raises(ConfigError, match=r"argument delay='soon': .*'30s', '5m'"):
        Retry(delay="soon")


def test_blocking_pool_stop_takes_a_duration_string(tmp_path: Path) -> None:
    with OmniQ(base_dir=str(tmp_path)) as oq:
        task_id = oq.enqueue(tasks.add, 1, 2)
        pool = oq.worker()
        pool.start()
        assert oq.get_result(task_id, wait=True, timeout="10s").result == 3
        pool.stop(timeout="2s")


# -- worker(queue_order=...) is checked when the pool is built -----------------------------


@pytest.mark.parametrize("client", [AsyncOmniQ, OmniQ])
@pytest.mark.parametrize("value", ["fifo", "", 1, True])
def test_a_bad_queue_order_names_the_argument_and_the_choices(
    client: type[Any], value: Any, tmp_path: Path
) -> None:
    oq = client(base_dir=str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        oq.worker(queues=["high", "low"], queue_order=value)
    assert str(caught.value) == f"queue_order={value!r}: expected one of 'merged', 'strict'"
    assert isinstance(caught.value, ValueError)
    assert not tmp_path.joinpath("omniq.db").exists()  # checked before any storage


@pytest.mark.parametrize("client", [AsyncOmniQ, OmniQ])
def test_queue_order_defaults_to_the_setting(client: type[Any], tmp_path: Path) -> None:
    assert client(base_dir=str(tmp_path)).worker().queue_order == "merged"
    strict = client(base_dir=str(tmp_path), queue_order="strict")
    assert strict.worker().queue_order == "strict"
    assert strict.worker(queue_order="MERGED").queue_order == "merged"  # the argument wins


def test_the_blocking_client_runs_a_strict_worker(tmp_path: Path) -> None:
    label = uuid.uuid4().hex
    with OmniQ(base_dir=str(tmp_path)) as oq:
        for name, queue in [("low", "low"), ("high", "high")]:
            oq.submit(tasks.record, (f"{label}-{name}",), queue=queue)
        oq.worker(queues="high,low", queue_order="strict", concurrency=1).run(burst=True)
    order = [value for _, value in tasks.CALLS if value.startswith(label)]
    assert order == [f"{label}-high", f"{label}-low"]


# -- storage arguments are checked by the constructor ---------------------------------------


@pytest.mark.parametrize("client", [AsyncOmniQ, OmniQ])
def test_a_storage_passed_where_settings_go_says_which_keyword(
    client: type[Any], tmp_path: Path
) -> None:
    cases = [
        (SQLiteQueue(str(tmp_path / "q.db")), "task_queue"),
        (AsyncSQLiteQueue(str(tmp_path / "q.db")), "task_queue"),
        (SQLiteResultStorage(str(tmp_path / "q.db")), "result_storage"),
        (SQLiteEventStorage(str(tmp_path / "q.db")), "event_storage"),
    ]
    for storage, keyword in cases:
        with pytest.raises(ConfigError, match=rf"pass it as {keyword}=\.\.\."):
            client(storage)
    with pytest.raises(ConfigError, match="expected a Settings"):
        client({"max_workers": 4})


@pytest.mark.parametrize("client", [AsyncOmniQ, OmniQ])
def test_a_wrong_storage_argument_fails_at_construction(client: type[Any], tmp_path: Path) -> None:
    results = SQLiteResultStorage(str(tmp_path / "r.db"))
    with pytest.raises(ConfigError, match=r"expected .*BaseTaskQueue.*pass it as result_storage="):
        client(task_queue=results, base_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="argument event_storage=42: expected a URL"):
        client(event_storage=42, base_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="only event_storage can be off"):
        client(result_storage=False, base_dir=str(tmp_path))
    assert not (tmp_path / "r.db").exists()


def test_a_blocking_component_open_on_its_own_loop_is_refused_until_closed(
    tmp_path: Path,
) -> None:
    queue = SQLiteQueue(str(tmp_path / "q.db"))
    queue.connect()
    with pytest.raises(ConfigError, match="open on its own event loop"):
        OmniQ(task_queue=queue, base_dir=str(tmp_path))
    queue.close()
    with OmniQ(task_queue=queue, base_dir=str(tmp_path)) as oq:
        task_id = oq.enqueue(tasks.add, 1, 2)
        oq.worker().run(burst=True)
        assert oq.get_result(task_id).result == 3


# -- a gevent task that overruns its timeout without yielding --------------------------------


async def test_gevent_task_overrunning_its_timeout_without_yielding_logs_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="omniq")
    async with AsyncOmniQ(base_dir=str(tmp_path), event_storage=False) as oq:
        task_id = await oq.submit(spin, (3.0,), timeout=0.3)
        await oq.worker(worker_type="gevent", concurrency=4).run(burst=True)
        result = await oq.get_result(task_id)
    assert result.status is TaskStatus.FAILED
    assert result.error.type == "omniq.errors.TaskTimeoutError"
    # One warning of the overrun (the pool adds its own lines of the timeout and failure).
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and task_id in r.message and "overran" in r.message
    ]
    assert len(warnings) == 1, caplog.text
    message = warnings[0].getMessage()
    assert "did not yield to gevent" in message
    assert "every other task of this gevent worker is stalled" in message
    assert "process worker" in message


def test_errors_stay_under_the_root() -> None:
    from omniq.errors import TaskArgumentError

    assert issubclass(TaskArgumentError, ConfigError)
    assert issubclass(TaskArgumentError, TypeError)
    assert issubclass(TaskArgumentError, OmniQError)


_SCRIPT = """
import asyncio, sys
from omniq import AsyncOmniQ, OmniQ

oq = OmniQ(base_dir=sys.argv[1])

@oq.task(max_retries=1)
def add(a: int, b: int) -> int:
    return a + b

aoq = AsyncOmniQ(base_dir=sys.argv[1] + "-async")

@aoq.task
async def mul(a: int, b: int) -> int:
    return a * b

async def main() -> list[int]:
    ids = [await aoq.enqueue(mul, 2, 3), await aoq.submit(mul, (4, 5), priority=1)]
    await aoq.worker().run(burst=True)
    values = [(await aoq.get_result(i)).result for i in ids]
    await aoq.close()
    return values

ids = [oq.enqueue(add, 1, 2), oq.submit(add, (3, 4), queue="default")]
oq.worker().run(burst=True)
print([oq.get_result(i).result for i in ids] + asyncio.run(main()))
oq.close()
"""


def test_a_task_function_of_a_script_passes_to_enqueue_and_submit(tmp_path: Path) -> None:
    # A function decorated in the script itself (__main__: no import path) handed to
    # oq.enqueue/submit, not through its own .delay(): it goes by its registered name.
    # It used to be carried by value with its wrapper, whose client dill cannot pickle.
    run = run_script(tmp_path, _SCRIPT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[0] == "[3, 7, 6, 20]"
