"""The file backend on ``gs://`` against ``gcp-storage-emulator`` on loopback.

A session-scoped fixture starts the emulator on 127.0.0.1 on a free port, in memory (see
``tests/gcsserver.py``); each test gets its own bucket. Nothing reaches the internet: the
endpoint is the loopback server and the client is anonymous.

What runs here: the whole storage contract, the file backend's own checks, and the checks
every store with conditional writes passes (``_file_cloud.py``): each task update is a
generation compare-and-set (``ifGenerationMatch=0`` to create, ``ifGenerationMatch`` the
generation read to replace or delete), and two processes racing to claim the same tasks
each claim every task exactly once.

The emulator ignores preconditions; ``tests/gcsserver.py`` serves it with GCS's rule for
``ifGenerationMatch`` added, so what these tests prove is OmniQ's side of the protocol
under GCS's documented semantics, not Google's server.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from omniq.config import Settings
from omniq.errors import StorageConnectionError
from omniq.storage.file._store import translate_errors
from tests.conftest import free_port
from tests.gcsserver import running_gcs_emulator
from tests.storage._file_checks import (
    FileEventChecks,
    FileQueueChecks,
    FileResultChecks,
    FileScheduleChecks,
)
from tests.storage._file_cloud import CloudStoreChecks, OnCloudStore
from tests.storage.contract import EventContract, QueueContract, ResultContract, ScheduleContract

# gcsfs (2025.x and later) by default asks the storage control plane, over gRPC, whether
# each bucket is zonal; the emulator has no such service, and every request would wait
# for that lookup to time out. This is gcsfs's documented switch; read when gcsfs is first
# imported (after collection), and inherited by the race's worker processes.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """The emulator on 127.0.0.1 for the whole session: its endpoint URL."""
    with running_gcs_emulator() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(gcs_endpoint: str) -> str:
    """A fresh, empty bucket."""
    name = f"omniq-{uuid.uuid4().hex[:12]}"
    request = urllib.request.Request(
        f"{gcs_endpoint}/storage/v1/b?project=omniq-test",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    return name


@pytest.fixture
def cloud_settings(gcs_endpoint: str) -> Settings:
    """Settings whose storage_options point gcsfs at the emulator, anonymously."""
    return Settings(
        poll_interval=0.05,
        storage_options={"endpoint_url": gcs_endpoint, "token": "anon", "project": "omniq-test"},
    )


@pytest.fixture
def cloud_url(bucket: str) -> str:
    """A prefix of this test's bucket."""
    return f"gs://{bucket}/omniq"


@pytest.fixture
def missing_url() -> str:
    """A URL whose bucket does not exist."""
    return f"gs://no-such-bucket-{uuid.uuid4().hex[:8]}/p"


class TestGcsQueueContract(OnCloudStore, QueueContract):
    pass


class TestGcsResultContract(OnCloudStore, ResultContract):
    pass


class TestGcsEventContract(OnCloudStore, EventContract):
    pass


class TestGcsScheduleContract(OnCloudStore, ScheduleContract):
    pass


class TestGcsQueue(OnCloudStore, FileQueueChecks):
    pass


class TestGcsResults(OnCloudStore, FileResultChecks):
    pass


class TestGcsEvents(OnCloudStore, FileEventChecks):
    pass


class TestGcsSchedules(OnCloudStore, FileScheduleChecks):
    pass


class TestGcsStore(CloudStoreChecks):
    # The emulator serves one request at a time: racers queue behind each other, which
    # makes every claim collide, and makes a long race slow.
    race_tasks = 60
    race_claim = 10


async def test_an_unreachable_endpoint_is_a_connection_error() -> None:
    # gcsfs's requests fail, once its retries are spent, with aiohttp's connector error
    # (an OSError): translated to StorageConnectionError, not a bare StorageError.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(StorageConnectionError, match="probe"), translate_errors("probe"):
            await session.get(f"http://127.0.0.1:{free_port()}/storage/v1/b/x")
