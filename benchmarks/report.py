"""Aggregate the repetitions and write JSON, Markdown and a PNG chart.

Every figure is the median of the successful repetitions, with min-max beside it.
"""

# The en dashes and multiplication signs are the report's typography, not typos.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from benchmarks.adapters import REGISTRY
from benchmarks.adapters.base import REDIS_URL

BACKEND_ORDER = ("redis", "sqlite", "file", "postgres")
DISPLAY = {
    "omniq": "OmniQ",
    "omniq-noevents": "OmniQ (events off)",
    "taskiq": "taskiq (stream)",
    "taskiq-list": "taskiq (list)",
    "arq-fastpoll": "arq (poll_delay=0.01, non-default)",
    "rq-simple": "rq (SimpleWorker, non-default)",
}
BACKEND_NAME = {"redis": "Redis", "sqlite": "SQLite", "file": "File", "postgres": "PostgreSQL"}

#: The peer reference benchmark's medians on the same kind of machine (peer-benchmark.md).
REFERENCE: dict[tuple[str, str], dict[str, float]] = {
    ("arq", "redis"): {
        "enqueue": 3849,
        "drain": 321,
        "startup": 0.15,
        "p50": 265,
        "p99": 499,
        "sleep": 1018,
    },
    ("saq", "redis"): {
        "enqueue": 4330,
        "drain": 1088,
        "startup": 0.19,
        "p50": 1.9,
        "p99": 2.9,
        "sleep": 1141,
    },
    ("taskiq", "redis"): {
        "enqueue": 2959,
        "drain": 1790,
        "startup": 0.54,
        "p50": 1.4,
        "p99": 2.4,
        "sleep": 2426,
    },
    ("taskiq-list", "redis"): {
        "enqueue": 3580,
        "drain": 2294,
        "startup": 0.67,
        "p50": 1.3,
        "p99": 5.1,
        "sleep": 2309,
    },
    ("rq", "redis"): {
        "enqueue": 4573,
        "bulk": 11777,
        "drain": 60,
        "startup": 0.24,
        "p50": 15.1,
        "p99": 64.2,
        "sleep": 35,
    },
    ("huey", "redis"): {
        "enqueue": 16247,
        "drain": 3860,
        "startup": 0.26,
        "p50": 1.0,
        "p99": 5.0,
        "sleep": 2603,
    },
    ("huey", "sqlite"): {
        "enqueue": 7272,
        "drain": 3061,
        "startup": 0.24,
        "p50": 11.1,
        "p99": 53.4,
        "sleep": 2313,
    },
    ("dramatiq", "redis"): {
        "enqueue": 6830,
        "drain": 3256,
        "startup": 0.21,
        "p50": 18.3,
        "p99": 152,
        "sleep": 2291,
    },
    ("celery", "redis"): {
        "enqueue": 2059,
        "drain": 663,
        "startup": 1.44,
        "p50": 3.0,
        "p99": 4.6,
        "sleep": 720,
    },
    ("saq", "postgres"): {
        "enqueue": 1201,
        "drain": 464,
        "startup": 0.31,
        "p50": 6.4,
        "p99": 12.3,
        "sleep": 429,
    },
    ("procrastinate", "postgres"): {
        "enqueue": 965,
        "bulk": 10048,
        "drain": 142,
        "startup": 0.23,
        "p50": 5.0,
        "p99": 8.6,
        "sleep": 559,
    },
    ("pgqueuer", "postgres"): {
        "enqueue": 4325,
        "bulk": 57337,
        "drain": 6380,
        "startup": 0.38,
        "p50": 2.7,
        "p99": 4.0,
        "sleep": 4386,
    },
}
ASYNC_PEERS = ("arq", "saq", "taskiq", "taskiq-list")


