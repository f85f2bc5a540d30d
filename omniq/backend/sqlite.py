"""Moved: the SQLite backend is the package :mod:`omniq.storage.sqlite` (this name stays
for :func:`omniq.backend.backend_for_url` until every backend has moved)."""

from omniq.storage.sqlite import SQLiteBackend

__all__ = ["SQLiteBackend"]
