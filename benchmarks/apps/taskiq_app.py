"""taskiq broker and tasks; ``BENCH_TASKIQ_BROKER`` is ``stream`` (default) or ``list``.

``stream`` = ``RedisStreamBroker`` (consumer group, acks), ``list`` = ``ListQueueBroker``.
"""

from __future__ import annotations

import os

from taskiq import AsyncBroker
from taskiq_redis import ListQueueBroker, RedisStreamBroker

from benchmarks.apps.taskiq_tasks import register

URL = "redis://127.0.0.1:6379/15"

broker: AsyncBroker = (
    ListQueueBroker(URL)
    if os.environ.get("BENCH_TASKIQ_BROKER", "stream") == "list"
    else RedisStreamBroker(URL)
)


noop, drain, latency, sleep = register(broker)
