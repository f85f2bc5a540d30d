"""What the four Redis components share: their client, its key prefix, connect and close."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from omniq.storage.base import BaseStorage
from omniq.storage.redis.connection import RedisClient, split_namespace

if TYPE_CHECKING:
    from omniq.backend.base import Backend


class _RedisComponent(BaseStorage):
    """Connection handling shared by the four components.

    Built from a URL, a component opens its own client on :meth:`connect`; built by a
    :class:`~omniq.backend.redis.RedisBackend`, it connects through the bundle.
    """

    def __init__(
        self,
        url: str | None = None,
        settings: Any = None,
        *,
        namespace: str | None = None,
        client: RedisClient | None = None,
        bundle: Backend | None = None,
    ) -> None:
        self.settings = settings
        if client is None:
            if url is None:
                url = getattr(settings, "redis_url", None) or "redis://127.0.0.1:6379/0"
            _, url_namespace = split_namespace(url)
            if namespace is None and url_namespace is None:
                namespace = getattr(settings, "namespace", None)
            client = RedisClient(url, namespace=namespace)
        self.url = url if url is not None else client.url
        self.client = client
        self._prefix = client.prefix
        self._bundle = bundle
        self._connected = False

    @property
    def namespace(self) -> str:
        """The key prefix (without its ``:``)."""
        return self.client.namespace

    async def connect(self) -> None:
        """Open the client (through the bundle when there is one). Safe to call twice."""
        if self._connected:
            return
        if self._bundle is not None:
            await self._bundle.connect()
        else:
            await self.client.open()
        self._connected = True

    async def close(self) -> None:
        """Release the client. Safe to call twice."""
        if not self._connected:
            return
        self._connected = False
        if self._bundle is not None:
            await self._bundle.close()
        else:
            await self.client.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def _client(self) -> RedisClient:
        if not self._connected or not self.client.is_open:
            await self.connect()
        return self.client

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client.url!r}, namespace={self.namespace!r})"
