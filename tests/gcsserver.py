"""A Google Cloud Storage emulator (PyPI ``gcp-storage-emulator``) on a free loopback port,
for the file backend tests on ``gs://``.

The emulator implements the JSON API's objects but not its preconditions: it ignores
``ifGenerationMatch``, so every conditional write would succeed. The tests serve it
through ``tests/_gcs_emulator.py``, which adds that one rule of GCS as GCS documents it: a write
or delete whose ``ifGenerationMatch`` is not the object's live generation (``0``: the
object must be absent) is refused with 412 ``conditionNotMet``. The emulator serves one
request at a time, so the check and the write are atomic, as on GCS. It also stores an
empty media upload as the empty object GCS stores (the emulator answers 500). The tests therefore
check OmniQ's use of generations (that every update is conditional, and that claims
racing across processes stay exclusive under these rules), not Google's implementation.
"""

from __future__ import annotations

import json
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests._loopback_server import serving
from tests.conftest import free_port

__all__ = ["GCS_PROJECT", "gcs_options", "new_bucket", "running_gcs_emulator"]

GCS_PROJECT = "omniq-test"

_SCRIPT = Path(__file__).with_name("_gcs_emulator.py")


@contextmanager
def running_gcs_emulator(timeout: float = 30.0) -> Iterator[str]:
    """Start the emulator (with preconditions) on 127.0.0.1; yield its endpoint URL."""
    port = free_port()
    command = [sys.executable, str(_SCRIPT), str(port)]
    with serving("gcp-storage-emulator", command, port, timeout=timeout):
        yield f"http://127.0.0.1:{port}"


def gcs_options(endpoint: str) -> dict[str, Any]:
    """``storage_options`` that point gcsfs at the emulator, anonymously."""
    return {"endpoint_url": endpoint, "token": "anon", "project": GCS_PROJECT}


def new_bucket(endpoint: str) -> str:
    """Create a fresh, empty bucket on the emulator; return its name."""
    name = f"omniq-{uuid.uuid4().hex[:12]}"
    request = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project={GCS_PROJECT}",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"the emulator refused bucket {name}: {response.status}")
    return name
