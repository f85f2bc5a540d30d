"""The targets: OmniQ against the best peer measured in the same run, or a fixed figure.

The targets themselves are data (``benchmarks/data/targets.toml``, read by
:func:`benchmarks.report.data.load_targets`); here each is decided (:func:`evaluate`, no
I/O) and shown as a row of the targets table (:func:`targets_table`).
"""

# The en dashes are the report's typography, not typos.
# ruff: noqa: RUF001

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.report.data import Target, Targets
from benchmarks.report.results import Agg, Stat, name, num, stat


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """One target decided against one run."""

    target: Target
    best_peer: tuple[str, float] | None  # (label, median); None: no peer measured
    ours: Stat | None  # OmniQ's (median, min, max); None: not measured

    @property
    def goal(self) -> float | None:
        """The figure OmniQ has to reach: the target's fixed figure, or the best peer's
        median x the ratio."""
        if self.target.fixed is not None:
            return self.target.fixed
        return None if self.best_peer is None else self.best_peer[1] * self.target.ratio

    @property
    def met(self) -> bool | None:
        """Whether OmniQ reached the goal; None when either side was not measured."""
        if self.goal is None or self.ours is None:
            return None
        if self.target.lower_is_better:
            return self.ours[0] <= self.goal
        return self.ours[0] >= self.goal


def best_peer(agg: Agg, target: Target) -> tuple[str, float] | None:
    """The target's peer with the best median in this run (the lowest where lower wins)."""
    found = [
        (label, hit[0])
        for label in target.peers
        if (hit := stat(agg, label, target.backend, target.workload, target.metric)) is not None
    ]
    if not found:
        return None
    return (min if target.lower_is_better else max)(found, key=lambda item: item[1])


def evaluate(agg: Agg, targets: Sequence[Target]) -> list[Verdict]:
    """Each target decided against the run, except on backends OmniQ did not run on."""
    ran = {backend for label, backend, _ in agg if label == "omniq"}
    # A workload the run left out entirely (a stored run older than the workload) has no row.
    workloads = {workload for _, _, workload in agg}
    return [
        Verdict(
            target=target,
            best_peer=best_peer(agg, target),
            ours=stat(agg, "omniq", target.backend, target.workload, target.metric),
        )
        for target in targets
        if target.backend in ran and target.workload in workloads
    ]


def _row(verdict: Verdict) -> str:
    target, peer, ours, goal = verdict.target, verdict.best_peer, verdict.ours, verdict.goal
    unit = target.unit
    if goal is None:
        return f"| {target.title} | – | no peer figure | – | – |"
    peer_text = "– (a fixed goal)" if peer is None else f"{num(peer[1])}{unit} ({name(peer[0])})"
    goal_text = f"{'≤' if target.lower_is_better else '≥'} {num(goal)}{unit}"
    if ours is None:
        return f"| {target.title} | {peer_text} | {goal_text} | not measured | – |"
    if verdict.met:
        result = "met"
    elif target.lower_is_better:
        result = f"missed: {ours[0] / goal:.2f}x the target"
    else:
        result = f"missed by {(1 - ours[0] / goal) * 100:.0f}%"
    return (
        f"| {target.title} | {peer_text} | {goal_text} | {num(ours[0])}{unit} "
        f"({num(ours[1])}–{num(ours[2])}) | {result} |"
    )


def targets_table(agg: Agg, targets: Targets) -> str:
    """The targets table: one row per target on a backend OmniQ ran on."""
    head = (
        f"| {targets.column} | best peer, this run | target | OmniQ, this run (min–max) "
        "| result |\n|---|---|---|---|---|\n"
    )
    return head + "\n".join(_row(v) for v in evaluate(agg, targets.targets)) + "\n"
