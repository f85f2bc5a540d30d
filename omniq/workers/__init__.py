"""Worker pools and worker types."""

from omniq.workers.executors import AsyncWorker, BaseExecutor, ThreadWorker
from omniq.workers.pool import AsyncWorkerPool
from omniq.workers.sync import WorkerPool

__all__ = ["AsyncWorker", "AsyncWorkerPool", "BaseExecutor", "ThreadWorker", "WorkerPool"]
