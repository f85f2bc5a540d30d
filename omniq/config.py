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

The conversion and checking of each value lives in ``omniq._config_values``, the reading
of the ``OMNIQ_*`` environment in ``omniq._config_env``, durations in ``omniq._durations``;
their public names are importable from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from omniq._config_env import CONFIG_ENV_VAR as CONFIG_ENV_VAR
from omniq._config_env import EnvConfig, warn_unknown_variables
from omniq._config_values import ARG as _ARG
from omniq._config_values import ENV as _ENV
from omniq._config_values import ENV_PREFIX as ENV_PREFIX
from omniq._config_values import LOG_LEVELS, QUEUE_ORDERS
from omniq._config_values import RULES as _RULES
from omniq._config_values import convert as _convert
from omniq._config_values import label as _label
from omniq._config_values import unknown_setting as _unknown
from omniq._durations import Duration, parse_duration
from omniq._urls import redact_url
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

DEFAULT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The default of ``max_payload_bytes``: 16 MiB of encoded arguments per task. Far above
#: what a task queue should carry (pass large data by reference), far below what would
#: strain a worker's memory or a server's (Redis takes 512 MB per value).
DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

StorageComponent = Literal["task_queue", "result_storage", "event_storage"]
_COMPONENTS: tuple[str, ...] = ("task_queue", "result_storage", "event_storage")
_TYPES: tuple[str, ...] = tuple(f"{component}_type" for component in _COMPONENTS)
# A *_type left at this marker was not given: ``backend`` (else "sqlite") fills it in.
_NOT_GIVEN = ""


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
    ``metrics_port`` makes every worker pool serve Prometheus metrics at
    ``http://<metrics_host>:<metrics_port>/metrics`` while it runs (the ``metrics``
    extra); ``tracing`` opens OpenTelemetry spans around submits and task runs (the
    ``otel`` extra). README, "Metrics" and "Tracing".
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
    # Observability (SPEC §8): the worker's Prometheus endpoint (None: off), the address
    # it listens on (every interface, so a Prometheus elsewhere can scrape it), and
    # OpenTelemetry spans around submit and each run.
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"  # nosec B104 # scraped from other hosts
    tracing: bool = False

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
