"""Building tasks from what a caller passes: the function, its arguments, the options.

:class:`TaskBuilder` turns ``submit``'s arguments into a :class:`~omniq.models.Task`:
it names the function (an import path, or the callable itself carried by dill), checks
the arguments against its signature, encodes the call, and reads the options (durations
in every form ``Settings`` takes, an aware ``eta``, dependencies) with the settings'
defaults. It does no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from omniq import _callables
from omniq._ids import new_task_id, new_task_ids, plain_id
from omniq._limits import Limit
from omniq.config import Duration, Settings, parse_duration
from omniq.errors import ConfigError, TaskArgumentError, ValueTooLargeError
from omniq.models import Task, TaskStatus
from omniq.serialization import SerializationManager

__all__ = [
    "SUBMIT_OPTIONS",
    "TaskBuilder",
    "check_option_names",
    "checked_status",
    "payload_too_large",
    "seconds",
]

#: ``submit``'s options; ``@oq.task`` takes them all, ``enqueue_many`` all but ``depends_on``
#: and ``task_id``.
SUBMIT_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "delay",
        "eta",
        "ttl",
        "max_retries",
        "retry_delay",
        "timeout",
        "result_ttl",
        "depends_on",
        "task_id",
        "rate_limit",
        "max_concurrency",
    }
)
# Keyword arguments that, given to enqueue(), were meant for submit().
_SUBMIT_WORDS = SUBMIT_OPTIONS | {"args", "kwargs"}


def seconds(value: Duration | None, name: str) -> float | None:
    """A duration argument in seconds (None stays None); ConfigError names ``name``."""
    if value is None:
        return None
    return parse_duration(value, field=f"argument {name}")


def checked_status(status: TaskStatus | str | None) -> TaskStatus | None:
    """``status`` as a TaskStatus (None stays None); ConfigError for an unknown one."""
    if status is None:
        return None
    try:
        return TaskStatus(status)
    except ValueError:
        choices = ", ".join(s.value for s in TaskStatus)
        raise ConfigError(f"status={status!r}: expected one of {choices}") from None


def payload_too_large(what: str, size: int, limit: int) -> ValueTooLargeError:
    """The error for ``what``, encoded to ``size`` bytes, over ``max_payload_bytes``."""
    return ValueTooLargeError(
        f"{what} encode to {size} bytes ({size / 2**20:.1f} MiB), over max_payload_bytes="
        f"{limit}: pass large data by reference (a path or a key in a file or object store), "
        "or raise max_payload_bytes on producers and workers alike"
    )


def _argument_error(spec: _callables.ArgSpec, problem: tuple[str, str | None]) -> TaskArgumentError:
    """The error for a call ``spec`` refuses, with a hint when the keyword at fault is
    one of submit's options (``enqueue(send, "hi", eta=...)``)."""
    message, keyword = problem
    text = f"task {spec.name}() {message}"
    if keyword in _SUBMIT_WORDS:
        text += (
            f"; did you mean submit(..., {keyword}=...)? enqueue() and .delay() pass every "
            "keyword argument to the task; options go through submit()"
        )
    return TaskArgumentError(text)


def check_option_names(where: str, options: Iterable[str], allowed: frozenset[str]) -> None:
    """ConfigError for an option name ``where`` does not take, with the nearest one."""
    unknown = sorted(set(options) - allowed)
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"{where} does not take {unknown[0]!r}{hint}; its options are {', '.join(sorted(allowed))}"
    )


def _options_probe() -> None:
    """A stand-in task function: ``@oq.task`` builds one task of it to check its options."""


