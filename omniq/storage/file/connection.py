"""The file backend's connection: where it lives, its filesystem client and its stores."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from omniq._urls import FILE_PROTOCOLS, mistyped_url_problem, redact_url, storage_url_problem
from omniq.errors import ConfigError

__all__ = ["Location", "driver_class", "filesystem_for", "parse_location"]

_EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "adl": "azure",
    "gs": "gcs",
    "gcs": "gcs",
}

_OBJECT_STORES = ("s3://", "gs://", "az://", "abfs://", "other writable fsspec protocols")


@dataclass(frozen=True)
class Location:
    """Where a file backend lives: an fsspec protocol and a root path on it."""

    protocol: str
    root: str
    url: str = field(compare=False)

    @property
    def is_local(self) -> bool:
        """True for the local filesystem."""
        return self.protocol == "file"


def parse_location(url: str | os.PathLike[str]) -> Location:
    """Split a file backend URL: ``file:///abs``, ``memory://name``, ``s3://b/p``, or a plain
    directory path (the file backend's own classes take one; a client's URL does not).

    Raises ConfigError for a protocol that cannot hold a store (``http://``, ``zip://``…)
    and for a path that is a mistyped URL of another backend (``redis//host:6379``).
    """
    url = os.fspath(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        mistyped = mistyped_url_problem(url)
        if mistyped is not None:
            raise ConfigError(f"file backend: {url!r} is not a path: {mistyped}")
        return Location("file", os.path.abspath(os.path.expanduser(url)), url)
    protocol = scheme.lower()
    if protocol not in FILE_PROTOCOLS:
        raise ConfigError(
            f"file backend: {redact_url(url)!r}: "
            f"{storage_url_problem(url) or f'a {protocol} URL is for another backend'}"
            f"; it takes file://, memory:// and {', '.join(_OBJECT_STORES)}"
        )
    if protocol in ("file", "local"):
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        if not rest:
            raise ConfigError(f"argument url={url!r}: expected file:///absolute/dir or a path")
        return Location("file", os.path.abspath(os.path.expanduser(rest)), url)
    if protocol == "memory":
        name = rest.strip("/")
        if not name:
            raise ConfigError(f"argument url={url!r}: expected memory://name")
        return Location("memory", "/" + name, url)
    root = rest.strip("/")
    if not root:
        raise ConfigError(f"argument url={url!r}: expected {protocol}://bucket[/prefix]")
    return Location(protocol, root, url)


def driver_class(location: Location) -> Any:
    """The fsspec filesystem class for ``location``; ConfigError names a missing extra."""
    import fsspec

    try:
        return fsspec.get_filesystem_class(location.protocol)
    except ImportError as exc:
        extra = _EXTRAS.get(location.protocol)
        hint = f": pip install 'omniq[{extra}]'" if extra else ""
        raise ConfigError(
            f"the file backend for {location.url!r} needs the fsspec driver for "
            f"{location.protocol!r}{hint}"
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"argument url={location.url!r}: unknown protocol") from exc


def filesystem_for(location: Location, storage_options: dict[str, Any]) -> Any:
    """An fsspec filesystem for ``location`` (async mode where the driver offers it).

    Call from inside the event loop that will use it: async drivers bind to that loop.
    """
    cls = driver_class(location)
    if location.protocol == "memory":
        return cls()
    options = dict(storage_options)
    if getattr(cls, "async_impl", False):
        options.setdefault("asynchronous", True)
    return cls(skip_instance_cache=True, **options)
