"""The full report as one Markdown document (results/*.md and docs/benchmarks.md)."""

# The en dashes are the report's typography, not typos.
# ruff: noqa: RUF001

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report.data import Reference, Targets, load_reference, load_targets
from benchmarks.report.results import Agg, num
from benchmarks.report.tables import (
    backlog_table,
    concurrent_table,
    cpu_table,
    failures,
    main_table,
    memory_table,
    ratelimit_table,
    reference_table,
    settings_list,
    sync_table,
)
from benchmarks.report.targets import targets_table

#: Written by hand after a run: where the time goes on the missed targets.
ANALYSIS = Path(__file__).resolve().parents[1] / "analysis.md"


def calibration_text(
    meta: dict[str, Any], loads: Sequence[float], reference: Reference | None = None
) -> str:
    """Raw limits measured at the start of the run, next to the reference's, and the load."""
    reference = reference or load_reference()
    cal = meta.get("calibration") or {}
    parts = [
        f"{limit.what} {num(cal[limit.key])}/s (reference machine: {limit.value:,.0f}/s)"
        for limit in reference.limits
        if limit.key in cal
    ]
    bare = (
        ("bare_drain_per_s", "the drain body with no queue, 32 at a time in one asyncio loop"),
        ("bare_sleep_per_s", "the sleep body with no queue, 100 at a time"),
    )
    for key, what in bare:
        if key in cal:
            parts.append(f"{what} {num(cal[key])}/s")
    text = ""
    if parts:
        text += "Raw limits measured at the start of this run: " + "; ".join(parts) + ".\n"
    floors = (
        ("redis_push_pop", "Redis `LPUSH` to a `BLPOP` in another process"),
        ("postgres_notify", "PostgreSQL `pg_notify` to a `LISTEN` in another process"),
    )
    found = [
        f"{what} p50 {cal[key + '_p50_ms']:.2f} ms, p99 {cal[key + '_p99_ms']:.2f} ms"
        for key, what in floors
        if key + "_p50_ms" in cal and key + "_p99_ms" in cal
    ]
    if "redis_idle_ping_p50_ms" in cal:
        found.append(f"a Redis `PING` round trip p50 {cal['redis_idle_ping_p50_ms']:.2f} ms")
    if found:
        text += (
            "Latency floors (bare drivers, with the latency workload's idle gaps; "
            "`benchmarks/floors.py`): " + "; ".join(found) + ".\n"
        )
    if loads:
        text += (
            f"1-minute load average before each repetition: median {statistics.median(loads):.1f}, "
            f"max {max(loads):.1f} (2 cores; anything much above 1 means other work shared "
            "the machine).\n"
        )
    return text


def reuse_warning(meta: dict[str, Any]) -> str:
    """A loud note when reused peer figures were measured under other conditions."""
    old = (meta.get("reused_meta") or {}).get("calibration", {})
    new = meta.get("calibration", {})
    key = "redis_asyncio_lpush_per_s"
    if key not in old or key not in new:
        return ""
    ratio = new[key] / old[key]
    if 1 / 1.3 <= ratio <= 1.3:
        return ""
    return (
        f"**Warning: the peer figures below were reused from a run whose raw Redis limit "
        f"(asyncio LPUSH) was {num(old[key])}/s against {num(new[key])}/s in this run "
        f"({ratio:.2f}x): the machine was not equally loaded, so these ratios are not valid. "
        "Run the one command (peers and OmniQ together) before reading them as results.**\n\n"
    )


