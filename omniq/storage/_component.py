"""The lifecycle every storage component shares, written once.

A component (a backend's queue, result storage, event storage or schedule storage)
holds a :class:`~omniq.storage._connection.Connection`: its own, built from a URL, or
the one its bundle shares among its components. ``connect`` takes a reference on it and
``close`` gives it back; :meth:`Component.shares_connection` says whether another
component is on the same connection, which is what lets one write span components
(tasks with their events, results with their acks). :class:`QueueComponent` is the
task queue that makes those writes atomic, written once: a backend supplies the atomic
steps themselves.
"""

from __future__ import annotations

import builtins
import os
from typing import Any, ClassVar, Generic, Self, TypeVar

from omniq.config import Settings
from omniq.models import Task
from omniq.storage._connection import Connection
from omniq.storage.base import (
    BaseEventStorage,
    BaseResultStorage,
    BaseStorage,
    BaseTaskQueue,
)

__all__ = ["Component", "Finished", "QueueComponent"]

C = TypeVar("C", bound=Connection)


class Component(BaseStorage, Generic[C]):
    """A storage component on a backend's connection.

    Built alone, ``Component(url, settings)`` (or ``Component.from_url(url)``) makes its
    own connection from ``url`` (None: the backend's default under ``settings``); built by
    a bundle, it is given the bundle's ``connection``. ``settings`` default to
    ``Settings()``.
    """

    #: The backend's connection class, built for a component made alone.
    connection_class: ClassVar[type[Connection]]

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        *,
        connection: C | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        if connection is None:
            target = self.default_url(self.settings) if url is None else url
            connection = self.connection_class(target, self.settings)  # type: ignore[assignment]
        assert connection is not None
        self.connection: C = connection
        self._connected = False

    @classmethod
    def from_url(cls, url: str | os.PathLike[str], settings: Settings | None = None) -> Self:
        """A component on its own connection to ``url`` (not yet connected)."""
        return cls(url, settings)

    @classmethod
    def default_url(cls, settings: Settings) -> str:
        """The URL of a component built without one (the backend's default store)."""
        raise TypeError(f"{cls.__name__} needs a url")

    @property
    def url(self) -> str:
        """The URL of this component's connection."""
        return self.connection.url

    @property
    def connected(self) -> bool:
        """True between ``connect()`` and ``close()``."""
        return self._connected

    async def connect(self) -> None:
        """Take a reference on the connection (opening it if first). Safe to call twice."""
        if self._connected:
            return
        await self.connection.acquire()
        self._connected = True

    async def close(self) -> None:
        """Give the reference back (closing the connection if last). Safe to call twice."""
        if not self._connected:
            return
        self._connected = False
        await self.connection.release()

    async def _conn(self) -> C:
        """The connection, connecting first if needed (first use connects)."""
        if not self._connected:
            await self.connect()
        return self.connection

    def shares_connection(self, other: Any) -> bool:
        """True when ``other`` is a component on this same connection: one write (one
        transaction, one script) can then span the two."""
        return isinstance(other, Component) and other.connection is self.connection

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.connection!r})"


#: What :meth:`BaseTaskQueue.finish` returns: per item whether its ack took effect, and
#: the dependents of the acknowledged tasks.
Finished = tuple[builtins.list[bool], dict[str, builtins.list[Task]]]


class QueueComponent(Component[C], BaseTaskQueue):
    """A backend's task queue on its connection, writing across components atomically.

    Where the backend's event log (and result storage) are on this same connection,
    :class:`BaseTaskQueue` stores new tasks with their events (:meth:`_enqueue_with_events`) and
    finishes tasks with their results and events (:meth:`_finish_together`) in one
    transaction or script, which the backend implements; with components elsewhere it
    takes its generic steps.
    """

    #: The backend's result and event storage classes: instances of them on this
    #: connection are what the atomic steps write to.
    result_storage_class: ClassVar[type[BaseResultStorage]]
    event_storage_class: ClassVar[type[BaseEventStorage]]
    #: True when :meth:`_enqueue_with_events` stores tasks with their events in the same call; else
    #: enqueued events go through the client's event logger.
    enqueues_with_events: ClassVar[bool] = False

    def on_this_connection(self, storage: object, kind: type[BaseStorage]) -> bool:
        """True when ``storage`` is a ``kind`` on this queue's connection."""
        return isinstance(storage, kind) and self.shares_connection(storage)

    def writes_events(self, event_storage: BaseEventStorage) -> bool:
        """True when ``event_storage`` is the backend's event log on this connection and
        the backend stores tasks with their events in one call."""
        return self.enqueues_with_events and self.finish_logs_events(event_storage)

    def finish_logs_events(self, event_storage: BaseEventStorage) -> bool:
        """True when ``event_storage`` is the backend's event log on this connection."""
        return self.on_this_connection(event_storage, self.event_storage_class)

    def finishes_together(self, result_storage: BaseResultStorage) -> bool:
        """True when ``result_storage`` is the backend's on this connection."""
        return self.on_this_connection(result_storage, self.result_storage_class)
