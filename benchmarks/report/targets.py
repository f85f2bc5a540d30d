"""Issue 7's targets: OmniQ against the best peer measured in the same run."""

# The en dashes and multiplication signs are the report's typography, not typos.
# ruff: noqa: RUF001

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.adapters import REGISTRY
from benchmarks.report.results import Agg, name, num, peer_labels, stat

ASYNC_PEERS = ("arq", "saq", "taskiq", "taskiq-list")


def _best(
    agg: Agg,
    labels: Sequence[str],
    backend: str,
    workload: str,
    metric: str,
    lowest: bool = False,
) -> tuple[str, float] | None:
    found = [
        (label, hit[0])
        for label in labels
        if (hit := stat(agg, label, backend, workload, metric)) is not None
    ]
    if not found:
        return None
    return (min if lowest else max)(found, key=lambda item: item[1])


def targets_table(agg: Agg) -> str:
    """Issue 7's targets, against the peers measured in this same run."""
    peers = peer_labels()
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
        ours = stat(agg, "omniq", backend, workload, metric)
        if peer is None:
            rows.append(f"| {what} | – | no peer figure | – | – |")
            return
        target = peer[1] * factor
        peer_text = f"{num(peer[1])}{unit} ({name(peer[0])})"
        goal = f"{'≤' if lowest else '≥'} {num(target)}{unit}"
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
            f"| {what} | {peer_text} | {goal} | {num(ours[0])}{unit} "
            f"({num(ours[1])}–{num(ours[2])}) | {verdict} |"
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
