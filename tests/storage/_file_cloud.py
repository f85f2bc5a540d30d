"""Checks of the file backend on a cloud object store's emulator, shared by the Azure and
GCS test modules (S3 has its own, ``test_file_s3.py``).

A module using :class:`CloudStoreChecks` (and :class:`OnCloudStore`, whose ``backend``
and ``make_backend`` fixtures its test classes inherit) provides the fixtures
``cloud_url`` (a URL under a fresh bucket or container), ``missing_url`` (one whose
bucket does not exist) and ``cloud_settings`` (settings whose ``storage_options`` reach
the emulator).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import fsspec
import pytest

from omniq import AsyncOmniQ, EventType
from omniq.config import Settings
from omniq.errors import StorageConnectionError
from omniq.models import utcnow
from omniq.storage.file import FileBackend
from omniq.storage.file._remote import FsspecStore
from omniq.storage.registry import bundle_for_url
from tests.conformance import tasks
from tests.storage import _file_race
from tests.storage._file_checks import MakeBackend, close_backend, task

#: How many processes race for the same tasks.
RACE_PROCESSES = 2


@asynccontextmanager
async def backend_maker(url: str, settings: Settings) -> AsyncIterator[MakeBackend]:
    """Yield a function that opens another connection to ``url``; close them all after."""
    made: list[FileBackend] = []

    async def make() -> FileBackend:
        backend = FileBackend(url, settings)
        await backend.connect()
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            await close_backend(backend)


def _plain_fs(url: str, settings: Settings) -> tuple[fsspec.AbstractFileSystem, str]:
    """A blocking fsspec client of the store, apart from OmniQ's, and the URL's root."""
    protocol, _, root = url.partition("://")
    fs = fsspec.filesystem(protocol, skip_instance_cache=True, **settings.storage_options)
    return fs, root.strip("/")


class OnCloudStore:
    """Test classes inheriting this get ``make_backend`` and ``backend`` fixtures on the
    module's ``cloud_url`` and ``cloud_settings``."""

    @pytest.fixture
    async def make_backend(
        self, cloud_settings: Settings, cloud_url: str
    ) -> AsyncIterator[MakeBackend]:
        """Connections to the test's prefix."""
        async with backend_maker(cloud_url, cloud_settings) as make:
            yield make

    @pytest.fixture
    async def backend(self, make_backend: MakeBackend) -> FileBackend:
        """A connected FileBackend on a fresh prefix."""
        return await make_backend()


def follow_loops(url: str, settings: Settings, base_dir: Path) -> None:
    """A client used from three event loops in turn, then closed from a fourth: each
    step enqueues, works and reads back. The async drivers bind their HTTP client to the
    loop they first ran on: each loop gets its own, closed as that loop ends."""
    oq = AsyncOmniQ(
        settings, task_queue=url, result_storage=url, event_storage=url, base_dir=str(base_dir)
    )

    async def step(n: int) -> None:
        async with asyncio.timeout(30):
            task_id = await oq.enqueue(tasks.add, n, n)
            await oq.worker(concurrency=2).run(burst=True)
            result = await oq.get_result(task_id)
            assert result is not None and result.result == 2 * n
            kinds = [event.event_type for event in await oq.get_events(task_id)]
            assert kinds == [EventType.ENQUEUED, EventType.EXECUTING, EventType.COMPLETE]

    async def close() -> None:
        async with asyncio.timeout(30):
            assert (await oq.stats())["default"] == {"complete": 3}
            await oq.close()

    for n in range(3):
        asyncio.run(step(n))
    asyncio.run(close())


