"""Backend bundles: one connection or pool per URL, shared by its storage components.

A URL's scheme picks the backend (``sqlite://``, ``redis://``, ``postgresql://``,
``nats://`` and every fsspec protocol for the file backend). Backend modules are imported
lazily, so a missing driver only matters when its URL is used, and then the error says
which extra to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from omniq.errors import ConfigError

if TYPE_CHECKING:
    from omniq.backend.base import Backend

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
    """The lower-case scheme of ``url`` (``"file"`` for a plain path)."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else "file"


def backend_for_url(url: str, settings: Any) -> Backend:
    """Build the backend bundle for ``url`` (not yet connected).

    Raises ConfigError for an unknown scheme or a missing optional driver, naming the
    extra to install.
    """
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
    backend_cls: type[Backend] = getattr(module, class_name)
    return backend_cls(url, settings)
