"""The app the chaos run's worker processes load (``--app tests.chaos.app:oq``).

The runner passes the store in ``CHAOS_URL``, its namespace in
``CHAOS_NAMESPACE`` and the file backend's fsspec options as JSON in
``CHAOS_STORAGE_OPTIONS``; the other settings come as ``OMNIQ_*`` variables.
"""

from __future__ import annotations

import json
import os

from omniq import AsyncOmniQ

_URL = os.environ["CHAOS_URL"]

oq = AsyncOmniQ(
    task_queue=_URL,
    result_storage=_URL,
    event_storage=_URL,
    namespace=os.environ["CHAOS_NAMESPACE"],
    storage_options=json.loads(os.environ.get("CHAOS_STORAGE_OPTIONS", "{}")),
)
