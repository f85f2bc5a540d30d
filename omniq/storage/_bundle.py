"""A backend's four components on one shared connection.

Each backend package declares a :class:`BackendSpec`: its connection class and its
component classes. :class:`Bundle` builds them for a URL, sharing one connection (a
backend's bundle names its component classes as type arguments, so that its accessors
are typed); the registry (:mod:`omniq.storage.registry`) picks the spec by the URL's
scheme.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from omniq.config import Settings
from omniq.storage._connection import Connection
from omniq.storage.base import (
    BaseEventStorage,
    BaseResultStorage,
    BaseScheduleStorage,
    BaseTaskQueue,
)

__all__ = ["AnyBundle", "BackendSpec", "Bundle", "Components"]

Q = TypeVar("Q", bound=BaseTaskQueue, covariant=True)
R = TypeVar("R", bound=BaseResultStorage, covariant=True)
E = TypeVar("E", bound=BaseEventStorage, covariant=True)
S = TypeVar("S", bound=BaseScheduleStorage, covariant=True)


class Components(Protocol):
    """What a client needs of a backend: its four components, on one connection."""

    def task_queue(self) -> BaseTaskQueue:
        """The task queue."""

    def result_storage(self) -> BaseResultStorage:
        """The result storage."""

    def event_storage(self) -> BaseEventStorage:
        """The event storage."""

    def schedule_storage(self) -> BaseScheduleStorage:
        """The schedule storage."""


@dataclass(frozen=True)
class BackendSpec:
    """What a backend is made of: a connection class and four component classes (each
    built as ``cls(url, settings, connection=...)``)."""

    name: str
    connection: type[Connection]
    task_queue: type[Any]
    result_storage: type[Any]
    event_storage: type[Any]
    schedule_storage: type[Any]


class Bundle(Generic[Q, R, E, S]):
    """The components of one backend on one connection or pool, of the classes ``Q``
    (task queue), ``R`` (results), ``E`` (events) and ``S`` (schedules).

    ``connect``/``close`` of a component take and give back a reference on the shared
    connection: it opens with the first component connected and closes with the last.

    Example::

        bundle = Bundle(SQLITE, "sqlite:///jobs.db", Settings())
        queue = bundle.task_queue()
        await queue.connect()
    """

    spec: BackendSpec

    def __init__(
        self,
        url: str | os.PathLike[str],
        settings: Settings | None = None,
        *,
        spec: BackendSpec | None = None,
    ) -> None:
        if spec is not None:
            self.spec = spec
        self.settings = settings if settings is not None else Settings()
        self.url = os.fspath(url)
        self.connection = self.spec.connection(self.url, self.settings)
        self._made: dict[str, Any] = {}

    def _component(self, name: str) -> Any:
        made = self._made.get(name)
        if made is None:
            cls = getattr(self.spec, name)
            made = self._made[name] = cls(self.url, self.settings, connection=self.connection)
        return made

    def task_queue(self) -> Q:
        """The task queue on the shared connection."""
        return cast(Q, self._component("task_queue"))

    def result_storage(self) -> R:
        """The result storage on the shared connection."""
        return cast(R, self._component("result_storage"))

    def event_storage(self) -> E:
        """The event storage on the shared connection."""
        return cast(E, self._component("event_storage"))

    def schedule_storage(self) -> S:
        """The schedule storage on the shared connection."""
        return cast(S, self._component("schedule_storage"))

    async def connect(self) -> None:
        """Take a reference on the shared connection (as a component's connect does)."""
        await self.connection.acquire()

    async def close(self) -> None:
        """Give back a reference taken by :meth:`connect`."""
        await self.connection.release()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.connection!r})"


#: A bundle of any backend.
AnyBundle = Bundle[BaseTaskQueue, BaseResultStorage, BaseEventStorage, BaseScheduleStorage]
