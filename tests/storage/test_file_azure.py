"""The file backend on ``az://`` (and ``abfs://``) against Azurite on loopback.

A session-scoped fixture (``azurite``, in ``tests/conftest.py``) starts Azurite's Blob
service on 127.0.0.1 on a free port, in memory (see ``tests/azureserver.py``); each test
gets its own container. Nothing reaches the internet: the endpoint is the loopback
server and the account is Azurite's well-known development account.

What runs here: the whole storage contract, the file backend's own checks, and the checks
every store with conditional writes passes (``_file_cloud.py``): each task update is an
ETag compare-and-set (``If-None-Match: *`` to create, ``If-Match`` to replace or delete),
and two processes racing to claim the same tasks each claim every task exactly once.
Azurite applies a condition and the write it guards in one step, as Azure does.
"""

from __future__ import annotations

import uuid

import pytest
from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient

from omniq.config import Settings
from omniq.errors import ConfigError, StorageConnectionError
from omniq.storage.file import FileBackend
from omniq.storage.file._store import translate_errors
from tests.azureserver import AZURITE_ACCOUNT, AZURITE_KEY, new_container
from tests.conftest import free_port
from tests.storage._file_checks import (
    FileEventChecks,
    FileQueueChecks,
    FileResultChecks,
    FileScheduleChecks,
    task,
)
from tests.storage._file_cloud import CloudStoreChecks, OnCloudStore, backend_maker
from tests.storage.contract import EventContract, QueueContract, ResultContract, ScheduleContract


@pytest.fixture
def container(azurite: str) -> str:
    """A fresh, empty container."""
    return new_container(azurite)


@pytest.fixture
def cloud_settings(azurite: str) -> Settings:
    """Settings whose storage_options point adlfs at Azurite."""
    return Settings(poll_interval=0.05, storage_options={"connection_string": azurite})


@pytest.fixture
def cloud_url(container: str) -> str:
    """A prefix of this test's container."""
    return f"az://{container}/omniq"


@pytest.fixture
def missing_url() -> str:
    """A URL whose container does not exist."""
    return f"az://no-such-container-{uuid.uuid4().hex[:8]}/p"


class TestAzureQueueContract(OnCloudStore, QueueContract):
    pass


class TestAzureResultContract(OnCloudStore, ResultContract):
    pass


class TestAzureEventContract(OnCloudStore, EventContract):
    pass


class TestAzureScheduleContract(OnCloudStore, ScheduleContract):
    pass


class TestAzureQueue(OnCloudStore, FileQueueChecks):
    pass


class TestAzureResults(OnCloudStore, FileResultChecks):
    pass


class TestAzureEvents(OnCloudStore, FileEventChecks):
    pass


class TestAzureSchedules(OnCloudStore, FileScheduleChecks):
    pass


class TestAzureStore(CloudStoreChecks):
    pass


class TestAzureUrls(OnCloudStore):
    async def test_abfs_and_az_urls_name_the_same_store(
        self, backend: FileBackend, cloud_settings: Settings, container: str
    ) -> None:
        await backend.task_queue().enqueue([task("a")])
        async with backend_maker(f"abfs://{container}/omniq", cloud_settings) as make:
            other = await make()
            stored = await other.task_queue().get("a")
            assert stored is not None and stored.id == "a"


async def test_an_unreachable_endpoint_is_a_connection_error() -> None:
    # What adlfs's client raises for a dead endpoint (after its retries, 0 here) is
    # translated like a refused socket: StorageConnectionError, naming the operation.
    dead = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}"
    connection_string = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={dead};"
    )
    async with AsyncBlobServiceClient.from_connection_string(
        connection_string, retry_total=0
    ) as client:
        with pytest.raises(StorageConnectionError, match="probe"), translate_errors("probe"):
            await client.get_container_client("c").get_container_properties()


async def test_no_account_in_the_options_is_a_config_error() -> None:
    backend = FileBackend("az://container/p", Settings(storage_options={}))
    with pytest.raises(ConfigError, match=r"az://container/p.*storage_options"):
        await backend.connect()
    assert backend.connection.references == 0
