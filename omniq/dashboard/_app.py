"""The dashboard's ASGI application: pages, actions, the JSON API and the live stream.

Links are built from the app's own routes under the ``root_path`` it is served at, so
they keep working when the app is mounted under a prefix of another Starlette or FastAPI
app (Starlette's ``url_for`` would look the names up in the outer app's router).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from omniq.core import AsyncOmniQ
from omniq.dashboard import _views as views
from omniq.dashboard._auth import auth_from
from omniq.dashboard._security import CSRF_COOKIE, BasicAuth, csrf_refusal, csrf_token
from omniq.dashboard._source import Source
from omniq.errors import OmniQError
from omniq.models import TaskStatus, utcnow
from omniq.sync import OmniQ

__all__ = ["build_app"]

_HERE = Path(__file__).parent
_NOTICES = {
    "cancelled": "Task cancelled.",
    "not-cancelled": "Not cancelled: the task had already finished.",
    "requeued": "Task requeued: it runs again when a worker picks it up.",
    "not-requeued": "Not requeued: only failed, cancelled or expired tasks can be.",
    "requeued-many": "Failed tasks requeued.",
    "paused": "Schedule paused.",
    "resumed": "Schedule resumed.",
    "removed": "Schedule removed.",
    "unknown-schedule": "No such schedule.",
}
# No inline script or style anywhere: a value that slipped past escaping still cannot run.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_STREAM_SECONDS = 1.0
_RATES_EVERY = 5  # stream ticks between two reads of the throughput and the workers


def _ago(iso: str | None) -> str:
    if not iso:
        return "—"
    seconds = (utcnow() - datetime.fromisoformat(iso)).total_seconds()
    return "just now" if seconds < 1 else _duration(seconds) + " ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"
    return f"{seconds // 86400:.0f} d {seconds % 86400 // 3600:.0f} h"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,  # everything rendered from task data is escaped
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ago"] = _ago
    env.filters["duration"] = _duration
    return env


class Dashboard:
    """The routes over one client; ``app`` is the Starlette app they make."""

    def __init__(self, source: Source, *, read_only: bool) -> None:
        self.source = source
        self.read_only = read_only
        #: Set when the server stops: live streams end at their next tick.
        self.closing = False
        self.templates = Jinja2Templates(env=_environment())
        self.app = Starlette(routes=self._routes(), exception_handlers={_BadRequest: _bad_request})
        self.router = self.app.router

    def _routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.overview_page, name="overview"),
            Route("/tasks", self.tasks_page, name="tasks"),
            Route("/tasks/{task_id:path}/cancel", self.cancel, methods=["POST"], name="cancel"),
            Route("/tasks/{task_id:path}/requeue", self.requeue, methods=["POST"], name="requeue"),
            Route("/tasks/{task_id:path}", self.task_page, name="task"),
            Route(
                "/queues/{queue:path}/requeue-failed",
                self.requeue_failed,
                methods=["POST"],
                name="requeue_failed",
            ),
            Route("/schedules", self.schedules_page, name="schedules"),
            Route(
                "/schedules/{schedule_id:path}/{action:str}",
                self.schedule_action,
                methods=["POST"],
                name="schedule_action",
            ),
            Route("/workers", self.workers_page, name="workers"),
            Route("/limits", self.limits_page, name="limits"),
            Route("/api/overview", self.api_overview, name="api_overview"),
            Route("/api/tasks", self.api_tasks, name="api_tasks"),
            Route("/api/tasks/{task_id:path}", self.api_task, name="api_task"),
            Route("/api/schedules", self.api_schedules, name="api_schedules"),
            Route("/api/workers", self.api_workers, name="api_workers"),
            Route("/api/limits", self.api_limits, name="api_limits"),
            Route("/api/stream", self.api_stream, name="api_stream"),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ]

    # -- helpers ---------------------------------------------------------------------------

    def url(
        self, request: Request, name: str, query: dict[str, Any] | None = None, **params: Any
    ) -> str:
        """The path of route ``name`` under the prefix the app is served at."""
        path = str(self.router.url_path_for(name, **params))
        prefix = str(request.scope.get("root_path", "")).rstrip("/")
        kept = {key: value for key, value in (query or {}).items() if value not in (None, "")}
        return prefix + path + (f"?{urlencode(kept)}" if kept else "")

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        token = csrf_token(request)
        notice = _NOTICES.get(request.query_params.get("notice", ""))
        context.update(
            url=lambda name, query=None, **params: self.url(request, name, query, **params),
            read_only=self.read_only,
            csrf=token,
            notice=notice,
            statuses=views.STATUSES,
        )
        response = self.templates.TemplateResponse(
            request, template, context, status_code=status_code, headers=_HEADERS
        )
        if request.cookies.get(CSRF_COOKIE) != token:
            prefix = str(request.scope.get("root_path", "")) or "/"
            response.set_cookie(CSRF_COOKIE, token, path=prefix, httponly=True, samesite="strict")
        return response

    async def _form(self, request: Request) -> dict[str, str]:
        body = (await request.body()).decode("utf-8", "replace")
        return dict(parse_qsl(body, keep_blank_values=True))

    async def _action(
        self, request: Request, act: Callable[[], Awaitable[str]], back: str
    ) -> Response:
        """Run an action POST: refused in read-only mode and across sites."""
        if self.read_only:
            return PlainTextResponse("read-only dashboard: actions are off", status_code=403)
        refusal = csrf_refusal(request, await self._form(request))
        if refusal is not None:
            return PlainTextResponse(refusal, status_code=403)
        notice = await act()
        separator = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{separator}notice={notice}", status_code=303)

    @staticmethod
    def _status(request: Request) -> TaskStatus | None:
        value = request.query_params.get("status") or None
        if value is None:
            return None
        try:
            return TaskStatus(value.lower())
        except ValueError:
            raise _BadRequest(
                f"status {value!r}: expected one of {', '.join(views.STATUSES)}"
            ) from None

    @staticmethod
    def _page_number(request: Request) -> int:
        value = request.query_params.get("page", "1")
        if not value.isdigit() or int(value) < 1:
            raise _BadRequest(f"page {value!r}: expected a positive whole number")
        return int(value)

    # -- pages -------------------------------------------------------------------------------

    async def overview_page(self, request: Request) -> Response:
        data = await views.overview(self.source)
        workers = await self.source.list_workers()
        failures = await views.recent_failures(self.source)
        return self.render(
            request,
            "overview.html",
            page="overview",
            data=data,
            workers=len(workers),
            failures=failures,
        )

    async def tasks_page(self, request: Request) -> Response:
        queue = request.query_params.get("queue") or None
        status = self._status(request)
        name = request.query_params.get("name") or None
        stats = await self.source.stats()  # one read: the queue menu and the cap notice
        listing = await views.task_page(
            self.source,
            queue=queue,
            status=status,
            name=name,
            page=self._page_number(request),
            stats=stats,
        )
        query = {"queue": queue, "status": status and status.value, "name": name}
        queues = sorted(stats)
        return self.render(
            request, "tasks.html", page="tasks", listing=listing, query=query, queues=queues
        )

    async def task_page(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        detail = await views.task_detail(self.source, task_id)
        if detail is None:
            return self.render(
                request, "missing.html", status_code=404, page="tasks", what=f"task {task_id}"
            )
        return self.render(request, "task.html", page="tasks", task=detail)

    async def schedules_page(self, request: Request) -> Response:
        rows = [views.schedule_row(s) for s in await self.source.list_schedules()]
        return self.render(request, "schedules.html", page="schedules", schedules=rows)

    async def workers_page(self, request: Request) -> Response:
        rows = [views.worker_row(w) for w in await self.source.list_workers()]
        return self.render(request, "workers.html", page="workers", workers=rows)

    async def limits_page(self, request: Request) -> Response:
        data = await views.limits(self.source)
        return self.render(request, "limits.html", page="limits", limits=data)

    # -- actions -------------------------------------------------------------------------

    async def cancel(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]

        async def act() -> str:
            return "cancelled" if await self.source.cancel(task_id) else "not-cancelled"

        return await self._action(request, act, self.url(request, "task", task_id=task_id))

    async def requeue(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]

        async def act() -> str:
            return "requeued" if await self.source.requeue(task_id) else "not-requeued"

        return await self._action(request, act, self.url(request, "task", task_id=task_id))

    async def requeue_failed(self, request: Request) -> Response:
        queue = request.path_params["queue"]

        async def act() -> str:
            await self.source.requeue_failed(queue)
            return "requeued-many"

        return await self._action(request, act, self.url(request, "tasks", {"queue": queue}))

    async def schedule_action(self, request: Request) -> Response:
        schedule_id = request.path_params["schedule_id"]
        action = request.path_params["action"]
        if action not in ("pause", "resume", "remove"):
            return PlainTextResponse(f"unknown schedule action {action!r}", status_code=404)

        async def act() -> str:
            done = await self.source.schedule_action(action, schedule_id)
            return (
                {"pause": "paused", "resume": "resumed", "remove": "removed"}[action]
                if done
                else "unknown-schedule"
            )

        return await self._action(request, act, self.url(request, "schedules"))

    # -- JSON API ------------------------------------------------------------------------

    async def api_overview(self, request: Request) -> Response:
        return JSONResponse(await views.overview(self.source))

    async def api_tasks(self, request: Request) -> Response:
        listing = await views.task_page(
            self.source,
            queue=request.query_params.get("queue") or None,
            status=self._status(request),
            name=request.query_params.get("name") or None,
            page=self._page_number(request),
        )
        return JSONResponse(listing.as_json())

    async def api_task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        detail = await views.task_detail(self.source, task_id)
        if detail is None:
            return JSONResponse({"error": f"no task {task_id}"}, status_code=404)
        return JSONResponse(detail)

    async def api_schedules(self, request: Request) -> Response:
        rows = [views.schedule_row(s) for s in await self.source.list_schedules()]
        return JSONResponse({"schedules": rows})

    async def api_workers(self, request: Request) -> Response:
        rows = [views.worker_row(w) for w in await self.source.list_workers()]
        return JSONResponse({"workers": rows})

    async def api_limits(self, request: Request) -> Response:
        return JSONResponse(await views.limits(self.source))

    async def api_stream(self, request: Request) -> Response:
        """Server-sent events, one every second (``?limit=N`` stops after N): with
        ``view=overview`` (the default) ``overview`` events; with ``view=tasks`` (and the
        task list's ``queue``, ``status``, ``name`` and ``page``) ``tasks`` events, the
        rows of that page; with ``view=workers`` ``workers`` events."""
        limit_text = request.query_params.get("limit", "0")
        limit = int(limit_text) if limit_text.isdigit() else 0
        view = request.query_params.get("view", "overview")
        ticks: Callable[[int], Awaitable[str]]
        if view == "overview":
            ticks = self._overview_tick()
        elif view == "tasks":
            ticks = self._tasks_tick(request)
        elif view == "workers":
            ticks = self._workers_tick
        else:
            raise _BadRequest(f"view {view!r}: expected overview, tasks or workers")
        return StreamingResponse(
            self._ticks(request, ticks, limit),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _ticks(
        self, request: Request, make: Callable[[int], Awaitable[str]], limit: int
    ) -> AsyncIterator[str]:
        tick = 0
        while True:
            yield await make(tick)
            tick += 1
            if limit and tick >= limit:
                return
            await anyio.sleep(_STREAM_SECONDS)
            if self.closing or await request.is_disconnected():
                return

    def _overview_tick(self) -> Callable[[int], Awaitable[str]]:
        """The overview's events; throughput and workers are read every _RATES_EVERY
        ticks only (they cost more than the counts)."""
        rates: dict[str, dict[str, Any]] = {}
        workers = 0

        async def make(tick: int) -> str:
            nonlocal rates, workers
            fresh = tick % _RATES_EVERY == 0
            data = await views.overview(self.source, with_rates=fresh)
            if fresh:
                workers = len(await self.source.list_workers())
                rates = {
                    name: {
                        key: row[key]
                        for key in ("per_minute", "failure_rate", "oldest_wait", "oldest_exact")
                    }
                    for name, row in data["queues"].items()
                }
            for name, row in data["queues"].items():
                row.update(rates.get(name, {}))
            data["workers"] = workers
            return _event("overview", data)

        return make

    def _tasks_tick(self, request: Request) -> Callable[[int], Awaitable[str]]:
        """The task list's events: the page the list shows, under its filters."""
        queue = request.query_params.get("queue") or None
        status = self._status(request)
        name = request.query_params.get("name") or None
        page = self._page_number(request)

        async def make(tick: int) -> str:
            listing = await views.task_page(
                self.source, queue=queue, status=status, name=name, page=page
            )
            return _event("tasks", listing.as_json())

        return make

    async def _workers_tick(self, tick: int) -> str:
        rows = [views.worker_row(w) for w in await self.source.list_workers()]
        return _event("workers", {"workers": rows})


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


class _BadRequest(OmniQError, ValueError):
    """A query parameter the dashboard cannot use."""


async def _bad_request(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(str(exc), status_code=400)


def build_app(
    oq: AsyncOmniQ | OmniQ, *, auth: str | tuple[str, str] | None, read_only: bool
) -> tuple[Dashboard, ASGIApp]:
    """The dashboard over ``oq`` and its ASGI app (see :func:`omniq.dashboard.create_app`)."""
    dashboard = Dashboard(Source(oq), read_only=read_only)
    app: ASGIApp = dashboard.app
    credentials = auth_from(auth)
    if credentials is not None:
        app = BasicAuth(app, credentials)
    return dashboard, app
