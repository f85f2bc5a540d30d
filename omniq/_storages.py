"""The storages a client works on: checked when it is built, opened when it connects.

Each of the three components (task queue, results, events) is a URL, a storage instance
(async, or its blocking twin) or None (from the settings); the schedule store follows
the task queue's backend. URLs of one backend share one bundle (one connection or
pool). What the client opened it closes; a storage instance it was given is connected
and closed by it too.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from omniq import _sync
from omniq.config import Settings
from omniq.errors import ConfigError, ScheduleError
from omniq.storage._bundle import Components
from omniq.storage.base import (
    BaseEventStorage,
    BaseResultStorage,
    BaseScheduleStorage,
    BaseStorage,
    BaseTaskQueue,
)
from omniq.storage.registry import bundle_for_url

__all__ = [
    "Component",
    "Storages",
    "checked_component",
    "checked_components",
    "client_settings",
    "misplaced_settings",
]

logger = logging.getLogger("omniq")

Component = Literal["task_queue", "result_storage", "event_storage"]

_KINDS: dict[Component, type[BaseStorage]] = {
    "task_queue": BaseTaskQueue,
    "result_storage": BaseResultStorage,
    "event_storage": BaseEventStorage,
}


def checked_component(component: Component, spec: Any) -> Any:
    """A storage argument checked at construction: a URL, None, False (events only) or
    a storage instance of the right kind; a blocking twin (``SQLiteQueue``) stands for
    the async instance it drives."""
    if spec is None or isinstance(spec, str):
        return spec
    if spec is False:
        if component == "event_storage":
            return spec
        raise ConfigError(f"argument {component}=False: only event_storage can be off")
    inner = _sync.twin_target(spec)
    if inner is not None:
        if _sync.twin_in_use(spec):
            # Its connections belong to its own loop; this client runs another.
            raise ConfigError(
                f"argument {component}={spec!r}: this {type(spec).__name__} is open on its "
                "own event loop; pass it unconnected (the client connects and closes it), "
                "or close it first"
            )
        spec = inner
    kind = _KINDS[component]
    if isinstance(spec, kind):
        return spec
    fits = [name for name, other in _KINDS.items() if isinstance(spec, other)]
    hint = f"; pass it as {fits[0]}=..." if fits else ""
    raise ConfigError(
        f"argument {component}={spec!r}: expected a URL, a {kind.__name__} instance "
        f"(async or blocking) or None{hint}"
    )


def misplaced_settings(value: object) -> ConfigError:
    """The error for a first positional argument that is not a ``Settings``."""
    target = _sync.twin_target(value)
    fits = [name for name, kind in _KINDS.items() if isinstance(target or value, kind)]
    if fits:
        hint = f"a storage goes by keyword: pass it as {fits[0]}=..."
    elif isinstance(value, str):
        hint = (
            "a URL goes by keyword: pass it as task_queue=..., result_storage=... "
            "or event_storage=..."
        )
    else:
        hint = "expected a Settings (or None); Settings fields can also be passed as keywords"
    return ConfigError(f"argument settings={value!r}: {hint}")


def checked_components(
    task_queue: Any, result_storage: Any, event_storage: Any
) -> dict[Component, Any]:
    """A client's three storage arguments, each checked by :func:`checked_component`."""
    return {
        "task_queue": checked_component("task_queue", task_queue),
        "result_storage": checked_component("result_storage", result_storage),
        "event_storage": checked_component("event_storage", event_storage),
    }


def client_settings(settings: object, overrides: dict[str, Any]) -> Settings:
    """The settings a client is built with: ``settings`` (None: :meth:`Settings.load`)
    with ``overrides`` applied; ConfigError for a first argument that is no Settings."""
    if settings is not None and not isinstance(settings, Settings):
        raise misplaced_settings(settings)
    if settings is None:
        return Settings.load(**overrides)
    return settings.replace(**overrides) if overrides else settings


class Storages:
    """The components of one client: opened by :meth:`open`, closed by :meth:`close`.

    ``specs`` are the checked storage arguments (see :func:`checked_component`).
    """

    def __init__(self, settings: Settings, specs: dict[Component, Any]) -> None:
        self.settings = settings
        self.specs = specs
        self.queue: BaseTaskQueue | None = None
        self.results: BaseResultStorage | None = None
        self.events: BaseEventStorage | None = None
        self.schedules: BaseScheduleStorage | None = None
        self._bundles: dict[str, Components] = {}
        self._owned: list[BaseStorage] = []
        # Storage instances given to the client and connected before a fork: unusable
        # in the child (their connections are the parent's), so refused there.
        self._inherited: set[Component] = set()

    async def open(self) -> None:
        """Connect the three components (all or none: a failure closes what opened)."""
        try:
            self.queue = await self._open("task_queue", BaseTaskQueue)
            self.results = await self._open("result_storage", BaseResultStorage)
            self.events = await self._open("event_storage", BaseEventStorage)
        except BaseException:
            await self.close()
            raise

    async def _open(self, component: Component, kind: type[Any]) -> Any:
        spec = self.specs[component]
        if spec is False:
            return None
        if isinstance(spec, BaseStorage):
            if component in self._inherited:
                raise ConfigError(
                    f"argument {component}: this storage instance was connected in the "
                    "parent before this process was forked; its connections are the "
                    "parent's. Create the client in the child, or pass URLs (a client "
                    "built from URLs reconnects in a forked child by itself)"
                )
            await spec.connect()
            self._owned.append(spec)
            return spec
        url = spec if isinstance(spec, str) else self.settings.storage_url(component)
        if url is None:
            return None
        storage = getattr(self._bundle(url), component)()
        assert isinstance(storage, kind)
        await storage.connect()
        self._owned.append(storage)
        return storage

    async def open_schedules(self) -> BaseScheduleStorage:
        """The schedule store of the task queue's backend, connected (once)."""
        if self.schedules is not None:
            return self.schedules
        spec = self.specs["task_queue"]
        if isinstance(spec, BaseStorage):
            store = getattr(spec, "schedule_storage", None)
            if not isinstance(store, BaseScheduleStorage):
                raise ScheduleError(
                    "schedules live on the task queue's backend: pass task_queue as a URL "
                    "(or a queue with a schedule_storage attribute) to use them"
                )
        else:
            url = spec if isinstance(spec, str) else self.settings.storage_url("task_queue")
            assert url is not None
            store = self._bundle(url).schedule_storage()
        await store.connect()
        self._owned.append(store)
        self.schedules = store
        return store

    def _bundle(self, url: str) -> Components:
        bundle = self._bundles.get(url)
        if bundle is None:
            bundle = self._bundles[url] = bundle_for_url(url, self.settings)
        return bundle

    async def close(self) -> None:
        """Close what was opened, last opened first (a failure is logged, not raised)."""
        owned, self._owned = self._owned, []
        for storage in reversed(owned):
            try:
                await storage.close()
            except Exception:
                logger.exception("closing %r failed", storage)
        self.queue = self.results = self.events = self.schedules = None

    def after_fork(self, connected: bool) -> list[Any]:
        """In a forked child: forget the parent's connections (returned, for the
        caller to keep alive: closing them would close the parent's sockets)."""
        dropped: list[Any] = [self._bundles, self._owned]
        if connected:
            self._inherited = {
                component
                for component, spec in self.specs.items()
                if isinstance(spec, BaseStorage) and spec in self._owned
            }
        self._bundles = {}
        self._owned = []
        self.queue = self.results = self.events = self.schedules = None
        return dropped
