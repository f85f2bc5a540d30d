"""The connection to NATS that a backend's components share: the client connected, the
buckets and streams of the namespace made, the client followed across event loops.

:class:`NATSConnection` is the backend's :class:`~omniq.storage._connection.Connection`.
It opens one nats-py client per process (the components share it), checks that the
server runs JetStream, and makes the namespace's buckets and stream if they are missing.
Connecting fails fast, with one :class:`StorageConnectionError` naming what is wrong (a
malformed URL, no server answering, credentials refused, no JetStream); once connected
the client reconnects on its own, without limit, so workers carry on across a server
restart.

What it does once connected is in the layers it builds on: JetStream requests on the
client (:mod:`omniq.storage.nats._requests`), and key reads, compare-and-set writes that
survive a lost reply, and stream scans (:mod:`omniq.storage.nats._kv`). The URL is read
and names made safe in :mod:`omniq.storage.nats._protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from omniq._loops import quietly
from omniq._tls import split_tls_options
from omniq._urls import split_namespace
from omniq.config import Settings
from omniq.errors import StorageConnectionError, StorageError
from omniq.storage.nats import _requests
from omniq.storage.nats._kv import KeyValueConnection
from omniq.storage.nats._protocol import (
    abandon,
    describe,
    final,
    parse_header_lines,
    sanitize,
    servers_of,
    stopped,
)

__all__ = ["NATSConnection", "sanitize"]

FIRST = asyncio.FIRST_COMPLETED

logger = logging.getLogger("omniq")


class NATSConnection(KeyValueConnection):
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
        self._opening: asyncio.Lock | None = None
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
        js = nc.jetstream(timeout=_requests._REQUEST_TIMEOUT)
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

    async def delete_streams(self) -> None:
        """Delete every stream and bucket of the namespace (tests, and ``omniq`` tools)."""
        js = await self.jetstream()
        for name in self.stream_names():
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)

    def __repr__(self) -> str:
        return f"NATSConnection({self._where!r}, namespace={self.namespace!r})"
