"""A loopback TCP proxy for tests that cut a client's connection at an exact byte.

Sits between a client and a real server on the test's event loop. Once armed with
:meth:`CuttingProxy.cut_after`, it forwards that many more bytes in one direction, then
aborts every connection it carries (the client sees a reset, the server a vanished
client), exactly once; connections made afterwards pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

__all__ = ["CuttingProxy"]

_CHUNK = 64 * 1024


class CuttingProxy:
    """``127.0.0.1:port`` forwarding to ``target``; see the module docstring.

    Example::

        async with CuttingProxy(("127.0.0.1", 6379)) as proxy:
            url = f"redis://127.0.0.1:{proxy.port}/0"
            proxy.cut_after(100_000, upstream=True)
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        #: Connections accepted, and cuts made.
        self.connections = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._budget: int | None = None
        self._upstream = True
        self._on_cut: Callable[[], None] | None = None

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for client, server in list(self._links):
            client.transport.abort()
            server.transport.abort()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    def cut_after(
        self, count: int, *, upstream: bool, on_cut: Callable[[], None] | None = None
    ) -> None:
        """Forward ``count`` more bytes client to server (``upstream``) or server to
        client, then cut every connection; ``on_cut`` is called just before the cut."""
        self._budget, self._upstream, self._on_cut = count, upstream, on_cut

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        link = (client_w, server_w)
        self._links.add(link)
        for reader, writer, upstream in ((client_r, server_w, True), (server_r, client_w, False)):
            pump = asyncio.create_task(self._pump(reader, writer, upstream, link))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: bool,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if self._budget is not None and upstream is self._upstream:
                    if len(data) >= self._budget:
                        writer.write(data[: self._budget])
                        with contextlib.suppress(ConnectionError):
                            await writer.drain()
                        self._cut()
                        return
                    self._budget -= len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side gone: the other goes too, as with a real broken connection.
            self._links.discard(link)
            for side in link:
                side.transport.abort()

    def _cut(self) -> None:
        self._budget = None
        self.cuts += 1
        if self._on_cut is not None:
            self._on_cut()
        for client, server in list(self._links):
            client.transport.abort()
            server.transport.abort()
        self._links.clear()
