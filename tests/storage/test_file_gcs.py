"""The file backend on ``gs://`` against ``gcp-storage-emulator`` on loopback.

A session-scoped fixture (``gcs_endpoint``, in ``tests/conftest.py``) starts the emulator
on 127.0.0.1 on a free port, in memory (see ``tests/gcsserver.py``); each test gets its
own bucket. Nothing reaches the internet: the endpoint is the loopback server and the
client is anonymous.

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

import uuid

import aiohttp
import pytest

from omniq.config import Settings
from omniq.errors import StorageConnectionError
from omniq.storage.file._store import translate_errors
from tests.conftest import free_port
from tests.gcsserver import gcs_options, new_bucket
from tests.storage._file_checks import (
    FileEventChecks,
    FileQueueChecks,
    FileResultChecks,
    FileScheduleChecks,
)
from tests.storage._file_cloud import CloudStoreChecks, OnCloudStore
from tests.storage.contract import EventContract, QueueContract, ResultContract, ScheduleContract


@pytest.fixture
def bucket(gcs_endpoint: str) -> str:
    """A fresh, empty bucket."""
    return new_bucket(gcs_endpoint)


@pytest.fixture
def cloud_settings(gcs_endpoint: str) -> Settings:
    """Settings whose storage_options point gcsfs at the emulator, anonymously."""
    return Settings(poll_interval=0.05, storage_options=gcs_options(gcs_endpoint))


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
