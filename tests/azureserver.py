"""Azurite (Microsoft's Azure Storage emulator, npm package ``azurite``) on a free loopback
port, for the file backend tests on ``az://``.

Only its Blob service runs (``azurite-blob``), in memory, with telemetry off. It is looked
for on PATH, then in ``$OMNIQ_AZURITE_DIR`` (default ``~/.cache/omniq/azurite``), where
``.ci/run`` installs it; when absent there too it is installed there with npm, once (under
a file lock, so parallel sessions do not race).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests._loopback_server import serving
from tests.conftest import free_port

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "azurite_executable",
    "new_container",
    "running_azurite",
]

#: Azurite's well-known development account (public, documented; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
#: The npm package installed when Azurite is missing (major version 3, the current one).
AZURITE_PACKAGE = "azurite@3"


def _install_dir() -> Path:
    default = Path.home() / ".cache" / "omniq" / "azurite"
    return Path(os.environ.get("OMNIQ_AZURITE_DIR", default)).expanduser()


def azurite_executable() -> str:
    """The ``azurite-blob`` command: on PATH, in the install directory, or installed there."""
    found = shutil.which("azurite-blob")
    if found:
        return found
    target = _install_dir()
    exe = target / "node_modules" / ".bin" / "azurite-blob"
    if exe.exists():
        return str(exe)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "the Azure tests need Azurite: install Node.js with npm, then "
            f"`npm install --prefix {target} {AZURITE_PACKAGE}` (.ci/run does this)"
        )
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.exists():
            subprocess.run(
                [
                    npm,
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(target),
                    AZURITE_PACKAGE,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
    return str(exe)


@contextmanager
def running_azurite(timeout: float = 60.0) -> Iterator[str]:
    """Start Azurite's Blob service on 127.0.0.1; yield a connection string for it."""
    port = free_port()
    command = [
        azurite_executable(),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--silent",
        # The SDK's newest API version may be newer than this Azurite knows.
        "--skipApiVersionCheck",
        "--loose",
    ]
    # Nothing is written with --inMemoryPersistence; a scratch directory all the same.
    with (
        tempfile.TemporaryDirectory(prefix="omniq-azurite-") as workdir,
        serving("azurite-blob", command, port, cwd=workdir, timeout=timeout),
    ):
        yield (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )


def new_container(connection_string: str) -> str:
    """Create a fresh, empty container on the server; return its name."""
    from azure.storage.blob import BlobServiceClient

    name = f"omniq-{uuid.uuid4().hex[:12]}"
    with BlobServiceClient.from_connection_string(connection_string) as client:
        client.create_container(name)
    return name
