"""How each setting's value is converted and checked, and how a bad one is reported.

:data:`RULES` names, for every ``Settings`` field, the kind of value it takes; :func:`convert`
turns a value from code, a YAML file or an environment string into that kind, or raises
:class:`~omniq.errors.ConfigError` naming where the value came from, the field, the value
(never a secret's) and the form expected::

    environment variable OMNIQ_MAX_WORKERS='abc': expected an integer >= 1
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from omniq._durations import DURATION_FORM, seconds_in
from omniq._urls import ACCEPTED_FORMS, mistyped_url_problem, redact_url, storage_url_problem
from omniq.errors import ConfigError

__all__ = [
    "ARG",
    "ENV",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "QUEUE_ORDERS",
    "RULES",
    "convert",
    "label",
    "unknown_setting",
]

#: The prefix of every environment variable OmniQ reads.
ENV_PREFIX = "OMNIQ_"
# Source markers; any other source string is a config file description.
ENV = "environment"
ARG = "argument"
# Values never echoed in an error message: storage_options may carry cloud credentials.
_HIDDEN = frozenset({"secret_key", "storage_options"})

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: The values ``log_level`` takes (case-insensitive).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_BACKENDS = ("sqlite", "file", "memory", "redis", "postgres", "nats")
#: The values ``queue_order`` takes: how a worker of several queues orders its claims.
QUEUE_ORDERS = ("merged", "strict")


# field -> (kind, argument). A trailing "?" makes the kind optional (None allowed); "upper"
# and "lower" are case-insensitive choices among the argument, stored in that case; the
# argument of "int" is its minimum, of "duration" whether 0 is excluded, of "url" the
# schemes allowed (None: any storage URL); a "port" is a TCP port, 1 to 65535.
RULES: dict[str, tuple[str, Any]] = {
    "base_dir": ("path", None),
    "log_level": ("upper", LOG_LEVELS),
    "backend": ("lower?", _BACKENDS),
    "task_queue_type": ("lower", _BACKENDS),
    "result_storage_type": ("lower", _BACKENDS),
    "event_storage_type": ("lower", (*_BACKENDS, "none")),
    "task_queue_url": ("url?", None),
    "result_storage_url": ("url?", None),
    "event_storage_url": ("url?", None),
    "redis_url": ("url", ("redis", "rediss", "unix")),
    "postgres_url": ("url", ("postgresql", "postgres")),
    "nats_url": ("url", ("nats",)),
    "default_worker": ("lower", ("async", "thread", "process", "gevent")),
    "max_workers": ("int", 1),
    "default_queue": ("text", None),
    "queue_order": ("lower", QUEUE_ORDERS),
    "task_ttl": ("duration?", True),
    "result_ttl": ("duration?", True),
    "event_ttl": ("duration?", True),
    "lease_seconds": ("duration", True),
    "max_retries": ("int", 0),
    "max_lost_runs": ("int", 0),
    "retry_delay": ("duration", False),
    "retry_max_delay": ("duration", False),
    "task_timeout": ("duration?", True),
    "serializer": ("lower", ("auto", "msgspec", "dill")),
    "secret_key": ("keys?", None),
    "allow_unsigned_dill": ("bool", None),
    "max_payload_bytes": ("int?", 1),
    "storage_options": ("mapping", None),
    "namespace": ("name", None),
    "shutdown_timeout": ("duration", False),
    "poll_interval": ("duration", True),
    "event_flush_interval": ("duration", False),
    "event_batch_size": ("int", 1),
    "sqlite_synchronous": ("upper", ("FULL", "NORMAL")),
    "metrics_port": ("port?", None),
    "metrics_host": ("text", None),
    "tracing": ("bool", None),
}


class _Invalid(Exception):
    """A value was rejected; the caller words the message with its source (and with the
    exception's text, when it has one, as the reason)."""


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _key_text(key: object) -> bool:
    return isinstance(key, str) and bool(key.strip())


def _keys(value: Any, from_text: bool) -> str | tuple[str, ...]:
    """``secret_key``: one key, or a list of them (the first signs, any verifies).

    In the environment a value that starts with ``[`` is a JSON list; any other is one
    key, commas and all (a key is any string, so no separator is safe to split on).
    """
    if from_text and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise _Invalid from None
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list | tuple) and value and all(_key_text(key) for key in value):
        return tuple(value)
    raise _Invalid


