"""A real S3-compatible server (moto) on a free loopback port, for the file backend tests.

The server runs as a child process (``moto_server``), so its threads and warnings stay out
of the test process; nothing it does reaches the internet.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["S3_KEY", "S3_SECRET", "running_s3_server"]

S3_KEY = "test"
S3_SECRET = "test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def running_s3_server(timeout: float = 30.0) -> Iterator[str]:
    """Start ``moto_server`` on 127.0.0.1 and yield its endpoint URL; stop it afterwards."""
    port = _free_port()
    exe = shutil.which("moto_server")
    command = (
        [exe, "-H", "127.0.0.1", "-p", str(port)]
        if exe
        else [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    )
    env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + timeout
        while not _port_open(port):
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not listen on 127.0.0.1:{port}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