class CloudStoreChecks(OnCloudStore):
    """What holds on an object store with conditional writes, beyond the contract."""

    #: Tasks the racing processes share out, and how many each claim asks for: many, so
    #: that the racers' updates overlap (with a few, one process soon runs ahead and the
    #: other mostly meets tasks already taken). A slow emulator takes fewer.
    race_tasks = 200
    race_claim = 25
    #: How many times each racer adds 1 to the shared counter.
    race_increments = 40

    async def test_updates_are_conditional_writes(self, backend: FileBackend) -> None:
        store = backend.store("tasks")
        assert isinstance(store, FsspecStore)
        assert store.conditional
        assert store.cross_process

    async def test_a_write_from_a_stale_read_is_refused(self, backend: FileBackend) -> None:
        # The compare-and-set itself: whoever read an old version loses, and so does a
        # create of an object that exists; the winner's write stays.
        store = backend.store("tasks")
        assert isinstance(store, FsspecStore) and store._conditions is not None
        conditions, fs, full = store._conditions, store.fs, f"{store.root}/probe"
        assert await conditions.read(fs, full) is None
        assert await conditions.create(fs, full, b"first")
        assert not await conditions.create(fs, full, b"again")
        first = await conditions.read(fs, full)
        assert first is not None and first[0] == b"first"
        assert await conditions.replace(fs, full, b"second", first[1])
        assert not await conditions.replace(fs, full, b"stale", first[1])
        assert not await conditions.delete(fs, full, first[1])
        second = await conditions.read(fs, full)
        assert second is not None and second[0] == b"second" and second[1] != first[1]
        assert await conditions.delete(fs, full, second[1])
        assert await conditions.read(fs, full) is None

    async def test_a_listing_sees_what_another_connection_wrote(
        self, make_backend: MakeBackend
    ) -> None:
        # Each connection has its own driver, and a driver may cache directory listings
        # (adlfs does, and ignores fsspec's refresh=True).
        first, second = await make_backend(), await make_backend()
        await first.task_queue().enqueue([task("a")])
        assert await first.task_queue().stats() == {"default": {"pending": 1}}
        await second.task_queue().enqueue([task("b")])
        assert await first.task_queue().stats() == {"default": {"pending": 2}}
        claimed = await first.task_queue().claim(
            ["default"], "w", limit=2, lease_seconds=30, now=utcnow()
        )
        assert sorted(t.id for t in claimed) == ["a", "b"]

    async def test_objects_land_under_the_prefix(
        self, backend: FileBackend, cloud_url: str, cloud_settings: Settings
    ) -> None:
        await backend.task_queue().enqueue([task("a")])
        fs, root = _plain_fs(cloud_url, cloud_settings)
        found = await asyncio.to_thread(fs.find, root)
        assert f"{root}/tasks/t/a" in found
        assert any(path.startswith(f"{root}/tasks/ready/default/") for path in found)

    async def test_missing_bucket_fails_loudly(
        self, missing_url: str, cloud_settings: Settings
    ) -> None:
        backend = bundle_for_url(missing_url, cloud_settings)
        bucket = missing_url.split("://", 1)[1].split("/", 1)[0]
        with pytest.raises(StorageConnectionError, match=bucket):
            await backend.connect()
        assert backend.connection.references == 0

    @pytest.mark.timeout(90)
    def test_a_client_follows_its_caller_from_loop_to_loop(
        self, cloud_url: str, cloud_settings: Settings, tmp_path: Path
    ) -> None:
        follow_loops(cloud_url, cloud_settings, tmp_path / ".omniq")

    @pytest.mark.timeout(240)
    def test_two_processes_claim_each_task_exactly_once(
        self, cloud_url: str, cloud_settings: Settings, tmp_path: Path
    ) -> None:
        options = dict(cloud_settings.storage_options)
        _file_race.fill(cloud_url, self.race_tasks, options)
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(RACE_PROCESSES)  # they start together, once connected
        outputs = [str(tmp_path / f"claimed-{n}.txt") for n in range(RACE_PROCESSES)]
        workers = [
            context.Process(
                target=_file_race.claim_and_ack,
                args=(cloud_url, f"w{n}", outputs[n], start, options, self.race_claim),
            )
            for n in range(RACE_PROCESSES)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(200)
            assert worker.exitcode == 0
        per_worker = [
            [line for line in Path(path).read_text().splitlines() if line] for path in outputs
        ]
        counts = Counter(task_id for claimed in per_worker for task_id in claimed)
        assert len(counts) == self.race_tasks
        assert set(counts.values()) == {1}
        assert all(per_worker)  # it was a race: both won some

    @pytest.mark.timeout(120)
    def test_updates_racing_from_two_processes_are_never_lost(
        self, cloud_url: str, cloud_settings: Settings
    ) -> None:
        # The primitive under every claim: two processes add 1 to one object at the same
        # time, each through Store.update. A plain read-then-write loses some of them.
        options = dict(cloud_settings.storage_options)
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(RACE_PROCESSES)
        workers = [
            context.Process(
                target=_file_race.increment, args=(cloud_url, self.race_increments, start, options)
            )
            for _ in range(RACE_PROCESSES)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(100)
            assert worker.exitcode == 0

        async def count() -> bytes | None:
            backend = FileBackend(cloud_url, cloud_settings)
            await backend.connect()
            try:
                return await backend.store("tasks").read("counter")
            finally:
                await backend.close()

        assert asyncio.run(count()) == str(RACE_PROCESSES * self.race_increments).encode()
