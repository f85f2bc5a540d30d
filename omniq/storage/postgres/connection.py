"""The PostgreSQL connection: one asyncpg pool (and a listening connection) shared by the
components built on it.

``postgresql://user@host:port/db`` (``postgres://`` too). Every table lives in a schema
named after ``settings.namespace`` (default ``omniq``; a ``?namespace=name`` in the URL
wins), created with its tables on first connect, so applications share a database safely.
``?pool_size=N`` sets how many connections the pool may open (default 10, at
least 2: one is held for single statements while the others serve transactions and
overlapping statements).

Workers are woken by ``LISTEN``/``NOTIFY``: enqueueing notifies ``omniq:{namespace}:work``
in the same transaction, and storing a result notifies ``omniq:{namespace}:results`` with
the task id. Only a client that waits opens the one extra listening connection; a lost
listener makes waiters fall back to their timeouts (they are allowed to wake spuriously,
and they re-check) until it is reopened.

The pool and the listener belong to the event loop they were opened on. When that loop
shuts down (``asyncio.run`` returning) they are closed there, and the next statement, on
the caller's new loop, opens a new pool (see :mod:`omniq._loops`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping
from functools import cache
from typing import Any, TypeVar

import asyncpg

from omniq._loops import abort_transport, quietly
from omniq._tls import split_tls_options
from omniq._urls import redact_url, split_namespace, split_option
from omniq.config import Settings
from omniq.errors import ConfigError, StorageConnectionError, StorageError
from omniq.storage._connection import Connection
from omniq.storage._sql import load_migrations, load_queries

__all__ = ["POOL_SIZE", "SCHEMA_VERSION", "PostgresConnection", "connection_errors"]

logger = logging.getLogger("omniq")

T = TypeVar("T")

# Every statement, by name, with {s} for the schema; and the schema migrations, in order.
_QUERIES = load_queries("omniq.storage.postgres")
_MIGRATIONS = load_migrations("omniq.storage.postgres")
SCHEMA_VERSION = _MIGRATIONS[-1][0]
# A schema name must fit PostgreSQL's 63-byte identifiers with room for the channel names.
_NAMESPACE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,47}$")
POOL_SIZE = 10
# Pauses between tries of a statement that met a dropped connection (None: give up).
_RETRY_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, None)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool ``reset`` hook: nothing to undo on a returned connection.

    asyncpg's default reset sends ``UNLISTEN *; RESET ALL; CLOSE ALL;
    pg_advisory_unlock_all()`` every time a connection goes back to the pool: one more
    round trip per statement, which nearly halved single-call enqueue. OmniQ leaves no
    session state on pooled connections (its LISTEN is on a connection of its own, its
    advisory lock is transaction-scoped, it never SETs or opens cursors), and asyncpg
    still rolls back any open transaction before calling this hook.
    """


#: The errors that mean the server cannot be reached (as opposed to a refused statement).
connection_errors: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,
    # What an idle pooled connection raises when the server ended its session before the
    # client saw the socket close (a restart, pg_terminate_backend).
    asyncpg.exceptions.InternalClientError,
)


