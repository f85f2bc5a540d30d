"""How a task's callable travels: by import path when it can, by value (dill) otherwise."""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from omniq.errors import TaskImportError

__all__ = ["callable_path", "describe", "resolve"]

_path_cache: dict[Any, str | None] = {}
_resolve_cache: dict[str, Callable[..., Any]] = {}


def _unwrap(func: Any) -> Any:
    # A function decorated with @oq.task is called through its wrapper's original.
    return getattr(func, "__omniq_func__", func)


def describe(func: Any) -> str:
    """A readable ``module:qualname`` for any callable, importable or not."""
    func = _unwrap(func)
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}:{qualname}"


def callable_path(func: Any) -> str | None:
    """``"module:qualname"`` if importing it gives back ``func``; None if it must travel by value.

    Lambdas, closures, bound methods and functions of ``__main__`` (which a worker
    process cannot import) travel by value.
    """
    func = _unwrap(func)
    try:
        return _path_cache[func]
    except (KeyError, TypeError):
        pass
    path: str | None = None
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if (
        module
        and qualname
        and module != "__main__"
        and "<" not in qualname
        and (inspect.isfunction(func) or inspect.isbuiltin(func) or inspect.isclass(func))
    ):
        try:
            found = _lookup(module, qualname)
        except Exception:
            found = None
        if _unwrap(found) is func:
            path = f"{module}:{qualname}"
    with contextlib.suppress(TypeError):
        _path_cache[func] = path
    return path


def _lookup(module_name: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def resolve(path: str) -> Callable[..., Any]:
    """Import ``"package.module:qualname"``; TaskImportError says what could not be found."""
    try:
        return _resolve_cache[path]
    except KeyError:
        pass
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise TaskImportError(
            f"task function {path!r} is not of the form 'package.module:qualname'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskImportError(
            f"cannot import module {module_name!r} for task {path!r}: {exc}"
        ) from exc
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TaskImportError(
                f"module {module_name!r} has no attribute {qualname!r} (task {path!r})"
            ) from None
    func = _unwrap(obj)
    if not callable(func):
        raise TaskImportError(f"task {path!r} is not callable")
    _resolve_cache[path] = func
    return func  # type: ignore[no-any-return]
