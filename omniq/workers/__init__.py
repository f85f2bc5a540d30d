"""Worker pools and worker types.

``ProcessWorker`` and ``GeventWorker`` import on first use: the gevent one needs the
``gevent`` extra, and neither should cost ``import omniq.workers`` anything.
"""

from typing import Any

from omniq.workers.executors import AsyncWorker, BaseExecutor, ThreadWorker
from omniq.workers.pool import AsyncWorkerPool
from omniq.workers.sync import WorkerPool

__all__ = [
    "AsyncWorker",
    "AsyncWorkerPool",
    "BaseExecutor",
    "GeventWorker",
    "ProcessWorker",
    "ThreadWorker",
    "WorkerPool",
]

_LAZY = {"ProcessWorker": "omniq.workers.process", "GeventWorker": "omniq.workers.gevent"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'omniq.workers' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
