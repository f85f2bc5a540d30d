"""What importing OmniQ pulls in: the Redis extra installs hiredis only, so nothing on the
worker's path may import redis-py; yaml and dill are paid for only when used; the web
extra's Starlette, Jinja2 and uvicorn only when a dashboard is made; prometheus_client and
OpenTelemetry only with metrics_port and tracing=True."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import omniq, omniq.cli, omniq.dashboard, omniq.storage.redis, omniq.workers
names = ("redis", "yaml", "dill", "starlette", "jinja2", "uvicorn")
names += ("prometheus_client", "opentelemetry")
print(" ".join(sorted(m for m in names if m in sys.modules)))
"""


def test_the_worker_path_imports_neither_redis_py_nor_yaml_nor_dill_nor_starlette() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == []


def test_dill_and_yaml_load_when_they_are_needed() -> None:
    probe = """
import sys, pathlib, tempfile
from omniq.config import Settings
from omniq.serialization import SerializationManager
path = pathlib.Path(tempfile.mkdtemp()) / "omniq.yaml"
path.write_text("log_level: INFO\\n")
assert Settings.from_yaml(path).log_level == "INFO"
s = SerializationManager(allow_unsigned_dill=True)
assert s.loads(s.dumps(lambda x: x + 1))(1) == 2
print(" ".join(sorted(m for m in ("yaml", "dill") if m in sys.modules)))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["dill", "yaml"]


def test_metrics_and_tracing_cost_nothing_while_off() -> None:
    # A client submits and a worker runs a task with both left off (the default): neither
    # prometheus_client nor OpenTelemetry is imported, though both are installed here.
    probe = """
import sys, tempfile
import omniq
with omniq.OmniQ(base_dir=tempfile.mkdtemp()) as oq:
    task_id = oq.submit("operator:add", (1, 2))
    oq.worker().run(burst=True)
    assert oq.get_result(task_id).result == 3
print(" ".join(sorted(m for m in ("prometheus_client", "opentelemetry") if m in sys.modules)))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == []


def test_metrics_and_tracing_load_when_they_are_turned_on() -> None:
    probe = """
import sys, tempfile
import omniq
with omniq.OmniQ(base_dir=tempfile.mkdtemp(), tracing=True) as oq:
    oq.submit("operator:add", (1, 2))
print(" ".join(sorted(m for m in ("prometheus_client", "opentelemetry") if m in sys.modules)))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["opentelemetry"]
