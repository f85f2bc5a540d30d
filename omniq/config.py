"""Settings: one frozen value built from defaults, a YAML file, the environment and code.

Layers, later wins: defaults < YAML (``config_file``, else the path in ``OMNIQ_CONFIG``) <
environment (``OMNIQ_`` + the upper-case field name) < keyword arguments in code::

    settings = Settings.load(max_workers=4)        # all four layers
    settings = Settings.from_yaml("omniq.yaml")    # defaults < that file
    settings = Settings.from_env()                 # defaults < os.environ
    faster = settings.replace(poll_interval="250ms")

Every value is converted and checked where it is read, so a bad one raises
:class:`~omniq.errors.ConfigError` naming its source, the field, the value (never the
secret key's) and the expected form::

    environment variable OMNIQ_MAX_WORKERS='abc': expected an integer >= 1
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

import msgspec

from omniq._urls import ACCEPTED_FORMS, mistyped_url_problem, redact_url, storage_url_problem
from omniq.errors import ConfigError

__all__ = [
    "LOG_LEVELS",
    "ConfigProvider",
    "Duration",
    "EnvConfig",
    "LoggingConfig",
    "QUEUE_ORDERS",
    "Settings",
    "parse_duration",
    "warn_unknown_variables",
]

logger = logging.getLogger("omniq")

ENV_PREFIX = "OMNIQ_"
CONFIG_ENV_VAR = "OMNIQ_CONFIG"
#: ``OMNIQ_*`` variables OmniQ reads that are not settings (the CLI reads OMNIQ_APP).
_OTHER_VARIABLES = frozenset({CONFIG_ENV_VAR, "OMNIQ_APP"})
#: Prefixes of the variables of OmniQ's own test suite and benchmarks.
_OTHER_PREFIXES = ("OMNIQ_TEST_", "OMNIQ_BENCH_")
#: Variables of the plan OmniQ grew from, and the one to use instead (spelling alone
#: would point some of them the wrong way: GEVENT_WORKERS is close to EVENT_STORAGE_URL).
_PLAN_VARIABLES = {
    "OMNIQ_RETRY_ATTEMPTS": "OMNIQ_MAX_RETRIES",
    "OMNIQ_PROJECT_NAME": "OMNIQ_NAMESPACE",
    "OMNIQ_THREAD_WORKERS": "OMNIQ_MAX_WORKERS",
    "OMNIQ_PROCESS_WORKERS": "OMNIQ_MAX_WORKERS",
    "OMNIQ_GEVENT_WORKERS": "OMNIQ_MAX_WORKERS",
    "OMNIQ_FSSPEC_URI": "OMNIQ_TASK_QUEUE_URL",
    "OMNIQ_DISABLE_LOGGING": "OMNIQ_LOG_LEVEL",
}
# Unknown variables already warned about: once per process, however often settings load.
_warned_variables: set[str] = set()
DEFAULT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The default of ``max_payload_bytes``: 16 MiB of encoded arguments per task. Far above
#: what a task queue should carry (pass large data by reference), far below what would
#: strain a worker's memory or a server's (Redis takes 512 MB per value).
DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

#: A duration argument: seconds, a ``timedelta``, or a string like ``"30s"`` or ``"5m"``.
Duration = float | int | timedelta | str
StorageComponent = Literal["task_queue", "result_storage", "event_storage"]
_COMPONENTS: tuple[str, ...] = ("task_queue", "result_storage", "event_storage")
_TYPES: tuple[str, ...] = tuple(f"{component}_type" for component in _COMPONENTS)
# A *_type left at this marker was not given: ``backend`` (else "sqlite") fills it in.
_NOT_GIVEN = ""

# Source markers; any other source string is a config file description.
_ENV = "environment"
_ARG = "argument"
# Values never echoed in an error message: storage_options may carry cloud credentials.
_HIDDEN = frozenset({"secret_key", "storage_options"})

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_FORM = "a number of seconds or a string like '30s', '5m', '2h', '1d', '250ms'"
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: The values ``log_level`` takes (case-insensitive).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_BACKENDS = ("sqlite", "file", "memory", "redis", "postgres", "nats")
#: The values ``queue_order`` takes: how a worker of several queues orders its claims.
QUEUE_ORDERS = ("merged", "strict")

# field -> (kind, argument). A trailing "?" makes the kind optional (None allowed); "upper"
# and "lower" are case-insensitive choices among the argument, stored in that case; the
# argument of "int" is its minimum, of "duration" whether 0 is excluded, of "url" the
# schemes allowed (None: any storage URL).
_RULES: dict[str, tuple[str, Any]] = {
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
}


class _Invalid(Exception):
    """A value was rejected; the caller words the message with its source (and with the
    exception's text, when it has one, as the reason)."""


def _seconds(value: Any) -> float:
    try:
        if isinstance(value, timedelta):
            seconds = value.total_seconds()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
            seconds = float(match[1]) * _UNIT_SECONDS[(match[2] or "s").lower()]
        else:
            raise _Invalid
    except OverflowError:
        raise _Invalid from None
    if not math.isfinite(seconds):
        raise _Invalid
    return seconds


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
        nulls = ("", "none", "null") if kind in ("duration?", "int?") else ("",)
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
        seconds = _seconds(value)
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
        "duration": f"a duration {'>' if arg else '>='} 0 ({_DURATION_FORM})",
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
    if kind in ("duration?", "int?"):
        return form + ", or none ('none', 'null' or '' in the environment)"
    return form + ", or none" if kind.endswith("?") else form


def _label(source: str, name: str) -> str:
    if source == _ENV:
        return f"environment variable {ENV_PREFIX}{name.upper()}"
    if source == _ARG:
        return f"argument {name}"
    return f"{source}: {name}"


def _convert(name: str, value: Any, *, source: str, from_text: bool = False) -> Any:
    kind, arg = _RULES[name]
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
        raise ConfigError(f"{_label(source, name)}={shown}: {expected}") from None


def _unknown(source: str, key: object) -> ConfigError:
    close = difflib.get_close_matches(str(key), list(_RULES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{_label(source, str(key))}: unknown setting{hint}")


def parse_duration(value: Duration, *, field: str) -> float:
    """Seconds in ``value``: a number, ``timedelta`` or a string like ``"30s"`` or ``"1.5h"``.

    >>> parse_duration("5m", field="lease_seconds")
    300.0

    Raises ConfigError naming ``field`` for anything else (negative values included).
    The one parser of durations: settings, and every duration argument of the API.
    """
    # Most duration arguments are plain numbers: the enqueue path pays no more. (A NaN,
    # an infinity or an int too large for a float goes the long way, and is refused.)
    if (type(value) is int or type(value) is float) and 0 <= value < 1e300:
        return float(value)
    try:
        return float(_check("duration", False, value, False))
    except _Invalid:
        raise ConfigError(f"{field}={value!r}: expected {_expected('duration', False)}") from None


def _read_yaml(path: str | os.PathLike[str], *, via: str = "") -> tuple[str, dict[str, Any]]:
    """(source description, converted values) of a flat YAML mapping of field names."""
    import yaml  # about 11 ms: paid only when a config file is read

    source = f"config file {os.path.abspath(os.fspath(path))}{via}"
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot be read ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: is not valid YAML ({exc})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of setting names at top level, got {type(data).__name__}"
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _RULES:
            raise _unknown(source, key)
        values[key] = _convert(key, value, source=source)
    return source, values


class Settings(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    """Every OmniQ setting, checked on construction (a bad value raises ConfigError).

    Build it with :meth:`load` (defaults < YAML < environment < arguments), or directly:

    >>> Settings(max_workers=4, task_queue_type="redis").max_workers
    4

    Durations (``*_ttl``, ``*_delay``, ``*_timeout``, ``*_interval``, ``lease_seconds``) are
    seconds and also accept ``timedelta`` or strings like ``"30s"``; the optional ones take
    ``None`` for "never". ``*_type`` picks a backend under ``base_dir`` or at ``redis_url``
    / ``postgres_url`` / ``nats_url``; an explicit ``*_url`` wins (see :meth:`storage_url`).

    ``backend`` is a shorthand for the three ``*_type`` settings at once:

    >>> Settings(backend="redis", event_storage_type="none").result_storage_type
    'redis'

    The rule: a ``*_type`` given anywhere (in code, the environment or the YAML file, at
    any layer) wins over ``backend`` given anywhere; ``backend`` fills in only the
    ``*_type`` settings nobody gave, and those left to it follow it through
    :meth:`replace`. Without ``backend`` they default to ``sqlite``.
    ``base_dir`` takes a ``str`` or any ``os.PathLike`` (``pathlib.Path``) and keeps its str.
    ``namespace`` isolates applications sharing a server (key prefix, schema, stream).
    ``poll_interval`` is the longest idle sleep where a backend cannot notify.
    ``queue_order`` is how a worker of several queues claims: ``"merged"`` (by priority,
    due time and enqueue order across them all) or ``"strict"`` (the first listed queue
    with claimable work first); see :meth:`omniq.AsyncOmniQ.worker`.
    """

    # Any os.PathLike is taken; the value kept is always its str.
    base_dir: str | os.PathLike[str] = ".omniq"
    log_level: str = "WARNING"
    backend: str | None = None
    # Always a backend name once built; empty only to mark "not given" (see __post_init__).
    task_queue_type: str = _NOT_GIVEN
    result_storage_type: str = _NOT_GIVEN
    event_storage_type: str = _NOT_GIVEN
    task_queue_url: str | None = None
    result_storage_url: str | None = None
    event_storage_url: str | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    nats_url: str = "nats://127.0.0.1:4222"
    default_worker: str = "async"
    max_workers: int = 10
    default_queue: str = "default"
    queue_order: str = "merged"
    task_ttl: float | None = None
    result_ttl: float | None = 86400.0
    event_ttl: float | None = 604800.0
    lease_seconds: float = 30.0
    max_retries: int = 0
    max_lost_runs: int = 3
    retry_delay: float = 1.0
    retry_max_delay: float = 300.0
    task_timeout: float | None = None
    serializer: str = "auto"
    # One key, or several to rotate them (a list in code and YAML is kept as a tuple).
    secret_key: str | tuple[str, ...] | None = None
    allow_unsigned_dill: bool = False
    max_payload_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES
    storage_options: dict[str, Any] = msgspec.field(default_factory=dict)
    namespace: str = "omniq"
    shutdown_timeout: float = 30.0
    poll_interval: float = 1.0
    event_flush_interval: float = 0.05
    event_batch_size: int = 500
    sqlite_synchronous: str = "NORMAL"

    def __post_init__(self) -> None:
        given = frozenset(name for name in _TYPES if getattr(self, name) != _NOT_GIVEN)
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in _TYPES and name not in given:
                continue
            converted = _convert(name, value, source=_ARG)
            if converted is not value:
                msgspec.structs.force_setattr(self, name, converted)
        for name in _TYPES:
            if name not in given:
                msgspec.structs.force_setattr(self, name, self.backend or "sqlite")
        # Not a field: which *_type settings were given, so that replace(backend=…)
        # changes only the others. The instance dict bypasses the frozen __setattr__.
        self.__dict__["_given_types"] = given

    def __repr__(self) -> str:
        fields = msgspec.structs.asdict(self).items()
        return f"Settings({', '.join(_shown(name, value) for name, value in fields)})"

    @classmethod
    def load(
        cls,
        *,
        config_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Settings from defaults < YAML < environment < ``overrides``.

        The YAML file is ``config_file``, else the path in ``OMNIQ_CONFIG`` if set;
        ``environ`` defaults to ``os.environ``.
        """
        return ConfigProvider(
            config_file=config_file, environ=environ, overrides=overrides
        ).settings()

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Settings:
        """Settings from defaults < the YAML file at ``path`` (flat field names at top level)."""
        return cls(**_read_yaml(path)[1])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from defaults < ``OMNIQ_*`` variables (``OMNIQ_CONFIG`` is not read)."""
        return cls(**EnvConfig(environ).values())

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied, checked like the constructor.

        ``*_type`` settings that were not given follow a new ``backend``."""
        for key in changes:
            if key not in _RULES:
                raise _unknown(_ARG, key)
        return Settings(**{**self._as_given(), **changes})

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the values as given, so a copy (or a pickled copy in a worker
        # process) still knows which *_type settings follow ``backend``.
        return (_rebuild_settings, (self._as_given(),))

    def _as_given(self) -> dict[str, Any]:
        """The field values, with the ``*_type`` settings left to ``backend`` unset."""
        fields = msgspec.structs.asdict(self)
        for name in _TYPES:
            if name not in self.__dict__["_given_types"]:
                fields[name] = _NOT_GIVEN
        return fields

    def storage_url(self, component: StorageComponent) -> str | None:
        """The URL of a storage component: its ``*_url`` if set, else derived from ``*_type``.

        ``sqlite`` -> ``sqlite:///<abs base_dir>/omniq.db``; ``file`` ->
        ``file://<abs base_dir>/<component>``; ``memory`` -> ``memory://omniq/<component>``;
        ``redis``/``postgres``/``nats`` -> that server URL; ``none`` -> ``None``. A relative
        ``base_dir`` is resolved against the current directory at call time.
        """
        if component not in _COMPONENTS:
            raise ConfigError(f"argument component={component!r}: expected one of {_COMPONENTS}")
        url: str | None = getattr(self, f"{component}_url")
        if url is not None:
            return url
        kind: str = getattr(self, f"{component}_type")
        base = os.path.abspath(os.path.expanduser(self.base_dir))
        derived = {
            "sqlite": f"sqlite:///{os.path.join(base, 'omniq.db')}",
            "file": f"file://{base}/{component}",
            "memory": f"memory://omniq/{component}",
            "redis": self.redis_url,
            "postgres": self.postgres_url,
            "nats": self.nats_url,
        }
        return derived.get(kind)


def _shown(name: str, value: Any) -> str:
    """``name=value`` for a repr, with no secret in it: the keys hidden, passwords out of
    URLs, the values of ``storage_options`` (credentials, key passwords) hidden."""
    if name == "secret_key" and value:
        return f"{name}=<hidden>"
    if name == "storage_options":
        return f"{name}={ {key: '<hidden>' for key in value}!r}"
    if isinstance(value, str) and name.endswith("_url"):
        return f"{name}={redact_url(value)!r}"
    return f"{name}={value!r}"


def _rebuild_settings(fields: dict[str, Any]) -> Settings:
    return Settings(**fields)


class EnvConfig:
    """The settings found in ``OMNIQ_*`` variables of a mapping (default ``os.environ``).

    >>> EnvConfig({"OMNIQ_MAX_WORKERS": "4", "OMNIQ_TASK_TTL": "1h"}).values()
    {'max_workers': 4, 'task_ttl': 3600.0}

    ``OMNIQ_CONFIG`` names a YAML file. Other ``OMNIQ_*`` variables that are not settings
    (a typo such as ``OMNIQ_MAX_WORKER``) are ignored, with a warning on the ``omniq``
    logger the first time :meth:`values` meets each, naming the closest known variable.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ

    @property
    def config_file(self) -> str | None:
        """The YAML path in ``OMNIQ_CONFIG``, or None when unset or empty."""
        return self._environ.get(CONFIG_ENV_VAR) or None

    def unknown(self) -> dict[str, str | None]:
        """Each ``OMNIQ_*`` variable that OmniQ does not read, with the closest known name
        (or None).

        >>> EnvConfig({"OMNIQ_MAX_WORKER": "8"}).unknown()
        {'OMNIQ_MAX_WORKER': 'OMNIQ_MAX_WORKERS'}
        """
        known = {ENV_PREFIX + name.upper() for name in _RULES} | _OTHER_VARIABLES
        # Compared without the prefix, which every name shares.
        suffixes = sorted(name.removeprefix(ENV_PREFIX) for name in known)
        found: dict[str, str | None] = {}
        for var in self._environ:
            if not var.startswith(ENV_PREFIX) or var in known or var.startswith(_OTHER_PREFIXES):
                continue
            if var in _PLAN_VARIABLES:
                found[var] = _PLAN_VARIABLES[var]
                continue
            close = difflib.get_close_matches(var.removeprefix(ENV_PREFIX).upper(), suffixes, n=1)
            found[var] = ENV_PREFIX + close[0] if close else None
        return found

    def values(self) -> dict[str, Any]:
        """Converted field values; a bad one raises ConfigError naming its variable.

        Warns (once per process) about each variable :meth:`unknown` finds."""
        warn_unknown_variables(self._environ)
        found: dict[str, Any] = {}
        for name in _RULES:
            var = ENV_PREFIX + name.upper()
            if var in self._environ:
                found[name] = _convert(name, self._environ[var], source=_ENV, from_text=True)
        return found


def warn_unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Log a warning on the ``omniq`` logger for each ``OMNIQ_*`` variable of ``environ``
    (default ``os.environ``) that OmniQ does not read, once per variable and process.

    Returns the messages logged by this call. Settings loading calls it; so does the
    ``omniq`` command at start-up, where the warnings go to stderr.
    """
    messages = []
    for var, close in EnvConfig(environ).unknown().items():
        if var in _warned_variables:
            continue
        _warned_variables.add(var)
        hint = f" (did you mean {close}?)" if close else ""
        messages.append(f"environment variable {var} is not an OmniQ setting: ignored{hint}")
        logger.warning("%s", messages[-1])
    return messages


class ConfigProvider:
    """Composes defaults < YAML < environment < overrides into :class:`Settings`.

    Each layer is converted as it is read, so an error names the layer it came from;
    :meth:`sources` tells which layer supplied each value.
    """

    def __init__(
        self,
        *,
        config_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self._config_file = config_file
        self._env = EnvConfig(environ)
        self._overrides = dict(overrides or {})

    def _compose(self) -> tuple[dict[str, Any], dict[str, str]]:
        layers: list[tuple[str, dict[str, Any]]] = []
        if self._config_file is not None:
            layers.append(_read_yaml(self._config_file))
        elif (path := self._env.config_file) is not None:
            layers.append(_read_yaml(path, via=f" (from {CONFIG_ENV_VAR})"))
        layers.append((_ENV, self._env.values()))
        arguments: dict[str, Any] = {}
        for key, value in self._overrides.items():
            if key not in _RULES:
                raise _unknown(_ARG, key)
            arguments[key] = _convert(key, value, source=_ARG)
        layers.append((_ARG, arguments))

        values: dict[str, Any] = {}
        sources = dict.fromkeys(_RULES, "default")
        for source, layer in layers:
            values.update(layer)
            for name in layer:
                sources[name] = _label(source, name)
        if values.get("backend") is not None:
            for name in _TYPES:
                if name not in values:
                    sources[name] = f"{sources['backend']} (the backend shorthand)"
        return values, sources

    def settings(self) -> Settings:
        """The composed settings; raises ConfigError naming the source of a bad value."""
        return Settings(**self._compose()[0])

    def sources(self) -> dict[str, str]:
        """Where each field's value comes from: ``"default"``, ``"argument x"``,
        ``"environment variable OMNIQ_X"`` or ``"config file /path: x"``."""
        return self._compose()[1]


class LoggingConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Level and format of the ``omniq`` logger (library logs, never task events).

    >>> LoggingConfig(level="info").apply()

    :meth:`apply` never touches the root logger and is idempotent.
    """

    level: str = "WARNING"
    fmt: str = DEFAULT_LOG_FORMAT

    def __post_init__(self) -> None:
        level = _convert("log_level", self.level, source=_ARG)
        msgspec.structs.force_setattr(self, "level", level)

    @classmethod
    def from_settings(cls, settings: Settings) -> LoggingConfig:
        """The logging configuration ``settings.log_level`` asks for."""
        return cls(level=settings.log_level)

    def apply(self) -> None:
        """Set the ``omniq`` logger's level; add one stderr handler if it has none yet."""
        logger = logging.getLogger("omniq")
        logger.setLevel(self.level)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(self.fmt))
            logger.addHandler(handler)