# -- machine -----------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine(
    *,
    quick: bool,
    runs: int,
    reused_from: str | None,
    calibration: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What this run ran on: CPU, memory, OS, interpreter and server versions, raw limits."""
    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor() or "unknown",
    )
    mem_kib = next(
        (
            int(ln.split()[1])
            for ln in _read("/proc/meminfo").splitlines()
            if ln.startswith("MemTotal")
        ),
        0,
    )
    os_name = next(
        (
            ln.split("=", 1)[1].strip().strip('"')
            for ln in _read("/etc/os-release").splitlines()
            if ln.startswith("PRETTY_NAME=")
        ),
        platform.system(),
    )
    try:
        client = redis.Redis.from_url(REDIS_URL)
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        redis_version = str(info["redis_version"])
        client.close()
    except redis.RedisError:
        redis_version = "unreachable"
    from benchmarks import pg

    postgres_version = pg.server_version()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version,
        "postgres": postgres_version,
        "sqlite": sqlite3.sqlite_version,
        "quick": quick,
        "runs": runs,
        "reused_peers_from": reused_from,
        "calibration": calibration or {},
        "load_average_1m_at_end": os.getloadavg()[0],
    }


# -- aggregation ---------------------------------------------------------------------------
def aggregate(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per (label, backend, workload): median/min/max of each metric, failures, versions."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["label"], rec["backend"], rec["workload"]), []).append(rec)
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key, recs in groups.items():
        ok = [r for r in recs if r.get("ok")]
        stats: dict[str, tuple[float, float, float]] = {}
        for name in sorted({m for r in ok for m in r["metrics"]}):
            values = [float(r["metrics"][name]) for r in ok if name in r["metrics"]]
            values = [v for v in values if v == v]  # drop NaN
            if values:
                stats[name] = (statistics.median(values), min(values), max(values))
        any_rec = (ok or recs)[0]
        out[key] = {
            "stats": stats,
            "ok": len(ok),
            "failed": [f"run {r['run']}: {r.get('error')}" for r in recs if not r.get("ok")],
            "partial": any(
                r["metrics"].get("completed", r["metrics"].get("n", 0)) < r["metrics"].get("n", 0)
                for r in ok
            ),
            "version": any_rec.get("version", ""),
            "worker_setting": any_rec.get("worker_setting", ""),
        }
    return out


def _rows(agg: dict[tuple[str, str, str], dict[str, Any]]) -> list[tuple[str, str]]:
    pairs = {(label, backend) for label, backend, _ in agg}
    order = list(REGISTRY)
    return sorted(
        pairs,
        key=lambda p: (
            BACKEND_ORDER.index(p[1]) if p[1] in BACKEND_ORDER else 9,
            order.index(p[0]) if p[0] in order else 99,
        ),
    )


# -- formatting ------------------------------------------------------------------------------
def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _get(
    agg: dict[tuple[str, str, str], dict[str, Any]],
    label: str,
    backend: str,
    workload: str,
    metric: str,
) -> tuple[float, float, float] | None:
    cell = agg.get((label, backend, workload))
    if cell is None:
        return None
    stat: tuple[float, float, float] | None = cell["stats"].get(metric)
    return stat


def _cell(
    agg: dict[tuple[str, str, str], dict[str, Any]],
    label: str,
    backend: str,
    workload: str,
    metric: str,
    spread: bool = False,
) -> str:
    cell = agg.get((label, backend, workload))
    if cell is None:
        return "n/a" if workload in ("bulk", "sync") else "–"
    stat = cell["stats"].get(metric)
    if stat is None:
        return "failed" if cell["failed"] else "–"
    text = _num(stat[0])
    if cell.get("partial") and metric == "rate":
        text += "†"
    if spread:
        text += f" ({_num(stat[1])}–{_num(stat[2])})"
    if cell["failed"]:
        text += f" [{len(cell['failed'])} failed]"
    return text


def _name(label: str) -> str:
    return DISPLAY.get(label, label)


def _setting(agg: dict[tuple[str, str, str], dict[str, Any]], label: str, backend: str) -> str:
    for workload in ("drain", "latency", "sleep", "enqueue", "bulk", "sync"):
        cell = agg.get((label, backend, workload))
        if cell and cell["worker_setting"]:
            return str(cell["worker_setting"])
    return ""


def _version(agg: dict[tuple[str, str, str], dict[str, Any]], label: str, backend: str) -> str:
    for (lb, be, _), cell in agg.items():
        if lb == label and be == backend and cell["version"]:
            return str(cell["version"])
    return ""


def main_table(agg: dict[tuple[str, str, str], dict[str, Any]], spread: bool) -> str:
    """The headline table: one row per library and backend."""
    head = (
        "| library | version | backend | enqueue/s | bulk enqueue/s | drain/s | worker startup s "
        "| latency p50 / p95 / p99 ms | sleep-concurrency/s | worker setting (drain) |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for label, backend in _rows(agg):
        lat = " / ".join(
            _cell(agg, label, backend, "latency", m, spread) for m in ("p50_ms", "p95_ms", "p99_ms")
        )
        name = _name(label)
        if REGISTRY.get(label) and REGISTRY[label].library == "omniq":
            name = f"**{name}**"
        lines.append(
            f"| {name} | {_version(agg, label, backend)} | {BACKEND_NAME.get(backend, backend)} "
            f"| {_cell(agg, label, backend, 'enqueue', 'rate', spread)} "
            f"| {_cell(agg, label, backend, 'bulk', 'rate', spread)} "
            f"| {_cell(agg, label, backend, 'drain', 'rate', spread)} "
            f"| {_cell(agg, label, backend, 'drain', 'startup_s', spread)} "
            f"| {lat} | {_cell(agg, label, backend, 'sleep', 'rate', spread)} "
            f"| {_setting(agg, label, backend)} |"
        )
    return head + "\n".join(lines) + "\n"


def memory_table(agg: dict[tuple[str, str, str], dict[str, Any]]) -> str:
    """Peak worker RSS during drain and storage growth per queued task."""
    head = (
        "| library | backend | peak RSS of the worker (MiB) | storage per queued task (bytes) "
        "| drain incl. startup /s |\n|---|---|---:|---:|---:|\n"
    )
    lines = [
        f"| {_name(label)} | {BACKEND_NAME.get(backend, backend)} "
        f"| {_cell(agg, label, backend, 'drain', 'peak_rss_mib', True)} "
        f"| {_cell(agg, label, backend, 'drain', 'storage_bytes_per_task', True)} "
        f"| {_cell(agg, label, backend, 'drain', 'total_rate', True)} |"
        for label, backend in _rows(agg)
        if (label, backend, "drain") in agg
    ]
    return head + "\n".join(lines) + "\n" if lines else ""


def sync_table(agg: dict[tuple[str, str, str], dict[str, Any]]) -> str:
    """OmniQ sync facade vs AsyncOmniQ."""
    head = (
        "| library | backend | AsyncOmniQ enqueue/s | OmniQ (sync) enqueue/s | async / sync |\n"
        "|---|---|---:|---:|---:|\n"
    )
    lines = [
        f"| {_name(label)} | {BACKEND_NAME.get(backend, backend)} "
        f"| {_cell(agg, label, backend, 'sync', 'async_rate', True)} "
        f"| {_cell(agg, label, backend, 'sync', 'sync_rate', True)} "
        f"| {_cell(agg, label, backend, 'sync', 'ratio', True)} |"
        for label, backend in _rows(agg)
        if (label, backend, "sync") in agg
    ]
    return head + "\n".join(lines) + "\n" if lines else ""


def _best(
    agg: dict[tuple[str, str, str], dict[str, Any]],
    labels: Sequence[str],
    backend: str,
    workload: str,
    metric: str,
    lowest: bool = False,
) -> tuple[str, float] | None:
    found = [
        (label, stat[0])
        for label in labels
        if (stat := _get(agg, label, backend, workload, metric)) is not None
    ]
    if not found:
        return None
    return (min if lowest else max)(found, key=lambda item: item[1])


def targets_table(agg: dict[tuple[str, str, str], dict[str, Any]]) -> str:
    """Issue 7's targets, against the peers measured in this same run."""
    peers = [e.label for e in REGISTRY.values() if e.library != "omniq" and not e.variant]
    rows: list[str] = []

    def add(
        what: str,
        backend: str,
        workload: str,
        metric: str,
        peer: tuple[str, float] | None,
        factor: float,
        lowest: bool = False,
        unit: str = "/s",
    ) -> None:
        if not any(k[0] == "omniq" and k[1] == backend for k in agg):
            return  # OmniQ did not run on this backend: no row, rather than an empty one
        ours = _get(agg, "omniq", backend, workload, metric)
        if peer is None:
            rows.append(f"| {what} | – | no peer figure | – | – |")
            return
        target = peer[1] * factor
        peer_text = f"{_num(peer[1])}{unit} ({_name(peer[0])})"
        goal = f"{'≤' if lowest else '≥'} {_num(target)}{unit}"
        if ours is None:
            rows.append(f"| {what} | {peer_text} | {goal} | not measured | – |")
            return
        met = ours[0] <= target if lowest else ours[0] >= target
        if met:
            verdict = "met"
        elif lowest:
            verdict = f"missed: {ours[0] / target:.2f}x the target"
        else:
            verdict = f"missed by {(1 - ours[0] / target) * 100:.0f}%"
        rows.append(
            f"| {what} | {peer_text} | {goal} | {_num(ours[0])}{unit} "
            f"({_num(ours[1])}–{_num(ours[2])}) | {verdict} |"
        )

    add(
        "Redis drain ≥ 2× best Redis peer",
        "redis",
        "drain",
        "rate",
        _best(agg, peers, "redis", "drain", "rate"),
        2,
    )
    add(
        "Redis sleep-concurrency ≥ 2× best peer",
        "redis",
        "sleep",
        "rate",
        _best(agg, peers, "redis", "sleep", "rate"),
        2,
    )
    add(
        "Redis latency p50 ≤ best peer's",
        "redis",
        "latency",
        "p50_ms",
        _best(agg, peers, "redis", "latency", "p50_ms", lowest=True),
        1,
        lowest=True,
        unit=" ms",
    )
    add(
        "async single-call enqueue ≥ 2× best async peer",
        "redis",
        "enqueue",
        "rate",
        _best(agg, list(ASYNC_PEERS), "redis", "enqueue", "rate"),
        2,
    )
    add(
        "enqueue_many ≥ 5× RQ bulk",
        "redis",
        "bulk",
        "rate",
        _best(agg, ["rq"], "redis", "bulk", "rate"),
        5,
    )
    add(
        "SQLite drain ≥ 2× SqliteHuey",
        "sqlite",
        "drain",
        "rate",
        _best(agg, ["huey"], "sqlite", "drain", "rate"),
        2,
    )
    add(
        "SQLite sleep-concurrency ≥ 2× SqliteHuey",
        "sqlite",
        "sleep",
        "rate",
        _best(agg, ["huey"], "sqlite", "sleep", "rate"),
        2,
    )
    add(
        "SQLite latency p50 ≤ SqliteHuey's",
        "sqlite",
        "latency",
        "p50_ms",
        _best(agg, ["huey"], "sqlite", "latency", "p50_ms", lowest=True),
        1,
        lowest=True,
        unit=" ms",
    )
    # PostgreSQL joined after the targets were set; its bar is the general
    # one ("OmniQ ahead of every peer on its own backend"), so the factor is 1.
    pg_peers = [p for p in peers if "postgres" in REGISTRY[p].backends]
    for what, workload, metric, lowest, unit in (
        ("PostgreSQL single-call enqueue ahead of every PG peer", "enqueue", "rate", False, "/s"),
        ("PostgreSQL bulk enqueue ahead of every PG peer", "bulk", "rate", False, "/s"),
        ("PostgreSQL drain ahead of every PG peer", "drain", "rate", False, "/s"),
        ("PostgreSQL sleep-concurrency ahead of every PG peer", "sleep", "rate", False, "/s"),
        ("PostgreSQL latency p50 ≤ every PG peer's", "latency", "p50_ms", True, " ms"),
    ):
        add(
            what,
            "postgres",
            workload,
            metric,
            _best(agg, pg_peers, "postgres", workload, metric, lowest=lowest),
            1,
            lowest=lowest,
            unit=unit,
        )
    head = (
        "| target (issue 7) | best peer, this run | target | OmniQ, this run (min–max) | result |\n"
        "|---|---|---|---|---|\n"
    )
    return head + "\n".join(rows) + "\n"


