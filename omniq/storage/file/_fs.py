"""The few filesystem primitives the file backend needs, on local disk, memory and fsspec.

Every path handed to a :class:`Store` is relative to its root and ``/``-separated. The
one compound primitive is :meth:`Store.update`: an atomic read-modify-write of one object
(the task's record), which also creates and deletes the small index entries that go with
the change. How it is made atomic depends on the filesystem:

- local disk (:class:`LocalStore`): a kernel lock (``flock``) on one of a fixed set of
  lock files guards the read, the write of a temporary file and its ``os.replace``; the
  kernel drops the lock when a process dies, so a crash never leaves it held, and the
  record is always either the old or the new file, never a torn one.
- ``memory://`` (:class:`MemoryStore`): one process-wide lock; memory is process-local.
- object stores (:class:`FsspecStore`): optimistic compare-and-set. On S3 the write is
  conditional (``If-Match`` the ETag read, or ``If-None-Match: *`` to create), retried
  from a fresh read when another writer won. Other fsspec filesystems have no such
  primitive here: their updates are serialised only within one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import stat
import threading
import weakref
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from omniq._urls import FILE_PROTOCOLS, mistyped_url_problem, redact_url, storage_url_problem
from omniq.errors import ConfigError, StorageConnectionError, StorageError

try:
    import fcntl

    _flock: Callable[[int, int], None] | None = fcntl.flock
    _LOCK_EX = fcntl.LOCK_EX
except ImportError:  # pragma: no cover - Windows
    _flock, _LOCK_EX = None, 0

__all__ = [
    "KEEP",
    "Change",
    "FsspecStore",
    "Location",
    "LocalStore",
    "MemoryStore",
    "Store",
    "driver_class",
    "filesystem_for",
    "parse_location",
    "translate_errors",
]

T = TypeVar("T")


class _Keep:
    """Marker: leave the object as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


@dataclass
class Change(Generic[T]):
    """What an :meth:`Store.update` function decided.

    ``data`` is the new content (``None`` deletes the object, ``KEEP`` leaves it). ``add``
    are empty entries created before the write, ``remove`` entries deleted after it.
    ``move`` renames one entry to another: before the write when ``move_first``, else
    after it (an object store creates the new one before and deletes the old one after).
    With ``KEEP`` the entries change at once. ``result`` is returned by ``update``.
    """

    result: T
    data: bytes | _Keep | None = KEEP
    add: Sequence[str] = ()
    remove: Sequence[str] = ()
    move: tuple[str, str] | None = None
    move_first: bool = False


UpdateFn = Callable[[bytes | None], Change[T]]

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


