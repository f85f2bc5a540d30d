"""The data of each page, as plain dicts the templates and the JSON API both serve.

Pure helpers (formatting, decoding a task's arguments) and the few reads each view
makes. Nothing here renders HTML: the templates escape everything they show.
"""

from __future__ import annotations

import reprlib
from datetime import datetime, timedelta
from typing import Any

from omniq.dashboard._source import Source
from omniq.errors import OmniQError
from omniq.models import (
    FINAL_STATUSES,
    Progress,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    WorkerInfo,
    utcnow,
)
from omniq.serialization import SerializationManager

__all__ = [
    "PAGE_SIZE",
    "STATUSES",
    "TaskPage",
    "age",
    "decode_call",
    "limit_text",
    "limits",
    "matching",
    "overview",
    "recent_failures",
    "show_value",
    "task_detail",
    "task_page",
]

#: Status columns, in a task's order of life.
STATUSES = tuple(status.value for status in TaskStatus)
#: Tasks per page of the task list.
PAGE_SIZE = 50
#: The deepest the task list pages (through storage's newest-first listing).
MAX_LISTED = 5000
#: How many of the newest tasks a name filter searches.
NAME_SCAN = 2000
#: Throughput and failure rate are measured over this window, from the newest finished
#: tasks (at most RECENT of each final status).
WINDOW = timedelta(minutes=5)
RECENT = 500
_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxstring = _REPR.maxother = 2000
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 50
_REPR.maxlevel = 6
_PAYLOAD_DILL = (ord("D"), ord("S"))


def show_value(value: Any) -> str:
    """``repr`` of a decoded value, shortened (the template escapes it)."""
    return _REPR.repr(value)


def decode_call(serializer: SerializationManager, payload: bytes) -> dict[str, Any]:
    """A task's arguments as text: ``{"args": [...], "kwargs": {...}}`` of reprs, or
    ``{"note": ...}`` saying why they are not shown.

    Only msgpack payloads are decoded (msgspec builds plain values and never runs code);
    a dill pickle is not unpickled here, signed or not: unpickling runs code, and a page
    view must not.
    """
    if not payload:
        return {"args": [], "kwargs": {}}
    if payload[0] in _PAYLOAD_DILL:
        return {"note": f"dill pickle, {len(payload)} bytes: not unpickled by the dashboard"}
    try:
        _, args, kwargs = serializer.loads_call(payload)
    except OmniQError as exc:
        return {"note": f"undecodable: {exc}"}
    return {
        "args": [show_value(arg) for arg in args],
        "kwargs": {key: show_value(value) for key, value in kwargs.items()},
    }


def age(since: datetime | None, now: datetime) -> float | None:
    """Seconds from ``since`` to ``now`` (None for no time, or one in the future)."""
    if since is None:
        return None
    seconds = (now - since).total_seconds()
    return seconds if seconds >= 0 else None


def _progress(progress: Progress | None) -> dict[str, Any] | None:
    if progress is None:
        return None
    percent = None
    if progress.total:
        percent = max(0.0, min(100.0, 100.0 * float(progress.done) / float(progress.total)))
    return {
        "done": progress.done,
        "total": progress.total,
        "message": progress.message,
        "percent": percent,
        "updated_at": progress.updated_at.isoformat(),
    }


def task_row(task: Task) -> dict[str, Any]:
    """A task as the list and the API show it."""
    module, _, name = task.func.rpartition(":")
    return {
        "id": task.id,
        "func": task.func,
        "name": name or module,
        "queue": task.queue,
        "status": task.status.value,
        "attempts": task.attempts,
        "priority": task.priority,
        "created_at": task.created_at.isoformat(),
        "updated_at": (task.updated_at or task.created_at).isoformat(),
        "due_at": None if task.due_at is None else task.due_at.isoformat(),
        "worker_id": task.worker_id,
        "progress": _progress(task.progress),
    }


