"""Functions registered with ``@oq.task``: still callable, plus ``delay`` and ``submit``.

``AsyncOmniQ.task`` wraps a function in :class:`AsyncTaskFunction`; ``OmniQ.task`` wraps
that in its blocking twin (``omniq.sync.TaskFunction``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

__all__ = ["AsyncTaskFunction", "TaskSubmitter"]

P = ParamSpec("P")
R = TypeVar("R")


class TaskSubmitter(Protocol):
    """The client a registered function enqueues through (an ``AsyncOmniQ``)."""

    @property
    def submit(self) -> Callable[..., Awaitable[str]]:
        """``AsyncOmniQ.submit``: enqueue a call with options, return the task id."""


class AsyncTaskFunction(Generic[P, R]):
    """A function registered with ``@oq.task``: still callable, plus ``delay``/``submit``."""

    def __init__(
        self, oq: TaskSubmitter, func: Callable[P, R], name: str, options: dict[str, Any]
    ) -> None:
        functools.update_wrapper(self, func)
        self.__omniq_func__ = func
        self.oq = oq
        self.name = name
        self.options = options

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__omniq_func__(*args, **kwargs)

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue a call with the registered options; returns the task id."""
        return await self.oq.submit(self.name, args, kwargs, **self.options)

    async def submit(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> str:
        """Enqueue a call with per-call options over the registered ones."""
        return await self.oq.submit(self.name, args, kwargs, **{**self.options, **options})
