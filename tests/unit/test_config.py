"""Settings layers, parsing, error messages, storage URLs and logging setup."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from omniq.config import ConfigProvider, EnvConfig, LoggingConfig, Settings, parse_duration
from omniq.errors import ConfigError


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and layers -------------------------------------------------------------


def test_defaults() -> None:
    s = Settings()
    assert s.base_dir == ".omniq"
    assert s.log_level == "WARNING"
    assert (s.task_queue_type, s.result_storage_type, s.event_storage_type) == ("sqlite",) * 3
    assert (s.task_queue_url, s.result_storage_url, s.event_storage_url) == (None,) * 3
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.postgres_url == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert s.nats_url == "nats://127.0.0.1:4222"
    assert (s.default_worker, s.max_workers, s.default_queue) == ("async", 10, "default")
    assert s.queue_order == "merged"
    assert (s.task_ttl, s.result_ttl, s.event_ttl) == (None, 86400.0, 604800.0)
    assert (s.lease_seconds, s.max_retries, s.retry_delay, s.retry_max_delay) == (
        30.0,
        0,
        1.0,
        300.0,
    )
    assert (s.task_timeout, s.serializer, s.secret_key) == (None, "auto", None)
    assert s.storage_options == {}
    assert (s.namespace, s.shutdown_timeout, s.poll_interval) == ("omniq", 30.0, 1.0)
    assert (s.event_flush_interval, s.event_batch_size, s.sqlite_synchronous) == (
        0.05,
        500,
        "NORMAL",
    )
    assert Settings.load(environ={}) == s


def test_storage_options_default_is_not_shared() -> None:
    assert Settings().storage_options is not Settings().storage_options


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().max_workers = 3  # type: ignore[misc]


def test_each_layer_overrides_the_previous(tmp_path: Path) -> None:
    config = write_yaml(
        tmp_path / "omniq.yaml",
        "max_workers: 3\ndefault_queue: from-yaml\ntask_ttl: 5m\nmax_retries: 1\n",
    )
    environ = {"OMNIQ_MAX_WORKERS": "5", "OMNIQ_DEFAULT_QUEUE": "from-env"}

    yaml_only = Settings.load(config_file=config, environ={})
    assert (yaml_only.max_workers, yaml_only.default_queue, yaml_only.task_ttl) == (
        3,
        "from-yaml",
        300.0,
    )

    with_env = Settings.load(config_file=config, environ=environ)
    assert (with_env.max_workers, with_env.default_queue, with_env.max_retries) == (
        5,
        "from-env",
        1,
    )

    with_args = Settings.load(config_file=config, environ=environ, max_workers=7)
    assert (with_args.max_workers, with_args.default_queue, with_args.task_ttl) == (
        7,
        "from-env",
        300.0,
    )


def test_omniq_config_names_the_yaml_file(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", "namespace: app_one\n")
    assert Settings.load(environ={"OMNIQ_CONFIG": str(config)}).namespace == "app_one"


def test_omniq_config_from_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_yaml(tmp_path / "c.yaml", "max_retries: 4\n")
    monkeypatch.setenv("OMNIQ_CONFIG", str(config))
    assert Settings.load().max_retries == 4


def test_config_file_argument_wins_over_omniq_config(tmp_path: Path) -> None:
    chosen = write_yaml(tmp_path / "chosen.yaml", "max_workers: 2\n")
    ignored = write_yaml(tmp_path / "ignored.yaml", "max_workers: 9\n")
    settings = Settings.load(config_file=chosen, environ={"OMNIQ_CONFIG": str(ignored)})
    assert settings.max_workers == 2


def test_from_yaml_reads_only_that_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "8")
    config = write_yaml(tmp_path / "c.yaml", "lease_seconds: 1m\ntask_ttl: null\n")
    settings = Settings.from_yaml(config)
    assert (settings.lease_seconds, settings.task_ttl, settings.max_workers) == (60.0, None, 10)


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    assert Settings.from_yaml(write_yaml(tmp_path / "empty.yaml", "")) == Settings()


def test_from_env_ignores_omniq_config(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", "max_workers: 2\n")
    settings = Settings.from_env({"OMNIQ_CONFIG": str(config), "OMNIQ_MAX_RETRIES": "3"})
    assert (settings.max_workers, settings.max_retries) == (10, 3)


def test_unknown_omniq_variable_is_ignored() -> None:
    assert Settings.from_env({"OMNIQ_NOT_A_SETTING": "x", "OMNIQ_": ""}) == Settings()


def test_unknown_omniq_variable_is_warned_about_once_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # OMNIQ_MAX_WORKER=8 used to do nothing, silently.
    caplog.set_level(logging.WARNING, logger="omniq")
    monkeypatch.setenv("OMNIQ_MAX_WORKER", "8")
    for name in ("OMNIQ_CONFIG", "OMNIQ_APP", "OMNIQ_TEST_URL", "OMNIQ_BENCH_QUEUE_URL"):
        monkeypatch.setenv(name, "")  # read by OmniQ, its CLI, its tests or benchmarks
    monkeypatch.setenv("OMNIQ_BACKEND", "sqlite")  # a setting
    assert Settings.load().max_workers == 10
    Settings.load()
    Settings.from_env()
    warnings = [r for r in caplog.records if r.name == "omniq" and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "environment variable OMNIQ_MAX_WORKER is not an OmniQ setting: ignored "
        "(did you mean OMNIQ_MAX_WORKERS?)"
    ]
    assert EnvConfig({"OMNIQ_QQQ": "1"}).unknown() == {"OMNIQ_QQQ": None}
    # The plan's names point at the setting that does their job, not the nearest spelling.
    assert EnvConfig({"OMNIQ_GEVENT_WORKERS": "4", "OMNIQ_RETRY_ATTEMPTS": "2"}).unknown() == {
        "OMNIQ_GEVENT_WORKERS": "OMNIQ_MAX_WORKERS",
        "OMNIQ_RETRY_ATTEMPTS": "OMNIQ_MAX_RETRIES",
    }


def test_provider_remembers_each_source(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", "max_workers: 3\nnamespace: a\n")
    provider = ConfigProvider(
        config_file=config, environ={"OMNIQ_NAMESPACE": "b"}, overrides={"max_retries": 2}
    )
    sources = provider.sources()
    assert sources["max_workers"] == f"config file {config}: max_workers"
    assert sources["namespace"] == "environment variable OMNIQ_NAMESPACE"
    assert sources["max_retries"] == "argument max_retries"
    assert sources["base_dir"] == "default"
    assert provider.settings().namespace == "b"


# --- environment parsing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "raw", "field", "expected"),
    [
        ("OMNIQ_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("OMNIQ_TASK_QUEUE_TYPE", "Redis", "task_queue_type", "redis"),
        ("OMNIQ_RESULT_STORAGE_TYPE", "postgres", "result_storage_type", "postgres"),
        ("OMNIQ_EVENT_STORAGE_TYPE", "none", "event_storage_type", "none"),
        ("OMNIQ_DEFAULT_WORKER", "thread", "default_worker", "thread"),
        ("OMNIQ_MAX_WORKERS", " 16 ", "max_workers", 16),
        ("OMNIQ_TASK_TTL", "2h", "task_ttl", 7200.0),
        ("OMNIQ_RESULT_TTL", "none", "result_ttl", None),
        ("OMNIQ_RESULT_TTL", "", "result_ttl", None),
        ("OMNIQ_RESULT_TTL", "NULL", "result_ttl", None),
        ("OMNIQ_RESULT_TTL", "90", "result_ttl", 90.0),
        ("OMNIQ_BASE_DIR", "/var/lib/omniq", "base_dir", "/var/lib/omniq"),
        ("OMNIQ_STORAGE_OPTIONS", '{"anon": true}', "storage_options", {"anon": True}),
        ("OMNIQ_SECRET_KEY", "", "secret_key", None),
        ("OMNIQ_TASK_QUEUE_URL", "redis://h:1/2", "task_queue_url", "redis://h:1/2"),
        ("OMNIQ_SQLITE_SYNCHRONOUS", "normal", "sqlite_synchronous", "NORMAL"),
        ("OMNIQ_EVENT_FLUSH_INTERVAL", "0", "event_flush_interval", 0.0),
    ],
)
def test_environment_variable_is_parsed(var: str, raw: str, field: str, expected: Any) -> None:
    assert EnvConfig({var: raw}).values() == {field: expected}
    assert getattr(Settings.load(environ={var: raw}), field) == expected


@pytest.mark.parametrize(
    ("var", "raw", "expected_form"),
    [
        ("OMNIQ_MAX_WORKERS", "abc", "an integer >= 1"),
        ("OMNIQ_MAX_WORKERS", "0", "an integer >= 1"),
        ("OMNIQ_MAX_WORKERS", "2.5", "an integer >= 1"),
        ("OMNIQ_MAX_RETRIES", "-1", "an integer >= 0"),
        ("OMNIQ_LOG_LEVEL", "LOUD", "one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'"),
        ("OMNIQ_TASK_QUEUE_TYPE", "mongo", "one of 'sqlite', 'file', 'memory'"),
        ("OMNIQ_TASK_QUEUE_TYPE", "none", "one of 'sqlite'"),
        ("OMNIQ_DEFAULT_WORKER", "fiber", "one of 'async', 'thread', 'process', 'gevent'"),
        ("OMNIQ_TASK_TTL", "soon", "a duration > 0"),
        ("OMNIQ_TASK_TTL", "0", "a duration > 0"),
        ("OMNIQ_LEASE_SECONDS", "none", "a duration > 0"),
        ("OMNIQ_RETRY_DELAY", "-1s", "a duration >= 0"),
        ("OMNIQ_POLL_INTERVAL", "inf", "a duration > 0"),
        ("OMNIQ_NAMESPACE", "1app", "letters, digits and underscores, starting with a letter"),
        ("OMNIQ_NAMESPACE", "my-app", "letters, digits and underscores"),
        ("OMNIQ_DEFAULT_QUEUE", "", "a non-empty string"),
        ("OMNIQ_SERIALIZER", "pickle", "one of 'auto', 'msgspec', 'dill'"),
        ("OMNIQ_SQLITE_SYNCHRONOUS", "OFF", "one of 'FULL', 'NORMAL'"),
        ("OMNIQ_EVENT_BATCH_SIZE", "0", "an integer >= 1"),
    ],
)
def test_bad_environment_value_names_variable_and_form(
    var: str, raw: str, expected_form: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(environ={var: raw})
    message = str(info.value)
    assert message.startswith(f"environment variable {var}={raw!r}: expected {expected_form}")
    assert isinstance(info.value, ValueError)


def test_storage_options_from_env_must_be_a_json_object() -> None:
    with pytest.raises(ConfigError, match=r"OMNIQ_STORAGE_OPTIONS.*a JSON object"):
        Settings.from_env({"OMNIQ_STORAGE_OPTIONS": "[1, 2]"})


# --- durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("30", 30.0),
        (" 10 S ", 10.0),
        (".5s", 0.5),
        (30, 30.0),
        (1.5, 1.5),
        (0, 0.0),
        (timedelta(minutes=2), 120.0),
    ],
)
def test_parse_duration(value: Any, seconds: float) -> None:
    assert parse_duration(value, field="lease_seconds") == seconds


@pytest.mark.parametrize("value", ["abc", "-5s", "5 weeks", "1h30m", "", True, float("nan"), None])
def test_parse_duration_rejects(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"^lease_seconds=.*expected a duration >= 0 \("):
        parse_duration(value, field="lease_seconds")


def test_durations_in_code_accept_timedelta_and_strings() -> None:
    settings = Settings(lease_seconds=timedelta(seconds=45), task_ttl="1d")  # type: ignore[arg-type]
    assert (settings.lease_seconds, settings.task_ttl) == (45.0, 86400.0)
    assert isinstance(settings.lease_seconds, float)


# --- YAML errors ----------------------------------------------------------------------


def test_bad_yaml_value_names_file_field_and_form(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", "max_workers: abc\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(config_file=config, environ={})
    assert str(info.value) == (f"config file {config}: max_workers='abc': expected an integer >= 1")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_workers: true\n", "max_workers=True: expected an integer >= 1"),
        ("max_workers: '10'\n", "max_workers='10': expected an integer >= 1"),
        ("lease_seconds: null\n", "lease_seconds=None: expected a duration > 0"),
        ("storage_options: [1]\n", "storage_options=<hidden>: expected a mapping"),
        ("task_ttl: none\n", "task_ttl='none': expected a duration > 0"),
    ],
)
def test_yaml_values_are_typed(tmp_path: Path, text: str, fragment: str) -> None:
    config = write_yaml(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError, match=r"^config file ") as info:
        Settings.from_yaml(config)
    assert fragment in str(info.value)


def test_yaml_unknown_key_suggests_closest_field(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", "max_worker: 3\n")
    with pytest.raises(ConfigError) as info:
        Settings.from_yaml(config)
    message = str(info.value)
    assert str(config) in message
    assert "max_worker: unknown setting" in message
    assert "did you mean 'max_workers'?" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- max_workers\n", "expected a mapping of setting names at top level, got list"),
        ("max_workers: [1\n", "is not valid YAML"),
        ("storage:\n  type: redis\n", "storage: unknown setting"),
    ],
)
def test_yaml_shape_errors_name_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    config = write_yaml(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as info:
        Settings.from_yaml(config)
    assert str(info.value).startswith(f"config file {config}: ")
    assert fragment in str(info.value)


def test_missing_yaml_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"config file {missing}: cannot be read")):
        Settings.from_yaml(missing)
    with pytest.raises(ConfigError, match=r"nope\.yaml \(from OMNIQ_CONFIG\): cannot be read"):
        Settings.load(environ={"OMNIQ_CONFIG": str(missing)})


def test_relative_yaml_path_is_shown_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_yaml(tmp_path / "c.yaml", "max_workers: 0\n")
    with pytest.raises(
        ConfigError, match="^" + re.escape(f"config file {os.getcwd()}/c.yaml: max_workers=0")
    ):
        Settings.from_yaml("c.yaml")


# --- arguments in code ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"max_workers": 0}, "argument max_workers=0: expected an integer >= 1"),
        ({"max_workers": True}, "argument max_workers=True: expected an integer >= 1"),
        ({"max_workers": "10"}, "argument max_workers='10': expected an integer >= 1"),
        ({"log_level": "verbose"}, "argument log_level='verbose': expected one of"),
        (
            {"queue_order": "fifo"},
            "argument queue_order='fifo': expected one of 'merged', 'strict'",
        ),
        ({"event_storage_type": None}, "argument event_storage_type=None: expected one of"),
        ({"storage_options": {1: 2}}, "argument storage_options=<hidden>: expected a mapping"),
    ],
)
def test_direct_construction_and_replace_validate(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(fragment)):
        Settings(**changes)
    with pytest.raises(ConfigError, match="^" + re.escape(fragment)):
        Settings().replace(**changes)
    with pytest.raises(ConfigError, match="^" + re.escape(fragment)):
        Settings.load(environ={}, **changes)


def test_unknown_argument_is_rejected_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"argument max_worker: unknown setting.*'max_workers'"):
        Settings.load(environ={}, max_worker=3)
    with pytest.raises(ConfigError, match="argument lease: unknown setting"):
        Settings().replace(lease=3)


def test_input_is_normalised() -> None:
    settings = Settings(log_level="info", task_queue_type=" File ", sqlite_synchronous="normal")
    assert (settings.log_level, settings.task_queue_type) == ("INFO", "file")
    assert settings.sqlite_synchronous == "NORMAL"
    assert settings.replace(max_workers=2) == Settings(
        log_level="INFO", task_queue_type="file", sqlite_synchronous="NORMAL", max_workers=2
    )


# --- secrets --------------------------------------------------------------------------


def test_secret_key_never_appears_in_messages_or_repr(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", "secret_key: 987654321\n")
    with pytest.raises(ConfigError) as info:
        Settings.from_yaml(config)
    assert "987654321" not in str(info.value)
    assert "secret_key=<hidden>: expected a non-empty string" in str(info.value)

    with pytest.raises(ConfigError) as info:
        Settings(secret_key=["hunter2", 7])  # type: ignore[list-item]
    assert "hunter2" not in str(info.value)

    assert "hunter2" not in repr(Settings(secret_key="hunter2"))
    assert "hunter2" not in repr(Settings(secret_key=["new", "hunter2"]))


def test_secret_key_takes_a_list_to_rotate_keys(tmp_path: Path) -> None:
    assert Settings(secret_key=["new", "old"]).secret_key == ("new", "old")
    config = write_yaml(tmp_path / "c.yaml", "secret_key: [new, old]\n")
    assert Settings.from_yaml(config).secret_key == ("new", "old")
    assert Settings.from_env({"OMNIQ_SECRET_KEY": '["new", "old"]'}).secret_key == (
        "new",
        "old",
    )
    # Not a JSON list: one key, commas and all (a key may hold any character).
    assert Settings.from_env({"OMNIQ_SECRET_KEY": "a,b"}).secret_key == "a,b"
    for bad in ('["a", ""]', "[]", '["a", 1]', "[not json"):
        with pytest.raises(ConfigError, match="OMNIQ_SECRET_KEY=<hidden>: expected"):
            Settings.from_env({"OMNIQ_SECRET_KEY": bad})
    with pytest.raises(ConfigError, match="argument secret_key=<hidden>"):
        Settings(secret_key=[])


def test_security_switches_from_every_layer() -> None:
    assert Settings().allow_unsigned_dill is False
    assert Settings().max_payload_bytes == 16 * 1024 * 1024
    env = {"OMNIQ_ALLOW_UNSIGNED_DILL": "true", "OMNIQ_MAX_PAYLOAD_BYTES": "1024"}
    loaded = Settings.from_env(env)
    assert (loaded.allow_unsigned_dill, loaded.max_payload_bytes) == (True, 1024)
    assert Settings.from_env({"OMNIQ_MAX_PAYLOAD_BYTES": "none"}).max_payload_bytes is None
    with pytest.raises(ConfigError, match="OMNIQ_ALLOW_UNSIGNED_DILL='maybe': expected true"):
        Settings.from_env({"OMNIQ_ALLOW_UNSIGNED_DILL": "maybe"})
    with pytest.raises(ConfigError, match="argument max_payload_bytes=0: expected an integer"):
        Settings(max_payload_bytes=0)


def test_repr_shows_no_password_and_no_storage_credentials() -> None:
    settings = Settings(
        redis_url="redis://app:hunter2@10.0.0.1:6379/0",
        postgres_url="postgresql://app:hunter2@db/app",
        storage_options={"secret": "hunter2", "tls_key_password": "hunter2"},
    )
    shown = repr(settings)
    assert "hunter2" not in shown
    assert "redis://app:***@10.0.0.1:6379/0" in shown
    assert "tls_key_password" in shown


def test_storage_options_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"OMNIQ_STORAGE_OPTIONS": '{"secret": "s3cr3t"'})
    assert "s3cr3t" not in str(info.value)
    assert "OMNIQ_STORAGE_OPTIONS=<hidden>" in str(info.value)


# --- storage URLs ---------------------------------------------------------------------


def test_storage_url_derived_from_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = Path.cwd() / ".omniq"
    settings = Settings()
    assert settings.storage_url("task_queue") == f"sqlite:///{base}/omniq.db"
    assert settings.storage_url("task_queue").startswith("sqlite:////")  # type: ignore[union-attr]

    kinds = Settings(
        task_queue_type="file",
        result_storage_type="memory",
        event_storage_type="none",
    )
    assert kinds.storage_url("task_queue") == f"file://{base}/task_queue"
    assert kinds.storage_url("result_storage") == "memory://omniq/result_storage"
    assert kinds.storage_url("event_storage") is None
    assert (
        Settings(event_storage_type="file").storage_url("event_storage")
        == f"file://{base}/event_storage"
    )


def test_storage_url_for_servers() -> None:
    settings = Settings(
        task_queue_type="redis",
        result_storage_type="postgres",
        event_storage_type="nats",
        redis_url="redis://cache:6379/3",
    )
    assert settings.storage_url("task_queue") == "redis://cache:6379/3"
    assert settings.storage_url("result_storage") == settings.postgres_url
    assert settings.storage_url("event_storage") == "nats://127.0.0.1:4222"


def test_explicit_url_wins_over_type() -> None:
    settings = Settings(task_queue_type="redis", task_queue_url="sqlite:///elsewhere.db")
    assert settings.storage_url("task_queue") == "sqlite:///elsewhere.db"


def test_relative_base_dir_resolves_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(base_dir="data")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    monkeypatch.chdir(tmp_path / "one")
    first = settings.storage_url("result_storage")
    monkeypatch.chdir(tmp_path / "two")
    second = settings.storage_url("result_storage")
    assert first == f"sqlite:///{Path.cwd().parent / 'one' / 'data' / 'omniq.db'}"
    assert second == f"sqlite:///{Path.cwd() / 'data' / 'omniq.db'}"


def test_absolute_base_dir(tmp_path: Path) -> None:
    settings = Settings(base_dir=str(tmp_path), task_queue_type="file")
    assert settings.storage_url("task_queue") == f"file://{tmp_path}/task_queue"


def test_unknown_component_is_rejected() -> None:
    with pytest.raises(ConfigError, match="component='tasks'"):
        Settings().storage_url("tasks")  # type: ignore[arg-type]


# --- logging --------------------------------------------------------------------------


@pytest.fixture
def omniq_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("omniq")
    saved_level, saved_handlers = logger.level, list(logger.handlers)
    logger.handlers.clear()
    yield logger
    for handler in logger.handlers:
        handler.close()
    logger.handlers[:] = saved_handlers
    logger.setLevel(saved_level)


def test_logging_apply_is_idempotent(omniq_logger: logging.Logger) -> None:
    root = logging.getLogger()
    root_state = (root.level, list(root.handlers))

    LoggingConfig(level="info").apply()
    LoggingConfig(level="info").apply()
    assert omniq_logger.level == logging.INFO
    assert len(omniq_logger.handlers) == 1
    assert isinstance(omniq_logger.handlers[0], logging.StreamHandler)

    LoggingConfig(level="ERROR").apply()
    assert omniq_logger.level == logging.ERROR
    assert len(omniq_logger.handlers) == 1
    assert (root.level, list(root.handlers)) == root_state


def test_logging_keeps_an_existing_handler(omniq_logger: logging.Logger) -> None:
    mine = logging.NullHandler()
    omniq_logger.addHandler(mine)
    LoggingConfig.from_settings(Settings(log_level="debug")).apply()
    assert omniq_logger.handlers == [mine]
    assert omniq_logger.level == logging.DEBUG


def test_logging_format_is_used(omniq_logger: logging.Logger) -> None:
    LoggingConfig(fmt="%(levelname)s|%(message)s").apply()
    formatter = omniq_logger.handlers[0].formatter
    assert formatter is not None
    record = logging.LogRecord("omniq", logging.WARNING, __file__, 1, "hi", None, None)
    assert formatter.format(record) == "WARNING|hi"


def test_logging_rejects_a_bad_level() -> None:
    with pytest.raises(ConfigError, match="expected one of 'DEBUG'"):
        LoggingConfig(level="loud")


def test_queue_order_from_the_environment_and_yaml(tmp_path: Path) -> None:
    assert Settings.load(environ={"OMNIQ_QUEUE_ORDER": "Strict"}).queue_order == "strict"
    write_yaml(tmp_path / "c.yaml", "queue_order: strict\n")
    assert Settings.from_yaml(tmp_path / "c.yaml").queue_order == "strict"
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"OMNIQ_QUEUE_ORDER": "lifo"})
    assert str(caught.value) == (
        "environment variable OMNIQ_QUEUE_ORDER='lifo': expected one of 'merged', 'strict'"
    )
    assert isinstance(caught.value, ValueError)
