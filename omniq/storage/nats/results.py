"""Task results on NATS: a key-value bucket (``{namespace}_results``), one key per task,
and the results that rode in their task's record.

A worker of this backend's queue on the same connection writes a finished task's result
in the compare-and-set that ends the task (the record's ``result``, see
:mod:`omniq.storage.nats._changes`); every other result (a cancel's, an expiry's, one
``put`` here, a worker whose queue is elsewhere) goes to the bucket. A read looks at both
at once and returns the later by ``finished_at`` (the bucket's on a tie). Purging a
finished task moves its unexpired result to the bucket first (:func:`keep_results`).

``result_ttl`` is kept as the result's ``expires_at`` and applied at read time (and by
``delete_expired``), as on the other backends: nats-server 2.9 has no per-key expiry.
A waiter subscribes to the result's key subject and the task's before it looks, so
either write wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import datetime

import msgspec
from nats.aio.subscription import Subscription

from omniq._sync import StorageTwin, blocking
from omniq.errors import StorageError
from omniq.models import TaskResult
from omniq.storage._rows import decode_record
from omniq.storage.base import BaseResultStorage
from omniq.storage.nats._base import ENCODER, NATSComponent, ident_of, key_of, together, us
from omniq.storage.nats._base import decode_record as decode_task_record
from omniq.storage.nats.connection import NATSConnection

__all__ = ["AsyncNATSResultStorage", "NATSResultStorage", "keep_results"]

_RESULT_DECODER = msgspec.msgpack.Decoder(TaskResult)


def _result(task_id: str, data: bytes) -> TaskResult:
    return decode_record(_RESULT_DECODER, data, f"nats: result of task {task_id}")


def _expired(result: TaskResult, now: float) -> bool:
    return result.expires_at is not None and result.expires_at.timestamp() <= now


class AsyncNATSResultStorage(NATSComponent, BaseResultStorage):
    """Task results in a JetStream key-value bucket; ``wait`` is woken by the write."""

    def _subject(self, task_id: str) -> str:
        return f"$KV.{self.connection.results_bucket}.{key_of(task_id)}"

    @property
    def _stream(self) -> str:
        return f"KV_{self.connection.results_bucket}"

    async def put_many(self, results: Sequence[TaskResult]) -> None:
        """Store (or replace) results, all writes in flight at once."""
        if not results:
            return
        conn = await self._conn()
        latest = {result.task_id: result for result in results}
        await together(
            [
                conn.publish(self._subject(task_id), ENCODER.encode(result))
                for task_id, result in latest.items()
            ]
        )

    async def get(self, task_id: str) -> TaskResult | None:
        """The stored result, or None (also once it expired): the bucket's, or the one
        that rode in the task's record, whichever finished later."""
        conn = await self._conn()
        key = key_of(task_id)
        (_, stored), (_, record) = await asyncio.gather(
            conn.get_last(self._stream, self._subject(task_id)),
            conn.get_last(f"KV_{conn.tasks_bucket}", f"$KV.{conn.tasks_bucket}.{key}"),
        )
        result = _later(
            None if stored is None else _result(task_id, stored), _riding(task_id, record)
        )
        return None if result is None or _expired(result, time.time()) else result

    async def wait(self, task_id: str, timeout: float) -> TaskResult | None:
        """Wait for a result: subscribed to its key and its task's, then looking, so no
        write is missed."""
        conn = await self._conn()
        client = await conn.client()
        arrived = asyncio.Event()

        async def heard(_: object) -> None:
            arrived.set()

        subs = []
        try:
            for subject in (
                self._subject(task_id),
                f"$KV.{conn.tasks_bucket}.{key_of(task_id)}",
            ):
                subs.append(await client.subscribe(subject, cb=heard))
        except Exception as exc:
            await _unsubscribe(subs)
            raise conn.error("waiting for a result", exc) from exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                arrived.clear()
                result = await self.get(task_id)
                remaining = deadline - loop.time()
                if result is not None or remaining <= 0:
                    return result
                # A look every second anyway: a write made while reconnecting is not
                # announced to a subscription being restored.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), min(remaining, 1.0))
        finally:
            await _unsubscribe(subs)

    async def delete_expired(self, now: datetime) -> int:
        """Purge the results past their ``expires_at`` (a scan of the bucket), and take
        those that rode in task records out of them (a scan of the tasks bucket; a
        record changed meanwhile keeps its result until the next call)."""
        conn = await self._conn()
        cutoff = us(now)
        pre = len(f"$KV.{conn.results_bucket}.")
        doomed = []
        for msg in await conn.scan(
            self._stream, f"$KV.{conn.results_bucket}.>", last_per_subject=True
        ):
            if msg.headers and msg.headers.get("KV-Operation"):
                continue
            key = msg.subject[pre:]
            result = _result(ident_of(key), msg.data)
            if result.expires_at is not None and us(result.expires_at) <= cutoff:
                doomed.append(key)
        await asyncio.gather(*(conn.purge_key(conn.results_bucket, key) for key in doomed))
        return len(doomed) + await self._drop_riding(conn, cutoff)

    async def _drop_riding(self, conn: NATSConnection, cutoff: int) -> int:
        """Rewrite without its result each task record whose result expired by
        ``cutoff``; how many were rewritten."""
        tasks_stream = f"KV_{conn.tasks_bucket}"
        pre = len(f"$KV.{conn.tasks_bucket}.")
        writes = []
        for msg in await conn.scan(
            tasks_stream, f"$KV.{conn.tasks_bucket}.>", last_per_subject=True
        ):
            if msg.headers and msg.headers.get("KV-Operation"):
                continue
            record = decode_task_record(msg.data)
            if record is None or not record.result:
                continue
            result = _result(ident_of(msg.subject[pre:]), record.result)
            if result.expires_at is None or us(result.expires_at) > cutoff:
                continue
            bare = ENCODER.encode(msgspec.structs.replace(record, result=b""))
            writes.append(conn.cas(msg.subject, tasks_stream, bare, msg.metadata.sequence.stream))
        done = await together(writes) if writes else []
        return sum(revision is not None for revision in done)

    async def delete(self, task_ids: Sequence[str]) -> None:
        """Purge the results' keys, and take the results that rode in the tasks' records
        out of them, all at once."""
        conn = await self._conn()
        bucket = conn.results_bucket
        await together(
            [conn.purge_key(bucket, key_of(task_id)) for task_id in task_ids]
            + [_unload(conn, task_id) for task_id in task_ids]
        )


