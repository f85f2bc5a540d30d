"""JetStream requests on one nats-py client: the layer every read and write of the
NATS backend goes through.

A request is a publish with a reply subject; its reply ends a future. Leaner than
nats-py's own ``request``: one wildcard subscription takes every reply (routed from the
client's reader to the request's future by the token after the prefix, see
:class:`_Router`), tokens come from a counter, and one timer sweeps the requests past
``_REQUEST_TIMEOUT`` instead of a timer per request. :class:`RequestingConnection` holds
that state beside the client; :mod:`omniq.storage.nats._kv` builds the key-value reads
and writes on it, :mod:`omniq.storage.nats.connection` the connecting.
"""

from __future__ import annotations

import asyncio
import collections
import os
import weakref
from abc import abstractmethod

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from omniq.config import Settings
from omniq.errors import StorageConnectionError, StorageError, ValueTooLargeError
from omniq.storage._connection import Connection
from omniq.storage.nats._protocol import describe, redact, stopped

__all__ = ["RequestingConnection"]

#: Seconds a JetStream request may take before it counts as lost.
_REQUEST_TIMEOUT = 5.0


class _Router:
    """Routes each reply to the future of its request, by the token after the prefix;
    quacks like the future nats-py sets a request's reply on (see _listen_for_replies)."""

    __slots__ = ("_replies", "_start")

    def __init__(self, replies: dict[str, asyncio.Future[Msg]], start: int) -> None:
        self._replies = replies
        self._start = start

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def set_result(self, msg: Msg) -> None:
        future = self._replies.pop(msg.subject[self._start :], None)
        if future is not None and not future.done():
            future.set_result(msg)


class RequestingConnection(Connection):
    """A :class:`~omniq.storage._connection.Connection` that sends JetStream requests
    on its nats-py client (see the module); :class:`~omniq.storage.nats.NATSConnection`
    connects it."""

    def __init__(self, url: str | os.PathLike[str], settings: Settings) -> None:
        super().__init__(url, settings)
        self._where = redact(self.url)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        # Requests in flight, by token (see request()).
        self._replies: dict[str, asyncio.Future[Msg]] = {}
        self._reply_prefix: str | None = None
        self._sent = 0
        # (deadline, token, future) of each request, in the order sent (so by
        # deadline; the future weakly held: answered ones go at once), and the one timer
        # that fails those still unanswered when due (see _expire). A closed client's
        # requests stay in it: they end as they would with a timer of their own.
        self._deadlines: collections.deque[tuple[float, str, weakref.ref[asyncio.Future[Msg]]]] = (
            collections.deque()
        )
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def max_payload(self) -> int:
        """The largest message the server takes (its ``max_payload``; nats-server's
        default of 1 MiB until connected)."""
        return self._nc.max_payload if self._nc is not None else 1024 * 1024

    @abstractmethod
    async def jetstream(self) -> JetStreamContext:
        """The JetStream context, connecting on first use or on a new event loop."""

    def error(self, doing: str, exc: BaseException) -> StorageError:
        """The OmniQ error for ``exc`` raised while ``doing``."""
        if isinstance(exc, nats.errors.MaxPayloadError):
            return ValueTooLargeError(f"nats: {doing}: {exc}")
        if isinstance(exc, nats.js.errors.APIError) and exc.err_code == 10054:
            return ValueTooLargeError(f"nats: {doing}: {exc}")
        if isinstance(
            exc,
            asyncio.TimeoutError
            | nats.errors.TimeoutError
            | nats.errors.ConnectionClosedError
            | nats.errors.NoRespondersError
            | nats.errors.StaleConnectionError
            | nats.js.errors.ServiceUnavailableError
            | OSError,
        ):
            return StorageConnectionError(f"nats: {self._where}: {doing}: {describe(exc)}")
        return StorageError(f"nats: {doing}: {describe(exc)}")

    async def _listen_for_replies(self, nc: Client) -> str:
        """The reply subject prefix of this client's requests (one subscription takes
        every reply: a request costs a publish and a dict entry, no subscription)."""
        prefix = f"{nc.new_inbox()}."
        start = len(prefix)
        replies = self._replies

        async def deliver(msg: Msg) -> None:
            _Router(replies, start).set_result(msg)

        sub = await nc.subscribe(f"{prefix}*", cb=deliver)
        # nats-py hands a subscription's messages to a task of its own through a queue
        # (a put, a get and a task switch per reply); a subscription with a ``_future``
        # (nats-py's own single-reply requests) gets each message set on it from the
        # reader at once: the router takes that path and wakes the request's future.
        sub._future = _Router(replies, start)  # type: ignore[assignment]
        return prefix

    async def request(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> Msg:
        """Send a request to JetStream and return its reply (raw: see :func:`_seq_of`).

        Leaner than nats-py's ``request``: no timer per call (one timer sweeps the
        requests past ``_REQUEST_TIMEOUT``, see :meth:`_expire`), no token from the
        system's random source, replies matched by a counter.
        """
        nc = self._nc
        loop = asyncio.get_running_loop()
        if nc is None or self._js is None or self._bound.loop is not loop or stopped(nc):
            await self.jetstream()
            nc = self._nc
            assert nc is not None
        if len(data) > nc.max_payload:
            raise ValueTooLargeError(
                f"nats: {subject}: {len(data):,} bytes, over the server's max_payload of "
                f"{nc.max_payload:,} bytes (raise max_payload in nats-server's configuration, "
                "or pass large values by reference)"
            )
        prefix = self._reply_prefix
        assert prefix is not None
        self._sent += 1
        token = str(self._sent)
        future: asyncio.Future[Msg] = loop.create_future()
        replies = self._replies
        replies[token] = future
        self._deadlines.append((loop.time() + _REQUEST_TIMEOUT, token, weakref.ref(future)))
        if self._sweeper is None:
            self._sweeper = loop.call_later(_REQUEST_TIMEOUT, self._expire)
        try:
            await nc.publish(subject, data, reply=prefix + token, headers=headers)
            return await future
        finally:
            replies.pop(token, None)

    def _expire(self) -> None:
        """Fail the requests whose reply is over ``_REQUEST_TIMEOUT`` late (TimeoutError,
        as a timer per request would), and come back for the next one due."""
        self._sweeper = None
        deadlines = self._deadlines
        if not deadlines:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        while deadlines and deadlines[0][0] <= now:
            _, token, ref = deadlines.popleft()
            future = ref()
            if future is not None and not future.done():
                self._replies.pop(token, None)
                future.set_exception(TimeoutError())
        if deadlines:
            self._sweeper = loop.call_later(deadlines[0][0] - now, self._expire)
