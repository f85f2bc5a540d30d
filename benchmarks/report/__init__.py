"""The benchmark report: aggregate a run's repetitions, write JSON, Markdown and a chart.

Every figure is the median of the successful repetitions, with min–max beside it.

Modules, in the order a report is made:

- :mod:`~benchmarks.report.machine`: what the run ran on (read at the end of a run);
- :mod:`~benchmarks.report.results`: the repetitions aggregated per cell, and the lookups
  and number formatting every renderer shares;
- :mod:`~benchmarks.report.data`: what a run is compared with, read from data files:
  ``benchmarks/data/reference.toml`` (the peer reference benchmark's figures) and
  ``benchmarks/data/targets.toml`` (the targets: adding or changing one is an edit there);
- :mod:`~benchmarks.report.targets`: each target decided against the run, and its table;
- :mod:`~benchmarks.report.tables`: the other tables;
- :mod:`~benchmarks.report.markdown`: the whole document, with ``benchmarks/analysis.md``
  (hand-written) inside it;
- :mod:`~benchmarks.report.chart`: the PNG chart (only with matplotlib installed).

:func:`write` puts ``results-<stamp>.json/.md/.png`` and copies named ``latest.*`` in the
results directory, and the document and its chart at ``docs`` when asked.
"""

# The en dashes are the report's typography, not typos.
# ruff: noqa: RUF002

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report.chart import chart
from benchmarks.report.machine import machine
from benchmarks.report.markdown import markdown
from benchmarks.report.results import aggregate

__all__ = ["aggregate", "chart", "machine", "markdown", "render", "write"]


def _loads(records: Sequence[dict[str, Any]], meta: dict[str, Any]) -> list[float]:
    # With reused peer figures, only this run's own repetitions say how loaded it was.
    return [
        float(r["load_before"])
        for r in records
        if "load_before" in r and (r["library"] == "omniq" or not meta.get("reused_meta"))
    ]


def render(records: Sequence[dict[str, Any]], meta: dict[str, Any], chart_name: str | None) -> str:
    """The Markdown report of a run's records, as :func:`write` writes it."""
    return markdown(aggregate(records), meta, chart_name, _loads(records, meta))


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
    loads = _loads(records, meta)
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
