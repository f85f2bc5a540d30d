"""The storage contract on SQLite (a file, and ``:memory:`` where it applies), plus what
is special to SQLite: URLs, migrations, several processes on one file, corrupt records."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from omniq import OmniQ, Settings
from omniq.errors import ConfigError, StorageConnectionError, StorageError
from omniq.models import Progress, TaskStatus, utcnow
from omniq.storage.registry import bundle_for_url, spec_for_url
from omniq.storage.sqlite import (
    BACKEND,
    SCHEMA_VERSION,
    AsyncSQLiteQueue,
    AsyncSQLiteResultStorage,
    SQLiteBackend,
    SQLiteConnection,
    SQLiteQueue,
    sqlite_path,
)
from tests.storage import _race_worker
from tests.storage.contract import (
    EventContract,
    MakeBackend,
    QueueContract,
    ResultContract,
    ScheduleContract,
    assert_unreadable_is_listed_and_handed_out,
    make_result,
    make_task,
)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store/omniq.db"


@pytest.fixture
async def make_backend(db_url: str) -> AsyncIterator[MakeBackend]:
    """Opened bundles on the one database file of this test, each its own connection."""
    made: list[SQLiteBackend] = []

    async def make() -> SQLiteBackend:
        backend = SQLiteBackend(db_url, None)
        await backend.connect()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
async def backend(make_backend: MakeBackend) -> SQLiteBackend:
    return await make_backend()


class TestSQLiteQueue(QueueContract):
    pass


class TestSQLiteResults(ResultContract):
    pass


class TestSQLiteEvents(EventContract):
    pass


class TestSQLiteSchedules(ScheduleContract):
    pass


class TestSQLiteMemoryQueue(QueueContract):
    """``sqlite://:memory:`` lives in one connection: the "second connection" is the bundle."""

    @pytest.fixture
    async def backend(self) -> AsyncIterator[SQLiteBackend]:
        backend = SQLiteBackend("sqlite://:memory:", None)
        await backend.connect()
        yield backend
        await backend.close()

    @pytest.fixture
    async def make_backend(self, backend: SQLiteBackend) -> MakeBackend:
        async def same() -> SQLiteBackend:
            return backend

        return same


class TestSQLiteMemoryResults(ResultContract):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[SQLiteBackend]:
        backend = SQLiteBackend("sqlite://:memory:", None)
        await backend.connect()
        yield backend
        await backend.close()

    @pytest.fixture
    async def make_backend(self, backend: SQLiteBackend) -> MakeBackend:
        async def same() -> SQLiteBackend:
            return backend

        return same


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///rel/q.db", "{cwd}/rel/q.db"),
        ("sqlite:////abs/q.db", "/abs/q.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("plain/q.db", "{cwd}/plain/q.db"),
        ("/abs/plain.db", "/abs/plain.db"),
    ],
)
def test_sqlite_path(url: str, expected: str, tmp_path: Path) -> None:
    # conftest runs every test in its own tmp_path
    assert sqlite_path(url) == expected.format(cwd=tmp_path)


def test_sqlite_path_rejects_other_schemes() -> None:
    with pytest.raises(ConfigError):
        sqlite_path("redis://localhost")


def test_backend_for_url_builds_the_sqlite_bundle(db_url: str) -> None:
    assert isinstance(bundle_for_url(db_url, None), SQLiteBackend)


def test_the_registry_serves_sqlite_urls_from_the_package(db_url: str) -> None:
    assert spec_for_url(db_url) is BACKEND
    backend = SQLiteBackend(db_url)
    alone = AsyncSQLiteQueue.from_url(db_url)
    assert isinstance(alone.connection, SQLiteConnection)
    assert backend.task_queue().shares_connection(backend.result_storage())
    assert not alone.shares_connection(backend.result_storage())


def test_synchronous_defaults_to_the_settings_default(db_url: str) -> None:
    # The one default lives in Settings; a component built without settings uses it.
    assert AsyncSQLiteQueue(db_url).connection.synchronous == Settings().sqlite_synchronous
    full = Settings(sqlite_synchronous="FULL")
    assert SQLiteBackend(db_url, full).task_queue().connection.synchronous == "FULL"


async def test_bundle_components_share_one_reference_counted_connection(db_url: str) -> None:
    backend = SQLiteBackend(db_url, None)
    queue, results = backend.task_queue(), backend.result_storage()
    assert backend.task_queue() is queue
    await queue.connect()
    await results.connect()
    await queue.connect()  # twice is harmless
    task = make_task()
    await queue.enqueue([task])
    await results.put(make_result(task.id))
    await queue.close()
    assert await results.get(task.id) is not None  # still open for the other component
    await results.close()
    await results.close()
    assert not backend.connection.is_open