def reference_table(agg: dict[tuple[str, str, str], dict[str, Any]]) -> str:
    """Peers measured here next to the reference benchmark's medians."""
    head = (
        "| library | backend | enqueue/s here / ref | bulk/s here / ref | drain/s here / ref "
        "| p50 ms here / ref | sleep/s here / ref |\n|---|---|---|---|---|---|---|\n"
    )
    pairs = (
        ("enqueue", "rate", "enqueue"),
        ("bulk", "rate", "bulk"),
        ("drain", "rate", "drain"),
        ("latency", "p50_ms", "p50"),
        ("sleep", "rate", "sleep"),
    )
    lines = []
    for label, backend in _rows(agg):
        ref = REFERENCE.get((label, backend))
        if ref is None:
            continue
        cells = []
        for workload, metric, key in pairs:
            here = _get(agg, label, backend, workload, metric)
            theirs = ref.get(key)
            cells.append(f"{_num(here[0]) if here else '–'} / {_num(theirs) if theirs else 'n/a'}")
        lines.append(f"| {_name(label)} | {BACKEND_NAME[backend]} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n" if lines else ""


def failures(agg: dict[tuple[str, str, str], dict[str, Any]]) -> str:
    """Every failed repetition, one line each."""
    lines = [
        f"- {_name(label)}/{backend} {workload}: {msg}"
        for (label, backend, workload), cell in sorted(agg.items())
        for msg in cell["failed"]
    ]
    return "\n".join(lines) + "\n" if lines else "None.\n"


def settings_list(agg: dict[tuple[str, str, str], dict[str, Any]]) -> str:
    """How each library's worker was configured (from the adapters themselves)."""
    lines = []
    for label, backend in _rows(agg):
        per = {
            w: agg[(label, backend, w)]["worker_setting"]
            for w in ("drain", "latency", "sleep")
            if (label, backend, w) in agg
        }
        if not per:
            continue
        sleep = (
            f"; sleep: `{per['sleep']}`"
            if "sleep" in per and per["sleep"] != per.get("drain")
            else ""
        )
        first = per.get("drain") or next(iter(per.values()))
        lines.append(f"- **{_name(label)}** ({BACKEND_NAME[backend]}): `{first}`{sleep}")
    return "\n".join(lines) + "\n"


# -- chart -------------------------------------------------------------------------------------
def chart(agg: dict[tuple[str, str, str], dict[str, Any]], path: Path) -> Path | None:
    """Horizontal bars per workload, OmniQ highlighted, min–max as error bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [
        ("enqueue", "rate", "enqueue, one call at a time (tasks/s)", False),
        ("bulk", "rate", "bulk enqueue (tasks/s)", False),
        ("drain", "rate", "drain, 1 worker process (tasks/s)", False),
        ("sleep", "rate", "sleep-concurrency 10 ms x 100 (tasks/s)", False),
        ("latency", "p50_ms", "latency p50 (ms, log scale; lower is better)", True),
        ("drain", "peak_rss_mib", "worker peak RSS during drain (MiB)", False),
    ]
    present = [
        p for p in panels if any(k[2] == p[0] and p[1] in v["stats"] for k, v in agg.items())
    ]
    if not present:
        return None
    cols = 2
    rows_n = (len(present) + 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(15, 4.2 * rows_n), squeeze=False)
    for ax in axes.flat[len(present) :]:
        ax.axis("off")
    for ax, (workload, metric, title, log) in zip(axes.flat, present, strict=False):
        names, medians, lows, highs, colors = [], [], [], [], []
        for label, backend in _rows(agg):
            stat = _get(agg, label, backend, workload, metric)
            if stat is None:
                continue
            names.append(f"{_name(label)} · {BACKEND_NAME.get(backend, backend)}")
            medians.append(stat[0])
            lows.append(stat[0] - stat[1])
            highs.append(stat[2] - stat[0])
            is_omniq = REGISTRY.get(label) is not None and REGISTRY[label].library == "omniq"
            colors.append(
                "#d62728"
                if is_omniq
                else {"redis": "#1f77b4", "sqlite": "#2ca02c", "postgres": "#9467bd"}.get(
                    backend, "#7f7f7f"
                )
            )
        ypos = range(len(names))
        ax.barh(list(ypos), medians, xerr=[lows, highs], color=colors, capsize=2)
        ax.set_yticks(list(ypos), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        if log:
            ax.set_xscale("log")
        for y, value in zip(ypos, medians, strict=True):
            ax.text(value, y, f" {_num(value)}", va="center", fontsize=7)
    fig.suptitle(
        "OmniQ (red) beside its peers: Redis (blue), SQLite (green), PostgreSQL (purple); "
        "median, min–max",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- output -------------------------------------------------------------------------------------
def calibration_text(meta: dict[str, Any], loads: Sequence[float]) -> str:
    """Raw limits measured at the start of the run, next to the reference's, and the load."""
    cal = meta.get("calibration") or {}
    parts = []
    refs = (
        ("redis_asyncio_lpush_per_s", "redis-py asyncio sequential LPUSH", 11447),
        ("redis_sync_lpush_per_s", "redis-py sync sequential LPUSH", 17760),
        ("sqlite_wal_full_tx_per_s", "SQLite WAL synchronous=FULL 1-row transactions", 11808),
        ("sqlite_wal_normal_tx_per_s", "SQLite WAL synchronous=NORMAL 1-row transactions", 35087),
        ("postgres_asyncpg_insert_per_s", "PostgreSQL asyncpg 1-row autocommit INSERTs", 7094),
    )
    for key, what, ref in refs:
        if key in cal:
            parts.append(f"{what} {_num(cal[key])}/s (reference machine: {ref:,}/s)")
    bare = (
        ("bare_drain_per_s", "the drain body with no queue, 32 at a time in one asyncio loop"),
        ("bare_sleep_per_s", "the sleep body with no queue, 100 at a time"),
    )
    for key, what in bare:
        if key in cal:
            parts.append(f"{what} {_num(cal[key])}/s")
    text = ""
    if parts:
        text += "Raw limits measured at the start of this run: " + "; ".join(parts) + ".\n"
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
        f"(asyncio LPUSH) was {_num(old[key])}/s against {_num(new[key])}/s in this run "
        f"({ratio:.2f}x): the machine was not equally loaded, so these ratios are not valid. "
        "Run the one command (peers and OmniQ together) before reading them as results.**\n\n"
    )


