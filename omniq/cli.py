"""The ``omniq`` command line: worker, enqueue, status, events, schedules, stats, cleanup,
requeue, workers, dashboard, demo.

Errors print as one line (``omniq: error: …``) with a non-zero exit code, never as a
traceback. ``--config`` and ``--log-level`` are applied through ``OMNIQ_CONFIG`` and
``OMNIQ_LOG_LEVEL`` before the app is imported, so they reach settings the app builds;
they are checked first, so that a bad one is reported as the option it is.

Every command but ``demo`` takes ``--app package.module:oq`` (before or after the
command's name, or ``OMNIQ_APP``): without it a command works on the stores the settings
name (the SQLite default under ``.omniq/``), which is not where an app configured in code
puts its tasks. The current directory is put first on ``sys.path``, so the app and its
tasks import from where the command runs.

``omniq worker --loop auto`` (the default) runs the worker on uvloop when it is installed
(``pip install 'omniq[uvloop]'``), as uvicorn does: the event loop's own work is a large
part of a short task's cost, and uvloop does it in C. A gevent worker stays on asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from omniq import __version__
from omniq._tracing import flush_spans
from omniq.config import (
    LOG_LEVELS,
    QUEUE_ORDERS,
    LoggingConfig,
    Settings,
    warn_unknown_variables,
)
from omniq.errors import ConfigError, OmniQError

if TYPE_CHECKING:
    from omniq.models import Progress

__all__ = ["load_app", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def load_app(spec: str) -> Any:
    """Import ``package.module:attribute`` and return the ``AsyncOmniQ`` it names.

    An ``OmniQ`` (sync) app is accepted too: its async client is used.
    """
    from omniq.core import AsyncOmniQ
    from omniq.sync import OmniQ

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--app {spec!r}: expected 'package.module:attribute'")
    _import_from_cwd()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--app {spec!r}: cannot import {module_name!r}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"--app {spec!r}: module {module_name!r} has no {attr!r}") from None
    if isinstance(app, OmniQ):
        return app.async_client
    if isinstance(app, AsyncOmniQ):
        return app
    raise ConfigError(f"--app {spec!r}: expected an OmniQ or AsyncOmniQ, got {type(app).__name__}")


def _import_from_cwd() -> None:
    """Put the current directory first on ``sys.path``, as Celery, RQ and uvicorn do.

    ``python -m omniq`` does so by itself; the ``omniq`` console script puts its own
    directory there instead, so ``--app myapp:oq`` and the ``tasks:add`` a worker runs
    could not be imported from where the user stands. Process workers inherit it.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def _client(args: argparse.Namespace) -> Any:
    from omniq.core import AsyncOmniQ

    # Without an app, the settings' stores: not the ones an app configured in code uses.
    return load_app(args.app) if args.app else AsyncOmniQ()


# -- worker ------------------------------------------------------------------------------


async def _run_worker(args: argparse.Namespace) -> int:
    oq = getattr(args, "client", None) or _client(args)
    pool = oq.worker(
        worker_type=args.worker_type,
        concurrency=args.concurrency,
        queues=args.queues,
        queue_order=args.queue_order,
    )
    if args.metrics_port is not None:
        pool.metrics_port = args.metrics_port
    loop = asyncio.get_running_loop()
    signals_seen = 0
    stopper: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        # First signal: graceful (finish within shutdown_timeout). Second: at once,
        # still handing the leases back.
        timeout = None if signals_seen == 1 else 0.0
        stopper.append(loop.create_task(pool.stop(timeout)))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with oq:
            # A signal during start-up (connecting can take a while) asked a pool that
            # was not running yet to stop, which it ignores: do not start it at all.
            if not stopper:
                await pool.run(burst=args.burst)
            if stopper:
                await asyncio.gather(*stopper, return_exceptions=True)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return EXIT_OK


LOOPS = ("auto", "asyncio", "uvloop")


