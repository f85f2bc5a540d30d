"""Write the generated reference pages of the documentation site.

    python docs/_gen.py

docs/reference/configuration.md comes from ``omniq.config.Settings`` (its fields, their
defaults, and the accepted form of each from the rules that check it) and
docs/reference/cli.md from the ``omniq`` command's argparse parser, so neither can drift
from the code: tests/unit/test_docs_reference.py renders both again and compares. A new
setting needs a line in ``DESCRIPTIONS`` below (the renderer refuses a field without one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION = ROOT / "docs" / "reference" / "configuration.md"
CLI = ROOT / "docs" / "reference" / "cli.md"
REGENERATE = "python docs/_gen.py"

# What each setting does, in a sentence (the form it takes and its default come from the
# code). Keep these in step with the code they describe.
DESCRIPTIONS: dict[str, str] = {
    "base_dir": "Directory of the embedded stores: the SQLite database (`omniq.db`), the "
    "`file` stores and the key that signs dill payloads. Relative to the current directory.",
    "log_level": "Level of the `omniq` logger (library logs; task events go to the event storage).",
    "backend": "Shorthand for the three `*_type` settings: fills in those nobody gave.",
    "task_queue_type": "Backend of the task queue when `task_queue_url` is not set "
    "(default `sqlite`, or `backend`).",
    "result_storage_type": "Backend of the results when `result_storage_url` is not set "
    "(default `sqlite`, or `backend`).",
    "event_storage_type": "Backend of the event log when `event_storage_url` is not set "
    "(default `sqlite`, or `backend`); `none` turns events off.",
    "task_queue_url": "URL of the task queue; wins over `task_queue_type`.",
    "result_storage_url": "URL of the result storage; wins over `result_storage_type`.",
    "event_storage_url": "URL of the event log; wins over `event_storage_type`.",
    "redis_url": "The Redis server a `redis` `*_type` uses.",
    "postgres_url": "The PostgreSQL database a `postgres` `*_type` uses.",
    "nats_url": "The NATS server (JetStream) a `nats` `*_type` uses.",
    "default_worker": "Worker type of `oq.worker()` and `omniq worker` when none is given.",
    "max_workers": "Default `concurrency` of a worker pool (tasks run at once).",
    "default_queue": "Queue of a task submitted without `queue`, and of a worker without `queues`.",
    "queue_order": "How a worker of several queues claims: `merged` (priority, due time, "
    "enqueue order across them) or `strict` (the first listed queue with work first).",
    "task_ttl": "Default `ttl` of a task: not started within it, it ends `EXPIRED`.",
    "result_ttl": "How long results are kept (also the retention of finished tasks for "
    "`cleanup()`).",
    "event_ttl": "How long events are kept before `cleanup()` drops them.",
    "lease_seconds": "Length of a claim's lease, renewed while the task runs; a worker "
    "that dies loses its tasks after this long. Workers heartbeat every third of it.",
    "max_retries": "Default number of retries after a failed run.",
    "max_lost_runs": "Runs lost with their worker after which a task ends `FAILED` "
    "(`WorkerLost`) rather than running again.",
    "retry_delay": "Default delay before the first retry; the n-th waits `retry_delay * 2**(n-1)`.",
    "retry_max_delay": "Cap of the retry backoff.",
    "task_timeout": "Default `timeout` of a run; past it the run is stopped and counts as failed.",
    "serializer": "`auto` (msgpack, dill when needed), `msgspec` (never dill) or `dill`.",
    "secret_key": "Key that signs dill payloads (HMAC-SHA256); a list rotates keys: the "
    "first signs, any verifies. Never shown in messages or `repr`.",
    "allow_unsigned_dill": "Accept unsigned dill payloads on a shared store without "
    "`secret_key` (only where nobody untrusted can write to it).",
    "max_payload_bytes": "Largest encoded arguments of one task, in bytes.",
    "storage_options": "Options passed to the storage drivers: fsspec options (cloud "
    "credentials) and the `tls_*` files of Redis and PostgreSQL.",
    "namespace": "Isolates applications on a shared server: the Redis key prefix, the "
    "PostgreSQL schema, the NATS stream, subject and bucket prefix.",
    "shutdown_timeout": "How long a graceful stop waits for running tasks before handing "
    "their leases back.",
    "poll_interval": "Longest idle sleep of a worker where the backend cannot wake it.",
    "event_flush_interval": "How long events written in the background wait to be "
    "batched (SQLite and the file backend).",
    "event_batch_size": "Most events written in one batch.",
    "sqlite_synchronous": "SQLite's `synchronous` pragma: `NORMAL` may lose the last "
    "commits on power loss (never on a crash of the process), `FULL` does not.",
    "metrics_port": "Port on which each worker serves Prometheus metrics at `/metrics` "
    "(the `metrics` extra); none: off.",
    "metrics_host": "Interface the metrics endpoint listens on.",
    "tracing": "Open OpenTelemetry spans around submits and runs (the `otel` extra).",
}


def _default(name: str) -> str:
    from omniq.config import Settings

    if name.endswith("_type"):
        return "`sqlite` (or `backend`)"
    value = getattr(Settings(), name)
    if value is None:
        return "none"
    if value == {}:
        return "`{}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _unit(kind: str, name: str) -> str:
    if kind.startswith("duration"):
        return "seconds"
    if name == "max_payload_bytes":
        return "bytes"
    return ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def configuration_page() -> str:
    """docs/reference/configuration.md, from ``Settings`` and its conversion rules."""
    from omniq._config_values import ENV_PREFIX, RULES, _expected
    from omniq.config import Settings

    fields = list(Settings.__struct_fields__)
    if missing := [name for name in fields if name not in DESCRIPTIONS]:
        raise ValueError(f"docs/_gen.py: describe these settings in DESCRIPTIONS: {missing}")
    if stale := [name for name in DESCRIPTIONS if name not in fields]:
        raise ValueError(f"docs/_gen.py: DESCRIPTIONS names settings that are gone: {stale}")
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from omniq.config.Settings by `{REGENERATE}`: do not edit. -->",
        "",
        "Every setting is a field of `omniq.Settings`, the key of the same name in a YAML "
        "file (`Settings.from_yaml(path)`, or the file `OMNIQ_CONFIG` names), and the "
        "environment variable `OMNIQ_` + its upper-case name. Later layers win: defaults < "
        "YAML < environment < arguments in code (`OmniQ(max_workers=8)`). Durations "
        "(unit: seconds) also take a `timedelta` in code and strings such as `250ms`, "
        "`30s`, `5m`, `2h`, `1d` everywhere. A bad value raises `ConfigError` naming its "
        "source, the field and the form below.",
        "",
        "| setting (YAML key) | environment variable | default | unit | accepted values "
        "| what it does |",
        "|---|---|---|---|---|---|",
    ]
    for name in fields:
        kind, arg = RULES[name]
        lines.append(
            f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {_cell(_default(name))} | "
            f"{_unit(kind, name)} | {_cell(_expected(kind, arg))} | "
            f"{_cell(DESCRIPTIONS[name])} |"
        )
    lines += [
        "",
        "`OMNIQ_CONFIG` (the YAML file), `OMNIQ_APP` (the `--app` of the command line) and "
        "`OMNIQ_DASHBOARD_AUTH` (the dashboard's `--auth`) are read too. Any other "
        "`OMNIQ_*` variable is ignored with one warning naming the closest setting.",
        "",
    ]
    return "\n".join(lines)


def _option_names(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    return ", ".join(f"`{option}`" for option in action.option_strings)


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices:
        return ", ".join(f"`{choice}`" for choice in action.choices)
    if isinstance(action.metavar, str):
        return f"`{action.metavar}`"
    type_name = getattr(action.type, "__name__", "")
    # The CLI's float options (--delay, --timeout) are all seconds.
    return {"int": "integer", "float": "seconds", "_port": "port"}.get(type_name, "text")


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        nargs = {"*": "any number", "?": "optional"}.get(str(action.nargs), "")
        value = _value(action)
        if nargs and not action.option_strings:
            value = f"{value or 'text'}, {nargs}"
        default = "" if action.default in (None, False) else f"`{action.default}`"
        rows.append(
            f"| {_option_names(action)} | {_cell(value)} | {default} | {_cell(action.help or '')} |"
        )
    if not rows:
        return ["No options of its own."]
    return ["| argument | value | default | meaning |", "|---|---|---|---|", *rows]


def cli_page() -> str:
    """docs/reference/cli.md, from the ``omniq`` command's parser."""
    from omniq.cli import _parser

    parser = _parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    lines = [
        "# Command line reference",
        "",
        f"<!-- Generated from omniq/cli.py's parser by `{REGENERATE}`: do not edit. -->",
        "",
        "`omniq [--config FILE] [--log-level LEVEL] [--app APP] COMMAND ...` "
        "(also `python -m omniq`). `--config` and `--log-level` set `OMNIQ_CONFIG` and "
        "`OMNIQ_LOG_LEVEL` before the app is imported, and are taken after the command's "
        "name too. Every command but `demo` takes `--app package.module:attribute` (before "
        "or after its name, or `OMNIQ_APP`): the `OmniQ` or `AsyncOmniQ` whose stores it "
        "works on; without it, the stores the settings name. The current directory comes "
        "first on `sys.path`. Errors print as one line and exit with a non-zero code.",
        "",
        "## Options of `omniq`",
        "",
        *_arguments(parser),
        "",
    ]
    for name, command in sub.choices.items():
        lines += [f"## omniq {name}", "", f"{helps[name][:1].upper()}{helps[name][1:]}.", ""]
        lines += [*_arguments(command), ""]
    return "\n".join(lines)


def pages() -> dict[Path, str]:
    """Each generated page and its text."""
    return {CONFIGURATION: configuration_page(), CLI: cli_page()}


def main() -> int:
    sys.path.insert(0, str(ROOT))  # the omniq of this checkout
    try:
        generated = pages()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    for path, text in generated.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
