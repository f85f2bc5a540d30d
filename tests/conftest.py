"""Shared fixtures: real servers on loopback, isolated per test.

A server that is down makes its tests fail loudly (never skip): CI starts them.
"""

from __future__ import annotations

import faulthandler
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# gcsfs (2025.x and later) by default asks the storage control plane, over gRPC, whether
# each bucket is zonal; the GCS emulator the tests use has no such service, and every
# request would wait for that lookup to time out. gcsfs's documented switch, read when
# gcsfs is first imported (so here, before any test), and inherited by worker processes.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

REDIS_URL = os.environ.get("OMNIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "OMNIQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
NATS_URL = os.environ.get("OMNIQ_TEST_NATS_URL", "nats://127.0.0.1:4222")
REPO_ROOT = Path(__file__).resolve().parent.parent


#: Seconds after which a test that is still running (setup, call and teardown together)
#: ends the whole run with every thread's stack on stderr. pytest-timeout's 120-s signal
#: fails a stuck test but cannot stop every hang: its exception, raised in the middle of
#: an event loop, can land in a callback or a background task that swallows it, and a
#: teardown after a timed-out call has no timer at all. A hang then would last until CI
#: kills the run, with nothing said; this backstop makes it a failure with the stacks.
HANG_BACKSTOP = 300


_backstop_stderr: int | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Keep a copy of the real stderr for the hang backstop (fd 2 is the capture's file
    while a test runs)."""
    global _backstop_stderr
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        _backstop_stderr = os.dup(2)
        return
    with capture.global_and_fixture_disabled():
        _backstop_stderr = os.dup(2)


def _hang_backstop_fired(name: str) -> None:
    """The second backstop: every thread's stack, then the end of the run."""
    fd = _backstop_stderr if _backstop_stderr is not None else 2
    os.write(fd, f"\n\nHANG BACKSTOP: {name} still running after {HANG_BACKSTOP} s\n".encode())
    faulthandler.dump_traceback(file=fd, all_threads=True)
    os._exit(70)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Arm the hang backstop (``HANG_BACKSTOP``) around each test: faulthandler's
    watchdog, and a timer thread a little later in case that one is disarmed (a hang in
    a CI run outlived it once, unexplained; the timer's thread runs whenever the main
    thread waits in its event loop, as a stuck test does)."""
    if _backstop_stderr is not None:
        faulthandler.dump_traceback_later(HANG_BACKSTOP, exit=True, file=_backstop_stderr)
    timer = threading.Timer(HANG_BACKSTOP + 30, _hang_backstop_fired, (item.nodeid,))
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()


def unique_name(prefix: str = "t") -> str:
    """A fresh namespace / stream / directory name for one test."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def run_script(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a user's script would run (``python app.py STORE`` in
    ``tmp_path``, its own ``__main__``), with a fresh store directory as its argument."""
    script = tmp_path / "app.py"
    script.write_text(source)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """Azurite's Blob service on 127.0.0.1 for the whole session: its connection string
    (started on first use; see tests/azureserver.py)."""
    from tests.azureserver import running_azurite

    with running_azurite() as connection_string:
        yield connection_string


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """The GCS emulator on 127.0.0.1 for the whole session: its endpoint URL (started on
    first use; see tests/gcsserver.py)."""
    from tests.gcsserver import running_gcs_emulator

    with running_gcs_emulator() as endpoint:
        yield endpoint


@pytest.fixture
def namespace() -> str:
    """A namespace no other test (or run) uses."""
    return unique_name("omniqtest")


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test runs in its own directory with no OMNIQ_* variables leaking in."""
    for key in list(os.environ):
        if key.startswith("OMNIQ_") and not key.startswith("OMNIQ_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return


async def delete_redis_namespace(url: str, namespace: str) -> None:
    """Remove every key under ``namespace:`` (test teardown)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.unlink(*keys[start : start + 500])
    finally:
        await client.aclose()


async def delete_nats_namespace(url: str, namespace: str) -> None:
    """Delete the streams and buckets of ``namespace`` on NATS (test teardown)."""
    from omniq.storage.nats import NATSConnection

    connection = NATSConnection(url, namespace=namespace)
    await connection.acquire()
    try:
        await connection.delete_streams()
    finally:
        await connection.release()


@pytest.fixture
async def redis_cleanup(namespace: str) -> AsyncIterator[str]:
    """Yields the namespace and deletes its Redis keys afterwards."""
    yield namespace
    await delete_redis_namespace(REDIS_URL, namespace)


async def drop_postgres_schema(url: str, namespace: str) -> None:
    """Drop the schema a test's namespace created (test teardown)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def span_exporter() -> Any:
    """This process's OpenTelemetry spans, kept in memory (an ``InMemorySpanExporter``):
    the global tracer provider can be set once per process, so once for every test that
    records spans. Cleared before each use by :func:`spans`."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
def spans(span_exporter: Any) -> Iterator[Any]:
    """The in-memory span exporter, emptied before and after the test."""
    span_exporter.clear()
    yield span_exporter
    span_exporter.clear()
