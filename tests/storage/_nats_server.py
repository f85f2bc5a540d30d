"""A private ``nats-server`` on a free loopback port, for tests that kill it or start it
without JetStream.

Never the shared server on 4222: these tests kill their server.
"""

from __future__ import annotations

import shutil
import signal
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
        """Start the server and return once it says it is ready (in its log)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.store_dir / "nats.log"
        args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-l", str(log), *self.args]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store_dir)]
        told = log.read_text(errors="replace").count(_READY) if log.exists() else 0
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        give_up = time.monotonic() + 15
        while not (log.exists() and log.read_text(errors="replace").count(_READY) > told):
            if self.process.poll() is not None or time.monotonic() > give_up:
                self.kill()
                raise RuntimeError(f"nats-server did not start: {log.read_text(errors='replace')}")
            time.sleep(0.02)  # the log is the only readiness signal it gives

    def kill(self) -> None:
        """SIGKILL, as a crash would (nothing flushed, nothing said). Safe to call twice."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
        if process is not None:
            process.wait(timeout=10)

    def restart(self) -> None:
        """Crash the server and start it again on the same port and store."""
        self.kill()
        self.start()


#: What nats-server logs once it accepts clients (JetStream, when on, is up by then).
_READY = "Server is ready"
