"""The app worker processes of the reliability tests load (``--app tests.conformance._apps:oq``).

The test passes the store in ``OMNIQ_TEST_URL``, its namespace in
``OMNIQ_TEST_NAMESPACE`` and, optionally, the file backend's fsspec options as JSON in
``OMNIQ_TEST_STORAGE_OPTIONS`` (the chaos runner's S3 store); every other setting comes
through the usual ``OMNIQ_*`` environment variables (``OMNIQ_LEASE_SECONDS``,
``OMNIQ_SHUTDOWN_TIMEOUT`` ...).
"""

from __future__ import annotations

import json
import os

from omniq import AsyncOmniQ

_URL = os.environ["OMNIQ_TEST_URL"]

oq = AsyncOmniQ(
    task_queue=_URL,
    result_storage=_URL,
    event_storage=_URL,
    namespace=os.environ["OMNIQ_TEST_NAMESPACE"],
    storage_options=json.loads(os.environ.get("OMNIQ_TEST_STORAGE_OPTIONS", "{}")),
)