def markdown(
    agg: dict[tuple[str, str, str], dict[str, Any]],
    meta: dict[str, Any],
    chart_name: str | None,
    loads: Sequence[float] = (),
) -> str:
    """The full report (used for results/*.md and docs/benchmarks.md)."""
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
        "Options: `--backend redis|sqlite|file|postgres|all`, "
        "`--workload enqueue|bulk|drain|latency|sleep|memory|sync|all` (comma lists work), "
        "`--runs 3`, `--peers all|none|arq,saq,...`, "
        "`--quick` (small N, development only), `--out benchmarks/results`, "
        "`--reuse-peers FILE` (combine a new OmniQ run with stored peer figures from the same "
        "machine), `--docs FILE` (where the full report also goes; a full run writes "
        "docs/benchmarks.md, a partial run only benchmarks/results). Needs Redis on "
        "127.0.0.1:6379 (DB 15 is flushed before every repetition) and PostgreSQL on "
        "127.0.0.1:5432 as user postgres (database `qbench` is dropped and re-created before "
        "every PostgreSQL repetition); `BENCH_REDIS_URL`, `BENCH_POSTGRES_SERVER` and "
        "`BENCH_POSTGRES_DB` move them.\n",
        "## Machine\n",
        f"{m['cpus']} vCPU ({m['cpu']}), {m['memory_gib']} GiB RAM, {m['os']}, kernel "
        f"{m['kernel']}, Python {m['python']}, Redis {m['redis']} and PostgreSQL "
        f"{m.get('postgres', 'not recorded')} on loopback, SQLite "
        f"{m['sqlite']}. Producer, worker and server share the same cores. Run {m['date']}, "
        f"{m['runs']} repetition(s) per cell{quick}{reused}.\n",
        calibration_text(m, loads),
        (
            "The reused peer figures came from an earlier run on this machine: "
            + calibration_text(m["reused_meta"], m["reused_meta"].get("loads", []))
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
    if syn := sync_table(agg):
        parts += [
            "\n## Sync overhead (OmniQ only)\n",
            "The enqueue workload through `OmniQ` (blocking facade) and `AsyncOmniQ`, "
            "same child process, each on its own fresh store.\n\n",
            syn,
        ]
    parts += [
        "\n## Targets of issue 7\n",
        reuse_warning(m),
        "Best peers are the peer rows of this report (variants with non-default knobs excluded); "
        "the async peers for the Redis enqueue target are arq, SAQ and taskiq.\n\n",
        targets_table(agg),
    ]
    if ANALYSIS.exists():
        # Written by hand after a run: where the time goes on the missed targets.
        parts.append("\n" + ANALYSIS.read_text(encoding="utf-8"))
    if ref := reference_table(agg):
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
        METHOD,
        "\n## Failures\n",
        failures(agg),
    ]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