class TaskBuilder:
    """Tasks from a function, its arguments and ``submit``'s options (no I/O).

    ``registry`` maps names registered with ``@oq.task`` to their functions.
    """

    def __init__(self, settings: Settings, serializer: SerializationManager) -> None:
        self.settings = settings
        self.serializer = serializer
        self.registry: dict[str, Callable[..., Any]] = {}

    def build(
        self,
        func: Callable[..., Any] | str,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        *,
        now: datetime,
        queue: str | None = None,
        priority: int = 0,
        delay: Duration | None = None,
        eta: datetime | None = None,
        ttl: Duration | None = None,
        max_retries: int | None = None,
        retry_delay: Duration | None = None,
        timeout: Duration | None = None,
        depends_on: Iterable[str] = (),
        task_id: str | None = None,
        result_ttl: Duration | None = None,
        rate_limit: str | None = None,
        max_concurrency: int | None = None,
    ) -> Task:
        """The task of ``func(*args, **kwargs)`` with these options, created at ``now``."""
        settings = self.settings
        path, carried, spec = self.function(func)
        payload = self.payload(carried, args, kwargs)
        if spec is not None:
            problem = spec.problem(args, kwargs)
            if problem is not None:
                raise _argument_error(spec, problem)
        if eta is not None:
            if not isinstance(eta, datetime) or eta.tzinfo is None:
                raise ConfigError(f"argument eta={eta!r}: expected an aware datetime")
            if delay is not None:
                raise ConfigError("arguments delay and eta: give one, not both")
            due_at: datetime | None = eta.astimezone(UTC)
        else:
            wait = seconds(delay, "delay")
            due_at = now + timedelta(seconds=wait) if wait else None
        ttl_s = seconds(ttl, "ttl") if ttl is not None else settings.task_ttl
        deps = tuple(map(plain_id, depends_on))  # task handles as their plain ids
        if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
            raise ConfigError(f"argument max_retries={max_retries!r}: expected an integer >= 0")
        if not isinstance(priority, int):
            raise ConfigError(f"argument priority={priority!r}: expected an integer")
        Limit.of(rate_limit, max_concurrency)  # a bad limit fails here, naming it
        return Task(
            id=plain_id(task_id) if task_id else new_task_id(),
            func=path,
            payload=payload,
            queue=queue or settings.default_queue,
            priority=priority,
            status=TaskStatus.SCHEDULED if (due_at is not None or deps) else TaskStatus.PENDING,
            max_retries=settings.max_retries if max_retries is None else max_retries,
            retry_delay=(
                settings.retry_delay
                if retry_delay is None
                else seconds(retry_delay, "retry_delay") or 0.0
            ),
            timeout=settings.task_timeout if timeout is None else seconds(timeout, "timeout"),
            due_at=due_at,
            expires_at=now + timedelta(seconds=ttl_s) if ttl_s else None,
            result_ttl=(
                settings.result_ttl if result_ttl is None else seconds(result_ttl, "result_ttl")
            ),
            depends_on=deps,
            created_at=now,
            rate_limit=rate_limit,
            max_concurrency=max_concurrency,
        )

    def build_many(
        self,
        func: Callable[..., Any] | str,
        args_list: Iterable[Sequence[Any]],
        options: dict[str, Any],
        *,
        now: datetime,
    ) -> list[Task]:
        """One task per argument tuple, sharing ``options`` (``enqueue_many``'s tasks)."""
        if "task_id" in options or "depends_on" in options:
            raise ConfigError("enqueue_many does not take task_id or depends_on; use submit")
        check_option_names("enqueue_many()", options, SUBMIT_OPTIONS)
        calls = iter(args_list)
        first = next(calls, None)
        if first is None:
            return []
        # Options are checked once; the other tasks differ from the first only in id and
        # arguments.
        proto = self.build(func, first, None, now=now, **options)
        _, carried, spec = self.function(func)
        replace = msgspec.structs.replace
        payload = self.payload
        rest = list(calls)
        tasks = [proto]
        tasks += [
            replace(proto, id=task_id, payload=payload(carried, args, None))
            for task_id, args in zip(new_task_ids(len(rest)), rest, strict=True)
        ]
        if spec is not None:
            # Without keyword arguments only the count can differ: one check per count.
            arities = {len(first)}
            for args in rest:
                if len(args) not in arities:
                    problem = spec.problem(args, None)
                    if problem is not None:
                        raise _argument_error(spec, problem)
                    arities.add(len(args))
        return tasks

    def register(self, func: Callable[..., Any], name: str | None) -> str:
        """Register ``func`` under ``name`` (default: its import path, else a description
        of it) for tasks to name; return the name."""
        task_name = name or _callables.callable_path(func) or _callables.describe(func)
        self.registry[task_name] = func
        return task_name

    def check_options(self, where: str, options: dict[str, Any], now: datetime) -> None:
        """Check ``submit`` options given ahead of any call (``@oq.task(...)``): an
        unknown name or a bad value raises ConfigError now, not at the first call."""
        check_option_names(where, options, SUBMIT_OPTIONS)
        # A stand-in function: the real one may be a closure dill cannot carry.
        self.build(_options_probe, (), None, now=now, **options)

    def function(
        self, func: Callable[..., Any] | str
    ) -> tuple[str, Any, _callables.ArgSpec | None]:
        """The import path a task records, the callable itself when it must travel in
        the payload (it has no importable path), and the signature its arguments are
        checked against (None: unknown here, or not inspectable; not checked).

        A string is a name registered with ``@oq.task``, ``"module:qualname"`` or
        ``"package.module.function"``; one the producer can import is checked and
        stored as ``"module:qualname"``, one it cannot is stored as given (the worker
        resolves it).
        """
        if isinstance(func, str):
            registered = self.registry.get(func)
            if registered is not None:
                return func, None, _callables.arg_spec(registered)
            if ":" in func or _callables.is_dotted_path(func):
                stored, target = _callables.locate(func)
                return stored, None, None if target is None else _callables.arg_spec(target)
            raise ConfigError(
                f"task function {func!r}: expected 'package.module:qualname', "
                "'package.module.function' or a name registered with @oq.task"
            )
        if callable(func):
            found = _callables.callable_path(func)
            spec = _callables.arg_spec(func)
            if found:
                return found, None, spec
            # A function registered with @oq.task that cannot be imported (defined in
            # __main__, a notebook, a closure) goes by its registered name, as its own
            # .delay() sends it: its wrapper holds the client, which no payload can carry.
            name = getattr(func, "name", None)
            inner = getattr(func, "__omniq_func__", None)
            if isinstance(name, str) and inner is not None and self.registry.get(name) is inner:
                return name, None, spec
            return _callables.describe(func), func, spec
        raise ConfigError(
            f"task function {func!r}: expected a callable, 'module:qualname' or "
            "'package.module.function'"
        )

    def payload(self, carried: Any, args: Sequence[Any], kwargs: dict[str, Any] | None) -> bytes:
        """The encoded call: (the carried callable or None, args, kwargs)."""
        if not isinstance(args, (tuple, list)):
            raise ConfigError(f"args={args!r}: expected a tuple or list of arguments")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ConfigError(f"kwargs={kwargs!r}: expected a dict of keyword arguments")
        payload = self.serializer.dumps_call(carried, tuple(args), kwargs or {})
        limit = self.settings.max_payload_bytes
        if limit is not None and len(payload) > limit:
            raise payload_too_large("the task's arguments", len(payload), limit)
        return payload

    def resolve(self, name: str) -> Callable[..., Any]:
        """The callable behind a task's ``func`` name: registered first, then imported."""
        found = self.registry.get(name)
        return found if found is not None else _callables.resolve(name)
