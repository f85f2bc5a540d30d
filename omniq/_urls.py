"""URL helpers: which storage URLs OmniQ takes, and the server backends' options.

A storage URL always has a scheme. A string without one is refused rather than taken as a
directory for the file backend: that is how ``redis//host:6379/8`` (a missing colon) or
``sqlite:/x.db`` (a missing slash) used to become directories named ``redis`` and
``sqlite:`` that a worker watching the real store never saw.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "ACCEPTED_FORMS",
    "FILE_PROTOCOLS",
    "LOCAL_SCHEMES",
    "SERVER_SCHEMES",
    "is_shared_store",
    "mistyped_url_problem",
    "redact_url",
    "split_namespace",
    "split_option",
    "storage_url_problem",
]

#: Schemes of the SQLite and server backends (``omniq.storage.registry`` maps each to its backend).
SERVER_SCHEMES = frozenset(
    {"sqlite", "redis", "rediss", "unix", "postgresql", "postgres", "nats", "tls"}
)

#: fsspec protocols the file backend takes: filesystems and object stores that can be
#: written. fsspec knows more (``http``, ``zip``, ``github``, the caching wrappers…), but
#: those only read, or wrap another filesystem, so a store on them could not work.
FILE_PROTOCOLS = frozenset(
    {
        "file",
        "local",
        "memory",
        "s3",
        "s3a",
        "gs",
        "gcs",
        "az",
        "abfs",
        "abfss",
        "adl",
        "oci",
        "oss",
        "hdfs",
        "webhdfs",
        "sftp",
        "ssh",
        "smb",
        "ftp",
        "webdav",
        "dbfs",
    }
)

#: Schemes of the stores kept in this host's own files or in this process (SQLite, local
#: files, memory): writing to one already takes the rights of the user who runs the workers.
#: Every other store (a server, an object store, a remote filesystem) may be writable by
#: others, so what a worker reads from it must not be trusted to run code (SECURITY.md).
LOCAL_SCHEMES = frozenset({"sqlite", "file", "local", "memory"})


def is_shared_store(url: str) -> bool:
    """True unless ``url`` names a store in this host's own files or this process.

    >>> is_shared_store("redis://127.0.0.1:6379/0"), is_shared_store("sqlite:///jobs.db")
    (True, False)
    """
    scheme, sep, _ = url.partition("://")
    return not sep or scheme.lower() not in LOCAL_SCHEMES


#: The forms listed when a URL is refused.
ACCEPTED_FORMS = (
    "sqlite:///relative.db, sqlite:////abs/path.db, file:///abs/dir, memory://name, "
    "s3://bucket/prefix (also gs://, az://, abfs://…), redis://host:port/db, rediss://…, "
    "unix:///path.sock, postgresql://user@host:port/db, nats://host:port, tls://… (NATS)"
)

# A known scheme followed by ":", ":/" or "//" instead of "://".
_SCHEME_LIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)(?::/{0,2}|//)")
# The usual port of a server, to point an http:// URL at the scheme it probably meant.
_PORT_SCHEMES = {
    6379: ("redis", "Redis"),
    5432: ("postgresql", "PostgreSQL"),
    4222: ("nats", "NATS"),
}


def storage_url_problem(url: str) -> str | None:
    """Why ``url`` is not a storage URL OmniQ takes (a phrase), or None when it is.

    Only the form is checked (a scheme OmniQ knows), never the server or the path.

    >>> storage_url_problem("redis//127.0.0.1:6379/8")
    "it has no scheme ('://' is missing): did you mean 'redis://127.0.0.1:6379/8'?"
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return _schemeless_problem(url)
    scheme = scheme.lower()
    if scheme in SERVER_SCHEMES or scheme in FILE_PROTOCOLS:
        return None
    if scheme in ("http", "https"):
        problem = f"{scheme}:// is not a storage backend"
        port = _port(url)
        if port in _PORT_SCHEMES:
            meant, name = _PORT_SCHEMES[port]
            suggestion = redact_url(f"{meant}://{rest}")
            problem += f"; {port} is {name}'s port: did you mean {suggestion!r}?"
        return problem
    return f"unknown scheme {scheme!r}"


def _port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def mistyped_url_problem(text: str) -> str | None:
    """Why ``text``, which has no ``://``, looks like a URL of a known scheme with a typo
    (``redis//host``, ``sqlite:/x.db``), or None. Such a string is never taken as a path."""
    match = _SCHEME_LIKE.match(text)
    if match is None or match[1].lower() not in SERVER_SCHEMES | FILE_PROTOCOLS:
        return None
    scheme = match[1].lower()
    if scheme in ("sqlite", "file"):
        return (
            f"it has no scheme ('://' is missing after {match[1]!r}): write "
            f"{scheme}:///relative or {scheme}:////absolute/path"
        )
    meant = redact_url(f"{scheme}://{text[match.end() :] or '…'}")
    return f"it has no scheme ('://' is missing): did you mean {meant!r}?"


def _schemeless_problem(text: str) -> str:
    if not text.strip():
        return "it is empty"
    mistyped = mistyped_url_problem(text)
    if mistyped is not None:
        return mistyped
    absolute = os.path.abspath(os.path.expanduser(text))
    return (
        "a bare path is not a storage URL: for a directory of task files write "
        f"'file://{absolute}', for a SQLite database 'sqlite:///{absolute}'"
    )


def split_option(url: str, name: str) -> tuple[str, str | None]:
    """``url`` without the query parameter ``name``, and that parameter's value.

    OmniQ's own options ride in the URL's query beside the driver's; they are taken out
    before the URL reaches the driver, which would refuse (or forward to the server) a
    parameter it does not know. The last of repeated values wins.
    """
    parts = urlsplit(url)
    if not parts.query:
        return url, None
    query = parse_qsl(parts.query, keep_blank_values=True)
    found = [value for key, value in query if key == name]
    if not found:
        return url, None
    rest = urlencode([(key, value) for key, value in query if key != name])
    return urlunsplit(parts._replace(query=rest)), found[-1]


def split_namespace(url: str) -> tuple[str, str | None]:
    """``url`` without a ``namespace`` query parameter, and that parameter's value."""
    return split_option(url, "namespace")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs): the one in
    its user part, and any query parameter whose name holds ``password``
    (``?password=``, ``?sslpassword=``, ``?tls_key_password=``).

    >>> redact_url("postgresql://app:s3cret@db/app?sslpassword=s3cret")
    'postgresql://app:***@db/app?sslpassword=***'
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL at all (a bad IPv6 host): nothing to find in it
        return url
    if parts.query and "password" in parts.query.lower():
        query = [
            (key, "***" if "password" in key.lower() else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    if parts.password is not None:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{user}:***@{host}")
    return urlunsplit(parts)
