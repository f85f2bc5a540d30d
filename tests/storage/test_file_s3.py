"""The file backend on ``s3://`` against a real S3-compatible server (moto) on loopback.

A session-scoped fixture starts ``moto_server`` on 127.0.0.1 on a free port (see
``tests/s3server.py``); each test gets its own bucket (moto lists a bucket by scanning
all its keys, so a shared bucket would slow every later test down). Nothing reaches the
internet: the endpoint is the loopback server and the credentials are dummies.

What runs here: the whole storage contract and the file backend's own checks. On S3
every task update is a conditional write (``If-Match`` the ETag read, ``If-None-Match:
*`` to create), so claims are safe across connections exactly as on local disk; the
tests with several connections racing in one process check that.

What does not run here, and why:
- the multi-process race and the SIGKILL test of ``test_file_storage.py``: they exercise
  local disk's kernel lock. Against moto they would test moto, whose conditional writes
  check and store in two steps (not atomically under concurrent requests), unlike AWS
  S3; with a server that honours the conditions atomically the same protocol holds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

from omniq import TaskStatus
from omniq.config import Settings
from omniq.errors import StorageConnectionError
from omniq.models import utcnow
from omniq.storage.base import Ack
from omniq.storage.file import FileBackend
from omniq.storage.file._remote import FsspecStore
from omniq.storage.registry import bundle_for_url
from tests.chaos.proxy import FaultProxy
from tests.s3server import S3_KEY, S3_SECRET, running_s3_server
from tests.storage._file_checks import (
    FileEventChecks,
    FileQueueChecks,
    FileResultChecks,
    FileScheduleChecks,
    MakeBackend,
    close_backend,
    task,
)
from tests.storage._file_cloud import follow_loops
from tests.storage.contract import EventContract, QueueContract, ResultContract, ScheduleContract


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, for the whole session."""
    with running_s3_server() as endpoint:
        yield endpoint


def s3_client(endpoint: str) -> Any:
    """A plain boto3 client on the loopback server (for setup and inspection)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket."""
    name = f"omniq-{uuid.uuid4().hex[:12]}"
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=name)
    client.close()
    return name


@pytest.fixture
def s3_settings(s3_endpoint: str) -> Settings:
    """Settings whose storage_options point s3fs at the loopback server."""
    return Settings(
        poll_interval=0.05,
        storage_options={"endpoint_url": s3_endpoint, "key": S3_KEY, "secret": S3_SECRET},
    )


@pytest.fixture
async def make_backend(s3_settings: Settings, bucket: str) -> AsyncIterator[MakeBackend]:
    """Connections to a prefix of this test's bucket."""
    url = f"s3://{bucket}/omniq"
    made: list[FileBackend] = []

    async def make() -> FileBackend:
        backend = FileBackend(url, s3_settings)
        await backend.connect()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await close_backend(backend)


@pytest.fixture
async def backend(make_backend: MakeBackend) -> FileBackend:
    """A connected FileBackend on a fresh prefix."""
    return await make_backend()


class TestS3QueueContract(QueueContract):
    pass


class TestS3ResultContract(ResultContract):
    pass


class TestS3EventContract(EventContract):
    pass


class TestS3ScheduleContract(ScheduleContract):
    pass


class TestS3Queue(FileQueueChecks):
    pass


class TestS3Results(FileResultChecks):
    pass


class TestS3Events(FileEventChecks):
    pass


class TestS3Schedules(FileScheduleChecks):
    pass


async def test_updates_are_conditional_writes(backend: FileBackend) -> None:
    store = backend.store("tasks")
    assert isinstance(store, FsspecStore)
    assert store.conditional
    assert store.cross_process


async def test_objects_land_under_the_prefix(
    backend: FileBackend, s3_endpoint: str, bucket: str
) -> None:
    await backend.task_queue().enqueue([task("a")])
    client = s3_client(s3_endpoint)
    prefix = backend.location.root.split("/", 1)[1]
    keys = [
        item["Key"]
        for item in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    ]
    client.close()
    assert f"{prefix}/tasks/t/a" in keys
    assert any(key.startswith(f"{prefix}/tasks/ready/default/") for key in keys)


