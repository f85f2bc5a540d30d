"""NATS storage (JetStream, nats-py): the task queue, results, events and schedules on
one NATS server or cluster.

``nats://host:port`` (``tls://`` for TLS, several servers as ``nats://a:4222,b:4222``,
``user:password@`` or ``token@`` before the hosts, TLS options as on every backend).
Every stream, subject and bucket is named after ``settings.namespace`` (default
``omniq``; a ``?namespace=name`` in the URL wins), with characters NATS does not take in
names turned into ``_``, so applications share a server safely. Runs on nats-server 2.9
and later; the server must run JetStream (``nats-server -js``).

=========================  =========  ==================================================
name                       kind       holds
=========================  =========  ==================================================
``{ns}_tasks``             KV bucket  one record per task (key: its id): the fields that
                                      change, the task as enqueued, and once it ended
                                      the result and events its worker wrote with it;
                                      and the key ``omniq.limits``: the global limits,
                                      their start logs and the tasks their caps let
                                      start (omniq._limit_ledger; no task key has a dot)
``{ns}_results``           KV bucket  one result per task, with its ``expires_at`` (the
                                      results that did not ride in their task's record)
``{ns}_schedules``         KV bucket  one schedule per key
``{ns}_workers``           KV bucket  one live worker pool's registration per key
``{ns}_events``            stream     events on ``{ns}.events.{task id}``, a message
                                      per task per batch (the event, or a list of them)
=========================  =========  ==================================================

An id made of anything but ``[A-Za-z0-9_-]`` is keyed by ``=`` and its URL-safe base64.

What NATS guarantees here:

- **At least once, one holder at a time.** Every change of a task (claim, renewal, ack,
  retry, cancel) is a compare-and-set on its key's revision
  (``Nats-Expected-Last-Subject-Sequence``): of two workers racing for a task, or a
  cancel racing a finish, exactly one write lands. A claim leases the task for
  ``lease_seconds`` (the lease is kept in the record and renewed while it runs); a worker
  that dies stops renewing, and once the lease ran out the task is claimed again with a
  lost run counted (``max_lost_runs`` caps them).
- **Order.** JetStream has no message priority, and a stream delivers in arrival
  order, so claims do not come from a consumer's delivery order: each claiming process
  keeps an index of the tasks bucket, fed by a watch (an ordered consumer the server
  pushes every change to), and picks by priority, then due time, then enqueue order (the
  revision the task was created at), across queues or strictly in the worker's list
  order (:mod:`omniq.storage.nats._index`). A pick is only a proposal: the
  compare-and-set decides. While other processes win those writes (they see the same
  head), a claim draws among more of the head's tasks of the same queue and priority,
  so racing workers do not all write for the same few. (A work-queue stream with a
  shared pull consumer, its ack wait as the lease, was the first plan; it cannot keep
  this order, nor judge due times and leases at a claim's ``now``, nor cap lost runs,
  so the lease lives in the task's record and JetStream's part is the buckets, the
  watch and the event stream.)
- **Memory.** The index holds the records of the namespace's waiting and running
  tasks (with their arguments) in each process that claims, lists or counts, and a slim
  entry per finished task until ``cleanup()`` deletes it. A process that only enqueues
  keeps none.
- **Delayed tasks** (``delay``, ``eta``, retry backoff) wait in the index by due time;
  an idle worker blocks on the watch until a change may concern it or its next due time
  comes (no polling). Cancels reach a running task's worker through the same watch.
- **Idempotent submit.** A task is stored with a create (expected last revision 0): an
  id that exists is left unchanged, and a create repeated after a lost reply finds its
  own record and counts as done.
- **One write per finish.** A worker ends a task with one compare-and-set on its
  record that writes the final status, the result and the events of the run together,
  when the result storage (and the event log) are this backend's on the same connection
  (a :class:`NATSBackend`, or a client whose URLs are the same): a task is never final
  without its result, nor a result or an event stored for a run that lost its task to a
  cancel, and a worker that dies before the write leaves the task to its lease. Reads
  of results and events look at the record as well as the results bucket and the event
  stream; purging finished tasks moves what rode in them there first
  (:mod:`omniq.storage.nats._changes`). With components elsewhere, or a result too
  large to share the record with the task, the result is written first, then the ack,
  then the events, as on every backend.
- **Results** expire at read time from their ``expires_at`` (``result_ttl``), and
  ``cleanup()`` purges them; nats-server 2.9 has no per-key expiry.
- **Restarts.** Buckets and streams are file-backed: with ``-sd`` (a store directory)
  everything acknowledged survives a server restart. Clients reconnect on their own,
  without limit; a write whose reply was lost meanwhile is checked before it is sent
  again, so it never takes effect twice; each process re-reads the bucket into its
  index once reconnected.

Writes of a batch (``enqueue_many``, acks, results, events) are all in flight at once and
their acknowledgements gathered. Events and tasks are separate writes at enqueue
(nats-server 2.9 has no atomic batch): an enqueue's events follow its tasks.

Inside the package: :mod:`~omniq.storage.nats.connection` connects and makes the
streams, on JetStream requests (:mod:`~omniq.storage.nats._requests`) and key reads and
compare-and-set writes (:mod:`~omniq.storage.nats._kv`); the task index and its watch
are :mod:`~omniq.storage.nats._index`, a task record's changes
:mod:`~omniq.storage.nats._changes`, the claims :mod:`~omniq.storage.nats.queue`.

Every component works standalone from a URL::

    async with AsyncNATSQueue("nats://127.0.0.1:4222", namespace="app") as queue:
        await queue.enqueue([task])

or on the one client a :class:`NATSBackend` shares among the four. Blocking twins
(``NATSQueue``, ``NATSResultStorage``…) run the same coroutines on a private loop.
"""

from __future__ import annotations

from omniq.storage._bundle import BackendSpec, Bundle
from omniq.storage.nats.connection import NATSConnection
from omniq.storage.nats.events import AsyncNATSEventStorage, NATSEventStorage
from omniq.storage.nats.queue import AsyncNATSQueue, NATSQueue
from omniq.storage.nats.results import AsyncNATSResultStorage, NATSResultStorage
from omniq.storage.nats.schedules import AsyncNATSScheduleStorage, NATSScheduleStorage

__all__ = [
    "BACKEND",
    "AsyncNATSEventStorage",
    "AsyncNATSQueue",
    "AsyncNATSResultStorage",
    "AsyncNATSScheduleStorage",
    "NATSBackend",
    "NATSConnection",
    "NATSEventStorage",
    "NATSQueue",
    "NATSResultStorage",
    "NATSScheduleStorage",
]

#: The NATS backend, for :mod:`omniq.storage.registry`.
BACKEND = BackendSpec(
    name="nats",
    connection=NATSConnection,
    task_queue=AsyncNATSQueue,
    result_storage=AsyncNATSResultStorage,
    event_storage=AsyncNATSEventStorage,
    schedule_storage=AsyncNATSScheduleStorage,
)


class NATSBackend(
    Bundle[AsyncNATSQueue, AsyncNATSResultStorage, AsyncNATSEventStorage, AsyncNATSScheduleStorage]
):
    """The task queue, results, events and schedules of one namespace on NATS, sharing
    one client.

    Example::

        backend = NATSBackend("nats://127.0.0.1:4222", settings)
        queue = backend.task_queue()
        await queue.connect()  # connects, makes the buckets and the stream if missing
    """

    spec = BACKEND
    connection: NATSConnection

    @property
    def namespace(self) -> str:
        """The namespace every stream, subject and bucket is named after."""
        return self.connection.namespace
