"""How a task's callable travels: by import path when it can, by value (dill) otherwise.

Also where a path points, as far as the producer can tell (:func:`locate`).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from omniq.errors import TaskImportError

__all__ = ["callable_path", "describe", "is_dotted_path", "locate", "resolve"]

_path_cache: dict[Any, str | None] = {}
_resolve_cache: dict[str, Callable[..., Any]] = {}
# Paths as given at enqueue -> (the form stored, the callable or None if the producer
# cannot import it). Failures are kept too: an unimportable path costs a search of
# sys.path once, not at every enqueue.
_locate_cache: dict[str, tuple[str, Callable[..., Any] | None]] = {}
_LOCATE_CACHE_SIZE = 4096

_FORMS = "'package.module:qualname', 'package.module.function'"


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


def is_dotted_path(path: str) -> bool:
    """True for ``"package.module.function"``: dotted identifiers, at least two."""
    parts = path.split(".")
    return len(parts) > 1 and all(part.isidentifier() for part in parts)


def _split_dotted(path: str) -> tuple[str, str, str | None]:
    """``(module, qualname, the longest prefix that is no module)`` of
    ``"package.module.function"``: the longest prefix that imports is the module
    (``"pkg.mod.Class.method"`` -> ``("pkg.mod", "Class.method", "pkg.mod.Class")``)."""
    parts = path.split(".")
    not_found: str | None = None
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if module_name == missing or module_name.startswith(missing + "."):
                not_found = not_found or module_name
                continue  # this prefix is no module: try a shorter one
            # The module exists, but something it imports does not: say so.
            raise TaskImportError(
                f"cannot import module {module_name!r} for task {path!r}: {exc}"
            ) from exc
        except Exception as exc:
            raise TaskImportError(
                f"cannot import module {module_name!r} for task {path!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return module_name, ".".join(parts[cut:]), not_found
    raise TaskImportError(f"cannot import task {path!r}: no module named {parts[0]!r}")


def resolve(path: str) -> Callable[..., Any]:
    """Import ``"package.module:qualname"`` or ``"package.module.function"`` (the longest
    importable prefix is the module); TaskImportError says what could not be found."""
    try:
        return _resolve_cache[path]
    except KeyError:
        pass
    module_name, sep, qualname = path.partition(":")
    not_found = None
    if not sep and is_dotted_path(path):
        module_name, qualname, not_found = _split_dotted(path)
    elif not sep or not module_name or not qualname:
        raise TaskImportError(f"task function {path!r} is not of the form {_FORMS}")
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
            also = f"no module named {not_found!r}, and " if not_found else ""
            raise TaskImportError(
                f"{also}module {module_name!r} has no attribute {qualname!r} (task {path!r})"
            ) from None
    func = _unwrap(obj)
    if not callable(func):
        raise TaskImportError(f"task {path!r} is not callable")
    _resolve_cache[path] = func
    return func  # type: ignore[no-any-return]


def locate(path: str) -> tuple[str, Callable[..., Any] | None]:
    """Where a task path given at enqueue points, as far as the producer can tell:
    ``(the path to store, the callable)``.

    A path the producer can import is stored as ``"module:qualname"`` (a dotted
    ``"package.module.function"`` is rewritten to that form) and comes with its
    callable. One it cannot import, for whatever reason, is stored as given with None:
    the producer need not have the code, and the worker resolves it (or fails the task
    saying why). Importing runs the module's top-level code here, once.
    """
    found = _locate_cache.get(path)
    if found is not None:
        return found
    stored, func = path, None
    try:
        if ":" not in path:
            module_name, qualname, _ = _split_dotted(path)
            stored = f"{module_name}:{qualname}"
        func = resolve(stored)
    except Exception:
        stored, func = path, None
    if len(_locate_cache) >= _LOCATE_CACHE_SIZE:
        _locate_cache.clear()
    found = _locate_cache[path] = (stored, func)
    return found
