"""The benchmark report's data files and renderer agree with the published report.

docs/benchmarks.md is generated (``python -m benchmarks --report-from FILE --docs
docs/benchmarks.md``) from the results file kept in benchmarks/results/; these tests render
that file again with benchmarks/data/*.toml, so a target, a reference figure or the renderer
cannot change without the published report changing with it.
"""

# The en dashes and multiplication signs are the report's typography, not typos.
# ruff: noqa: RUF001

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from benchmarks.adapters import REGISTRY
from benchmarks.report.data import DataError, load_reference, load_targets
from benchmarks.report.results import aggregate
from benchmarks.report.targets import evaluate, targets_table

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "benchmarks.md"
REGENERATE = (
    "regenerate it (with the bench extra installed, for the chart): python -m benchmarks "
    "--report-from benchmarks/results/results-<stamp>.json --out /tmp/bench "
    "--docs docs/benchmarks.md"
)


@pytest.fixture(scope="module")
def published() -> dict[str, Any]:
    """The stored run docs/benchmarks.md was made from (found by its date)."""
    docs = DOCS.read_text(encoding="utf-8")
    for path in sorted((ROOT / "benchmarks" / "results").glob("results-*.json")):
        stored: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if f"Run {stored['meta']['date']}, " in docs:
            return stored
    raise AssertionError("docs/benchmarks.md's run is not in benchmarks/results/ (commit it)")


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _table(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_targets_table_is_the_published_one(published: dict[str, Any]) -> None:
    targets = load_targets()
    rendered = targets_table(aggregate(published["records"]), targets)
    shown = _section(DOCS.read_text(encoding="utf-8"), targets.heading)
    assert _table(rendered) == _table(shown), f"docs/benchmarks.md is stale; {REGENERATE}"
    # Every target has its row, but those of a workload newer than the run (none ran it).
    ran = {record["workload"] for record in published["records"]}
    assert len(_table(rendered)) == 2 + len([t for t in targets.targets if t.workload in ran])


def test_docs_are_what_the_renderer_makes(published: dict[str, Any]) -> None:
    rendered = report.render(published["records"], published["meta"], "benchmarks.png")
    docs = DOCS.read_text(encoding="utf-8")
    assert rendered == docs, f"docs/benchmarks.md is stale; {REGENERATE}"


def test_every_target_is_measured_by_the_published_run(published: dict[str, Any]) -> None:
    verdicts = evaluate(aggregate(published["records"]), load_targets().targets)
    unmeasured = [
        v.target.title
        for v in verdicts
        if v.ours is None or (v.best_peer is None and v.target.fixed is None)
    ]
    assert unmeasured == []


def test_every_peer_row_has_reference_figures() -> None:
    reference = load_reference()
    missing = [
        (entry.label, backend)
        for entry in REGISTRY.values()
        if entry.library != "omniq" and not entry.variant
        for backend in entry.backends
        if (entry.label, backend) not in reference.peers
    ]
    assert missing == []


def _records(figures: dict[tuple[str, str, str, str], float]) -> list[dict[str, Any]]:
    return [
        {"label": label, "backend": backend, "workload": workload, "run": 1, "ok": True}
        | {"metrics": {metric: value}}
        for (label, backend, workload, metric), value in figures.items()
    ]


def test_a_target_is_a_data_file_edit(tmp_path: Path) -> None:
    path = tmp_path / "targets.toml"
    path.write_text(
        'heading = "Targets of issue 37"\ncolumn = "target"\n'
        '[[target]]\ntitle = "drain ≥ {ratio}× Huey"\nbackend = "redis"\n'
        'workload = "drain"\nmetric = "rate"\nratio = 1.5\npeers = ["huey"]\n'
        '[[target]]\ntitle = "p50 ≤ best"\nbackend = "redis"\nworkload = "latency"\n'
        'metric = "p50_ms"\nbetter = "lower"\nunit = " ms"\n'
        '[[target]]\ntitle = "bulk vs RQ"\nbackend = "redis"\nworkload = "bulk"\n'
        'metric = "rate"\npeers = ["rq"]\n'
        '[[target]]\ntitle = "SQLite drain"\nbackend = "sqlite"\nworkload = "drain"\n'
        'metric = "rate"\n',
        encoding="utf-8",
    )
    agg = aggregate(
        _records(
            {
                ("omniq", "redis", "drain", "rate"): 2000.0,
                ("huey", "redis", "drain", "rate"): 1000.0,
                ("saq", "redis", "drain", "rate"): 5000.0,  # not among this target's peers
                ("omniq", "redis", "latency", "p50_ms"): 2.0,
                ("huey", "redis", "latency", "p50_ms"): 1.0,
                ("saq", "redis", "latency", "p50_ms"): 4.0,
                ("omniq", "redis", "bulk", "rate"): 50_000.0,
            }
        )
    )
    targets = load_targets(path)
    assert [(v.best_peer, v.goal, v.met) for v in evaluate(agg, targets.targets)] == [
        (("huey", 1000.0), 1500.0, True),
        (("huey", 1.0), 1.0, False),
        (None, None, None),  # RQ did not run; the SQLite target has no row (no OmniQ there)
    ]
    assert _table(targets_table(agg, targets))[2:] == [
        "| drain ≥ 1.5× Huey | 1,000/s (huey) | ≥ 1,500/s | 2,000/s (2,000–2,000) | met |",
        "| p50 ≤ best | 1.00 ms (huey) | ≤ 1.00 ms | 2.00 ms (2.00–2.00) "
        "| missed: 2.00x the target |",
        "| bulk vs RQ | – | no peer figure | – | – |",
    ]


def test_a_fixed_goal_needs_no_peer_and_a_workload_nobody_ran_has_no_row(tmp_path: Path) -> None:
    path = tmp_path / "targets.toml"
    path.write_text(
        'heading = "Targets of issue 37"\ncolumn = "target"\n'
        '[[target]]\ntitle = "drain beside the backlog"\nbackend = "redis"\n'
        'workload = "backlog"\nmetric = "drain_ratio"\nfixed = 0.9\nunit = "×"\n'
        '[[target]]\ntitle = "stats at the backlog"\nbackend = "redis"\n'
        'workload = "backlog"\nmetric = "stats_ms"\nbetter = "lower"\nfixed = 50\n'
        'unit = " ms"\n'
        '[[target]]\ntitle = "drain"\nbackend = "redis"\nworkload = "drain"\nmetric = "rate"\n',
        encoding="utf-8",
    )
    targets = load_targets(path)
    agg = aggregate(
        _records(
            {
                ("omniq", "redis", "backlog", "drain_ratio"): 0.95,
                ("omniq", "redis", "backlog", "stats_ms"): 70.0,
            }
        )
    )
    assert [(v.best_peer, v.goal, v.met) for v in evaluate(agg, targets.targets)] == [
        (None, 0.9, True),
        (None, 50.0, False),
    ]
    assert _table(targets_table(agg, targets))[2:] == [
        "| drain beside the backlog | – (a fixed goal) | ≥ 0.90× | 0.95× (0.95–0.95) | met |",
        "| stats at the backlog | – (a fixed goal) | ≤ 50.0 ms | 70.0 ms (70.0–70.0) "
        "| missed: 1.40x the target |",
    ]
    path.write_text(
        'heading = "h"\ncolumn = "c"\n[[target]]\ntitle = "t"\nbackend = "redis"\n'
        'workload = "backlog"\nmetric = "drain_ratio"\nfixed = 0.9\npeers = ["huey"]\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError, match="a fixed goal takes no peers"):
        load_targets(path)


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ('title = "2× peer"\nratio = 2', "write {ratio}"),
        ('title = "t"\npeers = ["hury"]', "'hury' is not one of"),
        ('title = "t"\nfactor = 2', "unknown key(s) factor"),
        ('title = "t"\nbetter = "less"', "'less' is not one of higher, lower"),
    ],
)
def test_a_malformed_target_is_refused(tmp_path: Path, entry: str, complaint: str) -> None:
    path = tmp_path / "targets.toml"
    path.write_text(
        'heading = "h"\ncolumn = "c"\n[[target]]\nbackend = "redis"\nworkload = "drain"\n'
        f'metric = "rate"\n{entry}\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError) as caught:
        load_targets(path)
    assert "targets.toml [[target]] 1" in str(caught.value)
    assert complaint in str(caught.value)


def test_many_producers_are_reported_each_way_they_were_measured(
    tmp_path: Path, published: dict[str, Any]
) -> None:
    records = [
        {"label": label, "backend": "redis", "workload": "enqueue-concurrent", "run": 1}
        | {"ok": True, "metrics": metrics}
        for label, metrics in (
            ("omniq", {"async_rate": 30000.0, "blocking_rate": 12000.0, "n": 10}),
            ("saq", {"async_rate": 7000.0, "n": 10}),
            ("huey", {"blocking_rate": 6000.0, "n": 10}),
        )
    ]
    agg = aggregate(records)
    rendered = report.render(records, published["meta"], None)
    section = _section(rendered, "Many producers (enqueue-concurrent)")
    assert _table(section)[2:] == [
        "| **OmniQ** | Redis | 30,000 (30,000–30,000) | 12,000 (12,000–12,000) |",
        "| saq | Redis | 7,000 (7,000–7,000) | n/a |",
        "| huey | Redis | n/a | 6,000 (6,000–6,000) |",
    ]
    assert "- **enqueue-concurrent**:" in _section(rendered, "Method")
    # A target on the blocking figure is a data edit like any other.
    path = tmp_path / "targets.toml"
    path.write_text(
        'heading = "h"\ncolumn = "c"\n[[target]]\ntitle = "16 threads ≥ {ratio}× Huey"\n'
        'backend = "redis"\nworkload = "enqueue-concurrent"\nmetric = "blocking_rate"\n'
        'ratio = 2\npeers = ["huey", "rq"]\n',
        encoding="utf-8",
    )
    [verdict] = evaluate(agg, load_targets(path).targets)
    assert (verdict.best_peer, verdict.goal, verdict.met) == (("huey", 6000.0), 12000.0, True)


def test_a_run_without_many_producers_has_no_such_section(published: dict[str, Any]) -> None:
    rendered = report.render(published["records"], published["meta"], None)
    assert "## Many producers" not in rendered
