"""How a Redis URL becomes a connection endpoint (no server needed)."""

from __future__ import annotations

import ssl

import pytest

from omniq.errors import ConfigError
from omniq.storage.redis._resp import parse_redis_url


def test_host_port_and_database() -> None:
    endpoint = parse_redis_url("redis://10.0.0.5:6380/3")
    assert (endpoint.host, endpoint.port, endpoint.db) == ("10.0.0.5", 6380, 3)
    assert endpoint.path is None and endpoint.tls is None and endpoint.password is None


def test_defaults() -> None:
    endpoint = parse_redis_url("redis://")
    assert (endpoint.host, endpoint.port, endpoint.db) == ("127.0.0.1", 6379, 0)


def test_credentials_are_unquoted() -> None:
    endpoint = parse_redis_url("redis://app:p%40ss%3Aword@127.0.0.1/1")
    assert (endpoint.username, endpoint.password, endpoint.db) == ("app", "p@ss:word", 1)
    # A password alone (Redis before ACLs): no user name.
    assert parse_redis_url("redis://:secret@127.0.0.1").username is None
    assert parse_redis_url("redis://:secret@127.0.0.1").password == "secret"


def test_tls_checks_certificates_unless_told_not_to() -> None:
    checked = parse_redis_url("rediss://cache.example.com:6380/0").tls
    assert isinstance(checked, ssl.SSLContext) and checked.verify_mode is ssl.CERT_REQUIRED
    unchecked = parse_redis_url("rediss://cache.example.com/0?ssl_cert_reqs=none").tls
    assert unchecked is not None and unchecked.verify_mode is ssl.CERT_NONE


def test_unix_socket_with_database() -> None:
    endpoint = parse_redis_url("unix:///run/redis/redis.sock?db=2")
    assert (endpoint.path, endpoint.db) == ("/run/redis/redis.sock", 2)


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("http://127.0.0.1:6379/0", "unknown scheme 'http'"),
        ("redis://127.0.0.1:6379/zero", "zero"),
        ("redis://127.0.0.1:port/0", "port"),
        ("unix://?db=1", "no socket path"),
    ],
)
def test_bad_urls_name_what_is_wrong(url: str, names: str) -> None:
    with pytest.raises(ConfigError, match="redis URL") as caught:
        parse_redis_url(url)
    assert names in str(caught.value)


async def test_a_refused_login_is_a_clear_error_without_the_password() -> None:
    # The local server has no password: AUTH is refused, and retrying cannot help.
    from omniq.errors import StorageConnectionError
    from omniq.storage.redis import AsyncRedisQueue

    queue = AsyncRedisQueue("redis://:hunter2@127.0.0.1:6379/0")
    with pytest.raises(StorageConnectionError, match="refused") as caught:
        await queue.connect()
    assert "hunter2" not in str(caught.value) and ":***@" in str(caught.value)


async def test_tls_to_a_plain_text_port_fails_at_once_saying_so() -> None:
    # rediss:// to the plain-text server: the handshake used to wait out the connect
    # timeout on each of six tries (31.8 s) and then print an empty reason.
    import time

    from omniq.errors import StorageConnectionError
    from omniq.storage.redis import AsyncRedisQueue

    queue = AsyncRedisQueue("rediss://127.0.0.1:6379/0")
    started = time.monotonic()
    with pytest.raises(StorageConnectionError) as caught:
        await queue.connect()
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "TLS handshake with 127.0.0.1:6379 failed" in message
    assert "plain text" in message
    await queue.close()


async def test_a_silent_tls_port_times_out_saying_so() -> None:
    # A port that accepts and never answers: neither a TLS server nor a plain-text Redis.
    import asyncio

    from omniq.storage.redis._resp import RespConnection, RespConnectionError

    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    endpoint = parse_redis_url(f"rediss://127.0.0.1:{port}/0?socket_connect_timeout=1")
    try:
        with pytest.raises(RespConnectionError) as caught:
            await RespConnection.open(endpoint)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert str(caught.value) == (
        f"cannot connect to 127.0.0.1:{port}: no connection within 1 s "
        "(TCP connect and TLS handshake)"
    )