def _check(kind: str, arg: Any, value: Any, from_text: bool) -> Any:
    """``value`` converted for a field of ``kind``; ``from_text`` for environment strings."""
    if kind.endswith("?"):
        nulls = ("", "none", "null") if kind in ("duration?", "int?", "port?") else ("",)
        if value is None or (from_text and value.strip().lower() in nulls):
            return None
        kind = kind[:-1]
    if kind in ("upper", "lower") and isinstance(value, str):
        value = value.strip().upper() if kind == "upper" else value.strip().lower()
        if value in arg:
            return value
    elif isinstance(value, str) and (
        (kind == "text" and value.strip()) or (kind == "name" and _NAME_RE.fullmatch(value))
    ):
        return value
    elif kind == "path" and isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str) and path.strip():
            return path
    elif kind == "url" and isinstance(value, str):
        if arg is None:
            problem = storage_url_problem(value)
        else:  # a server's URL: one of its own schemes
            scheme, sep, _ = value.partition("://")
            if not sep:
                problem = mistyped_url_problem(value) or "it has no scheme"
            else:
                problem = None if scheme.lower() in arg else f"a {scheme}:// URL does not fit here"
        if problem is None:
            return value
        raise _Invalid(problem)
    elif kind == "keys":
        return _keys(value, from_text)
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        if from_text and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    elif kind == "duration":
        try:
            seconds = seconds_in(value)
        except ValueError:
            raise _Invalid from None
        if seconds > 0 or (seconds == 0 and not arg):
            return seconds
    elif kind == "int":
        if from_text:
            try:
                value = int(value.strip())
            except ValueError:
                raise _Invalid from None
        if isinstance(value, int) and not isinstance(value, bool) and value >= arg:
            return value
    elif kind == "port":
        if from_text:
            try:
                value = int(value.strip())
            except ValueError:
                raise _Invalid from None
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
            return value
    elif kind == "mapping":
        if from_text:
            try:
                value = json.loads(value)
            except ValueError:
                raise _Invalid from None
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return dict(value)
    raise _Invalid


def _expected(kind: str, arg: Any) -> str:
    forms = {
        "text": "a non-empty string",
        "path": "a non-empty path (a string or an os.PathLike such as pathlib.Path)",
        "name": "letters, digits and underscores, starting with a letter",
        "int": f"an integer >= {arg}",
        "port": "a TCP port number (1 to 65535)",
        "duration": f"a duration {'>' if arg else '>='} 0 ({DURATION_FORM})",
        "mapping": "a mapping with string keys (a JSON object in the environment)",
        "keys": "a non-empty string, or a non-empty list of them (a JSON list in the environment)",
        "bool": "true or false (1/0, yes/no, on/off in the environment)",
    }
    if kind.startswith("url"):
        forms["url"] = (
            " or ".join(f"a {scheme}:// URL" for scheme in arg)
            if arg
            else f"a storage URL ({ACCEPTED_FORMS})"
        )
    form = forms.get(kind.rstrip("?")) or "one of " + ", ".join(repr(o) for o in arg)
    if kind in ("duration?", "int?", "port?"):
        return form + ", or none ('none', 'null' or '' in the environment)"
    return form + ", or none" if kind.endswith("?") else form


def label(source: str, name: str) -> str:
    """How an error names field ``name`` read from ``source`` (ENV, ARG or a file)."""
    if source == ENV:
        return f"environment variable {ENV_PREFIX}{name.upper()}"
    if source == ARG:
        return f"argument {name}"
    return f"{source}: {name}"


def convert(name: str, value: Any, *, source: str, from_text: bool = False) -> Any:
    """``value`` converted for field ``name``, or ConfigError naming ``source``;
    ``from_text`` for strings of the environment (``"none"``, ``"true"``, JSON…)."""
    kind, arg = RULES[name]
    from_text = from_text and isinstance(value, str)
    try:
        return _check(kind, arg, value, from_text)
    except _Invalid as exc:
        if name in _HIDDEN:
            shown = "<hidden>"
        else:
            shown = repr(redact_url(value) if kind.startswith("url") else value)
        expected = f"expected {_expected(kind, arg)}"
        if reason := str(exc):
            expected = f"{reason}{' ' if reason.endswith('?') else '. '}E{expected[1:]}"
        raise ConfigError(f"{label(source, name)}={shown}: {expected}") from None


def unknown_setting(source: str, key: object) -> ConfigError:
    """The error for ``key``, which is no setting, with the closest field name."""
    close = difflib.get_close_matches(str(key), list(RULES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{label(source, str(key))}: unknown setting{hint}")