async def test_standalone_component_connects_on_first_use(db_url: str) -> None:
    queue = AsyncSQLiteQueue(db_url)
    task = make_task()
    await queue.enqueue([task])
    assert (await queue.get(task.id)) == task
    await queue.close()
    reopened = AsyncSQLiteQueue(db_url)
    async with reopened:
        assert await reopened.get(task.id) == task


@pytest.mark.timeout(30)
def test_a_wait_on_a_new_event_loop_still_waits(db_url: str) -> None:
    # The wake-up event of the first loop is not reused on the next (it would fail at
    # once there, and a worker would poll in a hot loop instead of waiting).
    queue = AsyncSQLiteQueue(db_url)
    waited: list[float] = []

    async def wait() -> None:
        started = time.monotonic()
        await queue.wait(["default"], 0.3)
        waited.append(time.monotonic() - started)

    async def close() -> None:
        await queue.enqueue([make_task()])  # wakes nobody: no waiter on this loop
        await queue.close()

    for _ in range(3):
        asyncio.run(wait())
    asyncio.run(close())
    assert min(waited) >= 0.25


async def test_default_path_is_under_base_dir(tmp_path: Path) -> None:
    settings = Settings(base_dir=str(tmp_path / "base"), sqlite_synchronous="NORMAL")
    async with AsyncSQLiteResultStorage(settings=settings) as store:
        await store.put(make_result("r"))
    assert (tmp_path / "base" / "omniq.db").exists()


async def test_migration_is_idempotent(db_url: str) -> None:
    task = make_task()
    for _ in range(3):
        async with AsyncSQLiteQueue(db_url) as queue:
            await queue.enqueue([task])
    with sqlite3.connect(sqlite_path(db_url)) as conn:
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
        assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT COUNT(*) FROM tasks").fetchone() == (1,)


async def test_a_database_from_before_the_kept_counts_upgrades_with_its_tasks_counted(
    db_url: str,
) -> None:
    # A version-5 database: the tasks as they were, with no task_counts, triggers or
    # next-ready index (migrations 6 and 7 undone by hand).
    async with AsyncSQLiteQueue(db_url) as queue:
        await queue.enqueue([make_task() for _ in range(3)])
        await queue.enqueue([make_task(queue="other") for _ in range(2)])
        await queue.claim(["default"], "w1", limit=1, lease_seconds=30, now=utcnow())
    with sqlite3.connect(sqlite_path(db_url)) as conn:
        for name in ("task_counts_insert", "task_counts_delete", "task_counts_update"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE task_counts")
        conn.execute("DROP INDEX tasks_next_ready")
        conn.execute("DELETE FROM schema_version WHERE version >= 6")
    async with AsyncSQLiteQueue(db_url) as queue:
        assert await queue.stats() == {
            "default": {"pending": 2, "running": 1},
            "other": {"pending": 2},
        }
        await queue.claim(["other"], "w1", limit=2, lease_seconds=30, now=utcnow())
        assert await queue.stats() == {
            "default": {"pending": 2, "running": 1},
            "other": {"running": 2},
        }
        assert await queue.next_due_at(["default", "other"]) is not None
    with sqlite3.connect(sqlite_path(db_url)) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (
            SCHEMA_VERSION,
        )


async def test_newer_schema_is_refused(db_url: str) -> None:
    async with AsyncSQLiteQueue(db_url):
        pass
    with sqlite3.connect(sqlite_path(db_url)) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StorageError, match="newer"):
        await AsyncSQLiteQueue(db_url).connect()


async def test_unreachable_file_raises_storage_connection_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(StorageConnectionError):
        await AsyncSQLiteQueue(f"sqlite:///{tmp_path}/a-file/omniq.db").connect()


async def test_not_a_database_raises_storage_error(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError):
        await AsyncSQLiteQueue(str(tmp_path / "junk.db")).connect()


async def test_corrupt_record_names_the_task_and_spares_the_others(db_url: str) -> None:
    good, bad = make_task(priority=1), make_task()
    async with AsyncSQLiteQueue(db_url) as queue:
        await queue.enqueue([good, bad])
        with sqlite3.connect(sqlite_path(db_url)) as conn:
            conn.execute("UPDATE tasks SET data = x'c1c1c1' WHERE id = ?", (bad.id,))
        with pytest.raises(StorageError, match=bad.id):
            await queue.get(bad.id)
        assert await queue.get(good.id) == good
        await assert_unreadable_is_listed_and_handed_out(queue, good, bad.id)


