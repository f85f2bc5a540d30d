"""The SQLite connection: one database file, shared by the components built on it.

This module owns the file: URL parsing, the connection (on aiosqlite's thread), the
pragmas, schema migrations (numbered ``.sql`` files in this package's ``sql/``), the
wake-ups, and the translation of sqlite3's errors into OmniQ's. The components live
beside it (:mod:`omniq.storage.sqlite.queue` and the others).
"""

from __future__ import annotations

import asyncio
import builtins
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar, cast

import aiosqlite

from omniq.config import Settings
from omniq.errors import ConfigError, StorageConnectionError, StorageError
from omniq.storage._connection import Connection
from omniq.storage._sql import load_migrations, load_queries

__all__ = ["QUERIES", "SCHEMA_VERSION", "SQLiteConnection", "sqlite_path"]

T = TypeVar("T")

QUERIES = load_queries("omniq.storage.sqlite")
_MIGRATIONS = load_migrations("omniq.storage.sqlite")
SCHEMA_VERSION = _MIGRATIONS[-1][0]


def sqlite_path(url: str | os.PathLike[str]) -> str:
    """The database path named by ``url``, absolute, or ``":memory:"``.

    ``sqlite:///rel.db`` is relative to the current directory, ``sqlite:////abs.db``
    absolute, ``sqlite://:memory:`` in memory; a plain path is taken as it is.
    """
    text = os.fspath(url)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme.lower() != "sqlite":
            raise ConfigError(f"not a sqlite URL: {text!r} (expected sqlite:///path.db)")
        rest = rest.split("?", 1)[0]
        if rest in ("", ":memory:", "/:memory:"):
            return ":memory:"
        text = rest[1:] if rest.startswith("/") else rest
    if text == ":memory:":
        return text
    return os.path.abspath(os.path.expanduser(text))


def _translate(exc: BaseException, doing: str) -> StorageError:
    """The OmniQ error for a driver error raised while ``doing`` something."""
    message = str(exc)
    if isinstance(exc, ValueError):  # aiosqlite: "Connection closed" / "no active connection"
        return StorageConnectionError(f"sqlite: {doing}: the connection is closed")
    lowered = message.lower()
    if isinstance(exc, sqlite3.OperationalError) and any(
        word in lowered for word in ("unable to open", "locked", "busy", "disk i/o", "readonly")
    ):
        return StorageConnectionError(f"sqlite: {doing}: {message}")
    return StorageError(f"sqlite: {doing}: {message}")