def _port(text: str) -> int:
    """``--metrics-port``: a TCP port (argparse reports a bad one as a usage error)."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a TCP port number (1 to 65535)")
    return port


def loop_factory(choice: str, worker_type: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop ``omniq worker --loop choice`` runs a ``worker_type`` worker on.

    ``auto`` is uvloop when it can be imported, except for gevent workers (gevent patches
    the standard library underneath asyncio); ``uvloop`` insists on it.
    """
    if choice not in LOOPS:
        raise ConfigError(f"--loop {choice!r}: expected one of {', '.join(LOOPS)}")
    if choice == "asyncio" or (choice == "auto" and worker_type == "gevent"):
        return asyncio.new_event_loop
    if worker_type == "gevent":
        raise ConfigError("--loop uvloop: a gevent worker runs on asyncio's own loop")
    try:
        import uvloop
    except ImportError:
        if choice == "auto":
            return asyncio.new_event_loop
        raise ConfigError(
            "--loop uvloop: uvloop is not installed (pip install 'omniq[uvloop]')"
        ) from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _worker_loop(args: argparse.Namespace) -> Callable[[], asyncio.AbstractEventLoop]:
    # The app is built (not connected) first: its settings may name the worker type.
    oq = args.client = _client(args)
    return loop_factory(args.loop, args.worker_type or oq.settings.default_worker)


# -- one-shot commands ------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


async def _enqueue(args: argparse.Namespace) -> int:
    oq = _client(args)
    kwargs = json.loads(args.kwargs) if args.kwargs else {}
    if not isinstance(kwargs, dict):
        raise ConfigError("--kwargs: expected a JSON object")
    async with oq:
        task_id = await oq.submit(
            args.func,
            [_parse_value(a) for a in args.args],
            kwargs,
            queue=args.queue,
            priority=args.priority,
            delay=args.delay,
            max_retries=args.max_retries,
            timeout=args.timeout,
        )
    print(task_id)
    return EXIT_OK


async def _status(args: argparse.Namespace) -> int:
    oq = _client(args)
    async with oq:
        task = await oq.get_task(args.task_id)
        result = await oq.get_result(args.task_id, wait=args.wait, timeout=args.timeout)
    if task is None and result is None:
        raise OmniQError(f"no task {args.task_id}")
    if task is not None:
        print(f"task      {task.id}")
        print(f"function  {task.func}")
        print(f"queue     {task.queue}")
        print(f"status    {task.status.value}")
        print(f"attempts  {task.attempts}")
        if task.progress is not None:
            print(f"progress  {_progress_line(task.progress)}")
    if result is not None:
        if result.error is not None:
            print(f"error     {result.error.type}: {result.error.message}")
        else:
            print(f"result    {result.result!r}")
    return EXIT_OK


def _progress_line(progress: Progress) -> str:
    """``3/10 (30%) copying b.png  (updated 2026-01-02 03:04:05+00:00)``."""

    def number(value: float) -> str:
        return str(value) if isinstance(value, int) else f"{value:g}"

    line = number(progress.done)
    if progress.total is not None:
        line += f"/{number(progress.total)}"
        if progress.total > 0:
            line += f" ({100 * progress.done / progress.total:.0f}%)"
    if progress.message:
        line += f" {progress.message}"
    return f"{line}  (updated {progress.updated_at.isoformat(sep=' ', timespec='seconds')})"


async def _events(args: argparse.Namespace) -> int:
    from omniq.events import AsyncEventProcessor

    oq = _client(args)
    async with oq:
        lines = await AsyncEventProcessor(oq.event_storage).timeline(args.task_id)
    if not lines:
        raise OmniQError(f"no events for task {args.task_id}")
    print("\n".join(lines))
    return EXIT_OK


async def _schedules(args: argparse.Namespace) -> int:
    oq = _client(args)
    async with oq:
        for action in ("pause", "resume", "remove"):
            target = getattr(args, action)
            if target:
                ok = await getattr(oq, f"{action}_schedule")(target)
                if not ok:
                    raise OmniQError(f"no schedule {target}")
                print(f"{action}d {target}" if action != "pause" else f"paused {target}")
                return EXIT_OK
        schedules = await oq.list_schedules()
    if not schedules:
        print("no schedules")
    for s in schedules:
        rule = f"cron {s.cron!r} ({s.timezone})" if s.cron else f"every {s.interval} s"
        state = "paused" if s.paused else "active"
        when = s.next_run_at.isoformat() if s.next_run_at else "-"
        print(f"{s.id}  {s.task.func}  {rule}  {state}  runs={s.runs}  next={when}")
    return EXIT_OK