_UNCLOSED_CLIENTS = """
import asyncio, sys
from omniq import AsyncOmniQ, OmniQ

url = sys.argv[1]
# Dropped at once (collected), and kept to the end (left open at exit).
print(OmniQ(task_queue=url, result_storage=url, event_storage=url).enqueue(
    "tests.conformance.tasks:add", 1, 2))
oq = OmniQ(task_queue=url, result_storage=url, event_storage=url)
print(oq.enqueue("tests.conformance.tasks:add", 5, 6))

async def main():
    oq = AsyncOmniQ(task_queue=url, result_storage=url, event_storage=url)
    print(await oq.enqueue("tests.conformance.tasks:add", 3, 4))

asyncio.run(main())
"""


def test_a_script_that_never_closes_its_client_still_exits(db_url: str) -> None:
    # The commonest script there is: make a client, enqueue, end. SQLite's connection
    # thread must not keep the interpreter alive; the tasks were committed before the
    # calls returned, and the ENQUEUED events, written in the background, are written
    # as the script ends (OmniQ: when collected or at exit; AsyncOmniQ: as asyncio.run()
    # ends).
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_UNCLOSED_CLIENTS), db_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 3
    assert set(_read_ids(db_url, "SELECT id FROM tasks")) == set(ids)
    assert sorted(_stored_event_ids(db_url)) == sorted(ids)


def _read_ids(db_url: str, sql: str) -> list[str]:
    """The first column of ``sql``'s rows, as another connection (process) sees them."""
    conn = sqlite3.connect(sqlite_path(db_url))
    try:
        return [row[0] for row in conn.execute(sql)]
    finally:
        conn.close()


def _stored_event_ids(db_url: str) -> list[str]:
    return _read_ids(db_url, "SELECT task_id FROM events ORDER BY id")


def test_the_blocking_client_writes_events_without_a_loop_thread(db_url: str) -> None:
    # Events are written in the background; on the blocking client that must neither
    # hand every later call to a loop thread (two thread wake-ups a call) nor leave the
    # events unwritten until the next call.
    with OmniQ(task_queue=db_url, result_storage=db_url, event_storage=db_url) as oq:
        ids = [oq.enqueue("tests.conformance.tasks:add", i, i) for i in range(3)]
        assert not any(thread.name == "omniq-loop" for thread in threading.enumerate())
        deadline = time.monotonic() + 10
        while sorted(_stored_event_ids(db_url)) != sorted(ids):
            assert time.monotonic() < deadline, "events not written while no call came"
            time.sleep(0.01)
        assert oq.get_task(ids[0]) is not None
        assert not any(thread.name == "omniq-loop" for thread in threading.enumerate())


def test_two_processes_migrate_a_fresh_file_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "fresh.db")
    results = _race_worker.spawn_pair(_race_worker.open_fresh, path)
    assert sorted(results) == [("ok", 0), ("ok", 0)]


def test_two_processes_claim_each_task_exactly_once(tmp_path: Path) -> None:
    path = str(tmp_path / "race.db")
    tasks = [make_task() for _ in range(500)]
    with SQLiteQueue(path) as queue:
        queue.enqueue(tasks)
    results = _race_worker.spawn_pair(_race_worker.claim_all, path)
    counts = Counter(task_id for _, ids in results for task_id in ids)
    assert set(counts) == {t.id for t in tasks}
    assert set(counts.values()) == {1}
    assert all(ids for _, ids in results), "both processes should have claimed some tasks"
    with SQLiteQueue(path) as queue:
        assert queue.stats() == {"default": {"complete": 500}}


def test_sync_twin_mirrors_the_async_queue(tmp_path: Path) -> None:
    with SQLiteQueue(f"sqlite:///{tmp_path}/sync.db") as queue:
        task = make_task()
        assert queue.enqueue([task]) == [task.id]
        [claimed] = queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
        assert queue.ack(claimed.id, "w", TaskStatus.COMPLETE, now=utcnow()) is True
        assert queue.get(task.id).status is TaskStatus.COMPLETE
        assert queue.notifies is True


async def test_a_version_3_file_gains_the_progress_column_and_keeps_its_tasks(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omniq.storage.sqlite import connection

    tasks = [make_task() for _ in range(3)]
    with monkeypatch.context() as patch:
        patch.setattr(connection, "SCHEMA_VERSION", 3)
        patch.setattr(connection, "_MIGRATIONS", connection._MIGRATIONS[:3])
        async with AsyncSQLiteQueue(db_url) as old:
            await old.enqueue(tasks)
    with sqlite3.connect(sqlite_path(db_url)) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        assert "progress" not in columns

    async with AsyncSQLiteQueue(db_url) as queue:
        assert [t.id for t in await queue.get_many([t.id for t in tasks])] == [t.id for t in tasks]
        progress = Progress(done=1, total=2)
        await queue.set_progress({tasks[0].id: progress})
        assert await queue.get_progress([t.id for t in tasks]) == {tasks[0].id: progress}
