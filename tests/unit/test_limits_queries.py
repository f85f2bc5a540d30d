"""The statements of the limits' SQL files (``sql/limits.sql`` of SQLite and PostgreSQL):
each one is used, each name used exists, and (PostgreSQL) the schema is the only
fragment filled in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from omniq.storage import postgres, sqlite
from omniq.storage._sql import load_queries

#: Per backend: its package, and the names its code looks the statements up under.
CASES = [
    pytest.param(postgres, ("lq", "pieces"), id="postgres"),
    pytest.param(sqlite, ("LQ",), id="sqlite"),
]


def _looked_up(package: object, names: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    for path in sorted(Path(package.__file__).parent.glob("*.py")):  # type: ignore[attr-defined]
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Name)
                and node.value.id in names
            ):
                slice_ = node.slice
                options = (
                    [slice_.body, slice_.orelse] if isinstance(slice_, ast.IfExp) else [slice_]
                )
                found |= {o.value for o in options if isinstance(o, ast.Constant)}
    return found


@pytest.mark.parametrize(("package", "names"), CASES)
def test_every_limits_statement_is_used_and_every_name_used_exists(
    package: object, names: tuple[str, ...]
) -> None:
    queries = load_queries(package.__name__, "limits.sql")  # type: ignore[attr-defined]
    used = _looked_up(package, names)
    assert used, "no statement looked up: has the code changed how it names them?"
    assert used == set(queries)


def test_the_schema_is_the_only_fragment_of_the_postgres_limits_statements() -> None:
    for name, sql in load_queries("omniq.storage.postgres", "limits.sql").items():
        filled = sql.format(s='"app"')
        assert "{" not in filled and "}" not in filled, name
