"""What the SQLite components share: the connection class, the default database file,
and the encoder of the records they store."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from omniq.config import Settings
from omniq.storage._component import Component
from omniq.storage.sqlite.connection import SQLiteConnection

__all__ = ["ENCODER", "Row", "SQLiteComponent"]

Row = tuple[Any, ...]

#: Tasks, results, events and schedules are stored as msgpack records.
ENCODER = msgspec.msgpack.Encoder()


class SQLiteComponent(Component[SQLiteConnection]):
    """What the four components share: their connection class, and the database file of
    a component built without a URL (``omniq.db`` under ``settings.base_dir``)."""

    connection_class = SQLiteConnection

    @classmethod
    def default_url(cls, settings: Settings) -> str:
        """``<base_dir>/omniq.db``."""
        return os.path.join(os.fspath(settings.base_dir), "omniq.db")
