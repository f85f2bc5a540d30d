"""The report's chart: horizontal bars per workload, OmniQ highlighted (needs matplotlib)."""

# The en dashes are the report's typography, not typos.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

from pathlib import Path

from benchmarks.report.results import Agg, backend_name, is_omniq, name, num, rows, stat

#: (workload, metric, title, log scale), one panel each where the run has the metric.
PANELS = (
    ("enqueue", "rate", "enqueue, one call at a time (tasks/s)", False),
    ("bulk", "rate", "bulk enqueue (tasks/s)", False),
    ("drain", "rate", "drain, 1 worker process (tasks/s)", False),
    ("sleep", "rate", "sleep-concurrency 10 ms x 100 (tasks/s)", False),
    ("latency", "p50_ms", "latency p50 (ms, log scale; lower is better)", True),
    ("drain", "peak_rss_mib", "worker peak RSS during drain (MiB)", False),
    ("enqueue-concurrent", "async_rate", "enqueue from 64 coroutines (tasks/s)", False),
    ("enqueue-concurrent", "blocking_rate", "enqueue from 16 threads (tasks/s)", False),
)
_BACKEND_COLOR = {"redis": "#1f77b4", "sqlite": "#2ca02c", "postgres": "#9467bd", "nats": "#d62728"}


def chart(agg: Agg, path: Path) -> Path | None:
    """Horizontal bars per workload, OmniQ highlighted, min–max as error bars.

    Returns None (and writes nothing) without matplotlib or without any figure to draw.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    present = [
        p for p in PANELS if any(k[2] == p[0] and p[1] in v["stats"] for k, v in agg.items())
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
        for label, backend in rows(agg):
            found = stat(agg, label, backend, workload, metric)
            if found is None:
                continue
            names.append(f"{name(label)} · {backend_name(backend)}")
            medians.append(found[0])
            lows.append(found[0] - found[1])
            highs.append(found[2] - found[0])
            colors.append("#d62728" if is_omniq(label) else _BACKEND_COLOR.get(backend, "#7f7f7f"))
        ypos = range(len(names))
        ax.barh(list(ypos), medians, xerr=[lows, highs], color=colors, capsize=2)
        ax.set_yticks(list(ypos), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        if log:
            ax.set_xscale("log")
        for y, value in zip(ypos, medians, strict=True):
            ax.text(value, y, f" {num(value)}", va="center", fontsize=7)
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
