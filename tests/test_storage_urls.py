"""Which storage URLs a client takes: a mistyped one is an error, never a directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from omniq import AsyncOmniQ, OmniQ, Settings
from omniq.errors import ConfigError
from omniq.storage.file import AsyncFileQueue, FileQueue


def entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.mark.parametrize(
    ("url", "names"),
    [
        # A missing colon used to enqueue into ./redis/127.0.0.1:6379/8/tasks/...
        ("redis//127.0.0.1:6379/8", "did you mean 'redis://127.0.0.1:6379/8'"),
        # A missing slash used to create a directory named "sqlite:".
        ("sqlite:/x.db", "'://' is missing"),
        ("mongodb://127.0.0.1/x", "unknown scheme 'mongodb'"),
    ],
)
async def test_a_mistyped_url_is_refused_and_creates_nothing(
    tmp_path: Path, url: str, names: str
) -> None:
    oq = AsyncOmniQ(task_queue=url, result_storage="memory://r", event_storage=False)
    with pytest.raises(ConfigError) as caught:
        await oq.enqueue("os:getcwd")
    await oq.close()
    message = str(caught.value)
    assert repr(url) in message and names in message
    assert "file:///abs/dir" in message  # the forms accepted
    assert entries(tmp_path) == []


def test_a_bare_path_is_refused_with_the_url_to_write(tmp_path: Path) -> None:
    target = tmp_path / "x" / "plain.db"
    with OmniQ(base_dir=str(tmp_path / "home"), event_storage=False) as default:
        # The defaults (base_dir) still make their own URLs.
        default.enqueue("os:getcwd")
        oq = OmniQ(task_queue=str(target), event_storage=False, base_dir=str(tmp_path / "home"))
        with pytest.raises(ConfigError, match="bare path") as caught:
            oq.enqueue("os:getcwd")
        oq.close()
    assert f"file://{target}" in str(caught.value)
    assert f"sqlite:///{target}" in str(caught.value)
    assert not (tmp_path / "x").exists()


async def test_an_http_url_is_not_mistaken_for_a_missing_bucket() -> None:
    oq = AsyncOmniQ(task_queue="http://127.0.0.1:6379", event_storage=False)
    with pytest.raises(ConfigError) as caught:
        await oq.connect()
    await oq.close()
    message = str(caught.value)
    assert "http:// is not a storage backend" in message
    assert "did you mean 'redis://127.0.0.1:6379'" in message
    assert "does not exist" not in message


def test_a_bad_url_setting_fails_at_start_up_naming_its_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"OMNIQ_TASK_QUEUE_URL": "redis//127.0.0.1:6379/8"})
    assert "environment variable OMNIQ_TASK_QUEUE_URL" in str(caught.value)
    assert "did you mean 'redis://127.0.0.1:6379/8'" in str(caught.value)
    with pytest.raises(ConfigError, match="redis_url='postgresql://h/db'"):
        Settings(redis_url="postgresql://h/db")


async def test_the_file_backend_takes_its_urls_and_refuses_others(tmp_path: Path) -> None:
    async with AsyncOmniQ(
        task_queue=f"file://{tmp_path}/queue", result_storage="memory://urls", event_storage=False
    ) as oq:
        task_id = await oq.enqueue("os:getcwd")
        assert (tmp_path / "queue" / "tasks" / "t" / task_id).is_file()
    for url in ("http://127.0.0.1/x", "zip://archive.zip", "redis//127.0.0.1:6379/8"):
        with pytest.raises(ConfigError, match="file backend"):
            AsyncFileQueue(url)


def test_the_file_classes_take_a_directory_path_but_not_a_file(tmp_path: Path) -> None:
    # Built directly, a file queue may be given a plain directory (README: Backends).
    with FileQueue(tmp_path / "dir") as queue:
        assert queue.stats() == {}
    database = tmp_path / "jobs.db"
    database.write_bytes(b"SQLite format 3\x00")
    queue = FileQueue(str(database))
    with pytest.raises(ConfigError, match="existing file, not a directory"):
        queue.connect()
    queue.close()


def test_every_server_scheme_has_a_backend() -> None:
    from omniq._urls import SERVER_SCHEMES
    from omniq.storage.registry import _BACKENDS

    assert set(_BACKENDS) == SERVER_SCHEMES
