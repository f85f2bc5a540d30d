"""Typed task handles (issue 38): ``.delay()``/``.submit()`` return the task id as a ``str``
subclass whose ``result()`` is typed as the function's return value, on the default
store (SQLite under a temporary ``base_dir``), blocking and async; and mypy agrees."""

from __future__ import annotations

import copy
import json
import pickle
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from mypy import api as mypy_api

from omniq import (
    AsyncOmniQ,
    AsyncTaskHandle,
    ErrorInfo,
    OmniQ,
    TaskHandle,
    TaskResult,
    TaskStatus,
)
from omniq.errors import OmniQError, ResultTimeoutError, TaskFailedError
from omniq.serialization import SerializationManager
from tests.conftest import REPO_ROOT

# -- the handle as a task id ------------------------------------------------------------


@pytest.fixture
def oq(tmp_path: Path) -> Iterator[OmniQ]:
    # serializer="msgspec" forbids dill: a handle that reached storage as anything but its
    # plain id (an argument, depends_on) would fail to encode instead of passing quietly.
    client = OmniQ(base_dir=str(tmp_path), serializer="msgspec")
    yield client
    client.close()


def test_a_handle_is_its_task_id_everywhere_a_str_goes(oq: OmniQ) -> None:
    @oq.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    handle = add.delay(1, 2)
    task_id = str(handle)
    assert isinstance(handle, TaskHandle)
    assert isinstance(handle, str)
    assert type(task_id) is str
    assert handle == task_id
    assert hash(handle) == hash(task_id)
    assert {task_id: 1}[handle] == 1
    assert f"{handle}" == task_id
    assert handle.task_id == task_id and type(handle.task_id) is str
    assert json.dumps({"id": handle}) == json.dumps({"id": task_id})
    assert repr(handle) == f"TaskHandle({task_id!r}, name='add')"
    assert handle.name == "add"
    # Pickled (to another process, inside a dill payload) it is the plain id: the client
    # it holds stays behind.
    unpickled = pickle.loads(pickle.dumps(handle))
    assert type(unpickled) is str and unpickled == task_id
    assert copy.copy(handle) is handle and copy.deepcopy(handle) is handle
    # Every client call that takes an id takes the handle.
    assert oq.get_task(handle).id == task_id
    assert [event.task_id for event in oq.get_events(handle)] == [task_id]


def test_a_handle_travels_as_its_plain_id_in_arguments_and_depends_on(oq: OmniQ) -> None:
    @oq.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @oq.task(name="kind_of")
    def kind_of(value: object) -> list[str]:
        return [type(value).__name__, str(value)]

    first = add.delay(1, 2)
    second = kind_of.submit((first,), depends_on=[first])
    assert oq.get_task(second).depends_on == (str(first),)
    assert type(oq.get_task(second).depends_on[0]) is str
    # Encoded as msgpack (no dill): the worker receives a plain str.
    assert SerializationManager().dumps((first,)) == SerializationManager().dumps((str(first),))
    oq.worker().run(burst=True)
    assert second.result(timeout=10) == ["str", str(first)]
    # An idempotent resubmit by the handle's id returns the same task.
    again = add.submit((5, 5), task_id=first)
    assert again == first and again.result(timeout=10) == 3


# -- blocking ---------------------------------------------------------------------------


def test_result_returns_the_value_once_a_worker_ran_the_task(oq: OmniQ) -> None:
    @oq.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @oq.task(name="async_add")
    async def async_add(a: int, b: int) -> int:
        return a + b

    handle = add.delay(1, 2)
    submitted = add.submit((20, 22), priority=1)
    awaited = async_add.delay(2, 3)
    assert handle.status() is TaskStatus.PENDING
    oq.worker().run(burst=True)
    assert handle.result() == 3
    assert submitted.result(timeout=10) == 42
    assert awaited.result(timeout="10s") == 5  # an async def's handle gives the awaited value
    assert handle.status() is TaskStatus.COMPLETE
    assert oq.get_result(handle).result == 3


def test_result_of_a_failed_task_raises_with_the_stored_error(oq: OmniQ) -> None:
    @oq.task(name="boom", max_retries=0)
    def boom(message: str) -> int:
        raise ValueError(message)

    handle = boom.delay("no luck")
    oq.worker().run(burst=True)
    with pytest.raises(TaskFailedError) as caught:
        handle.result(timeout=10)
    error = caught.value
    assert isinstance(error, OmniQError)
    assert error.task_id == handle
    assert error.status is TaskStatus.FAILED
    assert error.error is not None
    assert (error.error.type, error.error.message) == ("builtins.ValueError", "no luck")
    assert str(error) == f"task {handle} ended failed: builtins.ValueError: no luck"
    # The same outcome get_result returns, whole.
    assert error.result == oq.get_result(handle)
    # It survives a pickle (a process worker, a result store) with what it carries.
    copied = pickle.loads(pickle.dumps(error))
    assert (copied.task_id, copied.status, copied.error) == (handle, "failed", error.error)


def test_result_of_a_cancelled_task_raises_and_cancel_goes_through_the_handle(
    oq: OmniQ,
) -> None:
    @oq.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    handle = add.delay(1, 2)
    assert handle.cancel() is True
    assert handle.cancel() is False  # finished already
    assert handle.status() is TaskStatus.CANCELLED
    with pytest.raises(TaskFailedError, match="ended cancelled") as caught:
        handle.result(timeout=10)
    assert caught.value.status is TaskStatus.CANCELLED


