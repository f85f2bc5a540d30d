"""TLS and authentication against real servers on loopback (SECURITY.md).

A private ``redis-server`` serves TLS only, asks for a client certificate and knows one ACL
user; a private PostgreSQL cluster takes only TLS connections with a client certificate
and a scram-sha-256 password. Certificates are made by the test (a throwaway CA). A task
goes all the way through each (enqueue, a worker, its result), with certificate checks on;
a server certificate from another CA, a missing client certificate and a wrong password
are each refused with one clear error that never shows the secret.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest

from omniq import AsyncOmniQ, Settings
from omniq.errors import ConfigError, StorageConnectionError
from omniq.storage.postgres import AsyncPostgresQueue
from omniq.storage.redis import AsyncRedisQueue
from tests._certs import CertFiles, make_certs
from tests.conformance import tasks
from tests.conftest import REPO_ROOT, unique_name
from tests.storage._postgres_server import PrivatePostgres
from tests.storage._redis_server import PrivateRedis

REDIS_USER, REDIS_PASSWORD = "omniq-app", "redis-Secret-7f3a"
PG_USER, PG_PASSWORD = "omniq_app", "pg-Secret-91c2"
WRONG_PASSWORD = "Wrong-Secret-55e1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_redis(certs: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The private TLS Redis; yields its address ``127.0.0.1:port``."""
    server = PrivateRedis(
        tmp_path_factory.mktemp("redis-tls"),
        tls=certs,
        config=["user default off", f"user {REDIS_USER} on >{REDIS_PASSWORD} ~* &* +@all"],
    )
    server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.kill()


@pytest.fixture(scope="module")
def tls_postgres(certs: CertFiles) -> Iterator[PrivatePostgres]:
    """The private PostgreSQL cluster, with a login role using a scram-sha-256 password."""
    cluster = PrivatePostgres(certs)
    try:
        cluster.start()

        async def make_role() -> None:
            conn = await asyncpg.connect(cluster.socket_dsn)
            try:
                await conn.execute(f"CREATE ROLE {PG_USER} LOGIN PASSWORD '{PG_PASSWORD}'")
                await conn.execute(f"CREATE DATABASE omniq OWNER {PG_USER}")
                stored = await conn.fetchval(
                    "SELECT rolpassword FROM pg_authid WHERE rolname = $1", PG_USER
                )
                assert stored.startswith("SCRAM-SHA-256$")  # not md5, not plain text
            finally:
                await conn.close()

        asyncio.run(make_role())
        yield cluster
    finally:
        cluster.stop()


def client_files(certs: CertFiles, ca: Path | None = None) -> dict[str, str]:
    """The generic TLS options: the CA to check the server with, and a client certificate."""
    return {
        "tls_ca_file": str(ca or certs.ca),
        "tls_cert_file": str(certs.client_cert),
        "tls_key_file": str(certs.client_key),
    }


async def round_trip(url: str, **settings: Any) -> None:
    """Enqueue, run and read back one task over ``url`` (all three components on it)."""
    oq = AsyncOmniQ(
        task_queue=url,
        result_storage=url,
        event_storage=url,
        namespace=unique_name("tls"),
        poll_interval=0.2,
        **settings,
    )
    async with oq:
        task_id = await oq.enqueue(tasks.add, 2, 3)
        await oq.worker(concurrency=2).run(burst=True)
        result = await oq.get_result(task_id)
        assert result is not None and result.result == 5
        assert [e.event_type.value for e in await oq.get_events(task_id)] == [
            "enqueued",
            "executing",
            "complete",
        ]


async def refused(url: str, **settings: Any) -> StorageConnectionError:
    """The error a client on ``url`` meets at connect (it must be a StorageConnectionError)."""
    oq = AsyncOmniQ(task_queue=url, result_storage=url, event_storage=False, **settings)
    with pytest.raises(StorageConnectionError) as raised:
        await oq.connect()
    await oq.close()
    return raised.value


