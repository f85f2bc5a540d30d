"""How a task's callable travels: by import path when it can, by value (dill) otherwise.

Also what the producer can tell about a task function before it runs: where a path
points (:func:`locate`) and whether arguments fit its signature (:func:`arg_spec`).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omniq.errors import TaskImportError

__all__ = ["ArgSpec", "arg_spec", "callable_path", "describe", "locate", "resolve"]

_path_cache: dict[Any, str | None] = {}
_resolve_cache: dict[str, Callable[..., Any]] = {}
# Paths as given at enqueue -> (the form stored, the callable or None if the producer
# cannot import it). Failures are kept too: an unimportable path costs a search of
# sys.path once, not at every enqueue.
_locate_cache: dict[str, tuple[str, Callable[..., Any] | None]] = {}
_LOCATE_CACHE_SIZE = 4096
# Weak: a lambda or closure made per call must not be kept alive by its entry.
_spec_cache: weakref.WeakKeyDictionary[Any, ArgSpec | None] = weakref.WeakKeyDictionary()
_MISSING: Any = object()
_SHAPES_KEPT = 64

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


# -- signatures --------------------------------------------------------------------------


class ArgSpec:
    """What calls a task function accepts, read once from its signature, checked in
    well under a microsecond for the common call (positional arguments only)."""

    __slots__ = (
        "_bound",
        "_fits",
        "_kw_names",
        "_max_pos",
        "_min_pos",
        "_pos_names",
        "_pos_only",
        "_required",
        "_required_kwonly",
        "_var_kw",
        "name",
        "signature",
    )

    def __init__(self, name: str, signature: inspect.Signature) -> None:
        self.name = name
        self.signature = signature
        kinds = inspect.Parameter
        params = list(signature.parameters.values())
        positional = [
            p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
        ]
        self._pos_names = tuple(p.name for p in positional)
        self._pos_only = frozenset(p.name for p in positional if p.kind is kinds.POSITIONAL_ONLY)
        self._required = frozenset(p.name for p in positional if p.default is p.empty)
        # Enough positional arguments to cover every required positional parameter.
        self._min_pos = max(
            (i + 1 for i, p in enumerate(positional) if p.default is p.empty), default=0
        )
        var_pos = any(p.kind is kinds.VAR_POSITIONAL for p in params)
        self._max_pos: int | None = None if var_pos else len(positional)
        self._var_kw = any(p.kind is kinds.VAR_KEYWORD for p in params)
        self._kw_names = frozenset(
            p.name for p in params if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
        )
        self._required_kwonly = tuple(
            p.name for p in params if p.kind is kinds.KEYWORD_ONLY and p.default is p.empty
        )
        self._bound: ArgSpec | None = None
        # Shapes of calls with keyword arguments seen to bind: (count, keywords).
        self._fits: set[tuple[int, tuple[str, ...]]] = set()

    def bound(self) -> ArgSpec:
        """The spec of this function bound as a method (its first parameter given)."""
        if self._bound is None:
            params = list(self.signature.parameters.values())
            if params and params[0].kind in (
                inspect.Parameter.POSITIONAL_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
            ):
                params = params[1:]
            self._bound = ArgSpec(self.name, self.signature.replace(parameters=params))
        return self._bound

    def problem(
        self, args: Sequence[Any], kwargs: Mapping[str, Any] | None
    ) -> tuple[str, str | None] | None:
        """None if ``func(*args, **kwargs)`` binds; else ``(what is wrong, the keyword
        argument at fault or None)``, worded as Python words a ``TypeError``."""
        count = len(args)
        if (
            not kwargs
            and self._min_pos <= count
            and (self._max_pos is None or count <= self._max_pos)
            and not self._required_kwonly
        ):
            return None
        if not kwargs:
            return self._diagnose(count, {})
        # Whether a call binds depends only on its shape: look each shape over once.
        shape = (count, tuple(kwargs))
        if shape in self._fits:
            return None
        problem = self._diagnose(count, kwargs)
        if problem is None and len(self._fits) < _SHAPES_KEPT:
            self._fits.add(shape)
        return problem

    def _diagnose(self, count: int, kwargs: Mapping[str, Any]) -> tuple[str, str | None] | None:
        if self._max_pos is not None and count > self._max_pos:
            return (
                f"takes {self._max_pos} positional argument{'' if self._max_pos == 1 else 's'} "
                f"but {count} {'was' if count == 1 else 'were'} given",
                None,
            )
        for key in kwargs:
            if key in self._kw_names:
                if key in self._pos_names and self._pos_names.index(key) < count:
                    return f"got multiple values for argument {key!r}", key
            elif not self._var_kw:
                if key in self._pos_only:
                    return f"got positional-only argument {key!r} passed as a keyword", key
                return f"got an unexpected keyword argument {key!r}", key
        missing = [
            name
            for name in self._pos_names[count:]
            if name in self._required and (name in self._pos_only or name not in kwargs)
        ]
        missing += [name for name in self._required_kwonly if name not in kwargs]
        if missing:
            names = ", ".join(repr(name) for name in missing)
            return f"missing required argument{'' if len(missing) == 1 else 's'}: {names}", None
        return None


def _read_spec(func: Any) -> ArgSpec | None:
    try:
        # Not through __wrapped__: a decorator may supply or change arguments, and the
        # wrapper's own signature is the one the call meets. A call is refused only
        # when it certainly cannot bind.
        signature = inspect.signature(func, follow_wrapped=False)
    except (TypeError, ValueError):
        return None  # builtins and C functions without a signature: not checked
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return ArgSpec(name, signature)


def arg_spec(func: Any) -> ArgSpec | None:
    """The :class:`ArgSpec` of a task function, or None when its signature cannot be
    read. Cached per function (weakly), and per underlying function for bound methods
    (a new object at each attribute access)."""
    func = _unwrap(func)
    if type(func) is types.MethodType:
        spec = arg_spec(func.__func__)
        return None if spec is None else spec.bound()
    try:
        spec = _spec_cache.get(func, _MISSING)
    except TypeError:  # not weakly referenceable, or unhashable
        return _read_spec(func)
    if spec is _MISSING:
        spec = _read_spec(func)
        with contextlib.suppress(TypeError):
            _spec_cache[func] = spec
    return spec
