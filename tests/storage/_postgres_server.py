"""A private PostgreSQL cluster on a free loopback port: TLS on, scram-sha-256 passwords.

Never the shared server on 5432: these tests need a server whose ``pg_hba.conf`` accepts
only TLS connections with a password, and roles of their own. The cluster is made with
``initdb`` and run with ``pg_ctl`` from the installed PostgreSQL; as root (CI) they run as
the ``postgres`` user, which initdb requires.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests._certs import CertFiles
from tests.conftest import free_port

__all__ = ["PrivatePostgres", "run_tool"]


def _bin(name: str) -> str:
    """The newest installed PostgreSQL's ``name`` (initdb, pg_ctl)."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(path.split("/")[4]),
    )
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install the PostgreSQL server (.ci/run does)")
    return path


def run_tool(*args: str) -> None:
    """Run a PostgreSQL tool (initdb, pg_ctl), as the postgres user when run as root
    (initdb refuses root); raise with its output if it fails."""
    as_root = os.geteuid() == 0
    command = ["runuser", "-u", "postgres", "--", *args] if as_root else list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {done.stdout}\n{done.stderr}")


class PrivatePostgres:
    """One throwaway cluster: ``start()`` makes and starts it, ``stop()`` removes it.

    ``pg_hba.conf`` takes TCP connections only over TLS, with a client certificate signed
    by the test CA and a scram-sha-256 password (``hostssl … clientcert=verify-ca``), and
    trusts the superuser on the cluster's own unix socket (which the tests use to make
    roles). ``superuser_password`` is the ``postgres`` role's.
    """

    superuser_password = "postgres-test-pw"

    def __init__(self, certs: CertFiles) -> None:
        self.certs = certs
        self.port = free_port()
        # Not under pytest's tmp_path: the postgres user must reach it (tmp_path is 0700).
        self.root = Path(tempfile.mkdtemp(prefix="omniq-pg-"))
        self.data = self.root / "data"
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        run_tool(*args)

    def start(self) -> None:
        """Make the cluster (initdb), configure TLS and passwords, and start it."""
        tls = self.root / "tls"
        tls.mkdir()
        # The server's copies, owned by the user that runs it (PostgreSQL refuses a key
        # that others can read).
        for source, name in (
            (self.certs.server_cert, "server.pem"),
            (self.certs.server_key, "server.key"),
            (self.certs.ca, "ca.pem"),
        ):
            shutil.copy(source, tls / name)
            (tls / name).chmod(0o600)
        password_file = self.root / "pw"
        password_file.write_text(self.superuser_password)
        if self.as_root:
            shutil.chown(self.root, "postgres")
            for path in (tls, *tls.iterdir(), password_file):
                shutil.chown(path, "postgres")
        self._run(
            _bin("initdb"),
            "-D", str(self.data),
            "-U", "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={password_file}",
            "--no-sync",
        )  # fmt: skip
        password_file.unlink()
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "ssl = on\n"
                f"ssl_cert_file = '{tls / 'server.pem'}'\n"
                f"ssl_key_file = '{tls / 'server.key'}'\n"
                f"ssl_ca_file = '{tls / 'ca.pem'}'\n"
                "password_encryption = 'scram-sha-256'\n"
                "fsync = off\n"
                "max_connections = 50\n"
            )
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca\n"
            "hostnossl all all 127.0.0.1/32 reject\n"
        )
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start")

    @property
    def socket_dsn(self) -> str:
        """The superuser over the cluster's unix socket (trusted): for setting up roles."""
        return f"postgresql://postgres@/postgres?host={self.root}&port={self.port}"

    def url(self, user: str, password: str, database: str = "postgres", **query: str) -> str:
        """A TCP URL on 127.0.0.1 for ``user`` (``query``: extra parameters)."""
        tail = "&".join(f"{key}={value}" for key, value in query.items())
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}" + (
            f"?{tail}" if tail else ""
        )

    def stop(self) -> None:
        """Stop the server at once and remove the cluster. Safe to call twice."""
        if self.data.exists():
            with contextlib.suppress(RuntimeError):  # not running: removed all the same
                self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
