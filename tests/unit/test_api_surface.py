"""The public surface: exports, and the sync twins mirroring their async originals."""

from __future__ import annotations

import asyncio
import inspect

import pytest

import omniq
from omniq import AsyncOmniQ, AsyncWorkerPool, OmniQ, WorkerPool
from omniq.errors import OmniQError, SyncInAsyncError


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_")
    }


def test_all_is_sorted_and_importable() -> None:
    assert omniq.__all__ == sorted(omniq.__all__)
    for name in omniq.__all__:
        assert hasattr(omniq, name), name


def test_contract_names_are_exported() -> None:
    from omniq import (  # noqa: F401  - SPEC §2's import lines, verbatim
        AsyncOmniQ,
        EventType,
        OmniQ,
        Retry,
        Schedule,
        Settings,
        Task,
        TaskEvent,
        TaskResult,
        TaskStatus,
    )
    from omniq.errors import OmniQError  # noqa: F401


@pytest.mark.parametrize(
    ("sync_cls", "async_cls"), [(OmniQ, AsyncOmniQ), (WorkerPool, AsyncWorkerPool)]
)
def test_sync_twin_mirrors_async_methods_and_signatures(sync_cls: type, async_cls: type) -> None:
    sync_methods = public_methods(sync_cls)
    async_methods = public_methods(async_cls)
    assert set(sync_methods) == set(async_methods)
    for name, signature in async_methods.items():
        assert sync_methods[name].parameters.keys() == signature.parameters.keys(), name
        for param in signature.parameters:
            assert (
                sync_methods[name].parameters[param].default == signature.parameters[param].default
            ), (name, param)


def test_task_functions_and_handles_are_exported_with_their_blocking_twins() -> None:
    from omniq import AsyncTaskFunction, AsyncTaskHandle, TaskFunction, TaskHandle
    from omniq.errors import TaskFailedError

    assert issubclass(AsyncTaskHandle, str) and issubclass(TaskHandle, str)
    assert issubclass(TaskFailedError, OmniQError)
    for sync_cls, async_cls in ((TaskFunction, AsyncTaskFunction), (TaskHandle, AsyncTaskHandle)):
        # Their own methods, not str's.
        own = {name for name in vars(async_cls) if not name.startswith("_")}
        assert own <= set(vars(sync_cls)), sync_cls
        for name in own:
            member = getattr(async_cls, name)
            if inspect.iscoroutinefunction(member):
                blocking = getattr(sync_cls, name)
                assert not inspect.iscoroutinefunction(blocking), name
                assert (
                    inspect.signature(blocking).parameters.keys()
                    == inspect.signature(member).parameters.keys()
                ), name


def test_async_methods_are_coroutines_and_sync_ones_are_not() -> None:
    for name in ("enqueue", "submit", "get_result", "cancel", "stats", "schedule"):
        assert inspect.iscoroutinefunction(getattr(AsyncOmniQ, name))
        assert not inspect.iscoroutinefunction(getattr(OmniQ, name))
    assert not inspect.iscoroutinefunction(AsyncOmniQ.worker)


def test_constructing_touches_no_storage(tmp_path) -> None:
    OmniQ(base_dir=str(tmp_path / "never"))
    AsyncOmniQ(base_dir=str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


async def test_sync_api_refuses_to_run_inside_an_event_loop(tmp_path) -> None:
    oq = OmniQ(base_dir=str(tmp_path))
    with pytest.raises(SyncInAsyncError, match="AsyncOmniQ") as caught:
        oq.stats()
    assert isinstance(caught.value, OmniQError)
    assert isinstance(caught.value, RuntimeError)
    await asyncio.sleep(0)


def _twins() -> list[tuple[type, type]]:
    from omniq import events
    from omniq._sync import BlockingTwin
    from omniq.storage import file, postgres, redis, sqlite

    found = [(events.EventLogger, events.AsyncEventLogger)]
    found.append((events.EventProcessor, events.AsyncEventProcessor))
    for package in (sqlite, file, redis, postgres):
        for name in package.__all__:
            cls = getattr(package, name)
            if isinstance(cls, type) and issubclass(cls, BlockingTwin):
                found.append((cls, cls.async_class))
    return found


@pytest.mark.parametrize(("sync_cls", "async_cls"), _twins(), ids=lambda cls: cls.__name__)
def test_every_blocking_twin_has_each_coroutine_of_its_original(
    sync_cls: type, async_cls: type
) -> None:
    # A coroutine added to an async class and forgotten in its twin fails here; a twin's
    # method takes its signature from the original (omniq._sync.blocking), so it cannot
    # drift once present.
    coroutines = {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(async_cls, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    assert coroutines
    for name, signature in coroutines.items():
        blocking = getattr(sync_cls, name)
        assert not inspect.iscoroutinefunction(blocking), name
        assert inspect.signature(blocking).parameters.keys() == signature.parameters.keys(), name


def test_the_storage_twins_are_all_there() -> None:
    names = {sync_cls.__name__ for sync_cls, _ in _twins()}
    for backend in ("SQLite", "File", "Redis", "Postgres"):
        for part in ("Queue", "ResultStorage", "EventStorage", "ScheduleStorage"):
            assert f"{backend}{part}" in names


def test_task_context_names_are_exported() -> None:
    from omniq import Progress, TaskContext, current_task  # SPEC §8, task context

    assert current_task() is None
    assert set(Progress.__struct_fields__) == {"done", "total", "message", "updated_at"}
    assert "progress" in omniq.Task.__struct_fields__
    assert callable(TaskContext.progress)


def test_the_limits_read_names() -> None:
    from omniq import LimitInfo  # SPEC §8, limits: what list_limits() returns

    assert set(LimitInfo.__struct_fields__) == {"scope", "name", "rate_limit", "max_concurrency"}
    assert inspect.iscoroutinefunction(AsyncOmniQ.list_limits)
    assert not inspect.iscoroutinefunction(OmniQ.list_limits)
    assert list(inspect.signature(OmniQ.list_limits).parameters) == ["self"]
    assert inspect.signature(AsyncOmniQ.list_limits).return_annotation in (
        "list[LimitInfo]",
        list[LimitInfo],
    )


def test_metrics_and_tracing_names() -> None:
    # SPEC §8, metrics and tracing: the settings, the pool's port, the task's context.
    fields = set(omniq.Settings.__struct_fields__)
    assert {"metrics_port", "tracing"} <= fields
    assert omniq.Settings().metrics_port is None and omniq.Settings().tracing is False
    assert "trace" in omniq.Task.__struct_fields__
    assert isinstance(WorkerPool.metrics_port, property)


def test_the_dashboard_names() -> None:
    from omniq.dashboard import create_app  # SPEC §8, dashboard

    signature = inspect.signature(create_app)
    assert list(signature.parameters) == ["oq", "auth", "read_only"]
    assert signature.parameters["auth"].default is None
    assert signature.parameters["read_only"].default is False
    assert signature.parameters["auth"].kind is inspect.Parameter.KEYWORD_ONLY
