"""SQL kept in files, loaded by name: one loader and one migration list for the SQL
backends (SQLite, PostgreSQL).

A backend package keeps a ``sql/`` directory holding:

- ``queries.sql``: every statement the backend sends, each under a ``-- name: <name>``
  line; ``{...}`` marks a fragment the backend fills in (a schema, a list of
  placeholders) before the statement is first used;
- ``NNNN_<what>.sql``: the schema migrations, applied in number order, each taking the
  schema from the version before to its own (the number is the version).

Both are read once, at import, and shipped in the wheel (``package-data``).
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["Migration", "load_migrations", "load_queries"]

_NAME_LINE = re.compile(r"^-- name: ", flags=re.MULTILINE)
_MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")

#: A migration: (version, script).
Migration = tuple[int, str]


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """The named statements of ``package``'s ``sql/<filename>`` (without a trailing ``;``).

    Raises ValueError for a name given twice: a later statement would silently win.
    """
    text = resources.files(package).joinpath("sql", filename).read_text(encoding="utf-8")
    queries: dict[str, str] = {}
    for chunk in _NAME_LINE.split(text)[1:]:
        name, _, body = chunk.partition("\n")
        name = name.strip()
        if name in queries:
            raise ValueError(f"{package}/sql/{filename}: the statement {name!r} is named twice")
        queries[name] = body.strip().rstrip(";")
    return queries


def load_migrations(package: str) -> list[Migration]:
    """``package``'s schema migrations in version order; the versions must run 1, 2, …"""
    found = []
    for entry in resources.files(package).joinpath("sql").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"{package}/sql: migrations must be numbered 1, 2, …: {versions}")
    return found
