"""Signed or refused, by default (SECURITY.md): what a worker does with dill it did not sign.

On a shared store (Redis, PostgreSQL, S3) anyone who can write to the server could plant
a task. Here a test plays that writer: it puts an unsigned dill task straight into each
store through the storage layer, bypassing the client, and a worker with nothing
configured fails it with a clear error and unpickles nothing (``TouchOnLoad`` leaves a
file when unpickled). With ``allow_unsigned_dill=True`` the same task runs. On the
embedded default (SQLite under ``base_dir``) a lambda runs with nothing configured, in
another process too: both sign with the key kept in ``base_dir``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from omniq import AsyncOmniQ, OmniQ, Task, TaskStatus
from omniq.errors import SerializationError, ValueTooLargeError
from omniq.serialization import SerializationManager
from omniq.storage.registry import bundle_for_url
from tests.conformance import tasks
from tests.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    REPO_ROOT,
    delete_redis_namespace,
    drop_postgres_schema,
)
from tests.s3server import S3_KEY, S3_SECRET, running_s3_server

SHARED = ["redis", "postgres", "s3"]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with running_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(params=SHARED)
async def shared(
    request: pytest.FixtureRequest, namespace: str, tmp_path: Path
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A fresh store on a shared backend: its URL and the settings a client needs there."""
    backend: str = request.param
    options: dict[str, Any] = {
        "namespace": namespace,
        "base_dir": str(tmp_path / ".omniq"),
        "poll_interval": 0.1,
    }
    if backend == "redis":
        yield REDIS_URL, options
        await delete_redis_namespace(REDIS_URL, namespace)
    elif backend == "postgres":
        yield POSTGRES_URL, options
        await drop_postgres_schema(POSTGRES_URL, namespace)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"omniq-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=bucket)
        client.close()
        options["storage_options"] = {"endpoint_url": endpoint, "key": S3_KEY, "secret": S3_SECRET}
        yield f"s3://{bucket}/omniq", options


def evidence(tmp_path: Path) -> tuple[Callable[[Any], None], tasks.TouchOnLoad, Path, Path]:
    """A closure that leaves ``called`` when run, and an argument that leaves ``loaded``
    when unpickled."""
    called, loaded = tmp_path / "called", tmp_path / "loaded"

    def planted(_: Any) -> None:
        called.touch()

    return planted, tasks.TouchOnLoad(str(loaded)), called, loaded


async def plant_unsigned_task(url: str, options: dict[str, Any], func: Any, arg: Any) -> str:
    """Write an unsigned dill task into the store as anyone with write access could: the
    storage component, no client, no serializer of OmniQ's choosing."""
    from omniq import Settings

    payload = SerializationManager(allow_unsigned_dill=True).dumps_call(func, (arg,), {})
    assert payload[:1] == b"D"
    task = Task(id=f"planted-{uuid.uuid4().hex[:8]}", func="planted", payload=payload)
    queue = bundle_for_url(url, Settings(**options)).task_queue()
    await queue.connect()
    try:
        await queue.enqueue([task])
    finally:
        await queue.close()
    return task.id


