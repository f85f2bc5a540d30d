"""TLS options of the server backends: one set of names, read once, turned into a context.

Every server backend (Redis, PostgreSQL, NATS) takes the same options, in its URL's query
or in the ``storage_options`` setting (the URL wins, option by option)::

    rediss://app:pw@redis.internal:6380/0?tls_ca_file=/etc/omniq/ca.pem
    Settings(storage_options={"tls_ca_file": "/etc/omniq/ca.pem",
                              "tls_cert_file": "/etc/omniq/client.pem",
                              "tls_key_file": "/etc/omniq/client.key"})

- ``tls_ca_file``: PEM file of the certificate authorities that sign the server's
  certificate (default: the system's trust store).
- ``tls_cert_file``, ``tls_key_file``: a client certificate and its private key, for a
  server that asks for one (``tls-auth-clients`` in Redis, ``clientcert`` in pg_hba.conf).
  The key may sit in the certificate's file; ``tls_key_password`` opens an encrypted key.
- ``tls_verify``: ``true`` (the default) checks the server's certificate and its name;
  ``false`` turns both checks off, which lets anyone on the path read and alter the
  traffic (for a test server only).

These names never reach a driver or a server: :func:`split_tls_options` takes them out
of the URL. The file backend ignores them (its object stores have their own options).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omniq._urls import split_option
from omniq.errors import ConfigError

__all__ = ["TLS_OPTIONS", "TLSOptions", "split_tls_options"]

#: The option names, as written in a URL's query or in ``storage_options``.
TLS_OPTIONS = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_key_password", "tls_verify")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class TLSOptions:
    """The TLS options of one server URL (see the module docstring).

    Its ``repr`` never shows the key's password.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = None
    verify: bool = True

    @property
    def given(self) -> bool:
        """True when any option was set (a plain-text URL must then be refused)."""
        return self != TLSOptions()

    def context(self) -> ssl.SSLContext:
        """A client context that checks the server (unless ``verify`` is off) and presents
        the client certificate (when given). A file that cannot be loaded is a ConfigError
        naming the option and the file."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"tls_ca_file={self.ca_file!r}: cannot load the certificate authorities: {exc}"
            ) from exc
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, self.key_password)
            except (OSError, ssl.SSLError) as exc:
                # Never the password: only the files and the reason.
                raise ConfigError(
                    f"tls_cert_file={self.cert_file!r}, tls_key_file={self.key_file!r}: "
                    f"cannot load the client certificate: {type(exc).__name__}: "
                    f"{getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or exc}"
                ) from None
        elif self.key_file is not None:
            raise ConfigError("tls_key_file is set without tls_cert_file: give both")
        return context

    def __repr__(self) -> str:
        hidden = None if self.key_password is None else "<hidden>"
        return (
            f"TLSOptions(ca_file={self.ca_file!r}, cert_file={self.cert_file!r}, "
            f"key_file={self.key_file!r}, key_password={hidden}, verify={self.verify!r})"
        )


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{name}={value!r}: expected true or false")


def split_tls_options(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    aliases: Mapping[str, str] | None = None,
) -> tuple[str, TLSOptions]:
    """``url`` without its TLS options, and those options merged over the ones in
    ``storage_options`` (the URL's win).

    ``aliases`` maps a driver's own query names to OmniQ's (redis-py's
    ``ssl_ca_certs`` to ``tls_ca_file``…), so URLs written for that driver keep working.
    """
    found: dict[str, Any] = {
        name: (storage_options or {})[name]
        for name in TLS_OPTIONS
        if (storage_options or {}).get(name) is not None
    }
    for alias, name in (aliases or {}).items():
        url, value = split_option(url, alias)
        if value is not None:
            found[name] = value
    for name in TLS_OPTIONS:
        url, value = split_option(url, name)
        if value is not None:
            found[name] = value
    for name in TLS_OPTIONS[:4]:
        if name in found and not (isinstance(found[name], str) and found[name]):
            shown = "<hidden>" if name == "tls_key_password" else repr(found[name])
            raise ConfigError(f"{name}={shown}: expected a non-empty string")
    return url, TLSOptions(
        ca_file=found.get("tls_ca_file"),
        cert_file=found.get("tls_cert_file"),
        key_file=found.get("tls_key_file"),
        key_password=found.get("tls_key_password"),
        verify=_flag("tls_verify", found.get("tls_verify", True)),
    )
