"""The conformance suite's fixtures: one ``oq`` per backend, isolated per test.

Every test in ``tests/conformance`` runs once per backend in ``BACKENDS``; a backend
joins the suite by adding its name here and a branch in ``store_url``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ
from tests.azureserver import new_container
from tests.conftest import (
    NATS_URL,
    POSTGRES_URL,
    REDIS_URL,
    delete_nats_namespace,
    delete_redis_namespace,
    drop_postgres_schema,
    unique_name,
)

# GCS is not here: its emulator serves one request at a time, too slowly for the suite's
# time-bound checks (leases, a schedule's grid, 200 gevent tasks); tests/storage runs the
# storage contract and the process races on it.
BACKENDS = ["sqlite", "file", "memory", "redis", "postgres", "nats", "azure"]
#: Stores the tests that start worker processes run on: ``memory://`` lives in one
#: process; Azure (on Azurite) is shared by processes too, and tests/storage races
#: processes on it, but the suite's CLI workers take no ``storage_options``.
SHARED_BACKENDS = [name for name in BACKENDS if name not in ("memory", "azure")]

MakeOQ = Callable[..., Awaitable[AsyncOmniQ]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test once per backend; tests that start worker processes (they use the
    ``workers`` fixture or are marked ``cross_process``) once per shareable backend."""
    if "backend_name" not in metafunc.fixturenames:
        return
    cross_process = "workers" in metafunc.fixturenames or (
        metafunc.definition.get_closest_marker("cross_process") is not None
    )
    metafunc.parametrize("backend_name", SHARED_BACKENDS if cross_process else BACKENDS)


@pytest.fixture
def store_options(
    backend_name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The ``storage_options`` the store needs (the cloud emulators' endpoints), also in
    ``OMNIQ_STORAGE_OPTIONS`` for the clients a test builds itself and its subprocesses."""
    if backend_name != "azure":
        return {}
    options = {"connection_string": request.getfixturevalue("azurite")}
    monkeypatch.setenv("OMNIQ_STORAGE_OPTIONS", json.dumps(options))
    return options


@pytest.fixture
def store_url(backend_name: str, tmp_path: Path, store_options: dict[str, Any]) -> str:
    """A URL for a fresh, empty store on the backend under test."""
    if backend_name == "sqlite":
        return f"sqlite:///{tmp_path}/omniq.db"
    if backend_name == "file":
        return f"file://{tmp_path}/store"
    if backend_name == "memory":
        return f"memory://{unique_name('mem')}"
    if backend_name == "redis":
        return REDIS_URL
    if backend_name == "postgres":
        return POSTGRES_URL
    if backend_name == "nats":
        return NATS_URL
    if backend_name == "azure":
        return f"az://{new_container(store_options['connection_string'])}/omniq"
    raise AssertionError(f"unknown backend {backend_name}")


@pytest.fixture
async def make_oq(
    backend_name: str,
    store_url: str,
    store_options: dict[str, Any],
    namespace: str,
    tmp_path: Path,
) -> AsyncIterator[MakeOQ]:
    """Build connected AsyncOmniQ clients on the one store of this test."""
    made: list[AsyncOmniQ] = []

    async def make(**overrides: Any) -> AsyncOmniQ:
        options: dict[str, Any] = {
            "namespace": namespace,
            "base_dir": str(tmp_path / ".omniq"),
            "poll_interval": 0.2,
            "retry_delay": 0.0,
        }
        if store_options:
            options["storage_options"] = store_options
        options.update(overrides)
        url = options.pop("url", store_url)
        events = options.pop("event_storage", url)
        oq = AsyncOmniQ(task_queue=url, result_storage=url, event_storage=events, **options)
        await oq.connect()
        made.append(oq)
        return oq

    yield make
    # Bounded: a close that hangs fails the test here, with the stack of the await it
    # was stuck in, instead of holding the whole run until CI's limit.
    async with asyncio.timeout(TEARDOWN_SECONDS):
        for oq in made:
            await oq.close()
    async with asyncio.timeout(TEARDOWN_SECONDS):
        await _delete_store(backend_name, store_url, namespace)


#: How long a test's clients may take to close, and its store to be deleted.
TEARDOWN_SECONDS = 60


async def _delete_store(backend_name: str, store_url: str, namespace: str) -> None:
    if backend_name == "redis":
        await delete_redis_namespace(REDIS_URL, namespace)
    if backend_name == "postgres":
        await drop_postgres_schema(POSTGRES_URL, namespace)
    if backend_name == "nats":
        await delete_nats_namespace(NATS_URL, namespace)
    if backend_name == "memory":
        import fsspec

        fs = fsspec.filesystem("memory")
        root = store_url.removeprefix("memory://")
        if fs.exists(root):
            fs.rm(root, recursive=True)


@pytest.fixture
async def oq(make_oq: MakeOQ) -> AsyncOmniQ:
    """A connected AsyncOmniQ on a fresh store of the backend under test."""
    return await make_oq()


#: Backends whose stores others may write to: dill travels there only signed, so a test
#: that sends a lambda sets a key (embedded stores sign with their own, made in base_dir).
SHARED_STORES = {"redis", "postgres", "nats", "azure"}


@pytest.fixture
async def dill_oq(make_oq: MakeOQ, backend_name: str) -> AsyncOmniQ:
    """Like ``oq``, ready to carry lambdas and closures: a ``secret_key`` on shared stores,
    nothing on embedded ones (they sign with the key they keep under ``base_dir``)."""
    if backend_name in SHARED_STORES:
        return await make_oq(secret_key="conformance-secret")
    return await make_oq()


def task_marker() -> str:
    """A unique token tasks can record, to tell tests apart."""
    return uuid.uuid4().hex
