"""Backends by URL scheme: which package serves a URL, imported only when used.

A URL's scheme picks the backend (``sqlite://``, ``redis://``, ``postgresql://``,
``nats://`` (``tls://`` for NATS over TLS), and for the file backend ``file://``,
``memory://`` and the fsspec protocols
of writable filesystems and object stores, :data:`omniq._urls.FILE_PROTOCOLS`). Anything
else, a bare path included, is refused with a ConfigError naming the URL and the forms
accepted. A backend's package is imported when its URL is first used, so a missing
driver only matters then, and the error says which extra to install.

Adding a backend: a package ``omniq.storage.<name>`` with its bundle class (a
:class:`~omniq.storage._bundle.Bundle` whose ``spec`` is the package's ``BACKEND``), and
its schemes here.
"""

from __future__ import annotations

import importlib

from omniq._urls import ACCEPTED_FORMS, redact_url, storage_url_problem
from omniq.config import Settings
from omniq.errors import ConfigError
from omniq.storage._bundle import AnyBundle, BackendSpec

__all__ = ["bundle_class_for_url", "bundle_for_url", "scheme_of", "spec_for_url"]

# scheme -> (the backend's package, its bundle class, the extra that brings its driver)
_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "sqlite": ("omniq.storage.sqlite", "SQLiteBackend", None),
    "redis": ("omniq.storage.redis", "RedisBackend", "redis"),
    "rediss": ("omniq.storage.redis", "RedisBackend", "redis"),
    "unix": ("omniq.storage.redis", "RedisBackend", "redis"),
    "postgresql": ("omniq.storage.postgres", "PostgresBackend", "postgres"),
    "postgres": ("omniq.storage.postgres", "PostgresBackend", "postgres"),
    "nats": ("omniq.storage.nats", "NATSBackend", "nats"),
    # nats-py's (and NATS's) scheme for a server that speaks TLS only.
    "tls": ("omniq.storage.nats", "NATSBackend", "nats"),
}
_FILE_BACKEND = ("omniq.storage.file", "FileBackend", None)


def scheme_of(url: str) -> str:
    """The lower-case scheme of ``url`` (``"file"`` for a plain path, which
    :func:`bundle_for_url` refuses)."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else "file"


def bundle_class_for_url(url: str) -> type[AnyBundle]:
    """The bundle class of the backend that serves ``url``.

    Raises ConfigError for a string that is not a storage URL (no scheme, an unknown
    one, ``http://``), naming the URL and the forms accepted, or for a missing optional
    driver, naming the extra to install.
    """
    problem = storage_url_problem(url)
    if problem is not None:
        raise ConfigError(
            f"storage URL {redact_url(url)!r}: {problem}{'' if problem.endswith('?') else '.'} "
            f"Accepted forms: {ACCEPTED_FORMS}"
        )
    scheme = scheme_of(url)
    module_name, class_name, extra = _BACKENDS.get(scheme, _FILE_BACKEND)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or module_name
        if missing.startswith("omniq") and missing == module_name:
            raise ConfigError(
                f"the {scheme} backend for {url!r} is not part of this OmniQ release; "
                "available: sqlite, file (fsspec), redis, postgresql, nats"
            ) from exc
        hint = f" (pip install 'omniq[{extra}]')" if extra else ""
        raise ConfigError(
            f"the {scheme} backend for {url!r} needs the package {missing!r}{hint}"
        ) from exc
    bundle: type[AnyBundle] = getattr(module, class_name)
    return bundle


def spec_for_url(url: str) -> BackendSpec:
    """What the backend that serves ``url`` is made of (see :func:`bundle_class_for_url`)."""
    return bundle_class_for_url(url).spec


def bundle_for_url(url: str, settings: Settings | None = None) -> AnyBundle:
    """The bundle of the backend for ``url`` (not yet connected): its components share
    one connection."""
    return bundle_class_for_url(url)(url, settings)
