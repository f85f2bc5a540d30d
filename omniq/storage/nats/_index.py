"""The task index: a process's ordered view of the tasks bucket, kept by a watch.

JetStream delivers a stream in sequence order; OmniQ's claim order is priority, then due
time, then enqueue order, judged at the claim's ``now``, across the queues a worker
names (merged, or strictly in list order). So each process that claims keeps an index
of the bucket: an ordered consumer on the bucket's stream (a KV watch, pushed by the
server) feeds it every change, and per queue it keeps three heaps: ready tasks (by
``-priority``, due time, enqueue order), tasks waiting for their due time, and running
tasks by lease expiry. A claim picks from the heaps and takes each task with a
compare-and-set on the revision it saw; a task another process changed meanwhile fails
that write and is skipped, so two claims never share a task. The index may lag the
server by a moment; it never decides alone: every change is a compare-and-set.

Heap entries are never removed in place: each carries the revision it was pushed for,
and one whose task has moved on since is dropped when it reaches the top.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js import api

from omniq.storage.nats._base import Record, decode_record, ident_of
from omniq.storage.nats.connection import NATSConnection

__all__ = ["CLAIMABLE", "LIMITS_KEY", "TaskIndex", "index_of"]

logger = logging.getLogger("omniq")

#: Statuses a task waits in (SCHEDULED only without dependencies).
CLAIMABLE = frozenset({"pending", "retrying", "scheduled"})
#: Final statuses: the index keeps such a task without its body.
FINAL = frozenset({"complete", "failed", "cancelled", "expired"})
_RUNNING = "running"
#: The key of the limits ledger in the tasks bucket (omniq.storage.nats._limits): no task
#: has it (key_of never makes a key with a dot).
LIMITS_KEY = "omniq.limits"
#: How long reading the index waits for it to catch up with the server.
_CATCH_UP = 5.0

Ready = tuple[int, int, int, str, int]  # -priority, due or created, seq, id, revision
Timed = tuple[int, str, int]  # time, id, revision


def _waiting(record: Record) -> bool:
    return record.status in CLAIMABLE and not (record.status == "scheduled" and record.deps)


class TaskIndex:
    """The tasks of one namespace as this process last heard of them (see the module)."""

    def __init__(self, connection: NATSConnection) -> None:
        self.connection = connection
        bucket = connection.tasks_bucket
        self._stream = f"KV_{bucket}"
        self._subject = f"$KV.{bucket}.>"
        self._pre = len(f"$KV.{bucket}.")
        #: id -> (revision, record)
        self.records: dict[str, tuple[int, Record]] = {}
        self._ready: defaultdict[str, list[Ready]] = defaultdict(list)
        self._delayed: defaultdict[str, list[Timed]] = defaultdict(list)
        self._leases: defaultdict[str, list[Timed]] = defaultdict(list)
        self.counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.dependents: defaultdict[str, set[str]] = defaultdict(set)
        self._wakers: dict[asyncio.Future[None], frozenset[str]] = {}
        self._cancel_watchers: dict[
            str, tuple[Callable[[], Collection[str]], Callable[[str], None]]
        ] = {}
        self._sub: object | None = None
        self._seen = 0
        #: The latest revision this process wrote (applied with ``own=True``).
        self._written = 0
        self._progress: asyncio.Event = asyncio.Event()
        #: The limits ledger as last heard: (revision, bytes; None or empty: no limits).
        self.limits: tuple[int, bytes | None] = (0, None)
        #: The first start (awaited by every caller of :func:`index_of`).
        self.starting: asyncio.Future[None] | None = None

    # -- the watch -------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the bucket and wait until its current contents are in."""

        async def subscribe() -> int:
            js = await self.connection.jetstream()
            info = await js.stream_info(self._stream)
            self._sub = await js.subscribe(
                self._subject,
                stream=self._stream,
                cb=self._on_message,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                idle_heartbeat=2.0,
            )
            _feed_directly(self._sub, self._take)
            return info.state.last_seq

        last = await self.connection.patiently("watching the tasks bucket", subscribe)
        # The replay ends with the stream's last message (each is its key's last).
        await self._wait_seen(last)

    def restart(self) -> None:
        """After a reconnect: watch again from the bucket's current contents (the
        server may have lost the ordered consumer with its restart)."""
        old, self._sub = self._sub, None
        if old is None:
            return

        async def again() -> None:
            try:
                if old is not None:
                    await old.unsubscribe()  # type: ignore[attr-defined]
            except Exception as exc:
                logger.debug("nats: dropping the task watch: %s", exc)
            try:
                await self.start()
            except Exception as exc:
                logger.warning("nats: the task watch could not restart: %s", exc)

        asyncio.get_running_loop().create_task(again(), name="omniq-nats-rewatch")

    def drop(self) -> None:
        """Forget the subscription (its client is closing)."""
        self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        # nats-py's way (a queue and a task of the subscription's), used only where
        # _feed_directly could not take over.
        self._take(msg)

    def _take(self, msg: Msg) -> None:
        """Take in a message of the watch (called by nats-py's reader, see
        _feed_directly: it must not raise)."""
        try:
            self._heard(msg)
        except Exception:  # a damaged key or record: the watch itself must go on
            logger.exception("nats: a task watch message could not be read")

    def _heard(self, msg: Msg) -> None:
        # The stream sequence from the reply subject: "$JS.ACK.<stream>.<consumer>.
        # <delivered>.<stream seq>..." (9 tokens), or with a domain and an account hash
        # after "ACK" (12 or more). Read here, not through msg.metadata, which builds
        # several objects per message.
        tokens = msg.reply.split(".")
        if len(tokens) == 9:
            revision = int(tokens[5])
        elif len(tokens) >= 12:
            revision = int(tokens[7])
        else:
            return  # not a stream message (a status the client let through)
        ident = ident_of(msg.subject[self._pre :])
        known = self.records.get(ident)
        if ident == LIMITS_KEY:
            if revision > self.limits[0]:
                deleted = msg.headers and msg.headers.get("KV-Operation") in ("DEL", "PURGE")
                self.limits = (revision, None if deleted else msg.data)
        elif known is None or known[0] < revision:  # this process's own writes come back
            headers = msg.headers
            if headers and headers.get("KV-Operation") in ("DEL", "PURGE"):
                record = None
            else:
                record = decode_record(msg.data)
                if record is None:
                    logger.warning("nats: task record %s is damaged: left out", ident)
            self.apply(ident, revision, record, tell=True)
        if revision > self._seen:
            self._seen = revision
            self._progress.set()

    async def _wait_seen(self, revision: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CATCH_UP
        while self._seen < revision:
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning(
                    "nats: the task index lags the server (at %d of %d)", self._seen, revision
                )
                return
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def caught_up_with_own_writes(self) -> None:
        """Wait until the watch has brought back this process's last write, and so
        every change stored before it (no round trip: the change is on its way)."""
        if self._seen < self._written:
            await self._wait_seen(self._written)

    def holds(self, ident: str, worker_id: str) -> bool:
        """True when the index has the task running under ``worker_id``."""
        found = self.records.get(ident)
        return found is not None and found[1].status == _RUNNING and found[1].worker == worker_id

    async def catch_up(self) -> None:
        """Wait until every change the server holds now is in the index (a listing
        after another process's writes sees them)."""
        info = await self.connection.patiently(
            "reading the tasks stream", lambda: self._stream_info()
        )
        await self._wait_seen(info.state.last_seq)

    async def _stream_info(self) -> api.StreamInfo:
        js = await self.connection.jetstream()
        return await js.stream_info(self._stream)

    # -- changes -----------------------------------------------------------------------

    def apply(
        self, ident: str, revision: int, record: Record | None, *, tell: bool = False
    ) -> None:
        """Take in revision ``revision`` of task ``ident`` (None: deleted), unless the
        index already holds a later one. ``tell``: a change heard from the server, which
        may take a task from a worker watching for cancels (this process's own writes
        are not told: the client tells its own pools)."""
        if not tell and revision > self._written:
            self._written = revision
        old = self.records.get(ident)
        if old is not None:
            if old[0] >= revision:
                return
            self._forget(ident, old[1])
        if record is None:
            self.records.pop(ident, None)
            return
        if record.status in FINAL:
            # Kept for listings and counts only: without the task as enqueued (its
            # arguments), which a listing reads from the server, nor its result and
            # events (a byte of each says there are some: delete_finished moves them
            # before the purge).
            record = msgspec.structs.replace(
                record, body=b"", result=record.result[:1], events=record.events[:1]
            )
        self.records[ident] = (revision, record)
        self.counts[record.queue][record.status] += 1
        for dep in record.deps:
            self.dependents[dep].add(ident)
        self.place(ident, revision, record)
        if tell and self._cancel_watchers:
            self._tell_watchers(ident, record)

    def place(self, ident: str, revision: int, record: Record) -> None:
        """Push the heap entry of a task's state (a claim that could not write it puts
        it back this way)."""
        queue = record.queue
        if _waiting(record):
            if record.due:
                heapq.heappush(self._delayed[queue], (record.due, ident, revision))
            else:
                heapq.heappush(self._ready[queue], _ready_key(ident, revision, record))
            if self._wakers:
                for waker, queues in self._wakers.items():
                    if queue in queues and not waker.done():
                        waker.set_result(None)
        elif record.status == _RUNNING:
            heapq.heappush(self._leases[queue], (record.lease, ident, revision))

    def _forget(self, ident: str, record: Record) -> None:
        counts = self.counts[record.queue]
        counts[record.status] -= 1
        if counts[record.status] <= 0:
            del counts[record.status]
        for dep in record.deps:
            found = self.dependents.get(dep)
            if found is not None:
                found.discard(ident)
                if not found:
                    del self.dependents[dep]

    def _tell_watchers(self, ident: str, record: Record) -> None:
        for worker_id, (held, notice) in list(self._cancel_watchers.items()):
            if (record.status != _RUNNING or record.worker != worker_id) and ident in held():
                notice(ident)

    # -- claims --------------------------------------------------------------------------

    def _valid(self, ident: str, revision: int) -> Record | None:
        found = self.records.get(ident)
        if found is None or found[0] != revision:
            return None
        return found[1]

    def _promote(self, queue: str, now: int) -> None:
        """Move the tasks of ``queue`` due by ``now``, and those whose lease ran out by
        then, into its ready heap."""
        ready = self._ready[queue]
        for heap in (self._delayed.get(queue), self._leases.get(queue)):
            while heap and heap[0][0] <= now:
                _, ident, revision = heapq.heappop(heap)
                record = self._valid(ident, revision)
                if record is not None:
                    heapq.heappush(ready, _ready_key(ident, revision, record))

    def _top(self, queue: str, now: int, later: list[tuple[str, int, Record]]) -> Ready | None:
        """The first claimable entry of ``queue``'s ready heap at ``now`` (dropping
        stale entries; an entry not claimable at this ``now`` goes to ``later``)."""
        heap = self._ready.get(queue)
        while heap:
            entry = heap[0]
            ident, revision = entry[3], entry[4]
            record = self._valid(ident, revision)
            if record is None:
                heapq.heappop(heap)
                continue
            if record.status == _RUNNING:
                claimable = record.lease <= now
            else:
                claimable = _waiting(record) and record.due <= now
            if claimable:
                return entry
            heapq.heappop(heap)
            if record.status == _RUNNING or _waiting(record):
                later.append((ident, revision, record))
        return None

    def take(
        self, queues: Sequence[str], limit: int, now: int, *, strict: bool
    ) -> list[tuple[str, int, Record]]:
        """Pop up to ``limit`` claimable tasks of ``queues`` in claim order (``strict``:
        queue by queue in list order); the caller writes them or puts them back."""
        for queue in queues:
            self._promote(queue, now)
        picked: list[tuple[str, int, Record]] = []
        later: list[tuple[str, int, Record]] = []
        if strict:
            for queue in queues:
                while len(picked) < limit:
                    entry = self._top(queue, now, later)
                    if entry is None:
                        break
                    heapq.heappop(self._ready[queue])
                    picked.append((entry[3], entry[4], self.records[entry[3]][1]))
        else:
            while len(picked) < limit:
                best: Ready | None = None
                best_queue = ""
                for queue in queues:
                    entry = self._top(queue, now, later)
                    if entry is not None and (best is None or entry < best):
                        best, best_queue = entry, queue
                if best is None:
                    break
                heapq.heappop(self._ready[best_queue])
                picked.append((best[3], best[4], self.records[best[3]][1]))
        for ident, revision, record in later:
            self.place(ident, revision, record)
        return picked

    def next_due(self, queues: Iterable[str]) -> int | None:
        """The earliest time (microseconds) something in ``queues`` is claimable."""
        found: list[int] = []
        later: list[tuple[str, int, Record]] = []
        for queue in queues:
            for heap in (self._delayed.get(queue), self._leases.get(queue)):
                while heap:
                    if self._valid(heap[0][1], heap[0][2]) is not None:
                        found.append(heap[0][0])
                        break
                    heapq.heappop(heap)
            entry = self._top(queue, 2**62, later)
            if entry is not None:
                found.append(entry[1])
        for ident, revision, record in later:
            self.place(ident, revision, record)
        return min(found) if found else None

    # -- waiting -----------------------------------------------------------------------

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a task of ``queues`` may have become claimable, or after
        ``timeout``."""
        # A future woken by apply() and asyncio.timeout, not an Event under wait_for:
        # wait_for would wait in a task of its own, a loop turn more between the watch
        # bringing a task and the claim going out.
        waker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wakers[waker] = frozenset(queues)
        try:
            async with asyncio.timeout(timeout):
                await waker
        except TimeoutError:
            pass
        finally:
            del self._wakers[waker]

    def watch_cancels(
        self, worker_id: str, held: Callable[[], Collection[str]], notice: Callable[[str], None]
    ) -> None:
        """Call ``notice(id)`` whenever a task in ``held()`` changes away from
        ``worker_id``'s run (until :meth:`unwatch_cancels`)."""
        self._cancel_watchers[worker_id] = (held, notice)

    def unwatch_cancels(self, worker_id: str) -> None:
        """Stop what :meth:`watch_cancels` started."""
        self._cancel_watchers.pop(worker_id, None)


class _Feed:
    """Hands each message of a subscription to ``take`` from nats-py's reader; quacks
    like the future nats-py sets a request's reply on (see _feed_directly)."""

    __slots__ = ("_jsi", "_take")

    def __init__(self, take: Callable[[Msg], None], jsi: Any) -> None:
        self._take = take
        self._jsi = jsi

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def set_result(self, msg: Msg) -> None:
        # What nats-py does for a message it queues: the ordered consumer's heartbeat
        # check compares the last delivery with the server's.
        self._jsi.track_sequences(msg.reply)
        self._take(msg)


def _feed_directly(psub: object, take: Callable[[Msg], None]) -> None:
    """Let nats-py's reader hand the watch's messages to ``take`` itself.

    nats-py queues each message of a subscription with a callback for a task of its
    own (a put, a get and a task switch per message, three per task run here). A
    subscription with a ``_future`` (nats-py's single-reply requests) has its message
    set on it by the reader instead, after the ordered consumer's checks (a gap in the
    deliveries resets the consumer, flow control is answered, heartbeats mark it
    alive); :class:`_Feed` takes that path. Left to the queue when this nats-py has not
    the attributes it relies on.
    """
    sub = getattr(psub, "_sub", None)
    jsi = getattr(sub, "_jsi", None)
    if sub is None or jsi is None or getattr(sub, "_future", False) is not None:
        return
    if not hasattr(jsi, "track_sequences"):
        return
    sub._future = _Feed(take, jsi)


def _ready_key(ident: str, revision: int, record: Record) -> Ready:
    return (-record.priority, record.due or record.created, record.seq or revision, ident, revision)


async def index_of(connection: NATSConnection) -> TaskIndex:
    """The connection's task index, started on first use (one per client)."""
    found = connection.state.get("index")
    if isinstance(found, TaskIndex):
        index = found
    else:
        index = connection.state["index"] = TaskIndex(connection)
        index.starting = asyncio.ensure_future(index.start())
        connection.on_reconnect.append(index.restart)
    assert index.starting is not None
    try:
        await asyncio.shield(index.starting)
    except asyncio.CancelledError:
        raise
    except BaseException:
        if connection.state.get("index") is index:
            del connection.state["index"]
            connection.on_reconnect.remove(index.restart)
        raise
    return index