def markdown(
    agg: Agg,
    meta: dict[str, Any],
    chart_name: str | None,
    loads: Sequence[float] = (),
    *,
    reference: Reference | None = None,
    targets: Targets | None = None,
) -> str:
    """The full report (used for results/*.md and docs/benchmarks.md).

    ``reference`` and ``targets`` default to ``benchmarks/data/reference.toml`` and
    ``benchmarks/data/targets.toml``.
    """
    reference = reference or load_reference()
    targets = targets or load_targets()
    m = meta
    quick = " (QUICK mode: small N, not comparable)" if m["quick"] else ""
    reused = (
        f"; peer figures reused from {m['reused_peers_from']}" if m.get("reused_peers_from") else ""
    )
    parts = [
        "# OmniQ benchmarks\n",
        "Reproduce on a fresh clone (after the README's install):\n\n"
        "```sh\npip install -e '.[bench]'  # or: pip install -r benchmarks/requirements-peers.txt\n"
        "python -m benchmarks --backend all --workload all\n```\n\n"
        "Options: `--backend redis|sqlite|file|postgres|nats|all`, "
        "`--workload enqueue|bulk|drain|latency|sleep|memory|sync|all` (comma lists work), "
        "`--runs 3`, `--peers all|none|arq,saq,...`, "
        "`--quick` (small N, development only), `--out benchmarks/results`, "
        "`--reuse-peers FILE` (combine a new OmniQ run with stored peer figures from the same "
        "machine), `--docs FILE` (where the full report also goes; a full run writes "
        "docs/benchmarks.md, a partial run only benchmarks/results). Needs Redis on "
        "127.0.0.1:6379 (DB 15 is flushed before every repetition) and PostgreSQL on "
        "127.0.0.1:5432 as user postgres (database `qbench` is dropped and re-created before "
        "every PostgreSQL repetition) and, for the NATS rows, NATS with JetStream on "
        "127.0.0.1:4222 (the benchmark's streams are deleted before every NATS repetition); "
        "`BENCH_REDIS_URL`, `BENCH_POSTGRES_SERVER`, `BENCH_POSTGRES_DB` and `BENCH_NATS_URL` "
        "move them.\n",
        "## Machine\n",
        f"{m['cpus']} vCPU ({m['cpu']}), {m['memory_gib']} GiB RAM, {m['os']}, kernel "
        f"{m['kernel']}, Python {m['python']}, Redis {m['redis']} and PostgreSQL "
        f"{m.get('postgres', 'not recorded')} on loopback, SQLite "
        f"{m['sqlite']}. Producer, worker and server share the same cores. Run {m['date']}, "
        f"{m['runs']} repetition(s) per cell{quick}{reused}.\n",
        calibration_text(m, loads, reference),
        (
            "The reused peer figures came from an earlier run on this machine: "
            + calibration_text(m["reused_meta"], m["reused_meta"].get("loads", []), reference)
            if m.get("reused_meta")
            else ""
        ),
        "## Results (median of the runs)\n",
        main_table(agg, spread=False),
        "† = the worker had not drained the whole queue 150 s after it was spawned; the rate is "
        "over the tasks it completed by then (see Method).\n"
        if any(c.get("partial") for c in agg.values())
        else "",
    ]
    if chart_name:
        parts.append(f"\n![OmniQ beside its peers]({chart_name})\n")
    parts += [
        "\n### Spread (median, min–max over the runs)\n",
        main_table(agg, spread=True),
    ]
    if mem := memory_table(agg):
        parts += ["\n## Memory (measured during the drain runs)\n", mem]
    if cpu := cpu_table(agg):
        parts += [
            "\n## CPU per task (µs)\n",
            "What one task cost over the measured stretch of each workload: the producer "
            "process (enqueue, bulk) or the worker's process tree (drain, from its first "
            "completion on), and the server (Redis `INFO cpu`, which in the drain includes "
            "the task bodies' own instrumentation commands; the PostgreSQL processes); "
            "none for embedded backends. A shared machine's noise moves these far less "
            "than the rates.\n\n",
            cpu,
        ]
    if syn := sync_table(agg):
        parts += [
            "\n## Sync overhead (OmniQ only)\n",
            "The enqueue workload through `OmniQ` (blocking facade) and `AsyncOmniQ`, "
            "same child process, each on its own fresh store.\n\n",
            syn,
        ]
    if concurrent := concurrent_table(agg):
        parts += [
            "\n## Many producers (enqueue-concurrent)\n",
            "10,000 no-op tasks enqueued from many callers at once sharing one client, as a web "
            "application's requests do: 64 coroutines for async libraries, 16 threads for "
            "blocking ones, each making one call at a time; OmniQ through `AsyncOmniQ` from the "
            "coroutines and through `OmniQ` from the threads, each on its own fresh store.\n\n",
            concurrent,
        ]
    if limited := ratelimit_table(agg):
        parts += [
            "\n## Drain under a rate limit (OmniQ only)\n",
            "The drain workload with every task under `rate_limit` (SPEC §8). A window's "
            "worth starts at once, the next as the first leave the window: drain/s counts "
            "the first window's tasks in no time; steady/s leaves them out.\n\n",
            limited,
        ]
    if backlog := backlog_table(agg):
        parts += [
            "\n## Cost beside a backlog (backlog)\n",
            "A probe of 10,000 drain tasks enqueued one call at a time and drained by one "
            "worker, first with an empty queue, then beside a backlog of waiting tasks the "
            "worker must leave alone (delayed a day); ratio = beside the backlog / empty "
            "(1.0 = flat). OmniQ's reads are the median of 5 calls each with the backlog "
            "there.\n\n",
            backlog,
        ]
    parts += [
        f"\n## {targets.heading}\n",
        reuse_warning(m),
        f"{targets.note}\n\n" if targets.note else "",
        targets_table(agg, targets),
    ]
    if ANALYSIS.exists():
        parts.append("\n" + ANALYSIS.read_text(encoding="utf-8"))
    if ref := reference_table(agg, reference):
        parts += [
            "\n## Peers here vs the reference benchmark\n",
            "The reference is `shared/reference/peer-benchmark.md` (same method, a machine of "
            "the same kind); a shared 2-vCPU VM is noisy, so treat differences under ~1.3x as "
            "ties.\n\n",
            ref,
        ]
    parts += [
        "\n## How each library was configured\n",
        "Each worker is exactly one process started through the library's own CLI (arq "
        "through its documented `run_worker()`, because its CLI forces INFO logging), log level "
        "WARNING where a flag exists, concurrency 32 for drain and latency and 100 for sleep:\n\n",
        settings_list(agg),
        "\n## Method\n",
        METHOD + (CONCURRENT_METHOD if concurrent else "") + (BACKLOG_METHOD if backlog else ""),
        "\n## Failures\n",
        failures(agg),
    ]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


