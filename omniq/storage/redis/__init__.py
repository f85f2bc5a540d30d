"""Redis storage: the task queue, results, events and schedules on one Redis server.

Every component works standalone from a URL::

    async with AsyncRedisQueue("redis://127.0.0.1:6379/0", namespace="myapp") as queue:
        await queue.enqueue([task])

or, built by a :class:`RedisBackend` (the bundle), on its one shared
:class:`~omniq.storage.redis.connection.RedisConnection`. Blocking twins
(``RedisQueue``, ``RedisResultStorage``…) run the same coroutines on a private loop.

Modules: ``connection`` (the connection: RESP over hiredis, scripts, retries, error
translation), ``queue``, ``results``, ``events``, ``schedules`` (one component each, with
its blocking twin, on ``_base.RedisComponent``), ``_codec`` (records and script
arguments), ``_scripts`` (the ``lua/`` files), ``_resp`` (the protocol).

Key layout. Everything lives under ``{namespace}:`` (``settings.namespace``, or
``?namespace=`` in the URL), so applications share a server safely; a namespace may not
contain ``:``. Times are integer microseconds since the epoch, kept as decimal strings.

=================================  ======  ==============================================
key                                type    holds
=================================  ======  ==============================================
``t:{id}``                         hash    one task: ``d1``..``d8`` the msgpack-encoded
                                           ``Task`` as enqueued (its id left out: the key
                                           holds it), in pieces of at most 64
                                           bytes (one field ``d`` when larger than 512
                                           bytes), and its mutable fields ``s`` status,
                                           ``a`` attempts, ``w`` worker, ``l`` lease expiry,
                                           ``due``, ``u`` updated; plus ``q`` queue, ``p``
                                           priority, ``m`` the head of its ready-set member
                                           (due ms and enqueue order, without the id), ``x``
                                           has dependencies, ``eb`` its enqueue's event
                                           group. A field that would be empty or 0 is left
                                           out (``a``, ``p``), and so is ``u`` until the
                                           task changes (the record holds its time); a
                                           task stored by OmniQ 0.1 keeps its whole member
                                           in ``m`` and its ``seq``, and is read alike.
                                           Every value under 64 bytes keeps the hash a
                                           compact listpack: 296 bytes for a queued no-op
                                           task (650 in all with its two index entries,
                                           see benchmarks/analysis.md)
``pg:{id}``                        string  a task's progress (msgpack ``Progress``), apart
                                           from its hash; deleted with the task
``seq``                            string  enqueue counter (ties in claim order)
``queues``                         set     every queue name seen (for stats and list)
``q:{queue}:ready``                zset    claimable tasks: score ``-priority``, member
                                           ``{due ms:013}{seq:013x}{id}``, so one ``ZRANGE``
                                           gives priority, then due time, then enqueue order
``q:{queue}:delayed``              zset    waiting tasks not yet due, by due time
``q:{queue}:leases``               zset    running tasks, by lease expiry
``q:{queue}:s:{status}``           zset    the queue's tasks in one status, by ``seq``
                                           (``stats`` and ``list`` never scan)
``q:{queue}:wake``                 list    wake-up tokens for blocked workers (max 16)
``deps:{id}``                      set     ids of the tasks that depend on ``id``
``finished``                       zset    tasks in a final state, by update time
``r:{id}``                         string  a result; native expiry (``PX``) from
                                           ``expires_at``
``results:exp``                    zset    results with an expiry, by ``expires_at``
``rw:{id}``                        list    result-ready token for ``wait`` (short expiry)
``e:{id}``                         list    a task's events, each ``{timestamp:016}`` +
                                           msgpack
``events``                         zset    task ids by their oldest event (``delete_before``)
``eb:{n}``                         hash    events an enqueue logged for a group of tasks
                                           (``1``, ``2``… items as in ``e:{id}`` without
                                           the task id; ``n`` how many tasks point at it
                                           by their hash's ``eb`` field); a task's own
                                           list takes them over when the task is deleted
``events:b``                       zset    those groups by their oldest event
``s:{id}``                         hash    a schedule: ``d`` msgpack, ``v`` version
``schedules``                      zset    schedule ids (score 0: by id)
``schedules:due``                  zset    unpaused schedules by ``next_run_at``
``workers``                        hash    live worker pools: id -> msgpack ``WorkerInfo``
``workers:exp``                    zset    those ids by when their registration lapses
``limits``                         hash    global limits by key (``q:{queue}``,
                                           ``t:{task name}``): ``rate|per|cap``; a task
                                           carrying a limit has its name in its hash's
                                           ``ln`` field (absent: no limit; claims run as
                                           before)
``ls:{key}``                       zset    a rate-limited key's starts in its window
``lr:{name}``                      set     ids of the tasks a name's cap let start
=================================  ======  ==============================================

Every state change of a task is one Lua script (``omniq/storage/redis/lua``), loaded once and
called by SHA: a claim promotes due delayed tasks and expired leases into the ready set,
then leases the best ``limit`` tasks across the queues, all in one ``EVALSHA`` (a
strict claim takes the queues one by one, in the order listed). Enqueue,
retry, release and transitions push a token to the queue's wake list; an idle worker
blocks on those lists (``BLPOP``) on a connection kept for blocking calls, and a result
``wait`` blocks the same way on ``rw:{id}``. A claim that takes everything claimable
drops the queue's leftover tokens, so an idle worker never spins on stale ones. Scripts
touch keys they build from the prefix, so the layout targets a single Redis server (not
a cluster). Run it with ``maxmemory-policy noeviction`` and, for durability across
restarts, ``appendonly yes`` (``appendfsync always`` loses nothing acknowledged).
A claim promotes at most 1,000 due delayed tasks and 1,000 expired leases per queue per
call; a larger backlog moves over the next claims.

The connection (``omniq.storage.redis.connection``) shares one pipelined socket per
process for ordinary requests and gives each blocking call its own; see there for its
retries.
"""

