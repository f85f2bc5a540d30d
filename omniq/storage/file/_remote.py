"""A :class:`~omniq.storage.file._store.Store` on an fsspec filesystem (object stores)."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from omniq.storage.file._conditional import conditions_for
from omniq.storage.file._store import Keep, Store, UpdateFn, is_hidden, translate_errors

__all__ = ["FsspecStore"]

T = TypeVar("T")


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

    ``update`` is an optimistic compare-and-set: on S3, Azure and GCS a conditional
    write (see :mod:`~omniq.storage.file._conditional`: create if absent, replace if
    still at the version read), retried after a fresh read when another writer got
    there first. Elsewhere the write is unconditional and the update is serialised only
    within this process's event loop.
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
        self._conditions = conditions_for(protocol)
        self.conditional = self._conditions is not None
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
        if self._conditions is not None:
            return await self._conditions.read(self.fs, full)
        try:
            data: bytes = await self._call("cat_file", full)
        except FileNotFoundError:
            return None
        return data, ""

    async def _write_conditional(self, full: str, data: bytes | None, version: str | None) -> bool:
        """Write or delete ``full`` if it is still at ``version`` (None: still absent)."""
        conditions = self._conditions
        if conditions is None:
            if data is None:
                with contextlib.suppress(FileNotFoundError):
                    await self._call("rm_file", full)
            else:
                await self._write_object(full, data)
            return True
        if data is None:
            return version is None or await conditions.delete(self.fs, full, version)
        if version is None:
            return await conditions.create(self.fs, full, data)
        return await conditions.replace(self.fs, full, data, version)

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
                    if isinstance(change.data, Keep):
                        await self._touch_abs(add)
                        await self._delete_abs(remove)
                        return change.result
                    await self._touch_abs(add)
                    etag = current[1] if current else None
                    # Only a write that names a new index entry (its name carries a
                    # nonce) can be recognised as our own by its bytes: two writers of
                    # equal bytes (a counter, two cancels) must still see one lose.
                    if await self._write_conditional(full, change.data, etag) or (
                        bool(add) and await self._took_effect(full, change.data)
                    ):
                        await self._delete_abs(remove)
                        return change.result
                    await self._delete_abs(add)

    async def _write_object(self, full: str, data: bytes) -> None:
        if self._conditions is not None:
            await self._conditions.put(self.fs, full, data)
        else:
            await self._call("pipe_file", full, data)

    async def _took_effect(self, full: str, data: bytes | None) -> bool:
        """Whether a conditional write that failed its condition had in fact been applied.

        A write whose reply a cut connection lost is resent by the S3 client, and the
        resend fails its condition because the object changed: by that very write. The
        object then holds exactly the bytes written. Asked only of a write that adds an
        index entry: the record names that entry, whose name carries a nonce, so another
        writer's record never matches by chance.
        """
        current = await self._read_versioned(full)
        if data is None:
            return current is None
        return current is not None and current[0] == data

    async def _touch_abs(self, fulls: Sequence[str]) -> None:
        await asyncio.gather(*(self._write_object(full, b"") for full in fulls))

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
                *(self._write_object(self._abs(path), data) for path, data in items)
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
                # Not only refresh=True: adlfs ignores it (its own keyword is
                # invalidate_cache) and would answer from a listing another process
                # has long changed.
                self.fs.invalidate_cache(full)
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
            if name and not is_hidden(name):
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
            if path.startswith(prefix) and not is_hidden(path.rsplit("/", 1)[-1])
        ]