METHOD = """\
- **Isolation.** Each repetition runs in a fresh child process with its own process group and
  a hard timeout (enqueue 180 s, bulk 120 s, drain 420 s, latency 180 s, sleep 240 s, sync
  300 s). Before it: `FLUSHDB` of Redis DB 15, the working directory (SQLite file, file-backend
  directory) removed, and for PostgreSQL cells the database `qbench` dropped `WITH (FORCE)` and
  re-created (each library then installs its own schema: OmniQ on first use, procrastinate
  `apply_schema_async`, PgQueuer `Queries.install`, SAQ's migrations on connect). After it:
  the group (producer, worker and the worker's children) gets SIGTERM, then SIGKILL.
  Repetitions are run-major (all cells once, then again).
- **Producer** = the child itself: one client, stdlib asyncio loop (no uvloop) for async
  libraries, plain calls for sync ones (RQ, Dramatiq, Celery, Huey). Only the enqueue loop is
  timed, after 20 warm-up calls, one call at a time.
- **Worker** = exactly one worker process of the library, spawned by the child. The
  `omniq worker`, `taskiq worker` and `pgq run` commands run on uvloop when it is installed
  (the `[bench]` extra installs it); the other async workers use the stdlib loop.
- **Task bodies** are identical (`benchmarks/apps/bodies.py`): drain = one pipelined Redis
  round trip (`INCR` of a counter + `SET` of the first/last completion time); latency =
  `time.time()` first, then `RPUSH`; sleep = 10 ms sleep (`asyncio.sleep`, or `time.sleep` in
  thread/process workers) then the drain body. Every library's tasks, OmniQ's included and on
  every backend, do their Redis round trip in DB 15.
- **enqueue/s**: 10,000 no-op tasks, no worker running. **bulk**: the library's bulk API, one
  call per 1,000 tasks (OmniQ `enqueue_many`, RQ `enqueue_many`, procrastinate
  `batch_defer_async`, PgQueuer `Queries.enqueue` with lists; n/a = no bulk API).
- **drain/s** = 9,999 / (last - first completion) over 10,000 tasks enqueued before the worker
  was spawned (bulk API where one exists; not timed); **startup** = spawn -> first completion
  (interpreter start, imports, connecting, first fetch). Measuring stops 150 s after the spawn:
  a worker still draining then (RQ, which forks per job) is rated over the tasks it completed,
  (completed-1) / (last - first completion), marked †.
- **latency**: worker spawned and proven alive by one task; 5 warm-up + 500 tasks enqueued
  open-loop with exponential gaps (mean 50 ms, seeded); latency = task-body `time.time()` -
  `time.time()` just before the enqueue call (includes the enqueue call).
- **sleep-concurrency/s**: 2,000 pre-enqueued sleep tasks, concurrency 100, same rate formula
  as drain (ideal 10,000/s).
- **memory**: `VmHWM` (peak RSS) summed over the worker process and its live children when the
  drain finished; storage per queued task = growth of Redis `used_memory` (Redis queues) or of
  the working directory's files (SQLite, file) or of `pg_database_size` (PostgreSQL) while the
  10,000 drain tasks were enqueued.
- **sync**: the enqueue workload through `OmniQ` then `AsyncOmniQ` in the same child, each on
  its own store; ratio = async rate / sync rate.
"""

#: The method of the enqueue-concurrent workload, shown when the run has it.
CONCURRENT_METHOD = """\
- **enqueue-concurrent**: 10,000 no-op tasks from 64 coroutines (async libraries) or 16
  threads (blocking ones) sharing one client, each caller making one call at a time and
  taking the next task from a shared count; after one concurrent warm-up round of 64 (16)
  calls; rate = 10,000 / (first start to last return); no worker running.
"""

#: The method of the backlog workload, shown when the run has it.
BACKLOG_METHOD = """\
- **backlog**: in one child on one store, a probe of 10,000 drain tasks enqueued one call
  at a time (timed) and drained by one worker process (the drain formula), first with an
  empty queue; then the backlog (1,000,000 no-op tasks unless `--backlog N` says otherwise)
  enqueued to wait a day: OmniQ `enqueue_many(..., delay=...)` and PgQueuer `Queries.enqueue`
  lists with `execute_after`, 1,000 per call; Huey `task.schedule(delay=...)`, one call per
  task (it has no bulk API; it stores a delayed task in its queue and its consumer moves it
  to the schedule when it dequeues it, so a worker runs until Huey's queue is empty before
  the second probe, untimed); then the same probe again beside it, with a new worker
  process.
  Ratios = beside the backlog / empty. OmniQ's `stats()`, `list_tasks(limit=100)` and
  `get_task(id)` of a backlog task: median of 5 calls each, the worker stopped, the backlog
  and the probes' finished tasks stored.
"""