async def _stats(args: argparse.Namespace) -> int:
    oq = _client(args)
    async with oq:
        stats = await oq.stats()
    if not stats:
        print("no tasks")
    for queue, counts in sorted(stats.items()):
        print(f"{queue}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return EXIT_OK


async def _cleanup(args: argparse.Namespace) -> int:
    oq = _client(args)
    async with oq:
        counts = await oq.cleanup()
    print(", ".join(f"{k}: {v} removed" for k, v in counts.items()))
    return EXIT_OK


async def _requeue(args: argparse.Namespace) -> int:
    if args.task_id is None and args.status is None:
        raise ConfigError("requeue: name a task ID, or --status for every task in that status")
    if args.task_id is not None and args.status is not None:
        raise ConfigError("requeue: give a task ID or --status, not both")
    if args.task_id is not None and args.queue is not None:
        raise ConfigError("requeue: --queue goes with --status")
    oq = _client(args)
    async with oq:
        if args.task_id is not None:
            if not await oq.requeue(args.task_id):
                raise OmniQError(
                    f"task {args.task_id} not requeued: unknown, or not failed, cancelled "
                    "or expired"
                )
            print(f"requeued {args.task_id}")
            return EXIT_OK
        count = await oq.requeue_all(status=args.status, queue=args.queue)
    print(f"requeued {count} task{'' if count == 1 else 's'}")
    return EXIT_OK


async def _workers(args: argparse.Namespace) -> int:
    oq = _client(args)
    async with oq:
        found = await oq.list_workers()
    if not found:
        print("no workers")
        return EXIT_OK
    rows = [("ID", "HOST", "PID", "TYPE", "RUNNING", "QUEUES", "STARTED", "LAST SEEN")]
    for w in found:
        rows.append(
            (
                w.id,
                w.hostname,
                str(w.pid),
                w.worker_type,
                f"{w.running}/{w.concurrency}",
                ",".join(w.queues),
                w.started_at.isoformat(timespec="seconds"),
                w.last_seen.isoformat(timespec="seconds"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK


async def _dashboard(args: argparse.Namespace) -> int:
    from omniq.dashboard._auth import parse_auth
    from omniq.dashboard._serve import serve

    auth = None if args.auth is None else parse_auth(args.auth, source="--auth")
    await serve(_client(args), host=args.host, port=args.port, auth=auth, read_only=args.read_only)
    return EXIT_OK


async def _demo(args: argparse.Namespace) -> int:
    from omniq.demo import run_demo

    await run_demo()
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omniq", description="OmniQ task queue")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help="YAML settings file (sets OMNIQ_CONFIG)")
    parser.add_argument("--log-level", help="library log level (sets OMNIQ_LOG_LEVEL)")
    app_help = (
        "package.module:attribute of your OmniQ/AsyncOmniQ (default: OMNIQ_APP, else the "
        "stores the settings name)"
    )
    parser.add_argument("--app", dest="top_app", help=app_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, app: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        if app:
            p.add_argument("--app", help=app_help)
        p.add_argument("--config", help=argparse.SUPPRESS, dest="sub_config")
        p.add_argument("--log-level", help=argparse.SUPPRESS, dest="sub_log_level")
        return p

    w = command("worker", "run a worker until SIGTERM/SIGINT")
    w.add_argument("--queues", help="comma-separated queue names (default: default_queue)")
    w.add_argument(
        "--queue-order",
        metavar="{merged,strict}",
        help="merged: by priority, then age, across the queues (default: queue_order); "
        "strict: the first listed queue with work first",
    )
    w.add_argument("--concurrency", type=int, help="tasks at once (default: max_workers)")
    w.add_argument("--worker-type", choices=["async", "thread", "process", "gevent"])
    w.add_argument("--burst", action="store_true", help="exit once nothing is left to run")
    w.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="event loop: uvloop when installed (auto, the default), asyncio or uvloop",
    )
    w.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://<metrics_host>:PORT/metrics "
        "(default: metrics_port; needs omniq[metrics])",
    )
    w.set_defaults(handler=_run_worker)

    e = command("enqueue", "enqueue package.module:function with JSON arguments")
    e.add_argument("func")
    e.add_argument("args", nargs="*", help="positional arguments (JSON, else strings)")
    e.add_argument("--kwargs", help="keyword arguments as a JSON object")
    e.add_argument("--queue")
    e.add_argument("--priority", type=int, default=0)
    e.add_argument("--delay", type=float)
    e.add_argument("--max-retries", type=int)
    e.add_argument("--timeout", type=float)
    e.set_defaults(handler=_enqueue)

    s = command("status", "show a task's status and result")
    s.add_argument("task_id")
    s.add_argument("--wait", action="store_true", help="wait for a final result")
    s.add_argument("--timeout", type=float, help="with --wait: give up after this long")
    s.set_defaults(handler=_status)

    ev = command("events", "show a task's lifecycle events")
    ev.add_argument("task_id")
    ev.set_defaults(handler=_events)

    sc = command("schedules", "list schedules, or pause/resume/remove one")
    group = sc.add_mutually_exclusive_group()
    group.add_argument("--pause", metavar="ID")
    group.add_argument("--resume", metavar="ID")
    group.add_argument("--remove", metavar="ID")
    sc.set_defaults(handler=_schedules)

    command("stats", "task counts per queue and status").set_defaults(handler=_stats)
    command("cleanup", "drop expired results, old tasks and events").set_defaults(handler=_cleanup)
    rq = command("requeue", "run a failed, cancelled or expired task (or all of them) again")
    rq.add_argument("task_id", nargs="?")
    rq.add_argument(
        "--status", choices=["failed", "cancelled", "expired"], help="every task in this status"
    )
    rq.add_argument("--queue", help="with --status: only this queue's tasks")
    rq.set_defaults(handler=_requeue)

    command("workers", "list the worker pools running now").set_defaults(handler=_workers)
    d = command("dashboard", "serve the web dashboard (pip install 'omniq[web]')")
    d.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    d.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        help="require HTTP basic auth (default: OMNIQ_DASHBOARD_AUTH, else none)",
    )
    d.add_argument("--read-only", action="store_true", help="show everything, allow no action")
    d.set_defaults(handler=_dashboard)
    command("demo", "run the demo on the embedded default", app=False).set_defaults(handler=_demo)
    return parser


def _check_options(
    config: str | None, level: str | None, queue_order: str | None = None
) -> str | None:
    """The ``--log-level`` value to use; ConfigError naming the option for a bad
    ``--log-level``, ``--config`` (reported as itself, not as the variable it sets) or
    ``--queue-order`` (reported as itself, not as ``worker()``'s argument)."""
    if queue_order is not None and queue_order.strip().lower() not in QUEUE_ORDERS:
        choices = ", ".join(QUEUE_ORDERS)
        raise ConfigError(f"--queue-order {queue_order!r}: expected one of {choices}")
    if level is not None:
        if level.strip().upper() not in LOG_LEVELS:
            raise ConfigError(f"--log-level {level!r}: expected one of {', '.join(LOG_LEVELS)}")
        level = level.strip().upper()
    if config is not None:
        try:
            Settings.from_yaml(config)
        except ConfigError as exc:
            raise ConfigError(f"--config {config!r}: {exc}") from None
    return level


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omniq`` command; returns the exit code."""
    _import_from_cwd()
    args = _parser().parse_args(argv)
    if hasattr(args, "app"):  # every command but demo: before or after its name, or OMNIQ_APP
        args.app = args.app or args.top_app or os.environ.get("OMNIQ_APP") or None
    config = args.sub_config or args.config
    try:
        level = _check_options(
            config, args.sub_log_level or args.log_level, getattr(args, "queue_order", None)
        )
    except ConfigError as exc:
        print(f"omniq: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if config:
        os.environ["OMNIQ_CONFIG"] = config
    if level:
        os.environ["OMNIQ_LOG_LEVEL"] = level
    try:
        # The omniq logger's stderr handler from the start, so that warnings about the
        # environment (an unknown OMNIQ_* variable) are seen before anything runs.
        LoggingConfig(level=level or "WARNING").apply()
        warn_unknown_variables()
        factory = _worker_loop(args) if args.handler is _run_worker else None
        with asyncio.Runner(loop_factory=factory) as runner:
            code: int = runner.run(args.handler(args))
        if args.handler is _run_worker and threading.active_count() > 1:
            # A task still blocking a thread after the graceful stop would make the
            # interpreter wait for it at exit; its lease was handed back, so leave now,
            # with the spans a tracer provider still buffers exported (its exit handler
            # would have: a BatchSpanProcessor's thread is one of those counted).
            flush_spans()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    except KeyboardInterrupt:
        return 130
    except (OmniQError, TimeoutError) as exc:
        print(f"omniq: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except json.JSONDecodeError as exc:
        print(f"omniq: error: invalid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
