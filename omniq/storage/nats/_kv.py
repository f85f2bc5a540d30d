"""Reads and writes of keys and subjects on JetStream, as the NATS components use them.

A key-value bucket is a stream with one message per subject kept; a key's revision is
its last message's stream sequence. :class:`KeyValueConnection` reads a key's last
message directly (``$JS.API.DIRECT.GET``, no consumer), writes with compare-and-set on
the revision (``Nats-Expected-Last-Subject-Sequence``), and carries writes through a lost
connection (a server restart): a compare-and-set whose reply was lost is checked before
it is sent again (:meth:`KeyValueConnection.cas`), so it never takes effect twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from omniq.config import Settings
from omniq.errors import StorageConnectionError
from omniq.storage.nats import _requests
from omniq.storage.nats._protocol import seq_of, status_error
from omniq.storage.nats._requests import RequestingConnection

__all__ = ["EXPECTED_LAST", "KeyValueConnection"]

T = TypeVar("T")

logger = logging.getLogger("omniq")

#: How long a write keeps trying through a lost connection (a server restart) before
#: it gives up with StorageConnectionError.
_WRITE_PATIENCE = 30.0
#: "wrong last sequence": a compare-and-set that lost (nats-server's JSStreamWrongLastSequenceErrF).
_WRONG_LAST_SEQUENCE = (10071, 10164)
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"


class KeyValueConnection(RequestingConnection):
    """Key reads, compare-and-set writes, patient publishes and stream scans on the
    connection's client (see the module)."""

    def __init__(self, url: str | os.PathLike[str], settings: Settings) -> None:
        super().__init__(url, settings)
        # Futures of reads that a lost connection ends (see scan()).
        self._on_disconnect: set[asyncio.Future[None]] = set()

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
                    {waiting, lost},
                    timeout=_requests._REQUEST_TIMEOUT,
                    return_when=asyncio.FIRST_COMPLETED,
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
