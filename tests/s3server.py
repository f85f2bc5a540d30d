"""A real S3-compatible server (moto) on a free loopback port, for the file backend tests.

The server runs as a child process (``moto_server``), so its threads and warnings stay out
of the test process; nothing it does reaches the internet.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tests._loopback_server import serving
from tests.conftest import free_port

__all__ = ["S3_KEY", "S3_SECRET", "running_s3_server"]

S3_KEY = "test"
S3_SECRET = "test"


@contextmanager
def running_s3_server(timeout: float = 30.0) -> Iterator[str]:
    """Start ``moto_server`` on 127.0.0.1 and yield its endpoint URL; stop it afterwards."""
    port = free_port()
    exe = shutil.which("moto_server")
    command = (
        [exe, "-H", "127.0.0.1", "-p", str(port)]
        if exe
        else [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    )
    env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    with serving("moto_server", command, port, env=env, timeout=timeout):
        yield f"http://127.0.0.1:{port}"