def test_result_gives_up_after_its_timeout(oq: OmniQ) -> None:
    @oq.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    handle = add.delay(1, 2)  # no worker runs it
    with pytest.raises(ResultTimeoutError):
        handle.result(timeout=0.2)


def test_task_failed_error_says_so_without_a_stored_error() -> None:
    result = TaskResult(task_id="t1", status=TaskStatus.EXPIRED)
    assert str(TaskFailedError(result)) == "task t1 ended expired"
    failed = TaskResult(
        task_id="t2", status=TaskStatus.FAILED, error=ErrorInfo(type="x.E", message="m")
    )
    assert TaskFailedError(failed).error == ErrorInfo(type="x.E", message="m")


# -- async ------------------------------------------------------------------------------


async def test_async_handle_result_status_and_failure(tmp_path: Path) -> None:
    async with AsyncOmniQ(base_dir=str(tmp_path), serializer="msgspec") as oq:

        @oq.task(name="add")
        async def add(a: int, b: int) -> int:
            return a + b

        @oq.task(name="boom", max_retries=0)
        def boom() -> int:
            raise RuntimeError("broken")

        handle = await add.delay(1, 2)
        after = await add.submit((handle,), {"b": 0}, depends_on=[handle])
        failing = await boom.delay()
        assert isinstance(handle, AsyncTaskHandle) and isinstance(handle, str)
        assert repr(handle) == f"AsyncTaskHandle({str(handle)!r}, name='add')"
        assert await handle.status() is TaskStatus.PENDING
        await oq.worker().run(burst=True)
        assert await handle.result() == 3
        assert await handle.status() is TaskStatus.COMPLETE
        assert (await oq.get_result(handle)).result == 3
        # ``after`` got the handle as its argument ``a``: the plain id, and str + int fails.
        with pytest.raises(TaskFailedError) as caught:
            await after.result(timeout=10)
        assert caught.value.error is not None
        assert caught.value.error.type == "builtins.TypeError"
        with pytest.raises(TaskFailedError, match=r"builtins\.RuntimeError: broken"):
            await failing.result(timeout=10)
        assert await failing.cancel() is False


# -- types ------------------------------------------------------------------------------


def test_mypy_sees_the_return_type_through_the_handles(tmp_path: Path) -> None:
    module = tmp_path / "typed_handles.py"
    module.write_text(
        textwrap.dedent(
            """
            from omniq import AsyncOmniQ, OmniQ

            oq = OmniQ()
            aoq = AsyncOmniQ()

            @oq.task
            def add(a: int, b: int) -> int:
                return a + b

            @oq.task
            async def fetch(url: str) -> bytes:
                return b""

            @aoq.task(max_retries=1)
            async def async_add(a: int, b: int) -> int:
                return a + b

            @aoq.task
            def label(n: int) -> str:
                return str(n)

            handle = add.delay(1, 2)
            reveal_type(handle)
            reveal_type(handle.result())
            reveal_type(add.submit((1, 2), queue="q").result(timeout=5))
            reveal_type(fetch.delay("x").result())
            task_id: str = handle
            oq.get_result(handle)
            add.delay("one", 2)
            wrong: str = handle.result()

            async def main() -> None:
                ahandle = await async_add.delay(1, 2)
                reveal_type(ahandle)
                pending = ahandle.result()
                reveal_type(pending)
                reveal_type(await pending)
                reveal_type(await (await label.submit((1,))).result())
            """
        )
    )
    config = tmp_path / "mypy.ini"
    # follow_imports=silent: omniq is analysed for its types, its own findings (stubs
    # missing for optional dependencies) are not this test's business; unused-coroutine
    # is reveal_type(pending) itself, which hands the coroutine back unused.
    config.write_text(
        "[mypy]\nstrict = True\nfollow_imports = silent\n"
        "disable_error_code = unused-coroutine\n"
        f"mypy_path = {REPO_ROOT}\ncache_dir = {tmp_path / 'cache'}\n"
    )
    stdout, stderr, status = mypy_api.run(["--config-file", str(config), str(module)])
    found = [line.split(": ", 1)[1] for line in stdout.splitlines() if ": " in line]
    revealed = [
        line.removeprefix("note: Revealed type is ") for line in found if "Revealed" in line
    ]
    assert revealed == [
        '"omniq.sync.TaskHandle[int]"',
        '"int"',
        '"int"',
        '"bytes"',  # an async def's handle: the awaited value
        '"omniq._task_functions.AsyncTaskHandle[int]"',
        '"typing.Coroutine[Any, Any, int]"',
        '"int"',
        '"str"',  # a plain function's handle on AsyncOmniQ
    ], stdout
    # The parameters are checked as before, and the value is no Any: exactly these two.
    errors = [line for line in found if line.startswith("error:")]
    assert len(errors) == 2, stdout
    assert 'Argument 1 to "delay" of "TaskFunction" has incompatible type "str"' in errors[0]
    assert 'Incompatible types in assignment (expression has type "int"' in errors[1]
    assert status == 1, stderr
