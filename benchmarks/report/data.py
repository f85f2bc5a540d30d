"""The figures the report compares a run with, read from ``benchmarks/data/*.toml``.

``reference.toml`` holds the peer reference benchmark's medians and the raw limits of its
machine; ``targets.toml`` holds the targets, each one comparison of OmniQ with the best
peer of the same run. Both are data: changing a figure or a target, or adding a target,
is an edit of the file, checked here when it is loaded (an unknown key, backend, workload
or row label is refused with a :class:`DataError` naming the file and the entry).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
