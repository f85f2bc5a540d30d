"""The PostgreSQL bundle now lives in :mod:`omniq.storage.postgres`; this name stays for
:func:`omniq.backend.backend_for_url` until every backend has moved there."""

from omniq.storage.postgres import PostgresBackend

__all__ = ["PostgresBackend"]
