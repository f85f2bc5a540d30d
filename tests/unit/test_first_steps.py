"""What new users trip over (issue 30), where no backend is involved: options checked
when decorating, durations everywhere, storage arguments checked at construction, and a
gevent task that overruns its timeout without yielding."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from omniq import OmniQ, Retry
from omniq.errors import ConfigError
from tests.conformance import tasks

# -- durations ---------------------------------------------------------------------------


def test_retry_takes_a_duration_string() -> None:
    assert Retry(delay="5s").delay == 5.0
    assert Retry(delay="250ms").delay == 0.25
    assert Retry(delay=timedelta(minutes=1)).delay == 60.0
    with pytest.raises(ConfigError, match=r"argument delay='soon': .*'30s', '5m'"):
        Retry(delay="soon")


def test_blocking_pool_stop_takes_a_duration_string(tmp_path: Path) -> None:
    with OmniQ(base_dir=str(tmp_path)) as oq:
        task_id = oq.enqueue(tasks.add, 1, 2)
        pool = oq.worker()
        pool.start()
        assert oq.get_result(task_id, wait=True, timeout="10s").result == 3
        pool.stop(timeout="2s")
