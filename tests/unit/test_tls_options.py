"""The server backends' TLS options (omniq._tls): where they are read from, what wins,
and that no password leaks out of them (the servers themselves: tests/storage/
test_transport_security.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from omniq import Settings
from omniq._tls import TLSOptions, split_tls_options
from omniq._urls import is_shared_store, redact_url
from omniq.errors import ConfigError
from omniq.storage.file.connection import FileConnection
from omniq.storage.redis._resp import REDIS_TLS_ALIASES, parse_redis_url
from tests._certs import make_certs


def test_url_options_leave_the_url_and_win_over_storage_options() -> None:
    url, options = split_tls_options(
        "rediss://h:6380/0?tls_ca_file=/url/ca.pem&db=2&tls_verify=false",
        {"tls_ca_file": "/settings/ca.pem", "tls_cert_file": "/settings/c.pem", "other": 1},
    )
    assert url == "rediss://h:6380/0?db=2"
    assert options == TLSOptions(ca_file="/url/ca.pem", cert_file="/settings/c.pem", verify=False)


def test_a_drivers_own_names_are_taken_as_aliases() -> None:
    url, options = split_tls_options(
        "rediss://h/0?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem",
        aliases=REDIS_TLS_ALIASES,
    )
    assert url == "rediss://h/0"
    assert (options.ca_file, options.cert_file, options.key_file) == ("/ca.pem", "/c.pem", "/k.pem")


def test_bad_values_are_config_errors_that_hide_the_password() -> None:
    with pytest.raises(ConfigError, match="tls_verify='maybe': expected true or false"):
        split_tls_options("rediss://h/0?tls_verify=maybe")
    with pytest.raises(ConfigError, match="tls_key_password=<hidden>"):
        split_tls_options("rediss://h/0", {"tls_key_password": ""})
    with pytest.raises(ConfigError, match="tls_key_file is set without tls_cert_file"):
        TLSOptions(key_file="/k.pem").context()
    shown = repr(TLSOptions(cert_file="/c.pem", key_password="hunter2"))
    assert "hunter2" not in shown and "key_password=<hidden>" in shown


def test_contexts_check_the_server_unless_told_not_to(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    checked = TLSOptions(
        ca_file=str(certs.ca), cert_file=str(certs.client_cert), key_file=str(certs.client_key)
    ).context()
    assert checked.verify_mode is ssl.CERT_REQUIRED and checked.check_hostname
    unchecked = TLSOptions(verify=False).context()
    assert unchecked.verify_mode is ssl.CERT_NONE and not unchecked.check_hostname
    with pytest.raises(ConfigError, match="cannot load the client certificate"):
        TLSOptions(cert_file=str(certs.ca), key_file=str(certs.server_cert)).context()


def test_redis_refuses_tls_options_on_a_plain_url_and_hides_the_password() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_redis_url("redis://app:hunter2@h:6379/0", TLSOptions(ca_file="/ca.pem"))
    assert "not rediss://" in str(raised.value)
    assert "hunter2" not in str(raised.value) and "app:***@h" in str(raised.value)
    endpoint = parse_redis_url("rediss://h:6380/0?ssl_cert_reqs=none")
    assert endpoint.tls is not None and endpoint.tls.verify_mode is ssl.CERT_NONE


def test_the_file_backend_leaves_tls_options_to_the_servers() -> None:
    settings = Settings(storage_options={"tls_ca_file": "/ca.pem", "anon": True})
    assert FileConnection("memory://x", settings)._options == {"anon": True}


def test_password_query_parameters_are_redacted() -> None:
    assert redact_url("postgresql://u:pw@h/db?sslpassword=pw&sslmode=verify-full") == (
        "postgresql://u:***@h/db?sslpassword=***&sslmode=verify-full"
    )
    assert redact_url("rediss://h/0?tls_key_password=pw") == "rediss://h/0?tls_key_password=***"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize(
    ("url", "shared"),
    [
        ("sqlite:///jobs.db", False),
        ("file:///var/lib/omniq", False),
        ("memory://omniq", False),
        ("redis://h:6379/0", True),
        ("unix:///run/redis.sock", True),
        ("postgresql://h/db", True),
        ("nats://h:4222", True),
        ("s3://bucket/prefix", True),
        ("sftp://host/dir", True),
    ],
)
def test_which_stores_are_shared(url: str, shared: bool) -> None:
    assert is_shared_store(url) is shared
