"""Backend bundles: one connection or pool per URL, shared by its storage components.

A URL's scheme picks the backend (``sqlite://``, ``redis://``, ``postgresql://``,
``nats://``, and for the file backend ``file://``, ``memory://`` and the fsspec protocols
of writable filesystems and object stores, :data:`omniq._urls.FILE_PROTOCOLS`). Anything
else, a bare path included, is refused with a ConfigError naming the URL and the forms
accepted. Backend modules are imported lazily, so a missing driver only matters when its
URL is used, and then the error says which extra to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from omniq._urls import ACCEPTED_FORMS, redact_url, storage_url_problem
from omniq.errors import ConfigError

if TYPE_CHECKING:
    from omniq.storage._bundle import Components

__all__ = ["backend_for_url", "scheme_of"]

# scheme -> (module, class, extra that provides its driver or None)
_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "sqlite": ("omniq.backend.sqlite", "SQLiteBackend", None),
    "redis": ("omniq.backend.redis", "RedisBackend", "redis"),
    "rediss": ("omniq.backend.redis", "RedisBackend", "redis"),
    "unix": ("omniq.backend.redis", "RedisBackend", "redis"),
    "postgresql": ("omniq.backend.postgres", "PostgresBackend", "postgres"),
    "postgres": ("omniq.backend.postgres", "PostgresBackend", "postgres"),
    "nats": ("omniq.backend.nats", "NATSBackend", "nats"),
}
_FILE_BACKEND = ("omniq.backend.file", "FileBackend", None)


def scheme_of(url: str) -> str:
    """The lower-case scheme of ``url`` (``"file"`` for a plain path, which
    :func:`backend_for_url` refuses)."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else "file"


def backend_for_url(url: str, settings: Any) -> Components:
    """Build the backend bundle for ``url`` (not yet connected).

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
                f"the {scheme} backend for {url!r} is not part of this OmniQ release yet; "
                "available: sqlite, file (fsspec), redis, postgresql"
            ) from exc
        hint = f" (pip install 'omniq[{extra}]')" if extra else ""
        raise ConfigError(
            f"the {scheme} backend for {url!r} needs the package {missing!r}{hint}"
        ) from exc
    backend: Components = getattr(module, class_name)(url, settings)
    return backend
