"""A lean asyncio Redis connection: RESP2 over an ``asyncio.Protocol``, parsed by hiredis.

Why not redis-py's asyncio client: per round trip it costs more Python than the round
trip itself costs on loopback (stream reader, locks, per-command parsing), and a worker
makes a few round trips per task. Here a request is one ``transport.write`` of commands
hiredis packed, and ``data_received`` hands whole replies to a FIFO of waiting futures.
Several requests may be in flight on one connection at once (pipelining by arrival
order), so one connection serves every ordinary command of a process; blocking commands
(``BLPOP``) get connections of their own.

Error replies are returned as :class:`ResponseError` instances (a ``NOSCRIPT`` one as
:class:`NoScriptError`), never raised, so a pipeline always yields every reply. A lost
connection fails its pending requests with :class:`RespConnectionError`; reconnecting is
the caller's choice. A TLS handshake that cannot succeed (a certificate refused, or a
server that answers in plain text) is a :class:`RespTLSError`, which trying again will
not mend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from omniq._loops import abort_transport
from omniq._tls import TLSOptions
from omniq._urls import redact_url
from omniq.errors import ConfigError

__all__ = [
    "REDIS_TLS_ALIASES",
    "NoScriptError",
    "RespConnection",
    "RespConnectionError",
    "RespEndpoint",
    "RespTLSError",
    "ResponseError",
    "parse_redis_url",
]


class RespConnectionError(ConnectionError):
    """The connection failed or was lost; requests still pending on it are lost too."""


class RespTLSError(RespConnectionError):
    """The TLS handshake failed in a way that trying again will not mend."""


#: How long a TLS handshake may go unanswered before a second, plain connection asks the
#: server whether it speaks plain-text RESP. A plain-text Redis sent a TLS ClientHello
#: waits for the end of a line that never comes, so the handshake would only end with the
#: connect timeout; a real TLS server answers well within this, so it is never probed.
_PLAIN_PROBE_AFTER = 0.5


# Our own reply types rather than redis-py's: importing redis.exceptions imports the whole
# redis package (and, where installed, jwt and cryptography), about 0.1 s of every worker's
# start-up, for two classes.
class ResponseError(Exception):
    """An error reply from the server (``-ERR ...``), returned in the reply list."""


class NoScriptError(ResponseError):
    """A ``NOSCRIPT`` reply: the server does not hold the script (it restarted or flushed)."""


@dataclass(frozen=True)
class RespEndpoint:
    """Where and how to connect: from :func:`parse_redis_url`."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    connect_timeout: float = 5.0


#: redis-py's names for the TLS options in a URL's query, taken as OmniQ's own
#: (:mod:`omniq._tls`), so a URL written for redis-py works as it is.
REDIS_TLS_ALIASES = dict(
    (  # (redis-py's name, OmniQ's): option names, no secret among them
        ("ssl_ca_certs", "tls_ca_file"),
        ("ssl_certfile", "tls_cert_file"),
        ("ssl_keyfile", "tls_key_file"),
        ("ssl_password", "tls_key_password"),
    )
)


def parse_redis_url(url: str, tls: TLSOptions | None = None) -> RespEndpoint:
    """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``unix:///path/to/socket?db=N``.

    ``tls`` holds the TLS options taken out of the URL and the settings
    (:func:`omniq._tls.split_tls_options`); they need ``rediss://``. redis-py's
    ``?ssl_cert_reqs=none`` (skip certificate checks) is taken as ``tls_verify=false``.
    """
    tls = tls or TLSOptions()
    try:
        parts = urlsplit(url)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        scheme = parts.scheme.lower()
        if scheme == "unix":
            db_text = query.get("db", "")
        else:
            db_text = query.get("db") or parts.path.lstrip("/")
        db = int(db_text) if db_text else 0
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        timeout = float(query.get("socket_connect_timeout", 5.0))
        if tls.given and scheme != "rediss":
            raise ValueError(
                "TLS options are set but the URL is not rediss://: the connection would be "
                "plain text; write rediss:// for a TLS server"
            )
        if scheme == "unix":
            if not parts.path:
                raise ValueError("no socket path")
            return RespEndpoint(
                path=parts.path,
                db=db,
                username=username,
                password=password,
                connect_timeout=timeout,
            )
        if scheme not in ("redis", "rediss"):
            raise ValueError(f"unknown scheme {parts.scheme!r} (expected redis, rediss or unix)")
        context = None
        if scheme == "rediss":
            if query.get("ssl_cert_reqs", "required").lower() == "none":
                tls = dataclasses.replace(tls, verify=False)
            context = tls.context()
        return RespEndpoint(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=db,
            username=username,
            password=password,
            tls=context,
            connect_timeout=timeout,
        )
    except ValueError as exc:
        # Never the password: the URL as shown in messages (a ConfigError from the TLS
        # files passes through as it is).
        raise ConfigError(f"redis URL {redact_url(url)!r}: {exc}") from exc


