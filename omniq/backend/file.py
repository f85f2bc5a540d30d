"""The file backend bundle: one filesystem per URL, four components in subdirectories.

URLs: ``file:///abs/dir``, ``memory://name``, ``s3://bucket/prefix``,
``az://container/prefix``, ``abfs://container/prefix``, ``gs://bucket/prefix`` (and the
other writable fsspec protocols). Built directly, the bundle and its components also take
a plain directory path (relative to the current directory); a client's storage URL must
have a scheme (see :func:`omniq.backend.backend_for_url`). ``storage_options`` from the
settings go to the fsspec driver of remote filesystems (credentials, ``endpoint_url``…).
See :mod:`omniq.storage.file` for the layout and what is safe on which filesystem.

Async drivers (s3fs, adlfs, gcsfs) bind their HTTP session to the event loop they first
ran on. When that loop shuts down (``asyncio.run`` returning) the session is closed there,
and the next operation, on the caller's new loop, opens a filesystem of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from omniq.backend.base import Backend
from omniq.errors import ConfigError, StorageConnectionError
from omniq.storage.file import (
    AsyncFileEventStorage,
    AsyncFileQueue,
    AsyncFileResultStorage,
    AsyncFileScheduleStorage,
)
from omniq.storage.file._local import LocalStore
from omniq.storage.file._memory import MemoryStore
from omniq.storage.file._remote import FsspecStore
from omniq.storage.file._store import Store, translate_errors
from omniq.storage.file.connection import Location, driver_class, filesystem_for, parse_location

__all__ = ["FileBackend"]

_SUBDIRS = ("tasks", "results", "events", "schedules")


class FileBackend(Backend):
    """Task queue, results, events and schedules under one fsspec URL.

    Each component lives in its own subdirectory of the URL's root (``tasks/``,
    ``results/``, ``events/``, ``schedules/``) and shares the one filesystem client,
    which opens with the first component connected and closes with the last.

    Example::

        backend = FileBackend("file:///var/lib/omniq", settings)
        queue = backend.task_queue()
        await queue.connect()
    """

    def __init__(self, url: str | os.PathLike[str], settings: Any) -> None:
        super().__init__(os.fspath(url), settings)
        self.location: Location = parse_location(url)
        options = getattr(settings, "storage_options", None) or {}
        if not isinstance(options, dict):
            raise ConfigError(
                f"setting storage_options={type(options).__name__}: expected a mapping"
            )
        self._options: dict[str, Any] = dict(options)
        if not self.location.is_local:
            driver_class(self.location)  # a missing driver fails here, naming the extra
        self._fs: Any = None
        self._session: Any = None
        self._reopen_lock = asyncio.Lock()
        self._stores: dict[str, Store] = {}
        self._components: dict[str, Any] = {}

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
        set_session = getattr(fs, "set_session", None)
        with translate_errors(f"connect to {self.location.url}"):
            if set_session is not None:
                self._session = await set_session()
            if not check:
                return
            bucket = self.location.root.split("/", 1)[0]
            exists = (
                await fs._exists(bucket)
                if getattr(fs, "async_impl", False)
                else await asyncio.to_thread(fs.exists, bucket)
            )
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
        self._fs = None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()

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
        """The store of one component's subdirectory (the backend must be connected)."""
        store = self._stores.get(subdir)
        if store is None:
            raise StorageConnectionError(f"file backend {self.url!r} is not connected")
        return store

    def _component(self, name: str, cls: type[Any]) -> Any:
        component = self._components.get(name)
        if component is None:
            component = self._components[name] = cls(backend=self)
        return component

    def task_queue(self) -> AsyncFileQueue:
        """The task queue (``tasks/``)."""
        queue: AsyncFileQueue = self._component("tasks", AsyncFileQueue)
        return queue

    def result_storage(self) -> AsyncFileResultStorage:
        """The result storage (``results/``)."""
        results: AsyncFileResultStorage = self._component("results", AsyncFileResultStorage)
        return results

    def event_storage(self) -> AsyncFileEventStorage:
        """The event storage (``events/``)."""
        events: AsyncFileEventStorage = self._component("events", AsyncFileEventStorage)
        return events

    def schedule_storage(self) -> AsyncFileScheduleStorage:
        """The schedule storage (``schedules/``)."""
        schedules: AsyncFileScheduleStorage = self._component("schedules", AsyncFileScheduleStorage)
        return schedules