async def test_a_worker_on_a_shared_store_refuses_unsigned_dill_and_unpickles_nothing(
    shared: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    url, options = shared
    func, arg, called, loaded = evidence(tmp_path)
    task_id = await plant_unsigned_task(url, options, func, arg)
    # A plain task beside it runs: the refused one does not hold up the queue.
    async with AsyncOmniQ(task_queue=url, result_storage=url, event_storage=url, **options) as oq:
        plain = await oq.enqueue(tasks.add, 1, 2)
        await oq.worker().run(burst=True)
        result = await oq.get_result(task_id)
        assert (await oq.get_result(plain)).result == 3
    assert result is not None and result.status is TaskStatus.FAILED
    assert result.error is not None
    assert result.error.type == "omniq.errors.PayloadSignatureError"
    assert "unsigned and no key is set: refused, nothing was unpickled" in result.error.message
    assert "set secret_key" in result.error.message
    assert "allow_unsigned_dill=True" in result.error.message
    assert result.attempts == 1  # no retry can mend it
    assert not loaded.exists(), "the payload was unpickled"
    assert not called.exists()


async def test_a_worker_that_opts_in_runs_unsigned_dill(
    shared: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    url, options = shared
    func, arg, called, loaded = evidence(tmp_path)
    task_id = await plant_unsigned_task(url, options, func, arg)
    async with AsyncOmniQ(
        task_queue=url, result_storage=url, event_storage=url, allow_unsigned_dill=True, **options
    ) as oq:
        await oq.worker().run(burst=True)
        result = await oq.get_result(task_id)
    assert result is not None and result.status is TaskStatus.COMPLETE, result
    assert loaded.exists() and called.exists()


async def test_a_lambda_to_a_shared_store_without_a_key_fails_at_submit(
    shared: tuple[str, dict[str, Any]],
) -> None:
    url, options = shared
    async with AsyncOmniQ(task_queue=url, result_storage=url, event_storage=url, **options) as oq:
        with pytest.raises(SerializationError) as raised:
            await oq.enqueue(lambda x: x + 1, 1)
        assert "without a signing key" in str(raised.value)
        assert "set secret_key" in str(raised.value)
        assert "allow_unsigned_dill=True" in str(raised.value)
        assert await oq.list_tasks() == []  # nothing was stored
        # Importable functions and plain data need no key.
        task_id = await oq.enqueue(tasks.add, 2, 2)
        await oq.worker().run(burst=True)
        assert (await oq.get_result(task_id)).result == 4


async def test_a_shared_key_signs_and_a_new_key_can_be_rolled_in(
    shared: tuple[str, dict[str, Any]],
) -> None:
    url, options = shared
    components = {"task_queue": url, "result_storage": url, "event_storage": url}
    async with AsyncOmniQ(**components, secret_key="old-key", **options) as producer:
        factor = 3
        first = await producer.enqueue(lambda x: x * factor, 2)
    # Workers move first: the new key signs, the old one is still accepted.
    async with AsyncOmniQ(**components, secret_key=["new-key", "old-key"], **options) as oq:
        second = await oq.enqueue(lambda x: x * factor, 3)
        await oq.worker().run(burst=True)
        assert (await oq.get_result(first)).result == 6
        assert (await oq.get_result(second)).result == 9
    async with AsyncOmniQ(**components, secret_key="old-key", **options) as forgotten:
        stale = await forgotten.enqueue(lambda: 0)  # a producer left on the dropped key
    async with AsyncOmniQ(**components, secret_key="new-key", **options) as late:
        await late.worker().run(burst=True)
        refused = await late.get_result(stale)
    assert refused is not None and refused.status is TaskStatus.FAILED
    assert refused.error is not None and "signature does not match" in refused.error.message


def test_the_embedded_default_runs_a_lambda_with_nothing_configured(tmp_path: Path) -> None:
    factor = 7
    with OmniQ() as oq:  # SQLite under ./.omniq
        task_id = oq.enqueue(lambda x: x * factor, 6)
        stored = oq.get_task(task_id)
        assert stored is not None and stored.payload[:1] == b"S"  # signed
        oq.worker().run(burst=True)
        assert oq.get_result(task_id).result == 42
    key_file = tmp_path / ".omniq" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_another_process_sharing_base_dir_runs_the_embedded_lambda(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with OmniQ() as oq:
        task_id = oq.enqueue(lambda path: open(path, "w").close(), str(marker))
    worker = subprocess.run(
        [sys.executable, "-m", "omniq", "worker", "--burst"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert worker.returncode == 0, worker.stderr
    assert marker.exists()
    with OmniQ() as oq:
        assert oq.get_result(task_id).status is TaskStatus.COMPLETE


def test_an_oversized_argument_is_refused_at_submit(tmp_path: Path) -> None:
    with OmniQ(max_payload_bytes=1024) as oq:
        with pytest.raises(ValueTooLargeError) as raised:
            oq.enqueue(tasks.echo, "x" * 2000)
        assert "over max_payload_bytes=1024" in str(raised.value)
        assert isinstance(raised.value, ValueError)
        assert oq.list_tasks() == []
        assert oq.enqueue(tasks.echo, "x" * 100)


def test_a_worker_fails_a_stored_payload_over_its_bound_without_decoding_it(
    tmp_path: Path,
) -> None:
    loaded = tmp_path / "loaded"
    with OmniQ(max_payload_bytes=None) as producer:  # a writer that ignores the bound
        big = producer.enqueue(tasks.echo, tasks.TouchOnLoad(str(loaded)), "x" * 4096)
        small = producer.enqueue(tasks.add, 1, 1)
    with OmniQ(max_payload_bytes=1024) as oq:
        oq.worker().run(burst=True)
        result = oq.get_result(big)
        assert result is not None and result.status is TaskStatus.FAILED
        assert result.error is not None
        assert result.error.type == "omniq.errors.ValueTooLargeError"
        assert "its stored arguments encode to" in result.error.message
        assert "over max_payload_bytes=1024" in result.error.message
        assert oq.get_result(small).result == 2  # the worker carried on
    assert not loaded.exists()