async def _answers_in_plain_text(host: str, port: int) -> bool:
    """True when the server at ``host:port`` answers a plain-text ``PING`` in RESP (a
    status or an error reply). Anything else (a TLS alert, silence, a refusal) is False."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        first = await reader.read(1)
    except OSError:
        return False
    finally:
        writer.close()
    return first in (b"+", b"-")


def _drop_outcome(attempt: asyncio.Future[Any]) -> None:
    """Close the connection of an abandoned connect attempt, or retrieve its error."""
    if attempt.cancelled():
        return
    if attempt.exception() is None:
        transport, _ = attempt.result()
        transport.abort()


def _reply_error(message: str) -> ResponseError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class _Request:
    __slots__ = ("count", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []


class RespConnection(asyncio.Protocol):
    """One connection to a Redis server. Build it with :meth:`open`.

    Example::

        conn = await RespConnection.open(parse_redis_url("redis://127.0.0.1:6379/0"))
        [pong] = await conn.request(hiredis.pack_command(("PING",)), 1)
    """

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=_reply_error)
        self._pending: deque[_Request] = deque()
        # The replies of the last request answered after it was cancelled (see reattach).
        self._dropped: _Request | None = None
        self._transport: asyncio.Transport | None = None
        self._lost: BaseException | None = None
        #: The server's id for this connection (``CLIENT ID``), when asked for at open.
        self.client_id: int | None = None

    @classmethod
    async def open(cls, endpoint: RespEndpoint, *, client_id: bool = False) -> RespConnection:
        """Connect, authenticate and select the database; with ``client_id``, also learn
        the connection's id (so another connection can ``CLIENT UNBLOCK`` it)."""
        loop = asyncio.get_running_loop()
        where = endpoint.path or f"{endpoint.host}:{endpoint.port}"
        try:
            async with asyncio.timeout(endpoint.connect_timeout):
                if endpoint.path is not None:
                    _, conn = await loop.create_unix_connection(cls, endpoint.path)
                elif endpoint.tls is None:
                    _, conn = await loop.create_connection(cls, endpoint.host, endpoint.port)
                else:
                    conn = await cls._open_tls(endpoint, where)
        except RespTLSError:
            raise
        except ssl.SSLCertVerificationError as exc:  # the server's certificate: say why
            raise RespTLSError(
                f"TLS handshake with {where} failed: certificate verify failed: "
                f"{exc.verify_message} (check tls_ca_file, and that the URL's host is a name "
                "the certificate holds)"
            ) from exc
        except ssl.SSLError as exc:
            raise RespTLSError(f"TLS handshake with {where} failed: {exc.reason or exc}") from exc
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):  # its text is empty
                reason = f"no connection within {endpoint.connect_timeout:g} s"
                if endpoint.tls is not None:
                    reason += " (TCP connect and TLS handshake)"
            else:
                reason = str(exc) or type(exc).__name__
            raise RespConnectionError(f"cannot connect to {where}: {reason}") from exc
        handshake: list[tuple[Any, ...]] = []
        if endpoint.password is not None:
            if endpoint.username:
                handshake.append(("AUTH", endpoint.username, endpoint.password))
            else:
                handshake.append(("AUTH", endpoint.password))
        if endpoint.db:
            handshake.append(("SELECT", endpoint.db))
        if client_id:
            handshake.append(("CLIENT", "ID"))
        if handshake:
            data = b"".join(hiredis.pack_command(command) for command in handshake)
            try:
                replies = await conn.request(data, len(handshake))
            except BaseException:  # cancelled or lost mid-handshake: do not leak it
                conn.close()
                raise
            errors = [reply for reply in replies if isinstance(reply, ResponseError)]
            if errors:
                conn.close()
                raise errors[0]
            if client_id:
                conn.client_id = int(replies[-1])
        return conn

    @classmethod
    async def _open_tls(cls, endpoint: RespEndpoint, where: str) -> RespConnection:
        """Connect with TLS; a handshake left unanswered for a moment has the server
        asked, on a plain connection, whether it speaks plain text (then: RespTLSError)."""
        loop = asyncio.get_running_loop()
        attempt = loop.create_task(
            loop.create_connection(cls, endpoint.host, endpoint.port, ssl=endpoint.tls)
        )
        try:
            done, _ = await asyncio.wait({attempt}, timeout=_PLAIN_PROBE_AFTER)
            if not done:
                probe = loop.create_task(_answers_in_plain_text(endpoint.host, endpoint.port))
                try:
                    await asyncio.wait({attempt, probe}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    probe.cancel()
                plain = probe.done() and not probe.cancelled() and probe.result()
                if plain and not attempt.done():
                    raise RespTLSError(
                        f"TLS handshake with {where} failed: the server answered in plain "
                        "text, so it does not speak TLS on this port (use redis:// for it, "
                        "or the port where it serves TLS)"
                    )
            _, conn = await attempt
            return conn
        finally:
            if not attempt.done():
                attempt.cancel()
                attempt.add_done_callback(_drop_outcome)

    @property
    def is_closed(self) -> bool:
        """True once the connection was closed or lost."""
        return self._transport is None or self._lost is not None

    def request(self, data: bytes, count: int) -> asyncio.Future[list[Any]]:
        """Send packed commands; the future gets their ``count`` replies in order."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if self._lost is not None or self._transport is None:
            future.set_exception(RespConnectionError(f"connection lost: {self._lost}"))
            return future
        self._pending.append(_Request(future, count))
        self._transport.write(data)
        return future

    def reattach(self, future: asyncio.Future[list[Any]]) -> asyncio.Future[list[Any]] | None:
        """A fresh future for the replies of the request ``future`` was returned for
        (after ``future`` was cancelled), or None when that request is not pending.

        Replies that arrived between the cancel and this call (read in the same loop
        turn as the cancel) are not lost: the fresh future already holds them."""
        for request in self._pending:
            if request.future is future:
                request.future = asyncio.get_running_loop().create_future()
                return request.future
        dropped = self._dropped
        if dropped is not None and dropped.future is future:
            self._dropped = None
            answered: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            answered.set_result(dropped.replies)
            return answered
        return None

    def close(self) -> None:
        """Close now; pending requests fail with :class:`RespConnectionError`."""
        try:
            self._fail(RespConnectionError("closed"))
        finally:
            transport, self._transport = self._transport, None
            if transport is not None:
                abort_transport(transport)  # also when its loop has closed

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports implement the interface without
        # subclassing asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RespConnectionError(f"protocol error: {exc}"))
                self.close()
                return
            if reply is False:
                return
            if not pending:  # a reply nobody asked for: the stream is out of step
                self._fail(RespConnectionError("unexpected reply"))
                self.close()
                return
            request = pending[0]
            request.replies.append(reply)
            if len(request.replies) == request.count:
                pending.popleft()
                if not request.future.done():
                    request.future.set_result(request.replies)
                elif request.future.cancelled():
                    # Kept for reattach: the canceller may still want them.
                    self._dropped = request

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or RespConnectionError("closed")
        self._fail(RespConnectionError(f"connection lost: {exc or 'closed'}"))

    def _fail(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        pending, self._pending = self._pending, deque()
        for request in pending:
            if not request.future.done():
                request.future.set_exception(exc)
