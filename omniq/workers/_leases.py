"""A worker pool's leases: renewing what it holds, and checking a lease before a run.

Every task a pool holds is claimed with a lease (``lease_seconds``); :class:`LeaseKeeper`
renews them together every third of a lease, stops the run of any task whose lease the
store no longer grants (it was cancelled, or taken over after this worker stalled), and
refuses to start a task whose lease ran out between its claim and its start unless a
renewal shows nobody took it over. It also paces the dependents sweep, once a lease
period: the time in which a lost run comes back too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from omniq.errors import StorageError
from omniq.models import Task, utcnow

if TYPE_CHECKING:
    from omniq.engine import Engine

__all__ = ["LeaseKeeper"]

logger = logging.getLogger("omniq.worker")


class LeaseKeeper:
    """Keeps the leases of the tasks in ``held`` (the pool's set, shared).

    ``stop_run(task_id)`` stops a running task whose lease was lost and returns whether
    one was running; ``on_settled()`` is told when a sweep released dependents.
    """

    def __init__(
        self,
        engine: Engine,
        worker_id: str,
        lease_seconds: float,
        *,
        held: set[str],
        stop_run: Callable[[str], bool],
        on_settled: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self._held = held
        self._stop_run = stop_run
        self._on_settled = on_settled

    async def still_leased(self, task: Task) -> bool:
        """Whether ``task`` may start here: its lease has not run out, or renewing it
        shows that nobody took it over meanwhile.

        A claim whose reply comes back after the lease it wrote ran out (a slow store, a
        stalled process) may have lost the task to another worker, which may even have
        finished it: starting the body then would run it again. A task that is not
        started is dropped: whoever holds it now runs it, or its lease brings it back.
        """
        lease = task.lease_expires_at
        if lease is None or lease > utcnow():
            return True
        try:
            kept = await self.engine.queue.renew(
                {task.id}, self.worker_id, lease_seconds=self.lease_seconds, now=utcnow()
            )
        except StorageError as exc:
            why = f"renewing its lease failed ({exc})"
        else:
            if task.id in kept:
                return True
            why = "it was taken over or cancelled"
        logger.warning("task %s: its lease ran out before it started and %s; not run", task.id, why)
        self._held.discard(task.id)
        return False

    async def renew_loop(self) -> None:
        """Renew every held lease each third of a lease; stop the runs of lost ones."""
        interval = max(0.05, self.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            held = set(self._held)
            if not held:
                continue
            try:
                kept = await self.engine.queue.renew(
                    held, self.worker_id, lease_seconds=self.lease_seconds, now=utcnow()
                )
            except StorageError as exc:
                logger.warning("renewing %d leases failed: %s", len(held), exc)
                continue
            for task_id in held - kept:
                if task_id in self._held and self._stop_run(task_id):
                    logger.warning(
                        "task %s: lease lost (cancelled or taken over); stopped", task_id
                    )

    async def sweep_loop(self) -> None:
        """Release dependents that a worker lost between a finish and their release: at
        start (a worker started after a crash repairs it at once), then once a lease
        period, the time a lost run takes to come back too."""
        while True:
            try:
                settled = await self.engine.sweep_dependents()
            except StorageError as exc:
                logger.warning("sweeping for stranded dependents failed: %s", exc)
            else:
                if settled:
                    logger.info("settled %d dependents whose dependencies had ended", settled)
                    self._on_settled()
            await asyncio.sleep(max(0.05, self.lease_seconds))
