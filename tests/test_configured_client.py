"""A client configured only through OMNIQ_* variables or a YAML file, as SPEC §6 says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from omniq import AsyncOmniQ, OmniQ, Settings, TaskStatus
from omniq.errors import ConfigError
from tests.conformance import tasks
from tests.conftest import REDIS_URL


def run_one(oq: OmniQ) -> str:
    task_id = oq.enqueue(tasks.add, 20, 22)
    oq.worker(concurrency=2).run(burst=True)
    result = oq.get_result(task_id)
    assert result is not None and result.status is TaskStatus.COMPLETE and result.result == 42
    return task_id


def test_environment_picks_each_component(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_BASE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_TYPE", "file")
    monkeypatch.setenv("OMNIQ_RESULT_STORAGE_TYPE", "sqlite")
    monkeypatch.setenv("OMNIQ_EVENT_STORAGE_TYPE", "none")
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "3")
    monkeypatch.setenv("OMNIQ_RESULT_TTL", "2h")
    with OmniQ() as oq:
        assert oq.settings.max_workers == 3
        assert oq.settings.result_ttl == 7200.0
        task_id = run_one(oq)
        assert oq.get_events(task_id) == []  # events off
    assert (tmp_path / "env" / "task_queue").is_dir()
    assert (tmp_path / "env" / "omniq.db").is_file()


def test_yaml_file_configures_the_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_text(
        f"base_dir: {tmp_path / 'yaml'}\n"
        "task_queue_type: sqlite\n"
        "event_storage_type: memory\n"
        "default_worker: thread\n"
        "lease_seconds: 1m\n"
    )
    monkeypatch.setenv("OMNIQ_CONFIG", str(config))
    with OmniQ() as oq:
        assert oq.settings.lease_seconds == 60.0
        assert oq.worker().async_pool.worker_type == "thread"
        task_id = run_one(oq)
        assert [e.event_type.value for e in oq.get_events(task_id)] == [
            "enqueued",
            "executing",
            "complete",
        ]
    assert (tmp_path / "yaml" / "omniq.db").is_file()


def test_code_wins_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "3")
    oq = OmniQ(base_dir=str(tmp_path), max_workers=7)
    assert oq.settings.max_workers == 7


def test_bad_environment_value_fails_at_start_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_DEFAULT_WORKER", "fibers")
    with pytest.raises(ConfigError, match="OMNIQ_DEFAULT_WORKER"):
        OmniQ()


def test_unknown_backend_url_is_a_clear_error(tmp_path: Path) -> None:
    oq = OmniQ(task_queue="mongodb://127.0.0.1/x", base_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="mongodb"):
        oq.connect()
    oq.close()


def test_paths_may_be_path_objects(tmp_path: Path) -> None:
    # base_dir=Path(...) used to be refused ("expected a non-empty string").
    with OmniQ(base_dir=tmp_path / "pathlib") as oq:
        assert oq.settings.base_dir == str(tmp_path / "pathlib")
        run_one(oq)
    assert (tmp_path / "pathlib" / "omniq.db").is_file()
    config = tmp_path / "omniq.yaml"
    config.write_text("max_workers: 3\n")
    assert Settings.from_yaml(config).max_workers == 3
    assert Settings.load(config_file=config, base_dir=tmp_path).base_dir == str(tmp_path)
    assert Settings().replace(base_dir=tmp_path / "x").base_dir == str(tmp_path / "x")
    with pytest.raises(ConfigError, match=r"os\.PathLike"):
        Settings(base_dir=b"/bytes/are/not/taken")  # type: ignore[arg-type]


async def redis_keys(namespace: str) -> set[str]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        return {key.decode() async for key in client.scan_iter(match=f"{namespace}:*")}
    finally:
        await client.aclose()


async def test_backend_sets_all_three_components(tmp_path: Path, redis_cleanup: str) -> None:
    oq = AsyncOmniQ(backend="redis", redis_url=REDIS_URL, namespace=redis_cleanup)
    assert (
        oq.settings.task_queue_type,
        oq.settings.result_storage_type,
        oq.settings.event_storage_type,
    ) == ("redis",) * 3
    async with oq:
        task_id = await oq.enqueue(tasks.add, 1, 2)
        await oq.worker().run(burst=True)
        assert (await oq.get_result(task_id)).result == 3  # type: ignore[union-attr]
        assert len(await oq.get_events(task_id)) == 3
    keys = await redis_keys(redis_cleanup)
    assert any(task_id in key for key in keys)
    assert os.listdir(tmp_path) == []  # nothing went to the SQLite default


async def test_a_component_type_given_anywhere_wins_over_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_cleanup: str
) -> None:
    # The YAML file (a lower layer) names the event store; the environment (a higher
    # one) names the backend: the component's own setting still wins.
    config = tmp_path / "omniq.yaml"
    config.write_text(f"event_storage_type: sqlite\nbase_dir: {tmp_path / 'home'}\n")
    monkeypatch.setenv("OMNIQ_CONFIG", str(config))
    monkeypatch.setenv("OMNIQ_BACKEND", "redis")
    monkeypatch.setenv("OMNIQ_NAMESPACE", redis_cleanup)
    monkeypatch.setenv("OMNIQ_REDIS_URL", REDIS_URL)
    async with AsyncOmniQ() as oq:
        assert oq.settings.task_queue_type == "redis"
        assert oq.settings.event_storage_type == "sqlite"
        task_id = await oq.enqueue(tasks.add, 1, 2)
        await oq.worker().run(burst=True)
        assert [e.event_type.value for e in await oq.get_events(task_id)] == [
            "enqueued",
            "executing",
            "complete",
        ]
    assert (tmp_path / "home" / "omniq.db").is_file()  # the events
    assert any(task_id in key for key in await redis_keys(redis_cleanup))  # the task


def test_backend_rule_in_code_and_through_replace() -> None:
    settings = Settings(backend="memory", task_queue_type="sqlite")
    assert (settings.task_queue_type, settings.result_storage_type) == ("sqlite", "memory")
    # Those left to the backend follow a new one; the one given stays.
    moved = settings.replace(backend="file")
    assert (moved.task_queue_type, moved.result_storage_type) == ("sqlite", "file")
    assert Settings().replace(backend="redis").event_storage_type == "redis"
    assert Settings().task_queue_type == "sqlite"  # no backend: the default
    # The blocking client and an explicit Settings object take it too.
    assert OmniQ(settings, backend="redis").settings.result_storage_type == "redis"
    with pytest.raises(ConfigError, match=r"backend='mongo'"):
        Settings(backend="mongo")


def test_from_env_loads_every_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_text(f"base_dir: {tmp_path / 'yaml'}\nmax_workers: 2\nmax_retries: 1\n")
    monkeypatch.setenv("OMNIQ_CONFIG", str(config))
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "3")
    monkeypatch.setenv("OMNIQ_EVENT_STORAGE_TYPE", "none")
    with OmniQ.from_env(max_retries=4) as oq:
        # YAML < environment < arguments.
        assert (oq.settings.max_workers, oq.settings.max_retries) == (3, 4)
        task_id = run_one(oq)
        assert oq.get_events(task_id) == []
    assert (tmp_path / "yaml" / "omniq.db").is_file()
    client = AsyncOmniQ.from_env(base_dir=tmp_path / "code")
    assert isinstance(client, AsyncOmniQ)
    assert (client.settings.base_dir, client.settings.max_workers) == (str(tmp_path / "code"), 3)
