"""The file backend's connection: where it lives, its filesystem client and its stores.

URLs: ``file:///abs/dir``, ``memory://name``, ``s3://bucket/prefix``,
``az://container/prefix``, ``abfs://container/prefix``, ``gs://bucket/prefix`` (and the
other writable fsspec protocols). Built directly, a connection (and so a component built
alone, or a :class:`~omniq.storage.file.FileBackend`) also takes a plain directory path
(relative to the current directory); a client's storage URL must have a scheme (see
:mod:`omniq.storage.registry`). ``storage_options`` from the settings go to the fsspec
driver of remote filesystems (credentials, ``endpoint_url``…).

Async drivers (s3fs, adlfs, gcsfs) bind their HTTP session to the event loop they first
ran on. When that loop shuts down (``asyncio.run`` returning) the session is closed there,
and the next operation, on the caller's new loop, opens a filesystem of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import weakref
from dataclasses import dataclass, field
from typing import Any

from omniq._tls import TLS_OPTIONS
from omniq._urls import FILE_PROTOCOLS, mistyped_url_problem, redact_url, storage_url_problem
from omniq.config import Settings
from omniq.errors import ConfigError, StorageConnectionError
from omniq.storage._connection import Connection
from omniq.storage.file._local import LocalStore
from omniq.storage.file._memory import MemoryStore
from omniq.storage.file._remote import FsspecStore
from omniq.storage.file._store import Store, translate_errors

__all__ = ["FileConnection", "Location", "driver_class", "filesystem_for", "parse_location"]

#: The subdirectory of each component under the connection's root.
_SUBDIRS = ("tasks", "results", "events", "schedules")

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
    try:
        return cls(skip_instance_cache=True, **options)
    except ValueError as exc:  # adlfs: no account or credentials among the options
        raise ConfigError(
            f"file backend: the {location.protocol} driver for {redact_url(location.url)!r} "
            f"refused its storage_options: {exc}"
        ) from exc


async def _loop_bound_client(fs: Any) -> Any:
    """The client an async driver opened on the running loop, to close with that loop:
    s3fs's aiobotocore client, gcsfs's aiohttp session, adlfs's blob service client (or
    None for a driver with none of these)."""
    if hasattr(fs, "set_session"):
        return await fs.set_session()
    if hasattr(fs, "_set_session"):
        return await fs._set_session()
    return getattr(fs, "service_client", None)


async def _bucket_exists(fs: Any, bucket: str) -> bool:
    """Whether the bucket (container) exists; a store that cannot be reached raises."""
    if hasattr(fs, "service_client"):
        # adlfs's exists() answers True when the request fails ("assume it exists"):
        # asked through the SDK, a dead endpoint raises instead.
        from azure.core.exceptions import ResourceNotFoundError

        try:
            await fs.service_client.get_container_client(bucket).get_container_properties()
        except ResourceNotFoundError:
            return False
        return True
    if getattr(fs, "async_impl", False):
        return bool(await fs._exists(bucket))
    return bool(await asyncio.to_thread(fs.exists, bucket))


async def _settle_adlfs(fs: Any) -> None:
    """After its blob service client was closed on its loop: close an adlfs filesystem's
    credential too, and drop the finalizers adlfs registered to close both.

    Those finalizers run at the latest at interpreter exit and go through ``fs.loop``,
    None for an async filesystem, so each raises "Loop is not running" (fsspec/adlfs#495)
    where everything was already closed properly.
    """
    if not hasattr(fs, "service_client"):
        return
    close = getattr(getattr(fs, "credential", None), "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            closing = close()
            if inspect.isawaitable(closing):
                await closing
    registry: dict[Any, Any] = getattr(weakref.finalize, "_registry", {})
    for finalizer, info in list(registry.items()):
        if info.weakref() is fs:
            finalizer.detach()


class FileConnection(Connection):
    """One filesystem client for a URL, and a store per component subdirectory.

    Each component lives in its own subdirectory of the URL's root (``tasks/``,
    ``results/``, ``events/``, ``schedules/``) and shares the one filesystem client,
    which opens with the first component connected and closes with the last.
    """

    def __init__(self, url: str | os.PathLike[str], settings: Settings) -> None:
        super().__init__(url, settings)
        self.location: Location = parse_location(url)
        # OmniQ's TLS options are the server backends' (omniq._tls): not fsspec's.
        self._options: dict[str, Any] = {
            key: value for key, value in settings.storage_options.items() if key not in TLS_OPTIONS
        }
        if not self.location.is_local:
            driver_class(self.location)  # a missing driver fails here, naming the extra
        self._fs: Any = None
        self._session: Any = None
        self._reopen_lock = asyncio.Lock()
        self._stores: dict[str, Store] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r})"

    async def _open(self) -> None:
        location = self.location
        if location.is_local:
            if await asyncio.to_thread(os.path.isfile, location.root):
                # Most likely a SQLite database named where a directory was meant.
                raise ConfigError(
                    f"file backend: {location.url!r} is an existing file, not a directory "
                    f"(for a SQLite database write sqlite:///{location.root})"
                )
            self._stores = {sub: LocalStore(f"{location.root}/{sub}") for sub in _SUBDIRS}
        else:
            fs = filesystem_for(location, self._options)
            if location.protocol == "memory":
                self._stores = {sub: MemoryStore(fs, f"{location.root}/{sub}") for sub in _SUBDIRS}
            else:
                try:
                    await self._connect_remote(fs)
                except BaseException:
                    await self._close()
                    await _settle_adlfs(fs)
                    raise
                self._stores = {
                    sub: FsspecStore(fs, f"{location.root}/{sub}", ready=self._remote_here)
                    for sub in _SUBDIRS
                }
                await self._bound.watch()
            self._fs = fs
        for store in self._stores.values():
            await store.open()

    async def _connect_remote(self, fs: Any, *, check: bool = True) -> None:
        with translate_errors(f"connect to {self.location.url}"):
            self._session = await _loop_bound_client(fs)
            if not check:
                return
            bucket = self.location.root.split("/", 1)[0]
            exists = await _bucket_exists(fs, bucket)
        if not exists:
            raise StorageConnectionError(
                f"file backend: bucket or container {bucket!r} of {self.location.url!r} "
                "does not exist (create it first)"
            )

    async def _close(self) -> None:
        await self._release_loop()
        self._stores = {}

    async def _release_loop(self) -> None:
        # Also when the loop is ending: the session closes while the loop still runs.
        session, self._session = self._session, None
        fs, self._fs = self._fs, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()
            await _settle_adlfs(fs)

    def _forget_loop(self) -> None:
        # Left on a loop that finished without shutting down: too late to close the
        # session there; dropped (the driver's finalizers close what they can).
        self._session = None
        if self.location.protocol != "memory":  # memory:// is not bound to a loop
            self._fs = None
        self._reopen_lock = asyncio.Lock()

    async def _remote_here(self) -> None:
        """Before each operation of a remote store: a filesystem of the running loop."""
        if self._fs is not None and self._bound.loop is asyncio.get_running_loop():
            return
        self._follow_loop()
        async with self._reopen_lock:
            if self._fs is not None or not self._stores:
                return  # reopened meanwhile, or closed
            fs = filesystem_for(self.location, self._options)
            await self._connect_remote(fs, check=False)
            for store in self._stores.values():
                assert isinstance(store, FsspecStore)
                store.fs = fs
            self._fs = fs
            await self._bound.watch()

    def store(self, subdir: str) -> Store:
        """The store of one component's subdirectory (the connection must be open)."""
        store = self._stores.get(subdir)
        if store is None:
            raise StorageConnectionError(f"file backend {self.url!r} is not connected")
        return store
