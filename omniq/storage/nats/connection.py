"""The connection to NATS that a backend's components share: the client, JetStream, the
buckets and streams of the namespace, and the errors translated.

:class:`NATSConnection` is the backend's :class:`~omniq.storage._connection.Connection`.
It opens one nats-py client per process (the components share it), checks that the
server runs JetStream, and makes the namespace's buckets and stream if they are missing.
Connecting fails fast, with one :class:`StorageConnectionError` naming what is wrong (a
malformed URL, no server answering, credentials refused, no JetStream); once connected
the client reconnects on its own, without limit, so workers carry on across a server
restart. A write whose reply was lost in a restart is checked before it is sent again
(:meth:`NATSConnection.cas`), so a repeated write never takes effect twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from omniq._loops import quietly
from omniq._tls import split_tls_options
from omniq._urls import split_namespace
from omniq.config import Settings
from omniq.errors import StorageConnectionError, StorageError, ValueTooLargeError
from omniq.storage._connection import Connection
from omniq.storage.nats._protocol import (
    abandon,
    describe,
    final,
    parse_header_lines,
    redact,
    sanitize,
    seq_of,
    servers_of,
    status_error,
    stopped,
)

__all__ = ["NATSConnection", "sanitize"]

T = TypeVar("T")
FIRST = asyncio.FIRST_COMPLETED

logger = logging.getLogger("omniq")

#: Seconds a JetStream request may take before it counts as lost.
_REQUEST_TIMEOUT = 5.0
#: How long a write keeps trying through a lost connection (a server restart) before
#: it gives up with StorageConnectionError.
_WRITE_PATIENCE = 30.0
#: "wrong last sequence": a compare-and-set that lost (nats-server's JSStreamWrongLastSequenceErrF).
_WRONG_LAST_SEQUENCE = (10071, 10164)
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"


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


class NATSConnection(Connection):
    """The nats-py client, the JetStream context and the namespace's buckets, shared by
    the components of one backend.

    ``nats://host:port`` (``tls://`` for TLS; several servers as
    ``nats://a:4222,b:4222``; ``user:password@`` or ``token@`` before the hosts). The
    TLS options (``tls_ca_file``…) come from the URL's query or ``storage_options``.
    Everything lives under the namespace: ``namespace`` when given, else the URL's
    ``?namespace=``, else ``settings.namespace``, made safe for NATS names
    (:func:`sanitize`).

    Example::

        connection = NATSConnection("nats://127.0.0.1:4222", Settings(namespace="myapp"))
        await connection.acquire()
        js = await connection.jetstream()
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
        url, self._tls = split_tls_options(url, settings.storage_options)
        super().__init__(url, settings)
        if namespace is None:
            namespace = settings.namespace if url_namespace is None else url_namespace
        self.namespace = namespace
        self.prefix = sanitize(namespace)
        self.tasks_bucket = f"{self.prefix}_tasks"
        self.results_bucket = f"{self.prefix}_results"
        self.schedules_bucket = f"{self.prefix}_schedules"
        self.workers_bucket = f"{self.prefix}_workers"
        #: Tasks' progress (``omniq.storage.nats._progress``), apart from their records.
        self.progress_bucket = f"{self.prefix}_progress"
        self.events_stream = f"{self.prefix}_events"
        self.events_subject = f"{self.prefix}.events"
        self._where = redact(url)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._opening: asyncio.Lock | None = None
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
        # Futures of reads that a lost connection ends (see scan()).
        self._on_disconnect: set[asyncio.Future[None]] = set()
        #: Called (without arguments) after the client reconnected to a server.
        self.on_reconnect: list[Callable[[], None]] = []
        #: What other modules keep per client (the task index): dropped with the client.
        self.state: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def _open(self) -> None:
        await self.jetstream()

    async def _close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        self._drop_state()
        if nc is not None:
            try:
                await nc.close()
            except Exception as exc:  # closing what already failed: nothing to report
                logger.debug("nats: closing %s: %s", self._where, exc)

    def _forget_loop(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        self._opening = None
        # The old loop's requests end with it; its timer never fires again.
        self._deadlines.clear()
        self._sweeper = None
        self._drop_state()
        if nc is not None:
            abandon(nc)

    async def _release_loop(self) -> None:
        await self._close()

    def _drop_state(self) -> None:
        for value in self.state.values():
            close = getattr(value, "drop", None)
            if close is not None:
                quietly(close)
        self.state.clear()
        self.on_reconnect.clear()
        self._reply_prefix = None
        self._replies = {}

    async def jetstream(self) -> JetStreamContext:
        """The JetStream context, connecting (and making the buckets) on first use or
        on a new event loop."""
        if self._bound.loop is not asyncio.get_running_loop():
            self._follow_loop()
        js = self._js
        if js is not None:
            if not stopped(self._nc):
                return js
            # Its loop is ending (asyncio.run cancelled every task, nats-py's reader
            # among them) while a task still writes on its way out (the event writer's
            # last flush): a client of its own does that write.
            self._forget_loop()
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._js is None:
                await self._connect()
            assert self._js is not None
            return self._js

    async def client(self) -> Client:
        """The nats-py client (connected)."""
        await self.jetstream()
        assert self._nc is not None
        return self._nc

    async def _connect(self) -> None:
        servers, problem = servers_of(self.url)
        if problem is not None:
            raise StorageConnectionError(f"nats: bad URL {self._where!r}: {problem}")
        options: dict[str, Any] = {}
        if self._tls.given or servers[0].startswith("tls://"):
            options["tls"] = self._tls.context()
        user = urlsplit(servers[0])
        if user.username and not user.password:
            options["token"] = unquote(user.username)

        failures: list[Exception] = []
        refusal: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

        async def quiet(exc: Exception) -> None:
            # nats-py reports each failed attempt here, then raises NoServersError: the
            # attempts say what was wrong (refused, authorization, an unknown host).
            failures.append(exc)
            if final(exc) and not refusal.done():
                refusal.set_result(exc)
            logger.debug("nats: %s: %s", self._where, exc)

        async def disconnected() -> None:
            for future in list(self._on_disconnect):
                if not future.done():
                    future.set_result(None)

        async def reconnected() -> None:
            logger.info("nats: reconnected to %s", self._where)
            for hook in list(self.on_reconnect):
                hook()

        # Fail fast while connecting: each server twice, a tenth of a second apart, and
        # not at all again after a refusal that would only repeat (a certificate, an
        # authorization), which nats-py would otherwise retry without a time limit.
        attempt = asyncio.ensure_future(
            nats.connect(
                servers=servers,
                connect_timeout=2,
                reconnect_time_wait=0.1,
                max_reconnect_attempts=1,
                error_cb=quiet,
                reconnected_cb=reconnected,
                disconnected_cb=disconnected,
                **options,
            )
        )
        # Two tries per server of at most connect_timeout each, and some slack.
        limit = 5.0 + 4.5 * len(servers)
        racing: set[asyncio.Future[Any]] = {attempt, refusal}
        done, _ = await asyncio.wait(racing, timeout=limit, return_when=FIRST)
        if attempt not in done:
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt
            cause = refusal.result() if refusal in done else (failures or [TimeoutError()])[-1]
            raise StorageConnectionError(
                f"nats: cannot connect to {self._where}: {describe(cause)}"
            )
        try:
            nc = attempt.result()
        except nats.errors.NoServersError as exc:
            # A refused authorization says the most (the server then resets the retry).
            refused = [e for e in failures if final(e)]
            cause = (refused or failures or [exc])[-1]
            raise StorageConnectionError(
                f"nats: cannot connect to {self._where}: {describe(cause)}"
            ) from exc
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise StorageConnectionError(
                f"nats: cannot connect to {self._where}: {describe(exc)}"
            ) from exc
        if hasattr(nc, "_parse_header_lines"):  # nats-py's own parser, see parse_header_lines
            nc._parse_header_lines = parse_header_lines  # type: ignore[method-assign]
        # Connected: from now on a lost server is waited for, however long it takes.
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = 0.25
        js = nc.jetstream(timeout=_REQUEST_TIMEOUT)
        try:
            await js.account_info()
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
            await nc.close()
            raise StorageConnectionError(
                f"nats: the server at {self._where} has no JetStream (start it with "
                "nats-server -js): OmniQ keeps its tasks in JetStream"
            ) from exc
        except (TimeoutError, nats.errors.Error) as exc:
            await nc.close()
            raise StorageConnectionError(f"nats: {self._where}: {describe(exc)}") from exc
        try:
            await self._make_streams(js)
        except BaseException:
            await nc.close()
            raise
        self._replies = {}
        self._reply_prefix = await self._listen_for_replies(nc)
        self._nc, self._js = nc, js
        await self._bound.watch()

    async def _make_streams(self, js: JetStreamContext) -> None:
        """The namespace's buckets and its event stream (kept as they are when they
        exist)."""
        made = [
            self._bucket_config(self.tasks_bucket),
            self._bucket_config(self.results_bucket),
            self._bucket_config(self.schedules_bucket),
            self._bucket_config(self.workers_bucket),
            self._bucket_config(self.progress_bucket),
            api.StreamConfig(
                name=self.events_stream,
                subjects=[f"{self.events_subject}.>"],
                storage=api.StorageType.FILE,
                allow_direct=True,
                max_msgs=-1,
                max_bytes=-1,
                discard=api.DiscardPolicy.OLD,
            ),
        ]
        for config in made:
            assert config.name is not None
            try:
                await js.stream_info(config.name)
            except nats.js.errors.NotFoundError:
                try:
                    await js.add_stream(config)
                except nats.js.errors.BadRequestError as exc:
                    if exc.err_code != 10058:  # made by another process meanwhile
                        raise StorageError(f"nats: creating {config.name}: {exc}") from exc
            except (TimeoutError, nats.errors.Error) as exc:
                raise StorageConnectionError(
                    f"nats: {self._where}: reading stream {config.name}: {describe(exc)}"
                ) from exc

    @staticmethod
    def _bucket_config(bucket: str) -> api.StreamConfig:
        # What nats-py's create_key_value makes, without the fields nats-server 2.9 lacks.
        return api.StreamConfig(
            name=f"KV_{bucket}",
            subjects=[f"$KV.{bucket}.>"],
            allow_direct=True,
            allow_rollup_hdrs=True,
            deny_delete=True,
            discard=api.DiscardPolicy.NEW,
            duplicate_window=120.0,
            max_msgs=-1,
            max_bytes=-1,
            max_msgs_per_subject=1,
            storage=api.StorageType.FILE,
        )

    def stream_names(self) -> list[str]:
        """Every stream this namespace uses (the buckets' and the events')."""
        return [
            f"KV_{self.tasks_bucket}",
            f"KV_{self.results_bucket}",
            f"KV_{self.schedules_bucket}",
            f"KV_{self.workers_bucket}",
            f"KV_{self.progress_bucket}",
            self.events_stream,
        ]

    # -- requests ------------------------------------------------------------------------

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

    async def patiently(self, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()``, again through a lost connection or a JetStream still
        starting (a server restart) for up to ``_WRITE_PATIENCE`` seconds; other errors,
        and the last one, as OmniQ's. For reads and writes that are safe to repeat."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _WRITE_PATIENCE
        while True:
            try:
                return await call()
            except nats.js.errors.APIError as exc:
                if not isinstance(exc, nats.js.errors.ServiceUnavailableError):
                    raise self.error(doing, exc) from exc
                failure: BaseException = exc
            except nats.errors.MaxPayloadError as exc:
                raise self.error(doing, exc) from exc
            except (TimeoutError, nats.errors.Error, OSError, StorageConnectionError) as exc:
                failure = exc
            if loop.time() > deadline:
                raise self.error(doing, failure) from failure
            await asyncio.sleep(0.1)

    async def get_last(self, stream: str, subject: str) -> tuple[int, bytes | None]:
        """The last message on ``subject`` as ``(revision, data)``: ``(0, None)`` when
        there is none, ``(revision, None)`` when it is a delete or purge marker."""
        msg = await self.patiently(
            f"reading {subject}",
            lambda: self.request(f"$JS.API.DIRECT.GET.{stream}.{subject}", b""),
        )
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":
            return 0, None
        if status is not None:
            raise self.error(f"reading {subject}", status_error(headers))
        revision = int(headers.get("Nats-Sequence", 0))
        if headers.get("KV-Operation") in ("DEL", "PURGE"):
            return revision, None
        return revision, msg.data

    async def cas(self, subject: str, stream: str, data: bytes, last: int) -> int | None:
        """Publish ``data`` on ``subject`` if its last message is still revision ``last``
        (0: none, or a delete marker when ``last`` is that marker's revision); the new
        revision, or None when another write came first.

        A reply lost with the connection is not taken for a failure: the subject is read
        again, and the write counts as done when it holds ``data``, or is sent again when
        it still holds revision ``last``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _WRITE_PATIENCE
        headers = {EXPECTED_LAST: str(last)}
        while True:
            try:
                return seq_of(await self.request(subject, data, headers))
            except nats.js.errors.APIError as exc:
                if exc.err_code in _WRONG_LAST_SEQUENCE:
                    return None
                if not isinstance(exc, nats.js.errors.ServiceUnavailableError):
                    raise self.error(f"writing {subject}", exc) from exc
                failure: BaseException = exc
            except nats.errors.MaxPayloadError as exc:
                raise self.error(f"writing {subject}", exc) from exc
            except (TimeoutError, nats.errors.Error, OSError, StorageConnectionError) as exc:
                failure = exc
            if loop.time() > deadline:
                raise self.error(f"writing {subject}", failure) from failure
            await asyncio.sleep(0.1)
            try:
                revision, current = await self.get_last(stream, subject)
            except StorageConnectionError:
                continue
            if current == data and revision != last:
                return revision
            if revision != last:
                return None

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> int:
        """Publish ``data`` on ``subject`` (a JetStream subject); its sequence. Sent
        again through a lost connection (a server restart): give ``headers`` a
        ``Nats-Msg-Id`` where a second copy would matter, and the server drops it."""

        async def send() -> int:
            return seq_of(await self.request(subject, data, headers))

        return await self.patiently(f"writing {subject}", send)

    async def scan(self, stream: str, subject: str, *, last_per_subject: bool) -> list[Msg]:
        """Every message on ``subject`` (a wildcard may match many) in stream order, or
        only the last of each subject: an ordered consumer read to its end."""
        js = await self.jetstream()
        found: list[Msg] = []
        done = asyncio.Event()

        async def take(msg: Msg) -> None:
            found.append(msg)
            if msg.metadata.num_pending == 0:
                done.set()

        policy = api.DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else api.DeliverPolicy.ALL
        try:
            sub = await js.subscribe(
                subject, stream=stream, cb=take, ordered_consumer=True, deliver_policy=policy
            )
        except Exception as exc:
            raise self.error(f"reading {subject}", exc) from exc
        lost = asyncio.get_running_loop().create_future()
        self._on_disconnect.add(lost)
        try:
            info = await sub.consumer_info()
            if info.num_pending or (info.delivered and info.delivered.consumer_seq):
                # The consumer goes with a lost connection (a server restart): then the
                # read fails at once, and its caller tries again later.
                waiting = asyncio.ensure_future(done.wait())
                finished, _ = await asyncio.wait(
                    {waiting, lost}, timeout=_REQUEST_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
                )
                waiting.cancel()
                if waiting not in finished:
                    raise (
                        nats.errors.TimeoutError
                        if not finished
                        else nats.errors.ConnectionClosedError
                    )
        except Exception as exc:
            raise self.error(f"reading {subject}", exc) from exc
        finally:
            self._on_disconnect.discard(lost)
            try:
                await sub.unsubscribe()
            except Exception as exc:
                logger.debug("nats: unsubscribing from %s: %s", subject, exc)
        return found

    async def purge_key(self, bucket: str, key: str) -> None:
        """Purge a bucket's key (a purge marker that watchers see)."""
        await self.publish(
            f"$KV.{bucket}.{key}", b"", {"KV-Operation": "PURGE", "Nats-Rollup": "sub"}
        )

    async def delete_streams(self) -> None:
        """Delete every stream and bucket of the namespace (tests, and ``omniq`` tools)."""
        js = await self.jetstream()
        for name in self.stream_names():
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)

    def __repr__(self) -> str:
        return f"NATSConnection({self._where!r}, namespace={self.namespace!r})"