def _split_script(script: str) -> list[str]:
    """The statements of a migration script (``executescript`` would commit early)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def _tx(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction (on the connection's thread)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _daemon(connecting: aiosqlite.Connection) -> aiosqlite.Connection:
    """``connecting`` with its thread made a daemon before it starts.

    aiosqlite's thread is not a daemon, so a client the program never closed (a script
    that enqueues and ends) kept the interpreter from exiting, forever. Nothing needs
    that thread at exit: a committed write is already on disk, and a transaction cut
    short rolls back when the file is next opened.
    """
    thread = getattr(connecting, "_thread", None)
    if isinstance(thread, threading.Thread) and not thread.is_alive():
        thread.daemon = True
    return connecting


# How long opening a database waits out another process's switch to WAL or migration.
_OPEN_BUSY_SECONDS = 10.0


class SQLiteConnection(Connection):
    """One aiosqlite connection to a database file, its schema migration and its
    in-process wake-ups.

    ``url`` is ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``,
    ``sqlite://:memory:`` (which lives and dies with this connection) or a plain path.
    ``settings.sqlite_synchronous`` ("NORMAL", the default, or "FULL") trades the
    durability of the last commits on power loss for write speed.

    Each operation is one function run on the connection's thread, so operations never
    interleave: that single thread is the write lock within a process, and
    ``BEGIN IMMEDIATE`` with the busy timeout is the lock between processes. That thread
    serves any event loop; the wake-ups belong to one, and are made anew when the caller
    moves to a new loop (``asyncio.run`` twice).
    """

    def __init__(self, url: str | os.PathLike[str], settings: Settings) -> None:
        super().__init__(url, settings)
        self.path = sqlite_path(url)
        synchronous = settings.sqlite_synchronous
        self.synchronous = str(synchronous).upper()
        if self.synchronous not in ("FULL", "NORMAL", "OFF", "EXTRA"):
            raise ConfigError(f"sqlite_synchronous={synchronous!r}: expected FULL or NORMAL")
        self._db: aiosqlite.Connection | None = None
        self._work: asyncio.Event | None = None
        self._result_waiters: dict[str, builtins.list[asyncio.Future[None]]] = {}
        self._shm_fd: int | None = None

    @property
    def is_memory(self) -> bool:
        """True for an in-memory database (no other process can see it)."""
        return self.path == ":memory:"

    @property
    def is_open(self) -> bool:
        """True while a component holds the connection (the file is open)."""
        return self._db is not None

    async def _open(self) -> None:
        """Open the file (creating its directory), set the pragmas, migrate the schema."""
        if self._db is not None:
            return
        if not self.is_memory:
            try:
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            except OSError as exc:
                raise StorageConnectionError(f"sqlite: cannot create {self.path}: {exc}") from exc
        try:
            db = await _daemon(aiosqlite.connect(self.path, isolation_level=None, timeout=10.0))
        except (sqlite3.Error, ValueError) as exc:
            raise StorageConnectionError(f"sqlite: cannot open {self.path}: {exc}") from exc
        self._db = db
        try:
            await self.run(self._setup, "opening the database")
        except BaseException:
            self._db = None
            await db.close()
            raise

    def _setup(self, conn: sqlite3.Connection) -> None:
        # Switching a fresh file to WAL, and the first read while another process does,
        # can fail with "database is locked" at once: SQLite skips the busy handler where
        # waiting could deadlock. Two workers starting together is normal, so wait here.
        deadline = time.monotonic() + _OPEN_BUSY_SECONDS
        delay = 0.005
        while True:
            try:
                self._setup_once(conn)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            time.sleep(delay)  # on the connection's own thread, not the event loop
            delay = min(delay * 2, 0.2)

    def _setup_once(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA busy_timeout = 10000")
        if not self.is_memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"sqlite: {self.path} cannot use WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("PRAGMA temp_store = MEMORY")
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if self._version(conn) == SCHEMA_VERSION:
            return

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(QUERIES["create_schema_version"])
            # Re-read under the write lock: another process may have migrated meanwhile.
            current = self._version(conn)
            if current > SCHEMA_VERSION:
                raise StorageError(
                    f"sqlite: {self.path} has schema version {current}, newer than this "
                    f"OmniQ supports ({SCHEMA_VERSION}); upgrade OmniQ"
                )
            for version, script in _MIGRATIONS:
                if version > current:
                    for statement in _split_script(script):
                        conn.execute(statement)
                    conn.execute(QUERIES["record_schema_version"], (version, time.time()))

        _tx(conn, apply)

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        try:
            row = conn.execute(QUERIES["schema_version"]).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise
        return int(row[0] or 0)

    async def _close(self) -> None:
        """Close the file; a result waiter of this process is woken, not left hanging."""
        db, self._db = self._db, None
        if self._shm_fd is not None:
            os.close(self._shm_fd)
            self._shm_fd = None
        for futures in self._result_waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._result_waiters.clear()
        if db is not None:
            try:
                await db.close()
            except (sqlite3.Error, ValueError) as exc:
                raise _translate(exc, "closing") from exc

    async def run(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        """Run ``fn(sqlite3_connection)`` on the connection's thread; translate errors."""
        db = self._db
        if db is None:
            raise StorageConnectionError(f"sqlite: {doing}: {self.path} is not connected")
        try:
            # One hop for the whole operation: aiosqlite's public calls cost one hop each.
            return cast(T, await cast(Any, db)._execute(fn, db._conn))
        except sqlite3.Error as exc:
            raise _translate(exc, doing) from exc
        except ValueError as exc:
            if self._db is not db or "closed" in str(exc) or "no active connection" in str(exc):
                raise _translate(exc, doing) from exc
            raise

    async def write(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction on the connection's thread."""
        return await self.run(lambda conn: _tx(conn, fn), doing)

    # -- wake-ups ---------------------------------------------------------------------

    def _forget_loop(self) -> None:
        # The old loop's waiters went with it; the database connection serves any loop.
        self._work = None
        self._result_waiters = {}

    def notify_work(self) -> None:
        """Wake every in-process waiter of :meth:`wait_for_work`."""
        self._follow_loop()
        if self._work is not None:
            self._work.set()
            self._work = None

    def _work_event(self) -> asyncio.Event:
        if self._work is None:
            self._work = asyncio.Event()
        return self._work

    def notify_results(self, task_ids: Collection[str]) -> None:
        """Wake in-process waiters for these results."""
        self._follow_loop()
        for task_id in task_ids:
            for future in self._result_waiters.pop(task_id, ()):
                if not future.done():
                    future.set_result(None)

    def file_signature(self) -> tuple[Any, ...] | None:
        """A cheap fingerprint of the last commit by any process (None for ``:memory:``).

        Every commit appends to or rewrites the ``-wal`` file and bumps the change counter
        in the ``-shm`` wal-index header; both are read without a thread hop.
        """
        if self.is_memory:
            return None
        try:
            stat = os.stat(self.path + "-wal")
            wal: tuple[int, int] = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            wal = (0, 0)
        header = b""
        try:
            if self._shm_fd is None:
                self._shm_fd = os.open(self.path + "-shm", os.O_RDONLY)
            header = os.pread(self._shm_fd, 48, 0)
        except OSError:
            if self._shm_fd is not None:
                os.close(self._shm_fd)
            self._shm_fd = None
        return (wal, header)

    async def data_version(self) -> int:
        """``PRAGMA data_version``: changes when another connection commits."""
        return await self.run(
            lambda conn: int(conn.execute("PRAGMA data_version").fetchone()[0]), "checking"
        )

    async def wait_for_work(self, timeout: float) -> None:
        """Return when this process or another one may have made work available."""
        self._follow_loop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiter = asyncio.ensure_future(self._work_event().wait())
        try:
            if self.is_memory:
                await asyncio.wait({waiter}, timeout=timeout)
                return
            signature = self.file_signature()
            version = await self.data_version()
            next_version_check = loop.time() + 0.25
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                done, _ = await asyncio.wait({waiter}, timeout=min(0.003, remaining))
                if done or self.file_signature() != signature:
                    return
                if loop.time() >= next_version_check:
                    # A backstop for a commit the file fingerprint could not see.
                    if await self.data_version() != version:
                        return
                    next_version_check = loop.time() + 0.25
        finally:
            waiter.cancel()

    def result_future(self, task_id: str) -> asyncio.Future[None]:
        """A future completed when a result for ``task_id`` is stored in this process."""
        self._follow_loop()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._result_waiters.setdefault(task_id, []).append(future)
        return future

    def drop_result_future(self, task_id: str, future: asyncio.Future[None]) -> None:
        """Forget a waiter that gave up."""
        futures = self._result_waiters.get(task_id)
        if futures and future in futures:
            futures.remove(future)
            if not futures:
                del self._result_waiters[task_id]

    def __repr__(self) -> str:
        return f"SQLiteConnection({self.path!r})"
