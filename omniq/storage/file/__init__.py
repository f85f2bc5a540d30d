"""The file backend: tasks, results, events and schedules as objects in a directory tree.

Runs on any fsspec filesystem: local disk (``file:///dir`` or a plain path),
``memory://name`` (process-local), ``s3://bucket/prefix``, ``az://``/``abfs://``,
``gs://``. Local disk is driven through ``os`` in worker threads; async drivers
(s3fs, adlfs, gcsfs) through fsspec's async API; ``memory://`` directly on the loop.

The package: :class:`~omniq.storage.file.connection.FileConnection` (the filesystem
client for one URL and a store per component subdirectory, in ``connection``), one module
per component (``queue``, ``results``, ``events``, ``schedules``) and private helpers:
the stores (``_store``, ``_local``, ``_remote`` with ``_conditional``, ``_memory``),
names and records
(``_layout``) and claims (``_claim``). A component built alone
(``AsyncFileQueue("file:///var/omniq")``, ``AsyncFileQueue.from_url(url)``) makes a
connection of its own; :class:`FileBackend` builds the four on one.

Layout under the backend's root (each component in its own subdirectory)::

    tasks/
      t/<id>                       one record per task: the Task, its enqueue order and
                                   the path of its index entry (msgpack)
      ready/<queue>/<entry>        empty index entries: waiting tasks
      held/<queue>/<entry>         SCHEDULED tasks waiting for dependencies
      running/<queue>/<entry>      claimed tasks (the name carries the lease expiry)
      done/<queue>/<entry>         tasks in a final state (the name carries the finish time)
      deps/<dependency>/<id>       who depends on whom
      w/<worker id>                a live worker pool's registration (list_workers)
      p/<id>                       a task's progress (msgpack), apart from its record
      limits/state                 global limits, their start logs and the tasks their caps
                                   let start (omniq._limit_ledger); absent: no limits
      .locks/NN                    local disk only: lock files for read-modify-write
      .wake                        local disk only: a FIFO an enqueue writes a byte into,
                                   so a worker waiting in another process wakes at once
                                   (elsewhere waiters poll, from 5 ms up to poll_interval)
    results/r/<id>                 one TaskResult per task
    results/x/<expiry>-<id>        expiry index, so cleanup reads only expired results
    events/e/<task id>/<time>-<seq>    one small object per event
    schedules/s/<id>               one Schedule per schedule

An entry name is ``<inverted priority>-<due time>-<enqueue seq>-<lease or finish
time>-<status><nonce>-<id>`` (fixed-width digits), so a plain listing of one directory
is already in claim order and says each task's status: a claim lists the ready and
running directories of its queues and updates the first records; ``stats``,
``next_due_at``, ``wait`` and cleanup read names only; ``get`` reads one object. Ids and
queue names that are not short ``[A-Za-z0-9_-]`` strings appear as a hash.

Every change to a task is one atomic read-modify-write of its record that also moves
its index entry. On local disk the entry is renamed (atomically), before the record is
written when its new place is one claims scan (ready/, running/) and after it otherwise,
so a crash at any moment leaves exactly one entry where a claim finds it; a claim that
meets an entry its record does not name moves it to where the record says. On object
stores the new entry is written before the record and the old one deleted after it; a
leftover entry is recognised by claims and removed once it is a minute old (younger
ones may belong to a change in flight). What makes the read-modify-write atomic, and
hence what is safe where:

- **Local disk**: safe for any number of worker processes on one host (and on network
  filesystems with working ``flock``). A kernel lock (``flock``, released by the kernel
  when a process dies) guards each read-modify-write, and the new record replaces the
  old with an atomic ``os.replace``: two claims never return the same task, and a
  worker killed at any moment loses nothing. Not crash-safe against power loss (no
  fsync).
- **memory://**: one process only (the filesystem is process-local); atomic across
  threads and event loops of that process.
- **S3** (``s3://``): every update is a conditional write: ``If-Match`` the ETag that
  was read (``If-None-Match: *`` to create), repeated from a fresh read when another
  writer won. On a server that honours these conditions (AWS S3 since 2024, MinIO,
  moto) claims are safe across processes and hosts. A server that ignores them makes
  it single-consumer safe only: several consumers may then run a task twice.
- **Azure Blob Storage** (``az://``, ``abfs://``, ``abfss://``): the same with Azure's
  ETags: ``If-None-Match: *`` to create, ``If-Match`` to replace or delete, which the
  Blob service enforces. Claims are safe across processes and hosts. Blob leases are not
  used: a lease is a lock that a dead worker would hold until it expires.
- **Google Cloud Storage** (``gs://``, ``gcs://``): the same with generations: each
  update reads the object's generation, then writes with ``ifGenerationMatch`` that
  generation (``0`` to create). Claims are safe across processes and hosts.
- **Other object stores** (any other fsspec filesystem): no conditional write is used;
  updates are serialised within one event loop only. Safe with one consumer process;
  several consumers may run a task twice under a race.

On every object store a conditional write whose response is lost and which the driver
repeats may be refused although it took effect: the claim then seems lost to its
caller, and the task runs again once its lease expires (at least once, never twice at
the same time). How each store's conditions are spoken is in ``_conditional``.

Events are one object per event with a unique name, so concurrent writers never
overwrite each other on any filesystem.
"""

from __future__ import annotations

from omniq._sync import StorageTwin, blocking
from omniq.storage._bundle import BackendSpec, Bundle
from omniq.storage.file._store import Store
from omniq.storage.file.connection import FileConnection, Location
from omniq.storage.file.events import AsyncFileEventStorage
from omniq.storage.file.queue import AsyncFileQueue
from omniq.storage.file.results import AsyncFileResultStorage
from omniq.storage.file.schedules import AsyncFileScheduleStorage

