"""The SQL backends' statements and migrations load by name, numbered without gaps."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from omniq.storage import _sql


def _package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> str:
    name = f"sqlpkg_{uuid.uuid4().hex}"  # a package name per test: imports are cached
    root = tmp_path / name
    (root / "sql").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    for filename, text in files.items():
        (root / "sql" / filename).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_queries_load_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = _package(
        tmp_path,
        monkeypatch,
        {"queries.sql": "-- header\n-- name: one\nSELECT 1;\n\n-- name: two\nSELECT {x}\n"},
    )
    assert _sql.load_queries(package) == {"one": "SELECT 1", "two": "SELECT {x}"}


def test_a_name_given_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = _package(
        tmp_path, monkeypatch, {"queries.sql": "-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n"}
    )
    with pytest.raises(ValueError, match="named twice"):
        _sql.load_queries(package)


def test_migrations_in_version_order_without_gaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"0002_b.sql": "B", "0001_a.sql": "A", "queries.sql": ""}
    assert _sql.load_migrations(_package(tmp_path, monkeypatch, files)) == [(1, "A"), (2, "B")]


def test_a_gap_in_the_migrations_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _package(tmp_path, monkeypatch, {"0001_a.sql": "A", "0003_c.sql": "C"})
    with pytest.raises(ValueError, match="numbered"):
        _sql.load_migrations(package)
