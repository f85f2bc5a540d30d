"""The report's Markdown tables of measured figures (the targets table is in targets.py)."""

# The en dashes are the report's typography, not typos.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

from benchmarks.report.data import Reference
from benchmarks.report.results import Agg, backend_name, is_omniq, name, num, rows, stat


def cell_text(
    agg: Agg, label: str, backend: str, workload: str, metric: str, spread: bool = False
) -> str:
    """One table cell: the median (min–max with ``spread``), † if partial, failures."""
    cell = agg.get((label, backend, workload))
    if cell is None:
        return "n/a" if workload in ("bulk", "sync") else "–"
    found = cell["stats"].get(metric)
    if found is None:
        return "failed" if cell["failed"] else "–"
    text = num(found[0])
    if cell.get("partial") and metric == "rate":
        text += "†"
    if spread:
        text += f" ({num(found[1])}–{num(found[2])})"
    if cell["failed"]:
        text += f" [{len(cell['failed'])} failed]"
    return text


def _setting(agg: Agg, label: str, backend: str) -> str:
    for workload in ("drain", "latency", "sleep", "enqueue", "bulk", "sync", "enqueue-concurrent"):
        cell = agg.get((label, backend, workload))
        if cell and cell["worker_setting"]:
            return str(cell["worker_setting"])
    return ""


def _version(agg: Agg, label: str, backend: str) -> str:
    for (lb, be, _), cell in agg.items():
        if lb == label and be == backend and cell["version"]:
            return str(cell["version"])
    return ""


