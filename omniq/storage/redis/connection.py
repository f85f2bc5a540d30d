"""The connection to Redis that a backend's components share: sockets, scripts, retries.

:class:`RedisConnection` is the backend's :class:`~omniq.storage._connection.Connection`:
reference counted by the components on it, and the one place where the protocol's
errors become OmniQ's (:class:`StorageConnectionError`, :class:`StorageError`).
It speaks RESP over an ``asyncio.Protocol`` with hiredis parsing (``._resp``):
every ordinary request of a process shares one pipelined connection, and each blocking
call (``BLPOP``) gets a connection of its own. An idle worker sends its claim in the same
pipeline as its ``BLPOP``, so Redis runs the claim the moment a token arrives (that claim
reads the server's clock). A connection error drops the connections
and retries the request a few times with a short backoff, so a restarted server is
picked up by the next call. Only a reply lost on a live connection makes a retry repeat
work, within at-least-once: a repeated claim leaves tasks leased to nobody until their
lease runs out, a repeated append logs an event twice. Blocking commands are not
retried; one given up by its caller (a worker stopped while blocked) is settled in the
background, so the claim pipelined behind it is handed back (see :meth:`block_many`).

A connection outlives event loops (``asyncio.run`` twice): its sockets close as their
loop shuts down, and the next call, on the new loop, connects again (see
:mod:`omniq._loops`).

Scripts are the files of ``omniq/storage/redis/lua`` (see ``._scripts``), loaded once and
called by SHA (``NOSCRIPT`` reloads them: a restarted server lost them). The key layout
they work on is described in :mod:`omniq.storage.redis`.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from hiredis import pack_command

from omniq._loops import quietly
from omniq._tls import split_tls_options
from omniq._urls import redact_url as _redact
from omniq._urls import split_namespace
from omniq.config import Settings
from omniq.errors import ConfigError, StorageConnectionError, StorageError, ValueTooLargeError
from omniq.storage._connection import Connection
from omniq.storage.redis._resp import (
    REDIS_TLS_ALIASES,
    NoScriptError,
    RespConnection,
    RespConnectionError,
    RespEndpoint,
    ResponseError,
    RespTLSError,
    parse_redis_url,
)
from omniq.storage.redis._scripts import SCRIPTS, SHAS

__all__ = ["MAX_BULK_BYTES", "RedisConnection", "too_large"]

logger = logging.getLogger("omniq")

Command = tuple[Any, ...]
#: Called with the replies of a blocking call whose caller was cancelled.
Abandoned = Callable[[builtins.list[Any]], Awaitable[None]]

_BAD_NAMESPACE = re.compile(r"[:\s*?\[\]]")

#: Delays before each retry of a request that hit a connection error (about 1.5 s in all).
_RETRY_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)
#: Idle connections kept per kind (plain, blocking); more are closed when released.
_MAX_IDLE = 32
#: Slack on top of a blocking command's own timeout before the client gives up on it.
_BLOCK_SLACK = 5.0


def _check_namespace(namespace: str) -> str:
    if not namespace or _BAD_NAMESPACE.search(namespace):
        raise ConfigError(
            f"namespace={namespace!r}: expected a non-empty name without ':', spaces or "
            "glob characters (it prefixes every Redis key)"
        )
    return namespace


#: The longest bulk string (one argument) a Redis server takes: ``proto-max-bulk-len``,
#: 512 MB unless raised. A longer one is a protocol error: the server closes the connection
#: with ``ERR Protocol error: invalid bulk length``, after reading what it was sent.
MAX_BULK_BYTES = 512 * 1024 * 1024


def too_large(what: str, size: int) -> ValueTooLargeError:
    """The error for ``what``, of ``size`` bytes, over :data:`MAX_BULK_BYTES`.

    The components compare each record with the limit as they encode it (a comparison,
    not a call: it is on every enqueue's path): packing a value this large takes hiredis
    seconds (3.6 s for 513 MB), all spent on a command the server refuses.
    """
    return ValueTooLargeError(
        f"redis: {what} is {size / 2**20:.1f} MB ({size} bytes), over Redis's limit of "
        f"{MAX_BULK_BYTES // 2**20} MB per value (proto-max-bulk-len); keep large data "
        "elsewhere (a file or object store) and pass its location instead"
    )


def _pack(command: Command) -> bytes:
    packed: bytes = pack_command(command)
    # A backstop for values no component checked. The packed length bounds every
    # argument's, so one comparison guards the hot path; the arguments are measured only
    # when the whole is too long.
    if len(packed) > MAX_BULK_BYTES:
        size = max(
            memoryview(arg).nbytes
            if isinstance(arg, bytes | bytearray | memoryview)
            else len(str(arg).encode())
            for arg in command
        )
        if size > MAX_BULK_BYTES:
            raise too_large(f"a value of {command[0]}", size)
    return packed


class RedisConnection(Connection):
    """The connection to one Redis server, shared by the components built on it.

    Holds the key prefix, a small pool of connections for ordinary commands and another
    for blocking ones (so a worker blocked on ``BLPOP`` never holds up a claim), and the
    SHAs of the Lua scripts. ``round_trips`` counts request/response exchanges.

    The key prefix is ``namespace`` when given, else the URL's ``?namespace=``, else
    ``settings.namespace``.

    Example::

        connection = RedisConnection("redis://127.0.0.1:6379/0", Settings(namespace="myapp"))
        await connection.acquire()
        await connection.call("PING")
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        settings: Settings | None = None,
        *,
        namespace: str | None = None,
    ) -> None:
        url, url_namespace = split_namespace(os.fspath(url))
        settings = settings if settings is not None else Settings()
        # The TLS options leave the URL here; the connection keeps them apart.
        url, self._tls = split_tls_options(url, settings.storage_options, aliases=REDIS_TLS_ALIASES)
        super().__init__(url, settings)
        if namespace is None:
            namespace = settings.namespace if url_namespace is None else url_namespace
        self.namespace = _check_namespace(namespace)
        self.prefix = f"{self.namespace}:"
        self.round_trips = 0
        self._where = _redact(url)  # for error messages: never the password
        self._endpoint: RespEndpoint | None = None
        # Every ordinary request shares one pipelined connection; blocking ones
        # (BLPOP) each hold a connection of their own while they wait.
        self._main: RespConnection | None = None
        self._connecting: asyncio.Lock | None = None
        self._blocking_idle: list[RespConnection] = []
        self._blocking_busy: set[RespConnection] = set()
        # Blocking calls given up by their callers, still being settled (see block_many).
        self._settling: set[asyncio.Task[None]] = set()

    @property
    def is_open(self) -> bool:
        """True while a component holds the connection (it is open, between the first
        :meth:`acquire` and the last :meth:`release`)."""
        return self._endpoint is not None

    async def _open(self) -> None:
        """Check the server answers and load the scripts."""
        self._endpoint = parse_redis_url(self.url, self._tls)
        try:
            await self.load_scripts()
        except BaseException:
            self._endpoint = None
            self._drop_connections()
            raise

    async def _close(self) -> None:
        """Close every connection (after settling abandoned blocking calls)."""
        if self._settling:
            await asyncio.wait(list(self._settling), timeout=_BLOCK_SLACK)
        self._endpoint = None
        self._drop_connections()
        # Requests still in flight (a worker blocked in BLPOP) end with a connection error.
        for conn in list(self._blocking_busy):
            conn.close()

    def _forget_loop(self) -> None:
        # Everything made on the loop the client leaves (or that is ending): closed as far
        # as that loop still allows. The client stays open; the next request connects.
        self._settling.clear()  # tasks of that loop: they ended (or never run again) there
        conns = [self._main, *self._blocking_idle, *self._blocking_busy]
        self._main = None
        self._blocking_idle.clear()
        self._blocking_busy.clear()
        for conn in conns:
            if conn is not None:
                quietly(conn.close)
        self._connecting = None

    async def _release_loop(self) -> None:
        # The loop is shutting down (asyncio.run returning): its tasks are done, but
        # blocking calls they gave up may still be settling (as in _close()).
        if self._settling:
            await asyncio.wait(list(self._settling), timeout=_BLOCK_SLACK)
        self._forget_loop()

    async def load_scripts(self) -> None:
        """``SCRIPT LOAD`` every OmniQ script (one round trip)."""
        replies = await self.execute([("SCRIPT", "LOAD", text) for text in SCRIPTS.values()])
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise StorageError(f"redis: loading scripts: {reply}")

    def _drop_connections(self) -> None:
        # After one connection error the others are probably stale too (server restart).
        main, self._main = self._main, None
        if main is not None:
            main.close()
        idle = self._blocking_idle[:]
        self._blocking_idle.clear()
        for conn in idle:
            conn.close()

    async def _connect(self, blocking: bool) -> RespConnection:
        endpoint = self._endpoint
        if endpoint is None:
            raise StorageConnectionError("redis: the client is closed")
        if blocking:
            if self._blocking_idle:
                return self._blocking_idle.pop()
            return await self._open_connection(endpoint, client_id=True)
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # one reconnect, however many requests wait for it
            main = self._main
            if main is None or main.is_closed:
                main = self._main = await self._open_connection(endpoint)
            return main

    async def _open_connection(
        self, endpoint: RespEndpoint, *, client_id: bool = False
    ) -> RespConnection:
        try:
            conn = await RespConnection.open(endpoint, client_id=client_id)
        except ResponseError as exc:  # AUTH or SELECT refused: retrying will not help
            raise StorageConnectionError(f"redis: {self._where}: refused: {exc}") from exc
        except RespTLSError as exc:  # nor with a certificate refused or a plain-text port
            raise StorageConnectionError(f"redis: {self._where}: {exc}") from exc
        await self._bound.watch()
        return conn

    async def execute(
        self, commands: Sequence[Command], *, blocking: bool = False
    ) -> builtins.list[Any]:
        """Send ``commands`` in one write and return their replies in order.

        An error reply is returned as its ``ResponseError`` (not raised), so a pipeline
        always reads every reply. Connection errors are retried (blocking commands are
        not), then raised as :class:`StorageConnectionError`.
        """
        if self._bound.loop is not asyncio.get_running_loop():
            self._follow_loop()
        data = _pack(commands[0]) if len(commands) == 1 else b"".join(map(_pack, commands))
        count = len(commands)
        if blocking:
            return await self._execute_blocking(data, count)
        return await self._send(data, count)

    async def _send(self, data: bytes, count: int) -> builtins.list[Any]:
        """Send packed commands on the shared connection, retrying connection errors."""
        last = len(_RETRY_DELAYS) - 1
        for attempt, delay in enumerate(_RETRY_DELAYS):
            if delay:
                await asyncio.sleep(delay)
            conn = self._main
            try:
                if conn is None or conn.is_closed:
                    conn = await self._connect(blocking=False)
                replies = await conn.request(data, count)
            except (RespConnectionError, ConnectionError) as exc:
                if self._main is conn:
                    self._drop_connections()
                if attempt == last:
                    raise StorageConnectionError(f"redis: {self._where}: {exc}") from exc
                continue
            self.round_trips += 1
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

    async def _execute_blocking(
        self, data: bytes, count: int, abandoned: Abandoned | None = None
    ) -> builtins.list[Any]:
        # A blocking command is not repeated: its caller treats an error as a wake-up.
        try:
            conn = await self._connect(blocking=True)
        except (RespConnectionError, ConnectionError) as exc:
            raise StorageConnectionError(f"redis: {self._where}: {exc}") from exc
        self._blocking_busy.add(conn)
        pending = conn.request(data, count)
        try:
            replies = await pending
        except (RespConnectionError, ConnectionError) as exc:
            self._blocking_busy.discard(conn)
            conn.close()
            self._drop_connections()
            raise StorageConnectionError(f"redis: {self._where}: {exc}") from exc
        except asyncio.CancelledError:
            rest: asyncio.Future[builtins.list[Any]] | None = None
            if abandoned is not None and conn.client_id is not None and not conn.is_closed:
                # The replies arrived just before the cancel, or are still to come.
                rest = pending if pending.done() and not pending.cancelled() else None
                rest = rest or conn.reattach(pending)
            if rest is not None:
                assert abandoned is not None
                settling = self._settle_later(conn, rest, abandoned)
                # The caller waits for the settling (a round trip or two), so whoever
                # stopped it finds its claim handed back; cancelled again, it leaves the
                # settling to finish in the background.
                await asyncio.shield(settling)
            else:
                # The server may still hand this connection a value later: not reused.
                self._blocking_busy.discard(conn)
                conn.close()
            raise
        except BaseException:
            self._blocking_busy.discard(conn)
            conn.close()
            raise
        self._blocking_busy.discard(conn)
        self.round_trips += 1
        if self._endpoint is not None and len(self._blocking_idle) < _MAX_IDLE:
            self._blocking_idle.append(conn)
        else:
            conn.close()
        return replies

    def _settle_later(
        self,
        conn: RespConnection,
        pending: asyncio.Future[builtins.list[Any]],
        abandoned: Abandoned,
    ) -> asyncio.Task[None]:
        """Finish a blocking call its caller gave up on, in a task of its own.

        The commands pipelined after the blocking one may already have run (a claim
        right after ``BLPOP`` returned), or will as soon as it returns: their replies go
        to ``abandoned`` instead of being dropped. A call still blocked is woken with
        ``CLIENT UNBLOCK`` from the main connection, so this takes one round trip.
        """

        async def settle() -> None:
            try:
                if not pending.done():
                    await self.execute([("CLIENT", "UNBLOCK", conn.client_id)])
                async with asyncio.timeout(_BLOCK_SLACK):
                    replies = await pending
                await abandoned(replies)
            except Exception as exc:
                logger.warning("redis: settling an abandoned blocking call failed: %s", exc)
            finally:
                self._blocking_busy.discard(conn)
                conn.close()

        task = asyncio.get_running_loop().create_task(settle(), name="omniq-redis-settle")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        return task

    async def call(self, *command: Any) -> Any:
        """One command; an error reply raises :class:`StorageError`."""
        reply = (await self.execute([command]))[0]
        if isinstance(reply, ResponseError):
            raise StorageError(f"redis: {command[0]}: {reply}") from reply
        return reply

    async def script(self, name: str, *args: Any) -> Any:
        """Run the named Lua script (``EVALSHA``, loading the scripts on ``NOSCRIPT``)."""
        command = ("EVALSHA", SHAS[name], 0, self.prefix, *args)
        reply = (await self.execute([command]))[0]
        if isinstance(reply, NoScriptError):
            await self.load_scripts()
            reply = (await self.execute([command]))[0]
        if isinstance(reply, ResponseError):
            raise StorageError(f"redis: script {name}: {reply}") from reply
        return reply

    async def scripts(self, name: str, arg_lists: Iterable[Sequence[Any]]) -> builtins.list[Any]:
        """Run the named script once per argument list, in one round trip.

        Each call is written as soon as its arguments are built, so the server works
        through one call while the next is built. The calls must be safe to repeat: a
        batch cut by a lost connection is sent again whole.
        """
        if self._bound.loop is not asyncio.get_running_loop():
            self._follow_loop()
        sha, prefix = SHAS[name], self.prefix
        packed: builtins.list[bytes] = []
        futures: builtins.list[asyncio.Future[builtins.list[Any]]] = []
        conn = self._main
        if conn is None or conn.is_closed:
            try:
                conn = await self._connect(blocking=False)
            except (RespConnectionError, ConnectionError):
                conn = None  # the retrying path below reconnects
        for args in arg_lists:
            data = _pack(("EVALSHA", sha, 0, prefix, *args))
            packed.append(data)
            if conn is not None:
                futures.append(conn.request(data, 1))
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        if conn is not None and not any(isinstance(item, BaseException) for item in outcomes):
            self.round_trips += 1
            replies = [item[0] for item in outcomes]  # type: ignore[index]
        else:
            if conn is not None and self._main is conn:
                self._drop_connections()
            replies = await self._send(b"".join(packed), len(packed))
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # Nothing ran: every call of the batch needs the same (missing) script.
            await self.load_scripts()
            replies = await self._send(b"".join(packed), len(packed))
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise StorageError(f"redis: script {name}: {reply}") from reply
        return replies

    async def block(self, timeout: float, *command: Any) -> Any:
        """A blocking command (``BLPOP``…) on a blocking connection, bounded client-side."""
        reply = (await self.block_many(timeout, [command]))[0]
        if isinstance(reply, ResponseError):
            raise StorageError(f"redis: {command[0]}: {reply}") from reply
        return reply

    async def block_many(
        self, timeout: float, commands: Sequence[Command], *, abandoned: Abandoned | None = None
    ) -> builtins.list[Any]:
        """A blocking command and the commands the server runs right after it, in one
        pipeline on a blocking connection; replies as :meth:`execute` returns them.

        If the caller is cancelled while it waits, ``abandoned`` (when given) gets the
        replies in the background: what the later commands did is not lost.
        """
        self._follow_loop()
        data = b"".join(map(_pack, commands))
        async with asyncio.timeout(timeout + _BLOCK_SLACK):
            return await self._execute_blocking(data, len(commands), abandoned)

    def __repr__(self) -> str:
        return f"RedisConnection({self._where!r}, namespace={self.namespace!r})"
