"""Tasks' progress on the file backend: one object per task, ``tasks/p/<token>``.

Kept apart from the task's record, so the frequent progress writes never race the
record's read-modify-writes (locks on local disk, conditional writes on object stores).
A write goes only to tasks whose record exists (a deleted task is not given one back);
``delete_finished`` deletes a task's progress after its record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from omniq.models import Progress
from omniq.storage._rows import decode_progress, encode_progress
from omniq.storage.file._layout import record_path, token
from omniq.storage.file._store import Store

__all__ = ["delete_progress", "progress_path", "read_progress", "write_progress"]


def progress_path(task_token: str) -> str:
    """Where the progress of the task named ``task_token`` (``_layout.token``) lives."""
    return f"p/{task_token}"


async def write_progress(store: Store, updates: Mapping[str, Progress]) -> None:
    """Write the progress of the tasks in ``updates`` whose record exists."""
    ids = list(updates)
    tokens = [token(task_id) for task_id in ids]
    exists = await store.read_many([record_path(t) for t in tokens])
    items = [
        (progress_path(t), encode_progress(updates[task_id]))
        for task_id, t, record in zip(ids, tokens, exists, strict=True)
        if record is not None
    ]
    if items:
        await store.write_many(items)


async def read_progress(store: Store, task_ids: Sequence[str]) -> dict[str, Progress]:
    """The stored progress of ``task_ids``, by id."""
    found = await store.read_many([progress_path(token(task_id)) for task_id in task_ids])
    progress = {
        task_id: decode_progress(data)
        for task_id, data in zip(task_ids, found, strict=True)
        if data is not None
    }
    return {task_id: p for task_id, p in progress.items() if p is not None}


async def delete_progress(store: Store, task_tokens: Sequence[str]) -> None:
    """Delete the progress of deleted tasks (absent ones are ignored)."""
    if task_tokens:
        await store.delete_many([progress_path(t) for t in task_tokens])