def _result(result: TaskResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    error = result.error
    return {
        "status": result.status.value,
        "value": show_value(result.result) if result.ok else None,
        "error": None
        if error is None
        else {"type": error.type, "message": error.message, "traceback": error.traceback},
        "attempts": result.attempts,
        "started_at": None if result.started_at is None else result.started_at.isoformat(),
        "finished_at": result.finished_at.isoformat(),
        "worker_id": result.worker_id,
    }


def _event(event: TaskEvent) -> dict[str, Any]:
    return {
        "type": event.event_type.value,
        "timestamp": event.timestamp.isoformat(),
        "attempt": event.attempt,
        "worker_id": event.worker_id,
        "message": event.message,
    }


async def task_detail(source: Source, task_id: str) -> dict[str, Any] | None:
    """Everything the task page shows, or None for an unknown id."""
    task = await source.get_task(task_id)
    if task is None:
        return None
    final = task.status in FINAL_STATUSES
    result = await source.get_result(task_id) if final else None
    events = await source.get_events(task_id)
    detail = task_row(task)
    detail.update(
        call=decode_call(source.serializer, task.payload),
        result=_result(result),
        events=[_event(event) for event in events],
        final=final,
        max_retries=task.max_retries,
        timeout=task.timeout,
        depends_on=list(task.depends_on),
        schedule_id=task.schedule_id,
        limit=limit_text(task.rate_limit, task.max_concurrency) or None,
        can_cancel=not final,
        can_requeue=task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED),
    )
    return detail


class TaskPage:
    """One page of the task list: its rows, whether older ones follow, and whether the
    listing reaches every matching task."""

    def __init__(
        self, rows: list[dict[str, Any]], page: int, more: bool, capped: bool, reach: int
    ) -> None:
        self.rows = rows
        self.page = page
        self.more = more
        #: True when more tasks match than the listing reaches: the newest ``reach`` are
        #: paged through (MAX_LISTED), or searched by name (NAME_SCAN); older ones are
        #: not shown. The page says so (narrow the filters to see further).
        self.capped = capped
        self.reach = reach

    def as_json(self) -> dict[str, Any]:
        """What the JSON API and the live stream send."""
        return {
            "tasks": self.rows,
            "page": self.page,
            "more": self.more,
            "capped": self.capped,
            "reach": self.reach,
        }


def matching(stats: dict[str, dict[str, int]], queue: str | None, status: str | None) -> int:
    """How many tasks ``stats`` counts for these filters (None: any)."""
    queues = [queue] if queue is not None else list(stats)
    return sum(
        count
        for name in queues
        for key, count in stats.get(name, {}).items()
        if status is None or key == status
    )


async def task_page(
    source: Source,
    *,
    queue: str | None,
    status: TaskStatus | None,
    name: str | None,
    page: int,
    stats: dict[str, dict[str, int]] | None = None,
) -> TaskPage:
    """Page ``page`` (from 1) of the tasks matching the filters, newest first.

    Storage lists newest first with a limit and no offset, so page n reads n pages'
    worth: the list reaches the newest MAX_LISTED tasks, and a name filter looks through
    the newest NAME_SCAN. Whether more match than that comes from ``stats()`` (one
    count query; ``stats`` when the caller has read it already), so a capped listing says
    so on every page instead of ending silently.
    """
    start = (page - 1) * PAGE_SIZE
    needle = (name or "").strip().lower()
    if needle:
        scanned = await source.list_tasks(queue=queue, status=status, limit=NAME_SCAN)
        found = [task for task in scanned if needle in task.func.lower()]
        capped, reach = len(scanned) >= NAME_SCAN, NAME_SCAN
    else:
        wanted = min(start + PAGE_SIZE + 1, MAX_LISTED + 1)
        found = await source.list_tasks(queue=queue, status=status, limit=wanted)
        found = found[:MAX_LISTED]
        if stats is None:
            stats = await source.stats()
        total = matching(stats, queue, status and status.value)
        capped, reach = total > MAX_LISTED, MAX_LISTED
    rows = [task_row(task) for task in found[start : start + PAGE_SIZE]]
    return TaskPage(rows, page, more=len(found) > start + PAGE_SIZE, capped=capped, reach=reach)


