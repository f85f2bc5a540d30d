"""The stores a chaos run can use, each started privately for the run and removed after.

A backend says which URL the workers use (through the fault proxy where there is a
server), which URL the runner's own client uses (straight to the server), and whether
its server can be restarted with its data kept. Adding a backend is one class here and
one entry in ``BACKENDS``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.chaos.proxy import FaultProxy
from tests.conftest import free_port
from tests.s3server import S3_KEY, S3_SECRET
from tests.storage._postgres_server import _bin, run_tool
from tests.storage._redis_server import PrivateRedis

__all__ = ["BACKENDS", "Backend"]


def _wait_port(port: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}") from None
            time.sleep(0.05)  # a server process has no readiness signal to wait on


class Backend:
    """A store for one chaos run; the base class is a store with no server (SQLite)."""

    name = "base"
    #: Whether ``restart`` exists: a server that keeps its data across a crash.
    restartable = False
    #: Load units a second the store keeps up with on a small machine, under faults.
    rate = 10.0
    #: The workers' lease: short, so that lost runs come back within the run, and long
    #: enough that renewing it never takes longer on a loaded machine.
    lease = 5.0

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.proxy: FaultProxy | None = None

    def start(self) -> None:
        """Start the server (if any) and the proxy in front of it."""

    def _proxy_to(self, port: int) -> None:
        self.proxy = FaultProxy("127.0.0.1", port)
        self.proxy.start()

    def worker_url(self) -> str:
        """The URL the worker processes use (through the proxy when there is one)."""
        raise NotImplementedError

    def client_url(self) -> str:
        """The URL of the runner's own client (producer and audit): no proxy."""
        return self.worker_url()

    def storage_options(self, *, proxied: bool) -> dict[str, Any]:
        """The fsspec options of the file backend (empty elsewhere)."""
        return {}

    def kill_server(self) -> None:
        """Crash the server at once (SIGKILL or immediate stop); its data stays."""
        raise NotImplementedError

    def start_server(self) -> None:
        """Start the server again on the same port and data."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the proxy and the server, and remove the server's data."""
        if self.proxy is not None:
            self.proxy.stop()


class SqliteBackend(Backend):
    """One SQLite database file in the run directory, shared by every process."""

    name = "sqlite"

    def worker_url(self) -> str:
        return f"sqlite:///{self.run_dir / 'chaos.db'}"


class LocalFileBackend(Backend):
    """The file backend on a local directory."""

    name = "file"
    rate = 5.0

    def worker_url(self) -> str:
        return f"file://{self.run_dir / 'store'}"


#: moto's server with one request at a time: its conditional writes (``If-Match``,
#: ``If-None-Match``) check and store in two steps, atomic only when requests do not
#: overlap; served one by one they hold as on AWS S3, which is what the chaos run
#: must test (the threaded server lets two claims of one task both succeed).
_SERIAL_MOTO = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app),
           threaded=False)
"""


class S3FileBackend(Backend):
    """The file backend on S3: a moto server on loopback (serving one request at a
    time, see ``_SERIAL_MOTO``), in a bucket of the run's own.

    moto keeps its data in memory, so it is never restarted; its connections are cut and
    slowed through the proxy instead.
    """

    name = "s3"
    # moto lists a prefix by scanning every key of the bucket, one request at a time:
    # four workers keep up with about one task a second (a ten-minute run at 2 a second
    # left hundreds waiting), and the lease must outlast a renewal queued behind others.
    rate = 1.0
    lease = 15.0

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = f"chaos-{uuid.uuid4().hex[:10]}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import boto3  # type: ignore[import-untyped]

        env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
        command = [sys.executable, "-c", _SERIAL_MOTO, "127.0.0.1", str(self.port)]
        log = open(self.run_dir / "moto.log", "ab")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        finally:
            log.close()
        _wait_port(self.port, "moto")
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=self.bucket)
        client.close()
        self._proxy_to(self.port)

    def worker_url(self) -> str:
        return f"s3://{self.bucket}/omniq"

    def storage_options(self, *, proxied: bool) -> dict[str, Any]:
        assert self.proxy is not None
        endpoint = f"http://127.0.0.1:{self.proxy.port}" if proxied else self.endpoint
        return {"endpoint_url": endpoint, "key": S3_KEY, "secret": S3_SECRET}

    def stop(self) -> None:
        super().stop()
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)


class RedisBackend(Backend):
    """A private ``redis-server`` with an append-only file synced on every write."""

    name = "redis"
    restartable = True

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir)
        self.server = PrivateRedis(run_dir / "redis", persistent=True)

    def start(self) -> None:
        self.server.start()
        self._proxy_to(self.server.port)

    def worker_url(self) -> str:
        assert self.proxy is not None
        return f"redis://127.0.0.1:{self.proxy.port}/0"

    def client_url(self) -> str:
        return self.server.url

    def kill_server(self) -> None:
        self.server.kill()

    def start_server(self) -> None:
        self.server.start()

    def stop(self) -> None:
        super().stop()
        self.server.kill()


class PostgresBackend(Backend):
    """A throwaway PostgreSQL cluster (``initdb``/``pg_ctl``, as the postgres user when
    run as root) on a free loopback port, trusting loopback connections; a restart is an
    immediate stop (a crash: the server recovers from its WAL) and a start."""

    name = "postgres"
    restartable = True

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir)
        self.port = free_port()
        # Not under the run directory: the postgres user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="omniq-chaos-pg-"))
        self.data = self.root / "data"

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        run_tool(
            _bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"
        )
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 200\n"
            )
        self.start_server()
        self._proxy_to(self.port)

    def worker_url(self) -> str:
        assert self.proxy is not None
        return f"postgresql://postgres@127.0.0.1:{self.proxy.port}/postgres"

    def client_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def kill_server(self) -> None:
        run_tool(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def start_server(self) -> None:
        log = str(self.root / "log")
        run_tool(_bin("pg_ctl"), "-D", str(self.data), "-l", log, "-w", "start")

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(RuntimeError):  # not running: removed all the same
            self.kill_server()
        shutil.rmtree(self.root, ignore_errors=True)


class NatsBackend(Backend):
    """A private ``nats-server -js`` whose JetStream store directory survives restarts."""

    name = "nats"
    restartable = True

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.start_server()
        self._proxy_to(self.port)

    def worker_url(self) -> str:
        assert self.proxy is not None
        return f"nats://127.0.0.1:{self.proxy.port}"

    def client_url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def kill_server(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def start_server(self) -> None:
        store = self.run_dir / "nats"
        store.mkdir(exist_ok=True)
        command = ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)]
        log = open(self.run_dir / "nats.log", "ab")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        _wait_port(self.port, "nats-server")

    def stop(self) -> None:
        super().stop()
        self.kill_server()


#: Every backend the runner knows, by its ``--backend`` name.
BACKENDS: dict[str, type[Backend]] = {
    backend.name: backend
    for backend in (
        SqliteBackend,
        LocalFileBackend,
        S3FileBackend,
        RedisBackend,
        PostgresBackend,
        NatsBackend,
    )
}
