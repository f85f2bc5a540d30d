"""The figures the report compares a run with, read from ``benchmarks/data/*.toml``.

``reference.toml`` holds the peer reference benchmark's medians and the raw limits of its
machine; ``targets.toml`` holds the targets, each one comparison of OmniQ with the best
peer of the same run or with a fixed figure. Both are data: changing a figure or a target,
or adding a target, is an edit of the file, checked here when it is loaded (an unknown
key, backend, workload or row label is refused with a :class:`DataError` naming the file
and the entry).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.adapters import REGISTRY
from benchmarks.harness import BACKENDS, WORKLOADS
from benchmarks.report.results import peer_labels

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
REFERENCE_FILE = DATA_DIR / "reference.toml"
TARGETS_FILE = DATA_DIR / "targets.toml"

#: Figures a reference peer row may carry (the reference's main table).
PEER_FIGURES = ("enqueue", "bulk", "drain", "startup", "p50", "p99", "sleep")


class DataError(ValueError):
    """A data file is malformed: the message names the file and the entry."""


@dataclass(frozen=True, kw_only=True)
class Limit:
    """A raw limit of the reference machine, shown beside the run's own calibration."""

    key: str  # the calibration key in a run's meta (benchmarks.workloads.calibrate)
    what: str
    value: float


@dataclass(frozen=True, kw_only=True)
class Reference:
    """The peer reference benchmark: per (label, backend) its medians, and raw limits."""

    peers: dict[tuple[str, str], dict[str, float]]
    limits: tuple[Limit, ...]


@dataclass(frozen=True, kw_only=True)
class Target:
    """OmniQ's median against ``ratio`` x the best peer's, one workload on one backend."""

    title: str  # "{ratio}" already replaced
    backend: str
    workload: str
    metric: str
    ratio: float
    lower_is_better: bool
    peers: tuple[str, ...]  # the peer rows to take the best of
    unit: str
    fixed: float | None = None  # a fixed goal instead of a peer's figure (then no peers)


@dataclass(frozen=True, kw_only=True)
class Targets:
    """The targets section: its heading, the table's first column, a note, the targets."""

    heading: str
    column: str
    note: str
    targets: tuple[Target, ...]


def _table(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a table, got {raw!r}")
    return raw


def _number(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
        raise DataError(f"{where}: expected a non-negative number, got {raw!r}")
    return raw


def _text(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise DataError(f"{where}: expected a non-empty string, got {raw!r}")
    return raw


def _choice(raw: Any, allowed: tuple[str, ...], where: str) -> str:
    if raw not in allowed:
        raise DataError(f"{where}: {raw!r} is not one of {', '.join(allowed)}")
    return str(raw)


def _keys(table: dict[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    if unknown := sorted(set(table) - allowed):
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if missing := sorted(required - set(table)):
        raise DataError(f"{where}: missing key(s) {', '.join(missing)}")


def load_reference(path: Path = REFERENCE_FILE) -> Reference:
    """Read the reference figures; every peer figure and limit is checked."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    _keys(raw, {"peers", "limits"}, {"peers", "limits"}, path.name)
    peers: dict[tuple[str, str], dict[str, float]] = {}
    for label, per_backend in _table(raw["peers"], f"{path.name} [peers]").items():
        for backend, figures in _table(per_backend, f"{path.name} [peers.{label}]").items():
            where = f"{path.name} [peers.{label}.{backend}]"
            _keys(_table(figures, where), set(PEER_FIGURES), set(), where)
            peers[(label, backend)] = {
                key: _number(value, f"{where} {key}") for key, value in figures.items()
            }
    limits = []
    for key, limit in _table(raw["limits"], f"{path.name} [limits]").items():
        where = f"{path.name} [limits.{key}]"
        _keys(_table(limit, where), {"what", "value"}, {"what", "value"}, where)
        limits.append(
            Limit(
                key=key,
                what=_text(limit["what"], f"{where} what"),
                value=_number(limit["value"], f"{where} value"),
            )
        )
    return Reference(peers=peers, limits=tuple(limits))


#: Workloads a target can name: ``memory`` rides on the drain repetitions (metrics of drain).
_TARGET_WORKLOADS = tuple(w for w in WORKLOADS if w != "memory")
_TARGET_KEYS = {
    "title",
    "backend",
    "workload",
    "metric",
    "ratio",
    "better",
    "peers",
    "unit",
    "fixed",
}


def _peers(raw: Any, where: str) -> tuple[str, ...]:
    if raw == "all":
        return tuple(peer_labels())
    if not isinstance(raw, list) or not raw:
        raise DataError(f'{where}: expected "all" or a non-empty list of row labels')
    known = tuple(label for label, e in REGISTRY.items() if e.library != "omniq")
    return tuple(_choice(label, known, where) for label in raw)


def _target(raw: Any, where: str) -> Target:
    table = _table(raw, where)
    _keys(table, _TARGET_KEYS, {"title", "backend", "workload", "metric"}, where)
    ratio = _number(table.get("ratio", 1), f"{where} ratio")
    title = _text(table["title"], f"{where} title")
    if ratio != 1 and "{ratio}" not in title:
        raise DataError(
            f"{where} title: write {{ratio}} where the ratio goes, so the title shows {ratio:g}"
        )
    better = _choice(table.get("better", "higher"), ("higher", "lower"), f"{where} better")
    fixed = None if "fixed" not in table else _number(table["fixed"], f"{where} fixed")
    if fixed is not None and ("peers" in table or "ratio" in table):
        raise DataError(f"{where}: a fixed goal takes no peers and no ratio")
    return Target(
        title=title.replace("{ratio}", f"{ratio:g}"),
        backend=_choice(table["backend"], BACKENDS, f"{where} backend"),
        workload=_choice(table["workload"], _TARGET_WORKLOADS, f"{where} workload"),
        metric=_text(table["metric"], f"{where} metric"),
        ratio=ratio,
        lower_is_better=better == "lower",
        peers=() if fixed is not None else _peers(table.get("peers", "all"), f"{where} peers"),
        unit=str(table.get("unit", "/s")),
        fixed=fixed,
    )


def _title_of(entry: Any) -> str:
    return repr(entry.get("title", "?")) if isinstance(entry, dict) else "?"


def load_targets(path: Path = TARGETS_FILE) -> Targets:
    """Read the targets; every target is checked (see the file's header for its keys)."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    _keys(raw, {"heading", "column", "note", "target"}, {"heading", "column", "target"}, path.name)
    entries = raw["target"]
    if not isinstance(entries, list):
        raise DataError(f"{path.name}: write each target as a [[target]] table")
    return Targets(
        heading=_text(raw["heading"], f"{path.name} heading"),
        column=_text(raw["column"], f"{path.name} column"),
        note=str(raw.get("note", "")),
        targets=tuple(
            _target(entry, f"{path.name} [[target]] {i} ({_title_of(entry)})")
            for i, entry in enumerate(entries, 1)
        ),
    )