async def overview(source: Source, *, with_rates: bool = True) -> dict[str, Any]:
    """Per queue: counts by status, and (``with_rates``) tasks finished per minute and
    the failure rate over WINDOW, and how long the longest-waiting due task has waited."""
    now = utcnow()
    stats = await source.stats()
    queues: dict[str, dict[str, Any]] = {}
    totals = dict.fromkeys(STATUSES, 0)
    for name in sorted(stats):
        counts = {status: stats[name].get(status, 0) for status in STATUSES}
        for status, count in counts.items():
            totals[status] += count
        queues[name] = {"name": name, "counts": counts, "total": sum(counts.values())}
    data: dict[str, Any] = {"at": now.isoformat(), "totals": totals, "queues": queues}
    if not with_rates:
        return data
    since = now - WINDOW
    finished: dict[str, dict[str, int]] = {}
    for status in (TaskStatus.COMPLETE, TaskStatus.FAILED):
        recent = await source.list_tasks(status=status, limit=RECENT)
        for task in recent:
            if (task.updated_at or task.created_at) >= since:
                by_queue = finished.setdefault(task.queue, {})
                by_queue[status.value] = by_queue.get(status.value, 0) + 1
    minutes = WINDOW.total_seconds() / 60
    for name, row in queues.items():
        done = finished.get(name, {})
        ok, failed = done.get("complete", 0), done.get("failed", 0)
        row["per_minute"] = round((ok + failed) / minutes, 1)
        row["failure_rate"] = None if ok + failed == 0 else round(100 * failed / (ok + failed), 1)
        waiting = row["counts"]["pending"] + row["counts"]["retrying"]
        row["oldest_wait"] = None
        row["oldest_exact"] = True
        if waiting:
            due, exact = await source.oldest_due(name, waiting)
            row["oldest_wait"] = age(due, now)
            row["oldest_exact"] = exact
    data["window_minutes"] = minutes
    return data


async def recent_failures(source: Source, limit: int = 5) -> list[dict[str, Any]]:
    """The newest failed tasks with their errors (type and message)."""
    rows = []
    for task in await source.list_tasks(status=TaskStatus.FAILED, limit=limit):
        row = task_row(task)
        result = await source.get_result(task.id)
        error = None if result is None else result.error
        row["error"] = (
            None if error is None else f"{error.type.rpartition('.')[2]}: {error.message}"
        )
        rows.append(row)
    return rows


def limit_text(rate_limit: str | None, max_concurrency: int | None) -> str:
    """A limit in words: ``"100/m · 4 at once"``."""
    parts = [] if rate_limit is None else [rate_limit]
    if max_concurrency is not None:
        parts.append(f"{max_concurrency} at once")
    return " · ".join(parts)


async def limits(source: Source) -> dict[str, list[dict[str, Any]]]:
    """The global limits stored in the backend: per queue (with its tasks running and
    waiting now, from ``stats()``) and per task name."""
    stats = await source.stats()
    queues: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    for info in await source.list_limits():
        row = {
            "name": info.name,
            "rate_limit": info.rate_limit,
            "max_concurrency": info.max_concurrency,
        }
        if info.scope == "queue":
            counts = stats.get(info.name, {})
            row["running"] = counts.get("running", 0)
            row["waiting"] = counts.get("pending", 0) + counts.get("retrying", 0)
            queues.append(row)
        else:
            module, _, short = info.name.rpartition(":")
            row["short"] = short or module
            tasks.append(row)
    return {"queues": queues, "tasks": tasks}


def schedule_row(schedule: Schedule) -> dict[str, Any]:
    """A schedule as its page and the API show it."""
    return {
        "id": schedule.id,
        "func": schedule.task.func,
        "queue": schedule.task.queue,
        "cron": schedule.cron,
        "interval": schedule.interval,
        "timezone": schedule.timezone,
        "paused": schedule.paused,
        "runs": schedule.runs,
        "max_runs": schedule.max_runs,
        "next_run_at": None if schedule.next_run_at is None else schedule.next_run_at.isoformat(),
        "last_run_at": None if schedule.last_run_at is None else schedule.last_run_at.isoformat(),
    }


def worker_row(worker: WorkerInfo) -> dict[str, Any]:
    """A live worker as its page and the API show it."""
    return {
        "id": worker.id,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "queues": list(worker.queues),
        "worker_type": worker.worker_type,
        "concurrency": worker.concurrency,
        "running": worker.running,
        "started_at": worker.started_at.isoformat(),
        "last_seen": worker.last_seen.isoformat(),
    }
