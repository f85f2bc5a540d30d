"""A private ``nats-server`` on a free loopback port, for tests that kill it or start it
without JetStream.

Never the shared server on 4222: these tests kill their server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import free_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class PrivateNATS:
    """One ``nats-server`` process; ``restart`` keeps its port and store directory.

    With ``jetstream=True`` (the default) it runs JetStream with its file store in
    ``store_dir``; ``args`` are added to its command line (``--user``, ``--auth``…).
    """

    def __init__(
        self, store_dir: Path, *, jetstream: bool = True, args: Sequence[str] = ()
    ) -> None:
        self.store_dir = store_dir
        self.jetstream = jetstream
        self.args = list(args)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL (no credentials)."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), *self.args]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store_dir)]
        log = self.store_dir / "nats.log"
        args += ["-l", str(log)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"nats-server on port {self.port} did not start")
            time.sleep(0.02)  # polling a child process that has no readiness signal

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                return sock.recv(5) == b"INFO "
        except OSError:
            return False

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would. Safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        """Crash the server and start it again on the same port and store."""
        self.kill()
        self.start()
