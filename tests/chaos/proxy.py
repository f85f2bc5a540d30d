"""A fault-injecting TCP proxy on loopback, between the workers and their server.

It runs its own event loop on a thread, so the runner's blocking steps never stall the
traffic. The runner cuts every connection at once (``drop_all``), one at random
(``drop_one``), or slows both directions (``set_latency``); clients reconnect through
the proxy to the same server, which may itself be restarted underneath.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["FaultProxy"]

T = TypeVar("T")


def _interim(data: bytes) -> bool:
    """An HTTP ``100 Continue`` alone: the request's body has not been sent yet."""
    return (
        data.startswith(b"HTTP/1.1 100 ")
        and data.endswith(b"\r\n\r\n")
        and data.count(b"\r\n\r\n") == 1
    )


class FaultProxy:
    """Listen on ``127.0.0.1:<port>`` and forward to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.latency = 0.0
        # cut_reply_once: the request marker to watch for, and the pair that sent it.
        self._reply_marker: bytes | None = None
        self._cut_pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter] | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> None:
        """Start listening on a free loopback port (``self.port``)."""
        self._thread.start()
        self._server = self._call(self._listen())
        self.port = self._server.sockets[0].getsockname()[1]

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()  # the server is down: the client sees a cut connection
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, pair),
                self._pipe(up_reader, writer, pair, reply=True),
                return_exceptions=True,
            )
        finally:
            self._pairs.discard(pair)
            for side in pair:
                side.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        *,
        reply: bool = False,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self.latency:
                    await asyncio.sleep(self.latency)
                if reply and self._cut_pair is pair and not _interim(data):
                    # The server has answered the marked request: the client never hears it.
                    self._cut_pair = None
                    await self._drop([pair])
                    return
                if not reply and self._reply_marker is not None and self._reply_marker in data:
                    self._reply_marker, self._cut_pair = None, pair
                writer.write(data)
                await writer.drain()
        finally:
            # Either side ending ends both: a half-open pair would hide a cut.
            writer.close()

    def connections(self) -> int:
        """How many client connections are open now."""
        return len(self._pairs)

    def drop_all(self) -> int:
        """Cut every open connection at once (a reset on both sides); return how many."""
        return self._call(self._drop(list(self._pairs)))

    def drop_one(self, rng: random.Random) -> int:
        """Cut one open connection chosen by ``rng`` (0 when none is open)."""
        pairs = sorted(self._pairs, key=lambda pair: pair[0].get_extra_info("peername")[1])
        return self._call(self._drop([rng.choice(pairs)] if pairs else []))

    async def _drop(self, pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]]) -> int:
        for pair in pairs:
            for side in pair:
                transport = side.transport
                with contextlib.suppress(Exception):
                    transport.abort()
        return len(pairs)

    def cut_reply_once(self, marker: bytes) -> None:
        """Let the next request containing ``marker`` reach the server, then cut its
        connection when the reply comes: the request took effect, its client saw a cut."""
        self._reply_marker = marker

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk forwarded in either direction by ``seconds`` (0: none)."""
        self.latency = seconds

    def stop(self) -> None:
        """Close the listener and every connection, and end the thread."""
        if self._server is not None:
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._drop(list(self._pairs))