ANALYSIS = Path(__file__).with_name("analysis.md")

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


def write(
    records: list[dict[str, Any]],
    meta: dict[str, Any],
    *,
    out: Path,
    stamp: str,
    workloads: Sequence[str],
    docs: Path | None,
) -> list[Path]:
    """Write results-<stamp>.json/.md/.png (and latest.*) under ``out``, and ``docs``."""
    agg = aggregate(records)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    summary = {
        "meta": meta,
        "workloads": list(workloads),
        "records": records,
        "summary": [
            {
                "label": label,
                "backend": backend,
                "workload": workload,
                "version": cell["version"],
                "worker_setting": cell["worker_setting"],
                "ok_runs": cell["ok"],
                "failed": cell["failed"],
                "median_min_max": cell["stats"],
            }
            for (label, backend, workload), cell in sorted(agg.items())
        ],
    }
    json_path = out / f"results-{stamp}.json"
    json_path.write_text(json.dumps(summary, indent=1))
    png = chart(agg, out / f"results-{stamp}.png")
    md_path = out / f"results-{stamp}.md"
    loads = [
        float(r["load_before"])
        for r in records
        if "load_before" in r and (r["library"] == "omniq" or not meta.get("reused_meta"))
    ]
    meta["loads"] = [float(r["load_before"]) for r in records if "load_before" in r]
    md_path.write_text(markdown(agg, meta, png.name if png else None, loads))
    written += [json_path, md_path] + ([png] if png else [])
    for path in list(written):
        latest = out / f"latest{path.suffix}"
        shutil.copyfile(path, latest)
    if png:  # latest.md shows latest.png, not the chart of whichever run it was
        (out / "latest.md").write_text(markdown(agg, meta, "latest.png", loads))
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs_png = chart(agg, docs.with_suffix(".png"))
        docs.write_text(markdown(agg, meta, docs_png.name if docs_png else None, loads))
        written += [docs] + ([docs_png] if docs_png else [])
    return written
