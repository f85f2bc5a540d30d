"""The storage contract on NATS (JetStream), plus what is special to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from omniq.storage.nats import NATSBackend
from tests.conftest import NATS_URL, delete_nats_namespace
from tests.storage.contract import (
    EventContract,
    MakeBackend,
    QueueContract,
    ResultContract,
    ScheduleContract,
)


@pytest.fixture
async def make_backend(namespace: str) -> AsyncIterator[MakeBackend]:
    """Opened bundles on this test's namespace, each with its own client."""
    made: list[NATSBackend] = []

    async def make() -> NATSBackend:
        backend = NATSBackend(f"{NATS_URL}?namespace={namespace}", None)
        await backend.connect()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        while backend.connection.references:
            await backend.close()
    await delete_nats_namespace(NATS_URL, namespace)


@pytest.fixture
async def backend(make_backend: MakeBackend) -> NATSBackend:
    made = await make_backend()
    assert isinstance(made, NATSBackend)
    return made


class TestNATSQueue(QueueContract):
    pass


class TestNATSResults(ResultContract):
    pass


class TestNATSEvents(EventContract):
    pass


class TestNATSSchedules(ScheduleContract):
    pass