def assert_secret_nowhere(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text


# -- Redis ----------------------------------------------------------------------------------


def redis_url(address: str, password: str = REDIS_PASSWORD, **query: str) -> str:
    tail = f"?{urlencode(query)}" if query else ""
    return f"rediss://{REDIS_USER}:{password}@{address}/0{tail}"


async def test_redis_tls_with_ca_and_client_certificate_in_the_url(
    tls_redis: str, certs: CertFiles
) -> None:
    await round_trip(redis_url(tls_redis, **client_files(certs)))


async def test_redis_tls_options_in_storage_options(tls_redis: str, certs: CertFiles) -> None:
    await round_trip(redis_url(tls_redis), storage_options=client_files(certs))


async def test_redis_tls_takes_redis_py_option_names(tls_redis: str, certs: CertFiles) -> None:
    query = {
        "ssl_ca_certs": str(certs.ca),
        "ssl_certfile": str(certs.client_cert),
        "ssl_keyfile": str(certs.client_key),
    }
    await round_trip(redis_url(tls_redis, **query))


async def test_redis_server_certificate_from_another_ca_is_refused(
    tls_redis: str, certs: CertFiles
) -> None:
    error = await refused(redis_url(tls_redis, **client_files(certs, ca=certs.other_ca)))
    assert "certificate verify failed" in str(error)
    assert str(error).startswith(f"redis: rediss://{REDIS_USER}:***@{tls_redis}/0")


async def test_redis_tls_verify_false_skips_the_server_check(
    tls_redis: str, certs: CertFiles
) -> None:
    # For a test server only: nothing checks who answers.
    files = {k: v for k, v in client_files(certs).items() if k != "tls_ca_file"}
    await round_trip(redis_url(tls_redis, tls_verify="false", **files))


async def test_redis_without_client_certificate_is_refused(
    tls_redis: str, certs: CertFiles
) -> None:
    error = await refused(redis_url(tls_redis, tls_ca_file=str(certs.ca)))
    assert "rediss://" in str(error)


async def test_redis_tls_options_on_a_plain_url_are_refused(certs: CertFiles) -> None:
    oq = AsyncOmniQ(
        task_queue=f"redis://127.0.0.1:6379/0?tls_ca_file={certs.ca}", event_storage=False
    )
    with pytest.raises(ConfigError, match="not rediss://: the connection would be plain text"):
        await oq.connect()
    await oq.close()


async def test_redis_unreadable_ca_file_is_a_config_error(tls_redis: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    oq = AsyncOmniQ(task_queue=redis_url(tls_redis, tls_ca_file=str(missing)))
    with pytest.raises(ConfigError, match=r"tls_ca_file=.*nope\.pem.*cannot load"):
        await oq.connect()
    await oq.close()


async def test_redis_wrong_password_is_one_clear_error_that_never_shows_it(
    tls_redis: str, certs: CertFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = redis_url(tls_redis, WRONG_PASSWORD, **client_files(certs))
    oq = AsyncOmniQ(task_queue=url, result_storage=url, event_storage=False)
    with pytest.raises(StorageConnectionError) as raised:
        await oq.connect()
    await oq.close()
    message = str(raised.value)
    assert "WRONGPASS" in message
    assert f"rediss://{REDIS_USER}:***@{tls_redis}/0" in message
    assert_secret_nowhere(WRONG_PASSWORD, message, repr(raised.value), caplog.text, repr(oq))
    assert_secret_nowhere(WRONG_PASSWORD, repr(Settings(redis_url=url)), repr(AsyncRedisQueue(url)))


# -- PostgreSQL -----------------------------------------------------------------------------


async def test_postgres_verify_full_with_libpq_options_in_the_url(
    tls_postgres: PrivatePostgres, certs: CertFiles
) -> None:
    url = tls_postgres.url(
        PG_USER,
        PG_PASSWORD,
        "omniq",
        sslmode="verify-full",
        sslrootcert=str(certs.ca),
        sslcert=str(certs.client_cert),
        sslkey=str(certs.client_key),
    )
    await round_trip(url)


async def test_postgres_tls_options_in_storage_options(
    tls_postgres: PrivatePostgres, certs: CertFiles
) -> None:
    url = tls_postgres.url(PG_USER, PG_PASSWORD, "omniq")
    await round_trip(url, storage_options=client_files(certs))


async def test_postgres_tls_options_in_the_url(
    tls_postgres: PrivatePostgres, certs: CertFiles
) -> None:
    await round_trip(tls_postgres.url(PG_USER, PG_PASSWORD, "omniq", **client_files(certs)))


@pytest.mark.parametrize("form", ["libpq", "omniq"])
async def test_postgres_server_certificate_from_another_ca_is_refused(
    tls_postgres: PrivatePostgres, certs: CertFiles, form: str
) -> None:
    if form == "libpq":
        query = {"sslmode": "verify-full", "sslrootcert": str(certs.other_ca)}
    else:
        query = client_files(certs, ca=certs.other_ca)
    error = await refused(tls_postgres.url(PG_USER, PG_PASSWORD, "omniq", **query))
    assert "certificate verify failed" in str(error)
    assert_secret_nowhere(PG_PASSWORD, str(error))


async def test_postgres_without_client_certificate_is_refused(
    tls_postgres: PrivatePostgres, certs: CertFiles
) -> None:
    url = tls_postgres.url(PG_USER, PG_PASSWORD, "omniq", tls_ca_file=str(certs.ca))
    error = await refused(url)
    assert "certificate" in str(error)


async def test_postgres_wrong_password_is_one_clear_error_that_never_shows_it(
    tls_postgres: PrivatePostgres, certs: CertFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = tls_postgres.url(PG_USER, WRONG_PASSWORD, "omniq", **client_files(certs))
    oq = AsyncOmniQ(task_queue=url, result_storage=url, event_storage=False)
    with pytest.raises(StorageConnectionError) as raised:
        await oq.connect()
    await oq.close()
    message = str(raised.value)
    assert f'password authentication failed for user "{PG_USER}"' in message
    assert f"postgresql://{PG_USER}:***@127.0.0.1:{tls_postgres.port}/omniq" in message
    assert_secret_nowhere(WRONG_PASSWORD, message, repr(raised.value), caplog.text, repr(oq))
    queue = AsyncPostgresQueue(url, Settings(postgres_url=url))
    assert_secret_nowhere(WRONG_PASSWORD, repr(queue), repr(Settings(postgres_url=url)))


def test_cli_shows_a_wrong_password_as_one_line_without_it(
    tls_postgres: PrivatePostgres, tls_redis: str, certs: CertFiles, tmp_path: Path
) -> None:
    urls = {
        "postgres": tls_postgres.url(PG_USER, WRONG_PASSWORD, "omniq", **client_files(certs)),
        "redis": redis_url(tls_redis, WRONG_PASSWORD, **client_files(certs)),
    }
    for backend, url in urls.items():
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "OMNIQ_TASK_QUEUE_URL": url,
            "OMNIQ_RESULT_STORAGE_URL": url,
            "OMNIQ_EVENT_STORAGE_TYPE": "none",
        }
        done = subprocess.run(
            [sys.executable, "-m", "omniq", "status", "some-task"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0, backend
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("omniq: error: "), backend
        assert "***" in lines[0], backend
        assert_secret_nowhere(WRONG_PASSWORD, done.stdout, done.stderr)
