"""The repetitions of a run, aggregated per cell, and the lookups every renderer shares.

A cell is one library row (``label``) on one backend running one workload; its figures are
the median, min and max of each metric over the successful repetitions.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from benchmarks.adapters import REGISTRY

#: (median, min, max) of one metric over the successful repetitions of a cell.
Stat = tuple[float, float, float]
#: Per (label, backend, workload): ``stats`` (metric -> Stat), ``ok``, ``failed``,
#: ``partial``, ``version``, ``worker_setting``.
Agg = dict[tuple[str, str, str], dict[str, Any]]

BACKEND_ORDER = ("redis", "sqlite", "file", "postgres", "nats")
BACKEND_NAME = {
    "redis": "Redis",
    "sqlite": "SQLite",
    "file": "File",
    "postgres": "PostgreSQL",
    "nats": "NATS",
}
DISPLAY = {
    "omniq": "OmniQ",
    "omniq-noevents": "OmniQ (events off)",
    "taskiq": "taskiq (stream)",
    "taskiq-list": "taskiq (list)",
    "taskiq-nats": "taskiq (NATS)",
    "arq-fastpoll": "arq (poll_delay=0.01, non-default)",
    "rq-simple": "rq (SimpleWorker, non-default)",
}


def aggregate(records: Iterable[dict[str, Any]]) -> Agg:
    """Per (label, backend, workload): median/min/max of each metric, failures, versions."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["label"], rec["backend"], rec["workload"]), []).append(rec)
    out: Agg = {}
    for key, recs in groups.items():
        ok = [r for r in recs if r.get("ok")]
        stats: dict[str, Stat] = {}
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


def rows(agg: Agg) -> list[tuple[str, str]]:
    """The (label, backend) pairs of the run, in report order: by backend, then registry."""
    pairs = {(label, backend) for label, backend, _ in agg}
    order = list(REGISTRY)
    return sorted(
        pairs,
        key=lambda p: (
            BACKEND_ORDER.index(p[1]) if p[1] in BACKEND_ORDER else 9,
            order.index(p[0]) if p[0] in order else 99,
        ),
    )


def stat(agg: Agg, label: str, backend: str, workload: str, metric: str) -> Stat | None:
    """One metric of one cell, or None when the cell or the metric is missing."""
    cell = agg.get((label, backend, workload))
    if cell is None:
        return None
    found: Stat | None = cell["stats"].get(metric)
    return found


def is_omniq(label: str) -> bool:
    """Whether the row is one of OmniQ's own (highlighted in tables and the chart)."""
    entry = REGISTRY.get(label)
    return entry is not None and entry.library == "omniq"


def peer_labels() -> list[str]:
    """Every peer row run by default (variants with non-default knobs excluded)."""
    return [e.label for e in REGISTRY.values() if e.library != "omniq" and not e.variant]


# -- formatting shared by the tables and the chart -----------------------------------------
def num(value: float) -> str:
    """A figure at the report's precision: 12,345 / 12.3 / 1.23."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def name(label: str) -> str:
    """A row's display name."""
    return DISPLAY.get(label, label)


def backend_name(backend: str) -> str:
    """A backend's display name."""
    return BACKEND_NAME.get(backend, backend)
