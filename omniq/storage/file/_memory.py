"""A :class:`~omniq.storage.file._store.Store` on fsspec's process-local ``memory://``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from omniq.storage.file._remote import FsspecStore
from omniq.storage.file._store import Keep, UpdateFn, is_hidden

__all__ = ["MemoryStore"]

T = TypeVar("T")


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
            elif not isinstance(change.data, Keep):
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
                    found.extend(name for name in names if not is_hidden(name))
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