async def keep_results(conn: NATSConnection, riding: Sequence[tuple[str, bytes]]) -> None:
    """Store in the results bucket the results (``(task id, encoded result)``) that rode
    in task records about to be purged, unless expired or older than the bucket's."""
    now = time.time()

    async def keep(task_id: str, data: bytes) -> None:
        result = _result(task_id, data)
        if _expired(result, now):
            return
        subject = f"$KV.{conn.results_bucket}.{key_of(task_id)}"
        _, stored = await conn.get_last(f"KV_{conn.results_bucket}", subject)
        if _later(None if stored is None else _result(task_id, stored), result) is result:
            await conn.publish(subject, data)

    await together([keep(task_id, data) for task_id, data in riding])


async def _unload(conn: NATSConnection, task_id: str) -> None:
    """Rewrite the task's record without the result that rode in it (a compare-and-set,
    tried again against other writers)."""
    stream = f"KV_{conn.tasks_bucket}"
    subject = f"$KV.{conn.tasks_bucket}.{key_of(task_id)}"
    for _ in range(8):
        revision, data = await conn.get_last(stream, subject)
        record = None if data is None else decode_task_record(data)
        if record is None or not record.result:
            return
        bare = ENCODER.encode(msgspec.structs.replace(record, result=b""))
        if await conn.cas(subject, stream, bare, revision) is not None:
            return
    raise StorageError(f"nats: result of task {task_id}: too many concurrent changes")


def _riding(task_id: str, record_data: bytes | None) -> TaskResult | None:
    """The result that rode in a task's record (None: none, or a damaged record)."""
    if record_data is None:
        return None
    record = decode_task_record(record_data)
    if record is None or not record.result:
        return None
    return _result(task_id, record.result)


def _later(stored: TaskResult | None, riding: TaskResult | None) -> TaskResult | None:
    """The result that finished later (``stored``, the bucket's, on a tie)."""
    if riding is None:
        return stored
    if stored is None or riding.finished_at > stored.finished_at:
        return riding
    return stored


async def _unsubscribe(subs: Sequence[Subscription]) -> None:
    for sub in subs:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


class NATSResultStorage(StorageTwin[AsyncNATSResultStorage]):
    """Blocking twin of :class:`AsyncNATSResultStorage`: the same methods, without ``await``."""

    async_class = AsyncNATSResultStorage
    delete_expired = blocking(AsyncNATSResultStorage.delete_expired)
    get = blocking(AsyncNATSResultStorage.get)
    put = blocking(AsyncNATSResultStorage.put)
    put_many = blocking(AsyncNATSResultStorage.put_many)
    wait = blocking(AsyncNATSResultStorage.wait)
    delete = blocking(AsyncNATSResultStorage.delete)