def main_table(agg: Agg, spread: bool) -> str:
    """The headline table: one row per library and backend."""
    head = (
        "| library | version | backend | enqueue/s | bulk enqueue/s | drain/s | worker startup s "
        "| latency p50 / p95 / p99 ms | sleep-concurrency/s | worker setting (drain) |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for label, backend in rows(agg):
        lat = " / ".join(
            cell_text(agg, label, backend, "latency", m, spread)
            for m in ("p50_ms", "p95_ms", "p99_ms")
        )
        shown = f"**{name(label)}**" if is_omniq(label) else name(label)
        lines.append(
            f"| {shown} | {_version(agg, label, backend)} | {backend_name(backend)} "
            f"| {cell_text(agg, label, backend, 'enqueue', 'rate', spread)} "
            f"| {cell_text(agg, label, backend, 'bulk', 'rate', spread)} "
            f"| {cell_text(agg, label, backend, 'drain', 'rate', spread)} "
            f"| {cell_text(agg, label, backend, 'drain', 'startup_s', spread)} "
            f"| {lat} | {cell_text(agg, label, backend, 'sleep', 'rate', spread)} "
            f"| {_setting(agg, label, backend)} |"
        )
    return head + "\n".join(lines) + "\n"


def memory_table(agg: Agg) -> str:
    """Peak worker RSS during drain and storage growth per queued task."""
    head = (
        "| library | backend | peak RSS of the worker (MiB) | storage per queued task (bytes) "
        "| drain incl. startup /s |\n|---|---|---:|---:|---:|\n"
    )
    lines = [
        f"| {name(label)} | {backend_name(backend)} "
        f"| {cell_text(agg, label, backend, 'drain', 'peak_rss_mib', True)} "
        f"| {cell_text(agg, label, backend, 'drain', 'storage_bytes_per_task', True)} "
        f"| {cell_text(agg, label, backend, 'drain', 'total_rate', True)} |"
        for label, backend in rows(agg)
        if (label, backend, "drain") in agg
    ]
    return head + "\n".join(lines) + "\n" if lines else ""


_CPU_COLUMNS = (
    ("enqueue", "client_cpu_us_per_task"),
    ("enqueue", "server_cpu_us_per_task"),
    ("bulk", "client_cpu_us_per_task"),
    ("bulk", "server_cpu_us_per_task"),
    ("drain", "worker_cpu_us_per_task"),
    ("drain", "server_cpu_us_per_task"),
)


def cpu_table(agg: Agg) -> str:
    """CPU per task (µs) of the producer or the worker, and of the server."""
    head = (
        "| library | backend | enqueue: producer | enqueue: server | bulk: producer "
        "| bulk: server | drain: worker | drain: server |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for label, backend in rows(agg):
        cells = [
            cell_text(agg, label, backend, workload, metric, True)
            if (label, backend, workload) in agg
            else "–"
            for workload, metric in _CPU_COLUMNS
        ]
        if any(cell not in ("–", "n/a") for cell in cells):
            lines.append(f"| {name(label)} | {backend_name(backend)} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n" if lines else ""


def sync_table(agg: Agg) -> str:
    """OmniQ sync facade vs AsyncOmniQ."""
    head = (
        "| library | backend | AsyncOmniQ enqueue/s | OmniQ (sync) enqueue/s | async / sync |\n"
        "|---|---|---:|---:|---:|\n"
    )
    lines = [
        f"| {name(label)} | {backend_name(backend)} "
        f"| {cell_text(agg, label, backend, 'sync', 'async_rate', True)} "
        f"| {cell_text(agg, label, backend, 'sync', 'sync_rate', True)} "
        f"| {cell_text(agg, label, backend, 'sync', 'ratio', True)} |"
        for label, backend in rows(agg)
        if (label, backend, "sync") in agg
    ]
    return head + "\n".join(lines) + "\n" if lines else ""


def concurrent_table(agg: Agg) -> str:
    """Many producers at once: each row's rate from coroutines (async) and threads
    (blocking); OmniQ has both, through ``AsyncOmniQ`` and ``OmniQ``."""
    head = (
        "| library | backend | async enqueue/s (64 coroutines) | blocking enqueue/s (16 threads) "
        "|\n|---|---|---:|---:|\n"
    )
    lines = []
    for label, backend in rows(agg):
        cell = agg.get((label, backend, "enqueue-concurrent"))
        if cell is None:
            continue
        shown = f"**{name(label)}**" if is_omniq(label) else name(label)
        # A library measured one way only (its API is async or blocking) shows n/a in the other.
        figures = [
            cell_text(agg, label, backend, "enqueue-concurrent", metric, True)
            if metric in cell["stats"] or cell["failed"]
            else "n/a"
            for metric in ("async_rate", "blocking_rate")
        ]
        lines.append(f"| {shown} | {backend_name(backend)} | {figures[0]} | {figures[1]} |")
    return head + "\n".join(lines) + "\n" if lines else ""


def ratelimit_table(agg: Agg) -> str:
    """The drain under a rate limit, beside the limit (OmniQ only)."""
    head = (
        "| library | backend | limit/s | drain/s (first to last) | steady/s (after the first "
        "window) |\n|---|---|---:|---:|---:|\n"
    )
    lines = [
        f"| {name(label)} | {backend_name(backend)} "
        f"| {cell_text(agg, label, backend, 'ratelimit', 'limit_per_s')} "
        f"| {cell_text(agg, label, backend, 'ratelimit', 'rate', True)} "
        f"| {cell_text(agg, label, backend, 'ratelimit', 'steady_rate', True)} |"
        for label, backend in rows(agg)
        if (label, backend, "ratelimit") in agg
    ]
    return head + "\n".join(lines) + "\n" if lines else ""


def backlog_table(agg: Agg) -> str:
    """The probe with an empty queue and beside the backlog, their ratios, and OmniQ's reads
    at the backlog."""
    head = (
        "| library | backend | backlog | backlog filled /s | enqueue/s empty → backlog | ratio "
        "| drain/s empty → backlog | ratio | stats / list_tasks / get_task ms |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for label, backend in rows(agg):
        if (label, backend, "backlog") not in agg:
            continue

        def text(metric: str, spread: bool = False, *, of: str = label, on: str = backend) -> str:
            return cell_text(agg, of, on, "backlog", metric, spread)

        size = stat(agg, label, backend, "backlog", "backlog")
        reads = (
            " / ".join(text(m) for m in ("stats_ms", "list_ms", "get_ms"))
            if is_omniq(label)
            else "n/a"
        )
        shown = f"**{name(label)}**" if is_omniq(label) else name(label)
        lines.append(
            f"| {shown} | {backend_name(backend)} | {f'{size[0]:,.0f}' if size else '–'} "
            f"| {text('fill_rate')} "
            f"| {text('empty_enqueue_rate')} → {text('backlog_enqueue_rate')} "
            f"| {text('enqueue_ratio', True)} "
            f"| {text('empty_drain_rate')} → {text('backlog_drain_rate')} "
            f"| {text('drain_ratio', True)} | {reads} |"
        )
    return head + "\n".join(lines) + "\n" if lines else ""


#: The reference table's columns: (workload, metric here, figure in the reference).
_REFERENCE_COLUMNS = (
    ("enqueue", "rate", "enqueue"),
    ("bulk", "rate", "bulk"),
    ("drain", "rate", "drain"),
    ("latency", "p50_ms", "p50"),
    ("sleep", "rate", "sleep"),
)


def reference_table(agg: Agg, reference: Reference) -> str:
    """Peers measured here next to the reference benchmark's medians."""
    head = (
        "| library | backend | enqueue/s here / ref | bulk/s here / ref | drain/s here / ref "
        "| p50 ms here / ref | sleep/s here / ref |\n|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for label, backend in rows(agg):
        ref = reference.peers.get((label, backend))
        if ref is None:
            continue
        cells = []
        for workload, metric, key in _REFERENCE_COLUMNS:
            here = stat(agg, label, backend, workload, metric)
            theirs = ref.get(key)
            cells.append(f"{num(here[0]) if here else '–'} / {num(theirs) if theirs else 'n/a'}")
        lines.append(f"| {name(label)} | {backend_name(backend)} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n" if lines else ""


def failures(agg: Agg) -> str:
    """Every failed repetition, one line each."""
    lines = [
        f"- {name(label)}/{backend} {workload}: {msg}"
        for (label, backend, workload), cell in sorted(agg.items())
        for msg in cell["failed"]
    ]
    return "\n".join(lines) + "\n" if lines else "None.\n"


def settings_list(agg: Agg) -> str:
    """How each library's worker was configured (from the adapters themselves)."""
    lines = []
    for label, backend in rows(agg):
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
        lines.append(f"- **{name(label)}** ({backend_name(backend)}): `{first}`{sleep}")
    return "\n".join(lines) + "\n"
