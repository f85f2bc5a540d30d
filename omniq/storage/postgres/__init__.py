"""PostgreSQL storage: the task queue, results, events and schedules in one schema."""

from omniq.storage.postgres.connection import PostgresBackend
from omniq.storage.postgres.queue import (
    AsyncPostgresEventStorage,
    AsyncPostgresQueue,
    AsyncPostgresResultStorage,
    AsyncPostgresScheduleStorage,
    PostgresEventStorage,
    PostgresQueue,
    PostgresResultStorage,
    PostgresScheduleStorage,
)

__all__ = [
    "AsyncPostgresEventStorage",
    "AsyncPostgresQueue",
    "AsyncPostgresResultStorage",
    "AsyncPostgresScheduleStorage",
    "PostgresBackend",
    "PostgresEventStorage",
    "PostgresQueue",
    "PostgresResultStorage",
    "PostgresScheduleStorage",
]
