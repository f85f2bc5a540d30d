"""A :class:`~omniq.storage.file._store.Store` on local disk, through ``os`` directly."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import stat
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from omniq.storage.file._store import Keep, Store, UpdateFn, is_hidden, translate_errors

try:
    import fcntl

    _flock: Callable[[int, int], None] | None = fcntl.flock
    _LOCK_EX = fcntl.LOCK_EX
except ImportError:  # pragma: no cover - Windows
    _flock, _LOCK_EX = None, 0

__all__ = ["LocalStore"]

T = TypeVar("T")

_LOCK_STRIPES = 64
_READ_SIZE = 65536
_EMPTY_FILE = stat.S_IFREG | 0o644
_mknod_works = hasattr(os, "mknod")
_tmp_counter = itertools.count()


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
        # os.open and os.read, not open(): the buffered file object adds an fstat, an
        # ioctl (isatty) and an lseek to every read, 3 of its 6 system calls.
        try:
            fd = os.open(full, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            chunk = os.read(fd, _READ_SIZE)
            if len(chunk) < _READ_SIZE:
                return chunk  # the usual record: smaller than one read
            chunks = [chunk]
            while chunk:
                chunk = os.read(fd, _READ_SIZE)
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

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
        # An empty entry: mknod makes it in one system call where open and close take two
        # (an index entry per enqueue, an expiry entry per result). Where mknod may not
        # make a regular file (macOS without privileges), open and close.
        global _mknod_works
        if _mknod_works:
            try:
                os.mknod(full, _EMPTY_FILE)
                return
            except FileExistsError:
                return
            except FileNotFoundError:
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.mknod(full, _EMPTY_FILE)
                return
            except OSError:  # EPERM, EINVAL: this filesystem makes no files this way
                _mknod_works = False
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
            elif not isinstance(change.data, Keep):
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
                out.append([name for name in names if not is_hidden(name)])
        return out

    async def list_many(self, dirs: Sequence[str]) -> list[list[str]]:
        """List directories in one worker-thread call."""
        return await asyncio.to_thread(self._list_many_sync, dirs)

    def _walk_sync(self, directory: str) -> list[str]:
        base = self._abs(directory)
        found: list[str] = []
        with translate_errors(f"walk {directory}"):
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames[:] = [d for d in dirnames if not is_hidden(d)]
                rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                found.extend(f"{rel}/{name}" for name in filenames if not is_hidden(name))
        return found

    async def walk(self, directory: str) -> list[str]:
        """Every file below ``directory`` (a worker-thread call)."""
        return await asyncio.to_thread(self._walk_sync, directory)