async def test_missing_bucket_fails_loudly(s3_settings: Settings) -> None:
    backend = bundle_for_url("s3://no-such-bucket/p", s3_settings)
    with pytest.raises(StorageConnectionError, match="no-such-bucket"):
        await backend.connect()
    assert backend.connection.references == 0


@pytest.mark.timeout(60)
def test_a_client_on_s3_follows_its_caller_from_loop_to_loop(
    s3_settings: Settings, bucket: str, tmp_path: Path
) -> None:
    # s3fs binds its HTTP session to the loop it first ran on: each loop gets its own,
    # closed as that loop ends.
    follow_loops(f"s3://{bucket}/app", s3_settings, tmp_path / ".omniq")


async def test_an_update_whose_reply_was_cut_is_not_taken_for_a_lost_race(
    s3_endpoint: str, bucket: str
) -> None:
    # Found by the chaos runner: a conditional PUT that took effect but whose reply a cut
    # connection lost is resent by the S3 client; the resend fails its If-Match (the
    # object changed: by that very PUT), and the ack was reported lost. The worker then
    # dropped the finished task's events and left its dependents waiting, and deleted
    # the new index entry the record names, which orphaned the task from every listing.
    proxy = FaultProxy("127.0.0.1", int(s3_endpoint.rsplit(":", 1)[1]))
    proxy.start()
    options = {"endpoint_url": f"http://127.0.0.1:{proxy.port}", "key": S3_KEY, "secret": S3_SECRET}
    backend = FileBackend(f"s3://{bucket}/omniq", Settings(storage_options=options))
    try:
        await backend.connect()
        queue = backend.task_queue()
        await queue.enqueue([task("cut1")])
        [claimed] = await queue.claim(["default"], "w", limit=1, lease_seconds=30, now=utcnow())
        proxy.cut_reply_once(f"PUT /{bucket}/omniq/tasks/t/cut1".encode())
        acked = await queue.ack_many([Ack(claimed.id, "w", TaskStatus.COMPLETE)], now=utcnow())
        assert acked == [True]
        stored = await queue.get("cut1")
        assert stored is not None and stored.status is TaskStatus.COMPLETE
        assert [t.id for t in await queue.list(status=TaskStatus.COMPLETE)] == ["cut1"]
    finally:
        await close_backend(backend)
        proxy.stop()


async def test_a_lease_runs_from_the_write_not_from_before_slow_requests(
    s3_endpoint: str, bucket: str
) -> None:
    # Found by the chaos runner: on a loaded moto a claim took 20-200 s, and the lease it
    # wrote was counted from the ``now`` taken before its listings and reads, so it had
    # run out before it was even written; other workers took the task over at once. A
    # lease (claimed or renewed) must run its full length from the update's decision,
    # made after those requests.
    proxy = FaultProxy("127.0.0.1", int(s3_endpoint.rsplit(":", 1)[1]))
    proxy.start()
    options = {"endpoint_url": f"http://127.0.0.1:{proxy.port}", "key": S3_KEY, "secret": S3_SECRET}
    backend = FileBackend(f"s3://{bucket}/omniq", Settings(storage_options=options))
    latency, lease = 0.2, 1.0
    try:
        await backend.connect()
        queue = backend.task_queue()
        await queue.enqueue([task("slow1")])
        proxy.set_latency(latency)  # each chunk, each way: a request takes 2 latencies or more
        now = utcnow()
        [claimed] = await queue.claim(["default"], "w", limit=1, lease_seconds=lease, now=now)
        # Before deciding, the claim listed (ready and running, at once) and read the record.
        assert claimed.lease_expires_at is not None
        assert claimed.lease_expires_at >= now + timedelta(seconds=lease + 4 * latency)
        stored = await queue.get("slow1")
        assert stored is not None and stored.lease_expires_at == claimed.lease_expires_at
        now = utcnow()
        assert await queue.renew(["slow1"], "w", lease_seconds=lease, now=now) == {"slow1"}
        # Before deciding, the renewal read the record.
        renewed = await queue.get("slow1")
        assert renewed is not None and renewed.lease_expires_at is not None
        assert renewed.lease_expires_at >= now + timedelta(seconds=lease + 2 * latency)
    finally:
        proxy.set_latency(0)
        await close_backend(backend)
        proxy.stop()