def _is_precondition_failure(exc: BaseException) -> bool:
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return code in ("PreconditionFailed", "ConditionalRequestConflict", "412")
    return False


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn driver errors into OmniQ's storage errors, once, at this boundary."""
    try:
        yield
    except (StorageError, ConfigError):
        raise
    except (ConnectionError, TimeoutError) as exc:
        raise StorageConnectionError(f"file backend: {what}: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"file backend: {what}: {exc}") from exc
    except Exception as exc:
        name = type(exc).__name__
        if "Connect" in name or "Endpoint" in name:
            raise StorageConnectionError(f"file backend: {what}: {exc}") from exc
        raise


class Store(ABC):
    """Primitive operations on one directory tree. Paths are relative, ``/``-separated."""

    #: True when :meth:`update` is an optimistic compare-and-set (no lock is held while
    #: ``fn`` runs): index entries that look stale may belong to a change in flight.
    optimistic: bool = False
    #: True when :meth:`update` is atomic across processes (not just in this one).
    cross_process: bool = True

    def __init__(self, root: str) -> None:
        self.root = root

    @property
    def key(self) -> str:
        """Identifies the tree within this process (for in-process wake-ups)."""
        return f"{type(self).__name__}:{self.root}"

    @abstractmethod
    async def update(self, path: str, fn: UpdateFn[T], *, likely_absent: bool = False) -> T:
        """Atomically read ``path`` (None if absent), apply ``fn`` and write its change.

        ``likely_absent`` lets a store that pays per request try a create first.
        """

    async def update_many(
        self, items: Sequence[tuple[str, UpdateFn[T]]], *, likely_absent: bool = False
    ) -> list[T]:
        """Several independent :meth:`update` calls, in as few round trips as possible."""
        return list(
            await asyncio.gather(
                *(self.update(path, fn, likely_absent=likely_absent) for path, fn in items)
            )
        )

    @abstractmethod
    async def read_many(self, paths: Sequence[str]) -> list[bytes | None]:
        """The contents of several objects, in order (None for those absent)."""

    async def read(self, path: str) -> bytes | None:
        """One object's content, or None."""
        return (await self.read_many([path]))[0]

    @abstractmethod
    async def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write objects unconditionally; each appears whole or not at all."""

    @abstractmethod
    async def delete_many(self, paths: Sequence[str]) -> None:
        """Delete objects; absent ones are ignored."""

    @abstractmethod
    async def list_many(self, dirs: Sequence[str]) -> list[list[str]]:
        """The names (not paths) in each directory; an absent directory is empty."""

    async def list_dir(self, directory: str) -> list[str]:
        """The names in one directory."""
        return (await self.list_many([directory]))[0]

    @abstractmethod
    async def walk(self, directory: str) -> list[str]:
        """Every object below ``directory``, as paths relative to the root."""

    def signal(self) -> None:  # noqa: B027 - optional hook
        """Wake this tree's waiters in other processes, where the filesystem has a way
        (local disk: a FIFO); elsewhere they see a change at their next poll."""

    def listen(self) -> int | None:
        """A non-blocking descriptor that turns readable when another process calls
        :meth:`signal` (the caller closes it), or None where there is no such way."""
        return None

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare the tree (create the root where that means anything)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`open` took."""


# -- local disk -------------------------------------------------------------------------

_LOCK_STRIPES = 64
_tmp_counter = itertools.count()


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


class LocalStore(Store):
    """A tree on local disk, through ``os`` directly (fsspec's layer adds only overhead).

    Every call runs in a worker thread so the event loop never waits on the disk.
    """

    def __init__(self, root: str) -> None:
        super().__init__(os.path.abspath(root))
        self._lock_dir = os.path.join(self.root, ".locks")
        self._wake_path = os.path.join(self.root, ".wake")
        # flock excludes other processes; threads of this process each open their own
        # descriptor, so they exclude each other through it as well.
        self._thread_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, path)

    # Cross-process wake-ups: a FIFO at the root (hidden, like .locks). A waiter holds it
    # open while it waits; a writer that finds no reader (ENXIO) has nobody to wake, and
    # one that finds the pipe full (EAGAIN) knows wake-ups are pending already. Any error
    # falls back to what every filesystem has: the waiter's polling.

    def signal(self) -> None:
        """Write a byte into the tree's FIFO if a process is waiting on it."""
        try:
            fd = os.open(self._wake_path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody waits; ENOENT: nobody has waited yet
            return
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, b"!")
        except OSError:  # EAGAIN: unread wake-ups fill the pipe already
            pass
        finally:
            os.close(fd)

    def listen(self) -> int | None:
        """The tree's FIFO, opened for reading (created on first use)."""
        if not hasattr(os, "mkfifo"):  # pragma: no cover - Windows
            return None
        with contextlib.suppress(FileExistsError, OSError):
            os.mkfifo(self._wake_path, 0o600)
        try:
            # Read-write: the waiter is a writer too, so the FIFO never reads as closed
            # (which would make it readable for ever) when the last producer closes it.
            fd = os.open(self._wake_path, os.O_RDWR | os.O_NONBLOCK)
        except OSError:  # a filesystem without FIFOs: polling only
            return None
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    async def open(self) -> None:
        """Create the root and its lock directory."""
        await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        with translate_errors(f"create {self.root}"):
            os.makedirs(self._lock_dir, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self, path: str) -> Iterator[None]:
        stripe = zlib.crc32(path.encode()) % _LOCK_STRIPES
        with self._thread_locks[stripe]:
            if _flock is None:  # pragma: no cover - no cross-process lock on this platform
                yield
                return
            lock_path = os.path.join(self._lock_dir, f"{stripe:02d}")
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                os.makedirs(self._lock_dir, exist_ok=True)
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _flock(fd, _LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    @staticmethod
    def _read_file(full: str) -> bytes | None:
        try:
            with open(full, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    @staticmethod
    def _write_file(full: str, data: bytes) -> None:
        directory, name = os.path.split(full)
        tmp = os.path.join(
            directory, f".{name}.{os.getpid()}.{threading.get_ident()}.{next(_tmp_counter)}"
        )
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        try:
            os.replace(tmp, full)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _touch(full: str) -> None:
        try:
            fd = os.open(full, os.O_WRONLY | os.O_CREAT, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            fd = os.open(full, os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)

    @staticmethod
    def _unlink(full: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(full)

    def _update_sync(self, path: str, fn: UpdateFn[T]) -> T:
        full = self._abs(path)
        with translate_errors(f"update {path}"), self._locked(path):
            change = fn(self._read_file(full))
            for entry in change.add:
                self._touch(self._abs(entry))
            # A rename moves an entry without creating a file (creation is the costly
            # operation on most disks); the caller picks its order so that a crash
            # leaves the surviving entry where claims look.
            if change.move is not None and change.move_first:
                self._move(*change.move)
            if change.data is None:
                self._unlink(full)
            elif not isinstance(change.data, _Keep):
                self._write_file(full, change.data)
            if change.move is not None and not change.move_first:
                self._move(*change.move)
            for entry in change.remove:
                self._unlink(self._abs(entry))
            return change.result

    def _move(self, old: str, new: str) -> None:
        source, target = self._abs(old), self._abs(new)
        try:
            os.replace(source, target)
        except FileNotFoundError:
            if os.path.exists(source):  # the target's directory is missing
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(source, target)
            else:
                self._touch(target)

    async def update(self, path: str, fn: UpdateFn[T], *, likely_absent: bool = False) -> T:
        """Read-modify-write ``path`` under its stripe lock, in a worker thread."""
        return await asyncio.to_thread(self._update_sync, path, fn)

    def _update_many_sync(self, items: Sequence[tuple[str, UpdateFn[T]]]) -> list[T]:
        return [self._update_sync(path, fn) for path, fn in items]

    async def update_many(
        self, items: Sequence[tuple[str, UpdateFn[T]]], *, likely_absent: bool = False
    ) -> list[T]:
        """Several updates in one worker-thread call (each under its own lock)."""
        if not items:
            return []
        return await asyncio.to_thread(self._update_many_sync, items)

    def _read_many_sync(self, paths: Sequence[str]) -> list[bytes | None]:
        with translate_errors("read"):
            return [self._read_file(self._abs(path)) for path in paths]

    async def read_many(self, paths: Sequence[str]) -> list[bytes | None]:
        """Read several files in one worker-thread call."""
        if not paths:
            return []
        return await asyncio.to_thread(self._read_many_sync, paths)

    def _write_many_sync(self, items: Sequence[tuple[str, bytes]]) -> None:
        with translate_errors("write"):
            for path, data in items:
                if data:
                    self._write_file(self._abs(path), data)
                else:
                    self._touch(self._abs(path))

    async def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write files (temporary file, then atomic rename) in one worker-thread call."""
        if items:
            await asyncio.to_thread(self._write_many_sync, items)

    def _delete_many_sync(self, paths: Sequence[str]) -> None:
        with translate_errors("delete"):
            for path in paths:
                self._unlink(self._abs(path))

    async def delete_many(self, paths: Sequence[str]) -> None:
        """Delete files in one worker-thread call."""
        if paths:
            await asyncio.to_thread(self._delete_many_sync, paths)

    def _list_many_sync(self, dirs: Sequence[str]) -> list[list[str]]:
        out: list[list[str]] = []
        with translate_errors("list"):
            for directory in dirs:
                try:
                    names = os.listdir(self._abs(directory))
                except (FileNotFoundError, NotADirectoryError):
                    names = []
                out.append([name for name in names if not _is_hidden(name)])
        return out

    async def list_many(self, dirs: Sequence[str]) -> list[list[str]]:
        """List directories in one worker-thread call."""
        return await asyncio.to_thread(self._list_many_sync, dirs)

    def _walk_sync(self, directory: str) -> list[str]:
        base = self._abs(directory)
        found: list[str] = []
        with translate_errors(f"walk {directory}"):
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames[:] = [d for d in dirnames if not _is_hidden(d)]
                rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                found.extend(f"{rel}/{name}" for name in filenames if not _is_hidden(name))
        return found

    async def walk(self, directory: str) -> list[str]:
        """Every file below ``directory`` (a worker-thread call)."""
        return await asyncio.to_thread(self._walk_sync, directory)


# -- fsspec filesystems ------------------------------------------------------------------


class _KeyedLocks:
    """asyncio locks by key, dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> Any:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# One set of per-object locks per event loop (asyncio locks belong to one loop).
_loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _KeyedLocks] = (
    weakref.WeakKeyDictionary()
)


def _keyed_locks() -> _KeyedLocks:
    loop = asyncio.get_running_loop()
    locks = _loop_locks.get(loop)
    if locks is None:
        locks = _loop_locks[loop] = _KeyedLocks()
    return locks


class FsspecStore(Store):
    """A tree on any fsspec filesystem; async drivers (s3fs, adlfs, gcsfs) natively.

    ``update`` is an optimistic compare-and-set: on S3 a conditional write (``If-Match``
    the ETag that was read, ``If-None-Match: *`` to create), retried after a fresh read
    when another writer got there first. Elsewhere the write is unconditional and the
    update is serialised only within this process's event loop.
    """

    optimistic = True

    def __init__(
        self, fs: Any, root: str, *, ready: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        super().__init__(root.rstrip("/"))
        self.fs = fs
        # Awaited before each operation: the backend may swap ``fs`` for one made on the
        # running loop (async drivers bind their HTTP session to one loop).
        self._ready = ready
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.conditional = protocol in ("s3", "s3a")
        self.cross_process = self.conditional
        self._async = bool(getattr(fs, "async_impl", False))

    @property
    def key(self) -> str:
        """Identifies the tree within this process."""
        return f"{self.fs.protocol}:{self.root}"

    def _abs(self, path: str) -> str:
        return f"{self.root}/{path}"

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._async:
            return await getattr(self.fs, f"_{method}")(*args, **kwargs)
        return await asyncio.to_thread(getattr(self.fs, method), *args, **kwargs)

    async def _read_versioned(self, full: str) -> tuple[bytes, str] | None:
        if not self.conditional:
            try:
                data: bytes = await self._call("cat_file", full)
            except FileNotFoundError:
                return None
            return data, ""
        bucket, key, _ = self.fs.split_path(full)
        try:
            response = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        async with response["Body"] as body:
            content: bytes = await body.read()
        return content, str(response["ETag"])

    async def _write_conditional(self, full: str, data: bytes | None, etag: str | None) -> bool:
        """Write or delete ``full`` if it is still at ``etag`` (None: still absent)."""
        if not self.conditional:
            if data is None:
                with contextlib.suppress(FileNotFoundError):
                    await self._call("rm_file", full)
            else:
                await self._call("pipe_file", full, data)
            return True
        bucket, key, _ = self.fs.split_path(full)
        try:
            if data is None:
                if etag is not None:
                    await self.fs._call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
            elif etag is None:
                await self.fs._pipe_file(full, data, mode="create")
            else:
                await self.fs._pipe_file(full, data, IfMatch=etag)
        except FileExistsError:
            return False
        except FileNotFoundError:
            return data is None
        except OSError as exc:
            if _is_precondition_failure(exc):
                return False
            raise
        return True

    async def update(self, path: str, fn: UpdateFn[T], *, likely_absent: bool = False) -> T:
        """Compare-and-set loop: read, decide, write if unchanged, else decide again."""
        if self._ready is not None:
            await self._ready()
        full = self._abs(path)
        with translate_errors(f"update {path}"):
            async with _keyed_locks().hold(self.key + "\0" + path):
                # A create is tried without reading first when the object is likely new;
                # if it exists after all, the conditional create fails and the loop reads.
                guess_absent = likely_absent and self.conditional
                while True:
                    current = None if guess_absent else await self._read_versioned(full)
                    guess_absent = False
                    change = fn(current[0] if current else None)
                    add = [self._abs(p) for p in change.add]
                    remove = [self._abs(p) for p in change.remove]
                    if change.move is not None:
                        add.append(self._abs(change.move[1]))
                        remove.append(self._abs(change.move[0]))
                    if isinstance(change.data, _Keep):
                        await self._touch_abs(add)
                        await self._delete_abs(remove)
                        return change.result
                    await self._touch_abs(add)
                    etag = current[1] if current else None
                    if await self._write_conditional(full, change.data, etag):
                        await self._delete_abs(remove)
                        return change.result
                    await self._delete_abs(add)

    async def _touch_abs(self, fulls: Sequence[str]) -> None:
        await asyncio.gather(*(self._call("pipe_file", full, b"") for full in fulls))

    async def _delete_abs(self, fulls: Sequence[str]) -> None:
        async def one(full: str) -> None:
            with contextlib.suppress(FileNotFoundError):
                await self._call("rm_file", full)

        await asyncio.gather(*(one(full) for full in fulls))

    async def read_many(self, paths: Sequence[str]) -> list[bytes | None]:
        """Read objects concurrently."""
        if self._ready is not None:
            await self._ready()

        async def one(path: str) -> bytes | None:
            try:
                data: bytes = await self._call("cat_file", self._abs(path))
            except FileNotFoundError:
                return None
            return data

        with translate_errors("read"):
            return list(await asyncio.gather(*(one(path) for path in paths)))

    async def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write objects concurrently (each PUT is whole or absent)."""
        if self._ready is not None:
            await self._ready()
        with translate_errors("write"):
            await asyncio.gather(
                *(self._call("pipe_file", self._abs(path), data) for path, data in items)
            )

    async def delete_many(self, paths: Sequence[str]) -> None:
        """Delete objects concurrently."""
        if self._ready is not None:
            await self._ready()
        with translate_errors("delete"):
            await self._delete_abs([self._abs(path) for path in paths])

    async def _ls(self, full: str) -> list[str]:
        try:
            if self._async:
                names = await self.fs._ls(full, detail=False, refresh=True)
            else:
                names = await asyncio.to_thread(self.fs.ls, full, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        prefix = full.rstrip("/") + "/"
        out = []
        for name in names:
            name = name.rstrip("/")
            name = name[len(prefix) :] if name.startswith(prefix) else name.rsplit("/", 1)[-1]
            if name and not _is_hidden(name):
                out.append(name)
        return out

    async def list_many(self, dirs: Sequence[str]) -> list[list[str]]:
        """List directories concurrently (listing caches bypassed)."""
        if self._ready is not None:
            await self._ready()
        with translate_errors("list"):
            return list(await asyncio.gather(*(self._ls(self._abs(d)) for d in dirs)))

    async def walk(self, directory: str) -> list[str]:
        """Every object below ``directory``."""
        if self._ready is not None:
            await self._ready()
        full = self._abs(directory)
        with translate_errors(f"walk {directory}"):
            try:
                if self._async:
                    self.fs.invalidate_cache(full)
                    found = await self.fs._find(full)
                else:
                    found = await asyncio.to_thread(self.fs.find, full)
            except FileNotFoundError:
                return []
        prefix = self.root + "/"
        return [
            path[len(prefix) :]
            for path in found
            if path.startswith(prefix) and not _is_hidden(path.rsplit("/", 1)[-1])
        ]


class MemoryStore(FsspecStore):
    """A tree on fsspec's process-local ``memory://`` filesystem.

    Calls run directly on the loop (they are dictionary operations); one process-wide
    lock makes each update atomic against every thread and loop of the process. The
    memory filesystem keeps no per-directory index (its ``ls`` scans every key), so the
    store keeps one of the objects it wrote; objects written to the tree by other means
    are not listed.
    """

    optimistic = False
    cross_process = False
    _lock = threading.RLock()
    # directory path -> names written there (checked against the store when listed)
    _dirs: ClassVar[dict[str, set[str]]] = {}
    _subdirs: ClassVar[dict[str, set[str]]] = {}

    def __init__(self, fs: Any, root: str) -> None:
        super().__init__(fs, root)
        self.conditional = False

    def _read_file(self, full: str) -> bytes | None:
        try:
            data: bytes = self.fs.cat_file(full)
        except FileNotFoundError:
            return None
        return data

    def _put(self, full: str, data: bytes) -> None:
        self.fs.pipe_file(full, data)
        parent, _, name = full.rpartition("/")
        self._dirs.setdefault(parent, set()).add(name)
        # Register the directories up to the root, so they list as well.
        while len(parent) > len(self.root):
            parent, _, name = parent.rpartition("/")
            subdirs = self._subdirs.setdefault(parent, set())
            if name in subdirs:
                break
            subdirs.add(name)

    def _rm(self, full: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(full)
        parent, _, name = full.rpartition("/")
        names = self._dirs.get(parent)
        if names is not None:
            names.discard(name)

    async def update(self, path: str, fn: UpdateFn[T], *, likely_absent: bool = False) -> T:
        """Read-modify-write under the process-wide memory lock."""
        full = self._abs(path)
        with self._lock:
            change = fn(self._read_file(full))
            add, remove = list(change.add), list(change.remove)
            if change.move is not None:
                add.append(change.move[1])
                remove.append(change.move[0])
            for entry in add:
                self._put(self._abs(entry), b"")
            if change.data is None:
                self._rm(full)
            elif not isinstance(change.data, _Keep):
                self._put(full, change.data)
            for entry in remove:
                self._rm(self._abs(entry))
            return change.result

    async def update_many(
        self, items: Sequence[tuple[str, UpdateFn[T]]], *, likely_absent: bool = False
    ) -> list[T]:
        """Several updates, one after the other."""
        return [await self.update(path, fn) for path, fn in items]

    async def read_many(self, paths: Sequence[str]) -> list[bytes | None]:
        """Read objects."""
        with self._lock:
            return [self._read_file(self._abs(path)) for path in paths]

    async def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write objects."""
        with self._lock:
            for path, data in items:
                self._put(self._abs(path), data)

    async def delete_many(self, paths: Sequence[str]) -> None:
        """Delete objects."""
        with self._lock:
            for path in paths:
                self._rm(self._abs(path))

    async def list_many(self, dirs: Sequence[str]) -> list[list[str]]:
        """List directories from the store's index, dropping names deleted elsewhere."""
        out: list[list[str]] = []
        store = self.fs.store
        with self._lock:
            for directory in dirs:
                full = self._abs(directory)
                found = list(self._subdirs.get(full, ()))
                names = self._dirs.get(full)
                if names:
                    names -= {name for name in names if f"{full}/{name}" not in store}
                    found.extend(name for name in names if not _is_hidden(name))
                out.append(found)
        return out

    async def walk(self, directory: str) -> list[str]:
        """Every object below ``directory``."""
        full = self._abs(directory)
        prefix = self.root + "/"
        with self._lock:
            try:
                found = self.fs.find(full)
            except FileNotFoundError:
                return []
        return [p[len(prefix) :] for p in found if p.startswith(prefix)]
