"""The one primitive the file backend builds on: a :class:`Store`, a directory tree.

Every path handed to a :class:`Store` is relative to its root and ``/``-separated. The
one compound primitive is :meth:`Store.update`: an atomic read-modify-write of one object
(the task's record), which also creates and deletes the small index entries that go with
the change. How it is made atomic depends on the filesystem:

- local disk (:class:`~omniq.storage.file._local.LocalStore`): a kernel lock (``flock``)
  on one of a fixed set of lock files guards the read, the write of a temporary file and
  its ``os.replace``; the kernel drops the lock when a process dies, so a crash never
  leaves it held, and the record is always either the old or the new file, never a torn
  one.
- ``memory://`` (:class:`~omniq.storage.file._memory.MemoryStore`): one process-wide
  lock; memory is process-local.
- object stores (:class:`~omniq.storage.file._remote.FsspecStore`): optimistic
  compare-and-set. On S3, Azure and GCS the write is conditional (S3 and Azure:
  ``If-Match`` the ETag read, or ``If-None-Match: *`` to create; GCS:
  ``ifGenerationMatch`` the generation read, or ``0``; see
  :mod:`~omniq.storage.file._conditional`), retried from a fresh read when another
  writer won. Other fsspec filesystems have no such primitive here: their updates are
  serialised only within one event loop.

Driver errors become OmniQ's in one place, :func:`translate_errors`, which every store
operation and the connection's own calls go through.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from omniq.errors import ConfigError, StorageConnectionError, StorageError

__all__ = ["KEEP", "Change", "Keep", "Store", "UpdateFn", "is_hidden", "translate_errors"]

T = TypeVar("T")


class Keep:
    """Marker: leave the object as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = Keep()


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
    data: bytes | Keep | None = KEEP
    add: Sequence[str] = ()
    remove: Sequence[str] = ()
    move: tuple[str, str] | None = None
    move_first: bool = False


UpdateFn = Callable[[bytes | None], Change[T]]


# Azure's errors for a request that never got an answer (refused, reset, timed out):
# botocore's and aiohttp's have "Connect" or "Endpoint" in their names.
_UNREACHABLE = frozenset({"ServiceRequestError", "ServiceResponseError"})
# An answer that refuses the request (azure-core's, gcsfs's): the others are OSErrors.
_REFUSED = frozenset({"HttpResponseError", "HttpError"})


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn driver errors into OmniQ's storage errors, once, at this boundary."""
    try:
        yield
    except (StorageError, ConfigError):
        raise
    except (ConnectionError, TimeoutError) as exc:
        raise StorageConnectionError(f"file backend: {what}: {exc}") from exc
    except Exception as exc:
        # By name, so that no driver has to be imported to recognise its errors.
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & _UNREACHABLE or any("Connect" in name or "Endpoint" in name for name in names):
            raise StorageConnectionError(f"file backend: {what}: {exc}") from exc
        if isinstance(exc, OSError) or names & _REFUSED:
            raise StorageError(f"file backend: {what}: {exc}") from exc
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


def is_hidden(name: str) -> bool:
    """Hidden names (lock files, the wake-up FIFO, temporary files) are never listed."""
    return name.startswith(".")
