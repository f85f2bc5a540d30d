"""What the four PostgreSQL components share: their connection class, and the namespace."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from omniq.config import Settings
from omniq.models import Task
from omniq.storage._component import Component
from omniq.storage._connection import Connection
from omniq.storage._rows import task_from_row
from omniq.storage.postgres.connection import PostgresConnection

__all__ = ["ENCODER", "PostgresComponent", "task_of_row"]

ENCODER = msgspec.msgpack.Encoder()


def task_of_row(row: Sequence[Any]) -> Task:
    """The task of a task row (see :mod:`omniq.storage._rows`)."""
    return task_from_row(row, "postgres")


class PostgresComponent(Component[PostgresConnection]):
    """A component on a :class:`PostgresConnection`.

    Built alone, ``AsyncPostgresQueue(url, settings, namespace=None)`` opens its own pool;
    ``namespace`` (when given) wins over ``settings.namespace``, and a ``?namespace=`` in
    the URL over both. Built by :class:`~omniq.storage.postgres.PostgresBackend`, it shares
    the bundle's connection.
    """

    connection_class: ClassVar[type[Connection]] = PostgresConnection

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        *,
        namespace: str | None = None,
        connection: PostgresConnection | None = None,
    ) -> None:
        if connection is None and namespace is not None:
            settings = settings if settings is not None else Settings()
            target = self.default_url(settings) if url is None else url
            connection = PostgresConnection(target, settings, namespace=namespace)
        super().__init__(url, settings, connection=connection)

    @classmethod
    def default_url(cls, settings: Settings) -> str:
        """``settings.postgres_url``."""
        return settings.postgres_url

    @property
    def namespace(self) -> str:
        """The namespace, which names the schema the tables live in."""
        return self.connection.namespace
