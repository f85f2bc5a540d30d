"""The file backend bundle, now :class:`omniq.storage.file.FileBackend` (kept for
:func:`omniq.backend.backend_for_url` until every backend has moved)."""

from omniq.storage.file import FileBackend

__all__ = ["FileBackend"]
