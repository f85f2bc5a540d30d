"""The PostgreSQL statements in sql/queries.sql: each one is used, each name used exists,
and the schema is the only fragment filled in (in the migrations too)."""

from __future__ import annotations

import ast
from pathlib import Path

from omniq.storage import postgres
from omniq.storage._sql import load_migrations, load_queries

PACKAGE = Path(postgres.__file__).parent


def _strings(node: ast.expr) -> set[str]:
    """The string constants ``node`` may evaluate to (a constant, or either branch of an
    ``a if c else b``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _strings(node.body) | _strings(node.orelse)
    return set()


def _code() -> list[ast.Module]:
    return [ast.parse(path.read_text()) for path in sorted(PACKAGE.glob("*.py"))]


def test_every_statement_name_the_code_looks_up_exists() -> None:
    queries = load_queries("omniq.storage.postgres")
    looked_up = set()
    for tree in _code():
        for node in ast.walk(tree):
            # db.sql["name"], sql["name"]
            if isinstance(node, ast.Subscript) and (
                (isinstance(node.value, ast.Attribute) and node.value.attr == "sql")
                or (isinstance(node.value, ast.Name) and node.value.id == "sql")
            ):
                looked_up |= _strings(node.slice)
    assert looked_up, "no statement looked up: has the code changed how it names them?"
    assert looked_up <= set(queries)


def test_every_statement_is_named_in_the_code() -> None:
    literals = {
        node.value
        for tree in _code()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert set(load_queries("omniq.storage.postgres")) <= literals


def test_the_schema_is_the_only_fragment() -> None:
    statements = load_queries("omniq.storage.postgres")
    for version, script in load_migrations("omniq.storage.postgres"):
        statements[f"migration {version}"] = script
    for name, sql in statements.items():
        filled = sql.format(s='"app"')
        assert "{" not in filled and "}" not in filled, name
