"""A private ``redis-server`` on a free loopback port, for tests that restart or count.

Never the shared server on 6379: these tests kill their server, and count every command
it receives.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests._certs import CertFiles
from tests.conftest import free_port


class PrivateRedis:
    """One ``redis-server`` process; ``restart`` keeps its port and data directory.

    With ``persistent=True`` it writes an append-only file synced on every write, so a
    crash (SIGKILL) loses nothing that was acknowledged. With ``tls`` it serves TLS only
    (no plain-text port), with that server certificate, and asks clients for a certificate
    signed by its CA. ``config`` lines are added to its configuration file (ACL users…).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        persistent: bool = False,
        tls: CertFiles | None = None,
        config: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.persistent = persistent
        self.tls = tls
        self.config = list(config)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL (database 0)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        conf.write_text("".join(f"{line}\n" for line in self.config))
        conf.chmod(0o600)  # it may hold ACL passwords
        if self.tls is None:
            ports = ["--port", str(self.port)]
        else:
            ports = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.server_cert),
                "--tls-key-file", str(self.tls.server_key),
                "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "yes",
            ]  # fmt: skip
        args = [
            "redis-server",
            str(conf),
            *ports,
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.process.stderr!r}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)  # polling a child process that has no readiness signal

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if self.tls is not None:
                    return True  # it listens; the tests make the TLS handshakes
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
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
        """Crash the server and start it again on the same port and data."""
        self.kill()
        self.start()
