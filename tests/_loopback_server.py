"""Run a test server (an emulator of a cloud store) as a child process on loopback.

The server runs as a child process, so its threads, logs and warnings stay out of the
test process; each helper (``s3server``, ``azureserver``, ``gcsserver``) says what it
starts. Nothing they do reaches the internet.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

__all__ = ["serving"]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def serving(
    name: str,
    command: Sequence[str],
    port: int,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float = 30.0,
) -> Iterator[None]:
    """Start ``command``, wait until it listens on 127.0.0.1:``port``; stop it afterwards.

    A server that exits or never listens fails loudly, with its own last words.
    """
    # Its output goes to a file, not a pipe: a chatty server (moto logs every request)
    # would block on a full pipe nobody reads.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        try:
            deadline = time.monotonic() + timeout
            while not _port_open(port):
                if proc.poll() is not None:
                    log.seek(0)
                    said = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited with code {proc.returncode}: {said}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port}")
                time.sleep(0.05)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