__all__ = [
    "BACKEND",
    "AsyncFileEventStorage",
    "AsyncFileQueue",
    "AsyncFileResultStorage",
    "AsyncFileScheduleStorage",
    "FileBackend",
    "FileConnection",
    "FileEventStorage",
    "FileQueue",
    "FileResultStorage",
    "FileScheduleStorage",
]


class FileQueue(StorageTwin[AsyncFileQueue]):
    """Blocking twin of :class:`AsyncFileQueue`: the same methods, without ``await``."""

    async_class = AsyncFileQueue
    ack = blocking(AsyncFileQueue.ack)
    ack_many = blocking(AsyncFileQueue.ack_many)
    claim = blocking(AsyncFileQueue.claim)
    delete_finished = blocking(AsyncFileQueue.delete_finished)
    dependents = blocking(AsyncFileQueue.dependents)
    dependents_many = blocking(AsyncFileQueue.dependents_many)
    enqueue = blocking(AsyncFileQueue.enqueue)
    enqueue_logged = blocking(AsyncFileQueue.enqueue_logged)
    finish = blocking(AsyncFileQueue.finish)
    get = blocking(AsyncFileQueue.get)
    get_many = blocking(AsyncFileQueue.get_many)
    list = blocking(AsyncFileQueue.list)
    next_due_at = blocking(AsyncFileQueue.next_due_at)
    release = blocking(AsyncFileQueue.release)
    renew = blocking(AsyncFileQueue.renew)
    retry = blocking(AsyncFileQueue.retry)
    stats = blocking(AsyncFileQueue.stats)
    transition = blocking(AsyncFileQueue.transition)
    wait = blocking(AsyncFileQueue.wait)
    wait_and_claim = blocking(AsyncFileQueue.wait_and_claim)
    watch_cancels = blocking(AsyncFileQueue.watch_cancels)
    requeue = blocking(AsyncFileQueue.requeue)
    register_worker = blocking(AsyncFileQueue.register_worker)
    deregister_worker = blocking(AsyncFileQueue.deregister_worker)
    list_workers = blocking(AsyncFileQueue.list_workers)
    set_progress = blocking(AsyncFileQueue.set_progress)
    get_progress = blocking(AsyncFileQueue.get_progress)
    set_limit = blocking(AsyncFileQueue.set_limit)
    register_task_limits = blocking(AsyncFileQueue.register_task_limits)
    get_limits = blocking(AsyncFileQueue.get_limits)


class FileResultStorage(StorageTwin[AsyncFileResultStorage]):
    """Blocking twin of :class:`AsyncFileResultStorage`: the same methods, without ``await``."""

    async_class = AsyncFileResultStorage
    delete_expired = blocking(AsyncFileResultStorage.delete_expired)
    get = blocking(AsyncFileResultStorage.get)
    put = blocking(AsyncFileResultStorage.put)
    put_many = blocking(AsyncFileResultStorage.put_many)
    wait = blocking(AsyncFileResultStorage.wait)
    delete = blocking(AsyncFileResultStorage.delete)


class FileEventStorage(StorageTwin[AsyncFileEventStorage]):
    """Blocking twin of :class:`AsyncFileEventStorage`: the same methods, without ``await``."""

    async_class = AsyncFileEventStorage
    append = blocking(AsyncFileEventStorage.append)
    delete_before = blocking(AsyncFileEventStorage.delete_before)
    get = blocking(AsyncFileEventStorage.get)


class FileScheduleStorage(StorageTwin[AsyncFileScheduleStorage]):
    """Blocking twin of :class:`AsyncFileScheduleStorage`: the same methods, without ``await``."""

    async_class = AsyncFileScheduleStorage
    advance = blocking(AsyncFileScheduleStorage.advance)
    delete = blocking(AsyncFileScheduleStorage.delete)
    due = blocking(AsyncFileScheduleStorage.due)
    get = blocking(AsyncFileScheduleStorage.get)
    list = blocking(AsyncFileScheduleStorage.list)
    update = blocking(AsyncFileScheduleStorage.update)
    upsert = blocking(AsyncFileScheduleStorage.upsert)


#: The file backend, for :mod:`omniq.storage.registry` (``file://``, ``memory://`` and
#: the fsspec protocols of object stores).
BACKEND = BackendSpec(
    name="file",
    connection=FileConnection,
    task_queue=AsyncFileQueue,
    result_storage=AsyncFileResultStorage,
    event_storage=AsyncFileEventStorage,
    schedule_storage=AsyncFileScheduleStorage,
)


class FileBackend(Bundle[
    AsyncFileQueue, AsyncFileResultStorage, AsyncFileEventStorage, AsyncFileScheduleStorage
]):  # fmt: skip
    """Task queue, results, events and schedules under one fsspec URL.

    Each component lives in its own subdirectory of the URL's root (``tasks/``,
    ``results/``, ``events/``, ``schedules/``) and shares the one filesystem client
    (a :class:`FileConnection`), which opens with the first component connected and
    closes with the last.

    Example::

        backend = FileBackend("file:///var/lib/omniq", settings)
        queue = backend.task_queue()
        await queue.connect()
    """

    spec = BACKEND
    connection: FileConnection

    @property
    def location(self) -> Location:
        """Where the backend lives: the fsspec protocol and the root path."""
        return self.connection.location

    def store(self, subdir: str) -> Store:
        """The store of one component's subdirectory (the backend must be connected)."""
        return self.connection.store(subdir)
