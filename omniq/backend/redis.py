"""The Redis bundle's former address: it lives in :mod:`omniq.storage.redis` now."""

from __future__ import annotations

from omniq.storage.redis import RedisBackend

__all__ = ["RedisBackend"]
