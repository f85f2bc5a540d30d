"""What the four Redis components share: their connection and its key prefix."""

from __future__ import annotations

import os

from omniq.config import Settings
from omniq.storage._component import Component
from omniq.storage.redis.connection import RedisConnection

__all__ = ["RedisComponent"]


class RedisComponent(Component[RedisConnection]):
    """A Redis component: on its own connection, or on its bundle's.

    Built alone (``AsyncRedisQueue(url)``), it makes its own :class:`RedisConnection` to
    ``url`` (None: ``settings.redis_url``); ``namespace`` then sets its key prefix, before
    the URL's ``?namespace=`` and ``settings.namespace``. Built by a
    :class:`~omniq.storage.redis.RedisBackend`, it is given the bundle's ``connection``.
    """

    connection_class = RedisConnection

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        *,
        namespace: str | None = None,
        connection: RedisConnection | None = None,
    ) -> None:
        if connection is None:
            settings = settings if settings is not None else Settings()
            target = self.default_url(settings) if url is None else url
            connection = RedisConnection(target, settings, namespace=namespace)
        elif namespace is not None:
            raise TypeError(
                "namespace= is for a component built alone: a shared connection has one"
            )
        super().__init__(url, settings, connection=connection)
        # Every call builds keys from it: one attribute read, not two.
        self._prefix = connection.prefix

    @classmethod
    def default_url(cls, settings: Settings) -> str:
        """``settings.redis_url``."""
        return settings.redis_url

    @property
    def namespace(self) -> str:
        """The key prefix (without its ``:``)."""
        return self.connection.namespace
