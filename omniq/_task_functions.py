"""Functions registered with ``@oq.task``: still callable, plus ``delay`` and ``submit``,
which return a typed handle on the task.

``AsyncOmniQ.task`` wraps a function in :class:`AsyncTaskFunction`; ``OmniQ.task`` wraps
that in its blocking twin (``omniq.sync.TaskFunction``). ``delay``/``submit`` return an
:class:`AsyncTaskHandle` (blocking: ``omniq.sync.TaskHandle``): the task id as a ``str``
subclass that also knows the function's return type, so ``await handle.result()`` is
typed as what the function returns (the awaited value for an ``async def``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from omniq._ids import IdStr
from omniq.config import Duration
from omniq.errors import TaskFailedError, TaskNotFoundError
from omniq.models import Task, TaskResult, TaskStatus

__all__ = ["AsyncTaskFunction", "AsyncTaskHandle", "TaskSubmitter"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class TaskSubmitter(Protocol):
    """The client a registered function enqueues through, and its handles read through
    (an ``AsyncOmniQ``)."""

    @property
    def submit(self) -> Callable[..., Awaitable[str]]:
        """``AsyncOmniQ.submit``: enqueue a call with options, return the task id."""

    async def get_task(self, task_id: str) -> Task | None:
        """``AsyncOmniQ.get_task``."""

    async def get_result(
        self, task_id: str, *, wait: bool = False, timeout: Duration | None = None
    ) -> TaskResult | None:
        """``AsyncOmniQ.get_result``."""

    async def cancel(self, task_id: str) -> bool:
        """``AsyncOmniQ.cancel``."""


class AsyncTaskHandle(IdStr, Generic[R]):
    """The task a ``.delay()``/``.submit()`` of an ``AsyncOmniQ`` task function enqueued:
    its id (a ``str``), typed with what the function returns.

    A handle is the task id wherever an id goes (``get_result(handle)``,
    ``depends_on=[handle]``, a dict key, JSON, a task's argument): it compares, hashes and
    prints as the id, and is stored, pickled and encoded as that plain ``str``.

    Example::

        @oq.task
        async def add(a: int, b: int) -> int:
            return a + b

        handle = await add.delay(1, 2)          # AsyncTaskHandle[int]
        total = await handle.result(timeout=10)  # int, for mypy and editors too
    """

    __slots__ = ("_client", "name")

    _client: TaskSubmitter
    #: The registered name of the task's function.
    name: str

    def __new__(cls, task_id: str, client: TaskSubmitter, name: str) -> AsyncTaskHandle[R]:
        """Wrap ``task_id``, enqueued through ``client`` for the function ``name``."""
        handle = super().__new__(cls, task_id)
        handle._client = client
        handle.name = name
        return handle

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, name={self.name!r})"

    @property
    def task_id(self) -> str:
        """The task id as a plain ``str``."""
        return str(self)

    async def result(self, timeout: Duration | None = None) -> R:
        """Wait for the task to finish and return its value (``timeout`` in seconds, a
        ``timedelta`` or a string like ``"30s"``; None waits as long as it takes).

        Raises :class:`~omniq.errors.TaskFailedError` when the task ended ``FAILED``,
        ``CANCELLED`` or ``EXPIRED`` (its ``error`` says why),
        :class:`~omniq.errors.ResultTimeoutError` (a ``TimeoutError``) when ``timeout``
        runs out first, and :class:`~omniq.errors.TaskNotFoundError` when the task or
        its result is gone (cleaned up, past ``result_ttl``), as ``get_result`` would.
        """
        task_id = str(self)
        stored = await self._client.get_result(task_id, wait=True, timeout=timeout)
        # The worker stored what the function returned: R, by the function's annotation.
        return cast(R, _value(task_id, stored))

    async def status(self) -> TaskStatus:
        """The task's current status; ``TaskNotFoundError`` once it is gone."""
        task = await self._client.get_task(str(self))
        if task is None:
            raise TaskNotFoundError(f"task {self} does not exist (never enqueued, or cleaned up)")
        return task.status

    async def cancel(self) -> bool:
        """Cancel the task, as ``AsyncOmniQ.cancel``: True if it ends ``CANCELLED``, False
        when it had already finished."""
        return await self._client.cancel(str(self))


def _value(task_id: str, stored: TaskResult | None) -> Any:
    """The return value in a final ``stored`` result, or the error ``result()`` raises."""
    if stored is None:
        raise TaskNotFoundError(
            f"task {task_id} finished but its result is gone (past its result_ttl)"
        )
    if stored.status is not TaskStatus.COMPLETE:
        raise TaskFailedError(stored)
    return stored.result


class AsyncTaskFunction(Generic[P, R]):
    """A function registered with ``@oq.task``: still callable, plus ``delay``/``submit``,
    which enqueue it and return an :class:`AsyncTaskHandle` typed with its return value."""

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

    # Two overloads so the handle carries the value a worker stores: for an async def
    # (R is an Awaitable[T]) the awaited T, for a plain function R itself.
    @overload
    async def delay(
        self: AsyncTaskFunction[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTaskHandle[T]: ...

    @overload
    async def delay(
        self: AsyncTaskFunction[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTaskHandle[T]: ...

    async def delay(self, *args: Any, **kwargs: Any) -> AsyncTaskHandle[Any]:
        """Enqueue a call with the registered options; returns its handle (the task id)."""
        task_id = await self.oq.submit(self.name, args, kwargs, **self.options)
        return AsyncTaskHandle(task_id, self.oq, self.name)

    @overload
    async def submit(
        self: AsyncTaskFunction[P, Awaitable[T]],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncTaskHandle[T]: ...

    @overload
    async def submit(
        self: AsyncTaskFunction[P, T],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncTaskHandle[T]: ...

    async def submit(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncTaskHandle[Any]:
        """Enqueue a call with per-call options over the registered ones; returns its
        handle (the task id)."""
        options = {**self.options, **options}
        task_id = await self.oq.submit(self.name, args, kwargs, **options)
        return AsyncTaskHandle(task_id, self.oq, self.name)