async def _release(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """Hand ``conn`` back to ``pool``; a connection that cannot go back is closed."""
    try:
        await pool.release(conn)
    except Exception as exc:  # broken, or the pool is closing: it is dropped either way
        logger.debug("postgres: releasing a connection: %s", exc)
        conn.terminate()


def _pool_size(value: str | None) -> int:
    if value is None:
        return POOL_SIZE
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 2:
        raise ConfigError(
            f"pool_size={value!r}: expected a whole number of connections, at least 2 "
            "(one is held for single statements, the rest serve transactions)"
        )
    return size


@cache
def _statements(schema: str) -> Mapping[str, str]:
    """Every statement with ``{s}`` as ``schema`` (once per schema and process)."""
    return {name: sql.format(s=schema) for name, sql in _QUERIES.items()}


def _schema_name(namespace: str) -> str:
    if not _NAMESPACE_RE.match(namespace):
        raise ConfigError(
            f"namespace={namespace!r}: expected a name of letters, digits, '_' or '-' "
            "(at most 48, not starting with a digit); it names the PostgreSQL schema"
        )
    return namespace


class PostgresConnection(Connection):
    """One asyncpg pool on a database, and the schema of a namespace in it.

    It runs every statement of its components (:meth:`fetch`, :meth:`execute`,
    :meth:`transaction`…), translating asyncpg's errors into OmniQ's, creates or upgrades
    the schema when it opens, and hears the notifications that wake waiting workers,
    result waiters and cancels. The namespace is the URL's ``?namespace=``, else
    ``namespace``, else ``settings.namespace``.

    Example::

        connection = PostgresConnection("postgresql://postgres@127.0.0.1:5432/app", Settings())
        await connection.acquire()  # opens the pool, creates the schema if needed
        rows = await connection.fetch("counting tasks", connection.sql["count_tasks"])
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        settings: Settings,
        *,
        namespace: str | None = None,
    ) -> None:
        super().__init__(url, settings)
        dsn, url_namespace = split_namespace(self.url)
        dsn, url_pool_size = split_option(dsn, "pool_size")
        # OmniQ's TLS options (also in storage_options); libpq's own (sslmode,
        # sslrootcert, sslcert, sslkey) stay in the DSN, where asyncpg reads them.
        dsn, self._tls = split_tls_options(dsn, settings.storage_options)
        namespace = url_namespace or namespace or settings.namespace
        self.dsn = dsn
        #: The most connections the pool opens (``?pool_size=`` in the URL).
        self.pool_size = _pool_size(url_pool_size)
        self.namespace = _schema_name(namespace)
        #: The quoted schema name, ready to prefix table names in SQL.
        self.schema = '"' + self.namespace + '"'
        #: The statements of ``sql/queries.sql`` by name, for this schema.
        self.sql = _statements(self.schema)
        self.work_channel = f"omniq:{self.namespace}:work"
        self.results_channel = f"omniq:{self.namespace}:results"
        #: Running tasks taken from their worker (cancelled): payload ``worker\nid``.
        self.cancel_channel = f"omniq:{self.namespace}:cancel"
        #: The ``notice`` callback of each worker watching for cancels (by worker id).
        self.cancel_watchers: dict[str, Callable[[str], None]] = {}
        #: How OmniQ's sessions show in ``pg_stat_activity``.
        self.application_name = f"omniq:{self.namespace}"
        self._where = redact_url(dsn)
        self._pool: asyncpg.Pool | None = None
        # One pooled connection kept out of the pool for single statements (see _run).
        self._held: asyncpg.Connection | None = None
        self._held_busy = False
        self._listener: asyncpg.Connection | None = None
        self._listen_lock = asyncio.Lock()
        self._reopen_lock = asyncio.Lock()
        # Every connection opened (pooled or listening): what to close by hand when their
        # loop is gone (see _forget_loop).
        self._conns: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()
        self._opening: asyncio.Future[bool] | None = None
        self._work_waiters: set[asyncio.Future[None]] = set()
        self._result_waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._lost_waiters: set[asyncio.Future[None]] = set()

    # -- connection ------------------------------------------------------------------

    async def _open(self) -> None:
        self._pool = await self._create_pool()
        await self._bound.watch()
        try:
            await self._migrate()
        except BaseException:
            await self._close()
            raise

    def _connect_options(self) -> dict[str, Any]:
        """What every connection is opened with (the pool's and the listener's)."""
        options: dict[str, Any] = {"server_settings": {"application_name": self.application_name}}
        if self._tls.given:
            # Required and checked as the options say (verify-full unless tls_verify is
            # off); it wins over an sslmode in the DSN.
            options["ssl"] = self._tls.context()
        return options

    async def _create_pool(self) -> asyncpg.Pool:
        try:
            return await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                reset=_keep_session,
                init=self._track,
                **self._connect_options(),
            )
        except asyncpg.InvalidCatalogNameError as exc:
            raise StorageConnectionError(f"postgres: {self._where}: {exc}") from exc
        except connection_errors as exc:
            raise StorageConnectionError(
                f"postgres: cannot connect to {self._where}: {exc}"
            ) from exc
        except asyncpg.PostgresError as exc:
            raise StorageConnectionError(f"postgres: {self._where}: {exc}") from exc

    async def _close(self) -> None:
        await self._close_connections()

    async def _release_loop(self) -> None:
        # The loop is ending: close its pool and listener gracefully while it still runs.
        await self._close_connections()

    async def _track(self, conn: asyncpg.Connection) -> None:
        self._conns.add(conn)

    def _forget_loop(self) -> None:
        # Left on a loop that finished without shutting down (closed by hand, or stopped):
        # terminated without it, as far as it goes (a closed loop refuses the callbacks
        # that close a socket; abort_transport closes it in place).
        pool, self._pool = self._pool, None
        listener, self._listener = self._listener, None
        self._held = None  # one of the pool's connections
        self._held_busy = False
        self._opening = None
        self._listen_lock = asyncio.Lock()
        self._reopen_lock = asyncio.Lock()
        self._work_waiters = set()
        self._result_waiters = {}
        if listener is not None:
            quietly(listener.terminate)
        if pool is not None:
            quietly(pool.terminate)
        conns = list(self._conns)
        self._conns.clear()
        for conn in conns:
            quietly(conn.terminate)
            transport = getattr(conn, "_transport", None)
            if transport is not None:
                abort_transport(transport)

    async def _close_connections(self) -> None:
        pool, self._pool = self._pool, None
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            await asyncio.wait({opening}, timeout=10)  # it sees the pool gone and closes
        held, self._held = self._held, None
        if held is not None and pool is not None and not self._held_busy:
            await _release(pool, held)  # in use: its user hands it back (see _on_held)
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            try:
                await asyncio.wait_for(listener.close(), 5)
            except Exception:
                listener.terminate()
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 10)
            except Exception:
                pool.terminate()
        self._wake_all()

    def _ready_pool(self, doing: str) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageConnectionError(f"postgres: {doing}: {self._where} is not connected")
        return self._pool

    async def _run(
        self, doing: str, op: Callable[[asyncpg.Pool | asyncpg.Connection], Awaitable[T]]
    ) -> T:
        """``op(pool or connection)`` with database errors as OmniQ errors naming what
        was being done.

        A connection error is retried on a fresh connection for about a second and a
        half (a server restart drops every pooled connection at once). Every statement
        OmniQ sends may run twice: a retried enqueue skips ids already stored, and a
        retried claim whose first try did commit leaves tasks leased until their lease
        runs out, never lost.
        """
        for delay in _RETRY_DELAYS:
            try:
                pool = self._pool
                if pool is None or self._bound.loop is not asyncio.get_running_loop():
                    pool = await self._pool_here(doing)
                if self._held_busy:
                    return await op(pool)
                return await self._on_held(pool, op)
            except connection_errors as exc:
                if delay is None or self._pool is None:
                    raise StorageConnectionError(f"postgres: {doing}: {exc}") from exc
                logger.debug("postgres: %s: %s; trying again", doing, exc)
                await asyncio.sleep(delay)
            except asyncpg.PostgresError as exc:
                raise StorageError(f"postgres: {doing}: {exc}") from exc
        raise AssertionError("unreachable")  # the last delay is None

    async def _pool_here(self, doing: str) -> asyncpg.Pool:
        """The pool, on the running loop: a caller that moved to a new loop gets a new
        pool there (the old loop closed its own as it ended, or left it behind)."""
        self._follow_loop()
        if self._pool is None and self._refs > 0:
            async with self._reopen_lock:
                if self._pool is None:
                    self._pool = await self._create_pool()
                    await self._bound.watch()
        return self._ready_pool(doing)

    async def _on_held(
        self, pool: asyncpg.Pool, op: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        """``op`` on the held connection.

        A statement through the pool pays for an acquire and a release (a task and
        several turns of the event loop): a third of the client's time in a single-call
        enqueue. The held connection skips both for one statement at a time; statements
        that overlap it go through the pool. After any error, or a cancellation, it goes
        back to the pool (which cleans it up or replaces it) and a later statement takes
        another.
        """
        self._held_busy = True
        held = self._held
        try:
            if held is None:
                held = await pool.acquire()
            result = await op(held)
        except BaseException:
            self._held = None
            if held is not None:
                await _release(pool, held)
            raise
        finally:
            self._held_busy = False
        if self._pool is pool:
            self._held = held
        else:  # the connection closed meanwhile
            self._held = None
            await _release(pool, held)
        return result

    async def fetch(self, doing: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of one statement (its own transaction)."""
        rows: list[asyncpg.Record] = await self._run(doing, lambda pool: pool.fetch(sql, *args))
        return rows

    async def fetchrow(self, doing: str, sql: str, *args: Any) -> asyncpg.Record | None:
        """The first row of one statement, or None."""
        row: asyncpg.Record | None = await self._run(doing, lambda pool: pool.fetchrow(sql, *args))
        return row

    async def fetchval(self, doing: str, sql: str, *args: Any) -> Any:
        """The first value of the first row of one statement."""
        return await self._run(doing, lambda pool: pool.fetchval(sql, *args))

    async def execute(self, doing: str, sql: str, *args: Any) -> int:
        """Run one statement; return how many rows it changed."""
        status: str = await self._run(doing, lambda pool: pool.execute(sql, *args))
        return _row_count(status)

    async def transaction(self, doing: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn(conn)`` in one transaction on a pooled connection."""

        async def run(db: asyncpg.Pool | asyncpg.Connection) -> T:
            if isinstance(db, asyncpg.Pool):
                async with db.acquire() as conn, conn.transaction():
                    return await fn(conn)
            async with db.transaction():
                return await fn(db)

        return await self._run(doing, run)

    async def _migrate(self) -> None:
        """Create the schema and its tables, or bring them up to date, once per database:
        concurrent first connects queue on an advisory lock. Each migration file runs in
        order, in the one transaction, and records its version."""
        sql = self.sql

        async def migrate(conn: asyncpg.Connection) -> None:
            await conn.execute(sql["lock_migrations"], self.work_channel)
            await conn.execute(sql["create_schema"])
            await conn.execute(sql["create_version_table"])
            version = await conn.fetchval(sql["schema_version"])
            if version is not None and version > SCHEMA_VERSION:
                raise StorageError(
                    f"postgres: schema {self.namespace} is at version {version}, newer than "
                    f"this OmniQ knows ({SCHEMA_VERSION}): upgrade OmniQ"
                )
            for number, script in _MIGRATIONS[version or 0 : SCHEMA_VERSION]:
                await conn.execute(script.format(s=self.schema))
                await conn.execute(sql["record_version"], number)

        await self.transaction(f"creating schema {self.namespace}", migrate)

    # -- notifications -----------------------------------------------------------------

    async def _listening(self) -> bool:
        """Open the listening connection if it is not open; False if that failed."""
        listener = self._listener
        if listener is not None and not listener.is_closed():
            return True
        async with self._listen_lock:
            listener = self._listener
            if listener is not None and not listener.is_closed():
                return True
            if self._pool is None:
                return False
            if self._opening is None or self._opening.done():
                self._opening = asyncio.ensure_future(self._open_listener())
            # Shielded: a waiter cancelled meanwhile (a worker stopping) lets the opening
            # finish, so the connection is kept or closed, never left half made.
            return await asyncio.shield(self._opening)

    async def _open_listener(self) -> bool:
        try:
            listener = await asyncpg.connect(self.dsn, **self._connect_options())
        except (*connection_errors, asyncpg.PostgresError) as exc:
            logger.warning("postgres: cannot listen for notifications: %s", exc)
            return False
        try:
            await listener.add_listener(self.work_channel, self._on_work)
            await listener.add_listener(self.results_channel, self._on_result)
            await listener.add_listener(self.cancel_channel, self._on_cancel)
        except BaseException as exc:
            listener.terminate()
            if isinstance(exc, (*connection_errors, asyncpg.PostgresError)):
                logger.warning("postgres: cannot listen for notifications: %s", exc)
                return False
            raise
        if self._pool is None:  # closed while the listener was opening
            listener.terminate()
            return False
        self._conns.add(listener)
        listener.add_termination_listener(self._on_listener_lost)
        self._listener = listener
        return True

    def _on_work(self, _conn: object, _pid: int, _channel: str, _payload: object) -> None:
        waiters, self._work_waiters = self._work_waiters, set()
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _on_result(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        # The payload is the ids of a batch of stored results, one per line. (An id with a
        # newline in it wakes nobody here; its waiter finds the result at its next look.)
        if not self._result_waiters:
            return
        for task_id in str(payload).split("\n"):
            for future in self._result_waiters.pop(task_id, ()):
                if not future.done():
                    future.set_result(None)

    def _on_cancel(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        worker_id, _, task_id = str(payload).partition("\n")
        notice = self.cancel_watchers.get(worker_id)
        if notice is not None:
            notice(task_id)

    def _on_listener_lost(self, _conn: object) -> None:
        # Whatever was notified while it was down is unknown: wake everyone to re-check.
        self._listener = None
        self._wake_all()

    def _wake_all(self) -> None:
        self._on_work(None, 0, "", None)
        lost, self._lost_waiters = self._lost_waiters, set()
        for future in lost:
            if not future.done():
                future.set_result(None)
        waiting, self._result_waiters = self._result_waiters, {}
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)

    async def listening(self) -> bool:
        """True once the connection that hears notifications is open (it opens it)."""
        return await self._listening()

    async def listener_lost(self) -> None:
        """Return when the listening connection is lost or this connection closes."""
        future = asyncio.get_running_loop().create_future()
        self._lost_waiters.add(future)
        try:
            await future
        finally:
            self._lost_waiters.discard(future)

    async def wait_for_work(self, timeout: float) -> None:
        """Return at the next work notification, or after ``timeout``."""
        self._follow_loop()
        future = asyncio.get_running_loop().create_future()
        self._work_waiters.add(future)
        try:
            if not await self._listening():
                timeout = min(timeout, 1.0)
            await asyncio.wait({future}, timeout=timeout)
        finally:
            self._work_waiters.discard(future)

    async def result_future(self, task_id: str) -> asyncio.Future[None] | None:
        """A future set when the result of ``task_id`` is stored (None: not listening)."""
        self._follow_loop()
        if not await self._listening():
            return None
        future = asyncio.get_running_loop().create_future()
        self._result_waiters.setdefault(task_id, set()).add(future)
        return future

    def drop_result_future(self, task_id: str, future: asyncio.Future[None]) -> None:
        """Forget a future :meth:`result_future` returned."""
        futures = self._result_waiters.get(task_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._result_waiters[task_id]

    def __repr__(self) -> str:
        return f"PostgresConnection({self._where!r}, namespace={self.namespace!r})"


def _row_count(status: str) -> int:
    """Rows changed, from a command status such as ``UPDATE 3`` or ``INSERT 0 1``."""
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else 0
