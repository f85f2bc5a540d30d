"""taskiq-nats broker and tasks: ``PullBasedJetStreamBroker`` with its defaults.

As in the peer reference run: a durable pull consumer on a file-storage stream, fetch batch 1
(the broker's defaults), on the benchmark's NATS server.
"""

from __future__ import annotations

from taskiq import AsyncBroker
from taskiq_nats import PullBasedJetStreamBroker

from benchmarks.adapters.base import NATS_URL
from benchmarks.apps.taskiq_tasks import register

broker: AsyncBroker = PullBasedJetStreamBroker(
    [NATS_URL], subject="taskiq_bench_tasks", stream_name="taskiq_bench", durable="taskiq_bench"
)


noop, drain, latency, sleep = register(broker)