from __future__ import annotations

from omniq._urls import split_namespace
from omniq.storage._bundle import BackendSpec, Bundle
from omniq.storage.redis.connection import RedisConnection
from omniq.storage.redis.events import AsyncRedisEventStorage, RedisEventStorage
from omniq.storage.redis.queue import AsyncRedisQueue, RedisQueue
from omniq.storage.redis.results import AsyncRedisResultStorage, RedisResultStorage
from omniq.storage.redis.schedules import AsyncRedisScheduleStorage, RedisScheduleStorage

__all__ = [
    "BACKEND",
    "AsyncRedisEventStorage",
    "AsyncRedisQueue",
    "AsyncRedisResultStorage",
    "AsyncRedisScheduleStorage",
    "RedisBackend",
    "RedisConnection",
    "RedisEventStorage",
    "RedisQueue",
    "RedisResultStorage",
    "RedisScheduleStorage",
    "split_namespace",
]

#: The Redis backend for the registry (:mod:`omniq.storage.registry`): ``redis://``,
#: ``rediss://`` and ``unix://`` URLs.
BACKEND = BackendSpec(
    name="redis",
    connection=RedisConnection,
    task_queue=AsyncRedisQueue,
    result_storage=AsyncRedisResultStorage,
    event_storage=AsyncRedisEventStorage,
    schedule_storage=AsyncRedisScheduleStorage,
)


class RedisBackend(Bundle[
    AsyncRedisQueue, AsyncRedisResultStorage, AsyncRedisEventStorage, AsyncRedisScheduleStorage
]):  # fmt: skip
    """The task queue, results, events and schedules on one Redis server, sharing one
    :class:`RedisConnection`.

    ``redis://host:port/db`` (also ``rediss://`` and ``unix://``). Keys live under
    ``settings.namespace`` (default ``omniq``); a ``?namespace=name`` in the URL wins.

    Example::

        backend = RedisBackend("redis://127.0.0.1:6379/0", settings)
        queue = backend.task_queue()
        await queue.connect()  # opens the shared connection
    """

    spec = BACKEND
    connection: RedisConnection

    @property
    def namespace(self) -> str:
        """The key prefix every component uses (without its ``:``)."""
        return self.connection.namespace
