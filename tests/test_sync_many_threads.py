"""Many threads calling one blocking ``OmniQ`` at once, as a threaded web server's
requests do: every caller gets its own task, stored, and its own errors (SPEC §3: a task
is stored before ``enqueue`` returns)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from omniq import OmniQ, TaskStatus
from omniq.errors import TaskArgumentError
from tests.conformance import tasks
from tests.conftest import REDIS_URL

THREADS = 16
CALLS = 25


@pytest.fixture(params=["redis", "sqlite"])
def oq(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[OmniQ]:
    if request.param == "redis":
        request.getfixturevalue("redis_cleanup")  # deletes the namespace's keys afterwards
        url = REDIS_URL
    else:
        url = f"sqlite:///{tmp_path / 'omniq.db'}"
    with OmniQ(
        task_queue=url, result_storage=url, event_storage=url, namespace=namespace
    ) as client:
        yield client


def test_threads_enqueueing_at_once_each_get_their_own_stored_tasks_and_errors(
    oq: OmniQ,
) -> None:
    start = threading.Barrier(THREADS)
    ids: dict[int, list[str]] = {}
    errors: dict[int, list[Exception]] = {}
    crashed: list[BaseException] = []

    def producer(n: int) -> None:
        try:
            start.wait()
            mine: list[str] = []
            failed: list[Exception] = []
            for i in range(CALLS):
                if n % 4 == 0 and i == CALLS // 2:
                    # A bad call in the middle of the burst: its error is this caller's.
                    try:
                        oq.enqueue(tasks.add, n, i, 3)
                    except TaskArgumentError as exc:
                        failed.append(exc)
                mine.append(oq.submit(tasks.add, (n, i), queue=f"producer{n}"))
            ids[n] = mine
            errors[n] = failed
        except BaseException as exc:
            crashed.append(exc)

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert crashed == []
    assert sorted(ids) == list(range(THREADS))
    every = [task_id for mine in ids.values() for task_id in mine]
    assert len(set(every)) == THREADS * CALLS
    # The calls were handed to the client's loop thread: the path under test.
    assert any(t.name == "omniq-loop" for t in threading.enumerate())
    # Each id a caller got is the task that caller submitted, stored by the time it returned.
    for n, mine in ids.items():
        for task_id in mine:
            task = oq.get_task(task_id)
            assert task is not None and task.status is TaskStatus.PENDING
            assert task.queue == f"producer{n}"
    # Only the callers that made a bad call got an error, one each.
    assert {n: len(found) for n, found in errors.items() if found} == {0: 1, 4: 1, 8: 1, 12: 1}
    assert all("add" in str(found[0]) for found in errors.values() if found)
    counts = oq.stats()
    assert {queue: counts[queue].get("pending") for queue in counts} == {
        f"producer{n}": CALLS for n in range(THREADS)
    }
