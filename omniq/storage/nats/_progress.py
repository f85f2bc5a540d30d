"""Tasks' progress on NATS: one key per task in the namespace's progress bucket.

A bucket of its own, so progress writes never bump a task's revision (every change of a
task is a compare-and-set on it) nor wake the tasks bucket's watchers. A write goes only
to tasks whose record exists (a deleted task is not given one back); ``delete_finished``
purges a task's progress with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from omniq.models import Progress
from omniq.storage._rows import decode_progress, encode_progress
from omniq.storage.nats._base import key_of
from omniq.storage.nats.connection import NATSConnection

__all__ = ["purge_progress", "read_progress", "write_progress"]


def _subject(conn: NATSConnection, task_id: str) -> str:
    return f"$KV.{conn.progress_bucket}.{key_of(task_id)}"


async def write_progress(conn: NATSConnection, updates: Mapping[str, Progress]) -> None:
    """Write the progress of the tasks in ``updates`` whose record exists."""
    stream = f"KV_{conn.tasks_bucket}"
    ids = list(updates)
    current = await asyncio.gather(
        *(conn.get_last(stream, f"$KV.{conn.tasks_bucket}.{key_of(i)}") for i in ids)
    )
    await asyncio.gather(
        *(
            conn.publish(_subject(conn, task_id), encode_progress(updates[task_id]))
            for task_id, (_, data) in zip(ids, current, strict=True)
            if data is not None
        )
    )


async def read_progress(conn: NATSConnection, task_ids: Sequence[str]) -> dict[str, Progress]:
    """The stored progress of ``task_ids``, by id (one direct get each, together)."""
    stream = f"KV_{conn.progress_bucket}"
    found = await asyncio.gather(*(conn.get_last(stream, _subject(conn, i)) for i in task_ids))
    progress = {
        task_id: decode_progress(data)
        for task_id, (_, data) in zip(task_ids, found, strict=True)
        if data is not None
    }
    return {task_id: p for task_id, p in progress.items() if p is not None}


async def purge_progress(conn: NATSConnection, task_ids: Sequence[str]) -> None:
    """Purge the progress of deleted tasks."""
    bucket = conn.progress_bucket
    await asyncio.gather(*(conn.purge_key(bucket, key_of(task_id)) for task_id in task_ids))
