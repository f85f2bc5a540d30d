"""Helpers for tests that look at (and break) what OmniQ stored on NATS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
import nats

from omniq.models import Task
from omniq.storage.nats._base import Record, key_of


async def rewrite_nats_task(
    store_url: str, task_id: str, rewrite: Callable[[Record], Record]
) -> None:
    """Replace a stored task's record by ``rewrite(record)``, behind OmniQ's back, in
    whichever namespace holds it (task ids are unique across the test run)."""
    nc = await nats.connect(store_url.split("?", 1)[0])
    try:
        js = nc.jetstream()
        key = key_of(task_id)
        names = [info.config.name for info in await js.streams_info()]
        for name in names:
            if not (name and name.startswith("KV_") and name.endswith("_tasks")):
                continue
            subject = f"$KV.{name.removeprefix('KV_')}.{key}"
            try:
                msg = await js.get_msg(name, subject=subject, direct=True)
            except nats.js.errors.NotFoundError:
                continue
            record = msgspec.msgpack.decode(msg.data, type=Record)
            await js.publish(subject, msgspec.msgpack.encode(rewrite(record)))
            return
        raise LookupError(f"task {task_id} is in no tasks bucket")
    finally:
        await nc.close()


def tamper_nats_task(
    store_url: str,
    task_id: str,
    alter: Callable[[bytes], bytes],
    *,
    replace_record: bytes | None = None,
) -> None:
    """Rewrite a stored task's payload in place (or, with ``replace_record``, the task
    as enqueued, which the record carries as its body)."""

    def rewrite(record: Record) -> Record:
        body = replace_record
        if body is None:
            task = msgspec.msgpack.decode(record.body, type=Task)
            body = msgspec.msgpack.encode(
                msgspec.structs.replace(task, payload=alter(task.payload))
            )
        return msgspec.structs.replace(record, body=body)

    asyncio.run(rewrite_nats_task(store_url, task_id, rewrite))
