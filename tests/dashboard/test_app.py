"""The dashboard's pages, JSON API, actions and protections, over real clients."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from omniq import AsyncOmniQ, OmniQ, TaskStatus
from omniq.dashboard import create_app
from omniq.errors import ConfigError
from tests.dashboard.conftest import Dash, make_client

JOBS = "tests.dashboard.jobs"


def status_of(dash: Dash, task_id: str) -> TaskStatus:
    task = dash.call("get_task", task_id)
    assert task is not None
    status: TaskStatus = task.status
    return status


# -- pages and API ----------------------------------------------------------------------


def test_overview_counts_each_queue_by_status_with_throughput(dash: Dash) -> None:
    dash.submit(f"{JOBS}:add", 1, 2)
    dash.submit(f"{JOBS}:boom", "x")
    dash.submit(f"{JOBS}:add", 3, 4, queue="mail")
    dash.drain()

    page = dash.http.get("/")
    assert page.status_code == 200
    assert 'data-queue="default"' in page.text and 'data-queue="mail"' in page.text

    data = dash.http.get("/api/overview").json()
    assert data["queues"]["default"]["counts"]["complete"] == 1
    assert data["queues"]["default"]["counts"]["failed"] == 1
    assert data["queues"]["mail"]["counts"]["pending"] == 1
    assert data["totals"]["pending"] == 1
    default = data["queues"]["default"]
    assert default["per_minute"] > 0
    assert default["failure_rate"] == 50.0
    assert data["queues"]["mail"]["oldest_wait"] is not None  # waiting since it was due


def test_the_task_list_filters_by_queue_status_and_name(dash: Dash) -> None:
    added = dash.submit(f"{JOBS}:add", 1, 2)
    failed = dash.submit(f"{JOBS}:boom", "x")
    other = dash.submit(f"{JOBS}:add", 5, 6, queue="mail")
    dash.drain()

    def ids(**params: str) -> set[str]:
        response = dash.http.get("/api/tasks", params=params)
        assert response.status_code == 200
        return {row["id"] for row in response.json()["tasks"]}

    assert ids() == {added, failed, other}
    assert ids(queue="mail") == {other}
    assert ids(status="failed") == {failed}
    assert ids(name="ADD") == {added, other}
    assert ids(name="add", queue="default") == {added}
    html = dash.http.get("/tasks", params={"status": "failed"}).text
    assert failed in html and added not in html
    assert dash.http.get("/tasks", params={"status": "nope"}).status_code == 400
    assert dash.http.get("/api/tasks", params={"page": "0"}).status_code == 400


def test_the_task_list_pages_through_storage(dash: Dash) -> None:
    dash.call("enqueue_many", f"{JOBS}:add", [(i, i) for i in range(120)])
    first = dash.http.get("/api/tasks").json()
    third = dash.http.get("/api/tasks", params={"page": "3"}).json()
    assert len(first["tasks"]) == 50 and first["more"]
    assert len(third["tasks"]) == 20 and not third["more"]
    every = set()
    for page in ("1", "2", "3"):
        every |= {
            row["id"] for row in dash.http.get("/api/tasks", params={"page": page}).json()["tasks"]
        }
    assert len(every) == 120
    html = dash.http.get("/tasks", params={"page": "2"}).text
    assert "Older" in html and "Newer" in html


def test_the_task_page_shows_arguments_result_events_and_progress(dash: Dash) -> None:
    task_id = dash.submit(f"{JOBS}:report_progress")
    added = dash.submit(f"{JOBS}:add", 20, 22)
    dash.drain()

    html = dash.http.get(f"/tasks/{added}").text
    assert "20" in html and "22" in html and ">42</pre>" in html
    for event in ("enqueued", "executing", "complete"):
        assert f'class="ev-type">{event}<' in html

    detail = dash.http.get(f"/api/tasks/{task_id}").json()
    assert detail["status"] == "complete"
    assert detail["progress"]["done"] == 3 and detail["progress"]["total"] == 10
    page = dash.http.get(f"/tasks/{task_id}").text
    assert "<progress" in page and "step &lt;3&gt;" in page

    assert dash.http.get("/tasks/no-such-task").status_code == 404
    assert dash.http.get("/api/tasks/no-such-task").status_code == 404


def test_a_failed_task_shows_its_error_and_traceback(dash: Dash) -> None:
    task_id = dash.submit(f"{JOBS}:boom", "<b>bold</b>")
    dash.drain()
    html = dash.http.get(f"/tasks/{task_id}").text
    assert "builtins.ValueError" in html
    assert 'id="traceback"' in html and "Traceback (most recent call last)" in html
    assert "boom: &lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
    error = dash.http.get(f"/api/tasks/{task_id}").json()["result"]["error"]
    assert error["type"] == "builtins.ValueError" and "raise ValueError" in error["traceback"]


def test_task_data_is_escaped_everywhere(dash: Dash) -> None:
    script = "<script>alert('x')</script>"
    task_id = dash.submit(f"{JOBS}:add", script, script, queue="q<script>")
    for path in (f"/tasks/{task_id}", "/tasks", "/"):
        html = dash.http.get(path).text
        assert "<script>alert" not in html, path
        assert "&lt;script&gt;" in html, path
    response = dash.http.get(f"/tasks/{task_id}")
    assert "script-src" not in response.headers["content-security-policy"]  # 'self' only
    assert response.headers["content-security-policy"].startswith("default-src 'self'")


def test_a_dill_argument_is_not_unpickled(dash: Dash) -> None:
    from tests.dashboard.jobs import Opaque

    task_id = dash.call("submit", f"{JOBS}:take", (Opaque(1),))
    call = dash.http.get(f"/api/tasks/{task_id}").json()["call"]
    assert "not unpickled" in call["note"]


def test_schedules_and_workers_pages(dash: Dash) -> None:
    dash.call("schedule", f"{JOBS}:add", (1, 2), interval=3600, schedule_id="hourly-add")
    html = dash.http.get("/schedules").text
    assert "hourly-add" in html and "Pause" in html
    assert dash.http.get("/api/schedules").json()["schedules"][0]["id"] == "hourly-add"
    assert "No worker running" in dash.http.get("/workers").text
    assert dash.http.get("/api/workers").json() == {"workers": []}


def test_the_limits_page_shows_queue_and_task_name_limits(dash: Dash) -> None:
    assert "No queue is limited" in dash.http.get("/limits").text
    dash.call("limit_queue", "<b>mail</b>", rate_limit="30/m", max_concurrency=4)
    dash.call("limit_queue", "billing", max_concurrency=1)
    dash.submit(f"{JOBS}:add", 1, 2, queue="<b>mail</b>")
    limited = dash.submit(f"{JOBS}:report_progress", rate_limit="5/s", max_concurrency=2)

    data = dash.http.get("/api/limits").json()
    assert data["queues"] == [
        {"name": "<b>mail</b>", "rate_limit": "30/m", "max_concurrency": 4,
         "running": 0, "waiting": 1},
        {"name": "billing", "rate_limit": None, "max_concurrency": 1, "running": 0,
         "waiting": 0},
    ]  # fmt: skip
    assert data["tasks"] == [
        {"name": f"{JOBS}:report_progress", "short": "report_progress", "rate_limit": "5/s",
         "max_concurrency": 2},
    ]  # fmt: skip
    html = dash.http.get("/limits").text
    assert "&lt;b&gt;mail&lt;/b&gt;" in html and "<b>mail</b>" not in html  # escaped
    assert 'data-queue="billing"' in html and f'data-task="{JOBS}:report_progress"' in html
    assert "No task name is limited" not in html
    assert '<td data-field="rate_limit">5/s</td>' in html
    # The task page says what limit its name carries.
    assert "5/s · 2 at once" in dash.http.get(f"/tasks/{limited}").text

    dash.call("limit_queue", "billing")  # removed: gone from the page
    assert [q["name"] for q in dash.http.get("/api/limits").json()["queues"]] == ["<b>mail</b>"]


def test_live_workers_are_listed(tmp_path: Path) -> None:
    oq = make_client("sync", tmp_path)
    assert isinstance(oq, OmniQ)
    with oq:
        pool = oq.worker(worker_type="thread", queues="a,b")
        pool.start()
        try:
            with TestClient(create_app(oq)) as http:
                workers = http.get("/api/workers").json()["workers"]
                assert len(workers) == 1 and workers[0]["queues"] == ["a", "b"]
                assert workers[0]["id"] in http.get("/workers").text
        finally:
            pool.stop()


def test_the_stream_pushes_the_counts(dash: Dash) -> None:
    dash.submit(f"{JOBS}:add", 1, 1)
    with dash.http.stream("GET", "/api/stream", params={"limit": "2"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    events = [block for block in body.split("\n\n") if block.strip()]
    assert len(events) == 2
    first = events[0].splitlines()
    assert first[0] == "event: overview"
    data = json.loads(first[1].removeprefix("data: "))
    assert data["queues"]["default"]["counts"]["pending"] == 1
    assert "per_minute" in data["queues"]["default"]


def stream_events(dash: Dash, **params: str) -> list[tuple[str, dict[str, Any]]]:
    """The events of ``/api/stream`` with ``params`` (and ``limit``), parsed."""
    with dash.http.stream("GET", "/api/stream", params=params) as response:
        assert response.status_code == 200
        body = response.read().decode()
    events = []
    for block in body.split("\n\n"):
        if block.strip():
            kind, data = block.splitlines()
            events.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def test_the_stream_pushes_the_task_list_page_under_its_filters(dash: Dash) -> None:
    added = dash.submit(f"{JOBS}:add", 1, 1)
    dash.submit(f"{JOBS}:add", 2, 2, queue="mail")
    events = stream_events(dash, view="tasks", queue="default", status="pending", limit="1")
    assert [kind for kind, _ in events] == ["tasks"]
    data = events[0][1]
    assert [row["id"] for row in data["tasks"]] == [added]
    assert data["page"] == 1 and not data["more"] and not data["capped"]
    # Page 2 of 120 tasks: the rows the page shows, and whether older ones follow.
    dash.call("enqueue_many", f"{JOBS}:add", [(i, i) for i in range(120)])
    second = stream_events(dash, view="tasks", page="2", limit="1")[0][1]
    assert len(second["tasks"]) == 50 and second["page"] == 2 and second["more"]
    paged = dash.http.get("/api/tasks", params={"page": "2"}).json()["tasks"]
    assert [row["id"] for row in second["tasks"]] == [row["id"] for row in paged]
    refused = dash.http.get("/api/stream", params={"view": "tasks", "status": "nope"})
    assert refused.status_code == 400 and "nope" in refused.text
    assert dash.http.get("/api/stream", params={"view": "queues"}).status_code == 400


def test_the_stream_pushes_the_live_workers(tmp_path: Path) -> None:
    oq = make_client("sync", tmp_path)
    assert isinstance(oq, OmniQ)
    with oq, TestClient(create_app(oq)) as http:
        dash = Dash(oq, http)
        assert stream_events(dash, view="workers", limit="1") == [("workers", {"workers": []})]
        pool = oq.worker(worker_type="thread", queues="a,b")
        pool.start()
        try:
            [(kind, data)] = stream_events(dash, view="workers", limit="1")
            assert kind == "workers" and [w["queues"] for w in data["workers"]] == [["a", "b"]]
        finally:
            pool.stop()


def test_list_pages_carry_their_stream_with_filters_and_page(dash: Dash) -> None:
    html = dash.http.get("/tasks", params={"queue": "mail", "status": "failed", "page": "2"}).text
    stream = re.search(r'id="task-list" data-stream="([^"]+)"', html)
    assert stream is not None
    assert stream.group(1).replace("&amp;", "&") == (
        "/api/stream?queue=mail&status=failed&view=tasks&page=2"
    )
    assert (
        'id="worker-list" data-stream="/api/stream?view=workers"' in dash.http.get("/workers").text
    )


def test_a_listing_past_the_cap_says_so_on_every_page(dash: Dash) -> None:
    from omniq.dashboard._views import MAX_LISTED

    dash.call("enqueue_many", f"{JOBS}:add", [(i, i) for i in range(MAX_LISTED + 1)])
    dash.submit(f"{JOBS}:add", 0, 0, queue="mail")
    notice = "More than 5,000 tasks match: showing the newest 5,000"
    for page in ("1", "2", "100"):
        assert notice in dash.http.get("/tasks", params={"page": page}).text
    assert dash.http.get("/api/tasks").json()["capped"] is True
    last = dash.http.get("/api/tasks", params={"page": "100"}).json()
    assert len(last["tasks"]) == 50 and not last["more"]  # the 5,001st is not reached
    # A filter that narrows below the cap lists everything, without the notice.
    narrowed = dash.http.get("/tasks", params={"queue": "mail"}).text
    assert notice not in narrowed and 'id="cap-notice"' not in narrowed
    assert dash.http.get("/api/tasks", params={"queue": "mail"}).json()["capped"] is False
    # A name filter searches the newest 2,000 and says so.
    named = dash.http.get("/tasks", params={"name": "add"}).text
    assert "The name filter searched the newest 2,000 tasks only" in named


def test_static_files_are_our_own(dash: Dash) -> None:
    css = dash.http.get("/static/dashboard.css")
    js = dash.http.get("/static/dashboard.js")
    assert css.status_code == js.status_code == 200
    html = dash.http.get("/").text
    assert "http://" not in re.sub(r'href="http://testserver', "", html.split("<body")[0])


# -- actions ----------------------------------------------------------------------------


def test_cancel_and_requeue_a_task(dash: Dash) -> None:
    waiting = dash.submit(f"{JOBS}:add", 1, 1)
    token = dash.csrf()
    response = dash.post(f"/tasks/{waiting}/cancel", token)
    assert response.status_code == 303
    assert response.headers["location"].endswith(f"/tasks/{waiting}?notice=cancelled")
    assert status_of(dash, waiting) is TaskStatus.CANCELLED
    assert "Task cancelled." in dash.http.get(response.headers["location"]).text

    response = dash.post(f"/tasks/{waiting}/requeue", token)
    assert response.headers["location"].endswith("notice=requeued")
    assert status_of(dash, waiting) is TaskStatus.PENDING
    dash.drain()
    assert status_of(dash, waiting) is TaskStatus.COMPLETE
    response = dash.post(f"/tasks/{waiting}/requeue", token)
    assert response.headers["location"].endswith("notice=not-requeued")


def test_requeue_every_failed_task_of_a_queue(dash: Dash) -> None:
    failed = [dash.submit(f"{JOBS}:boom", str(i), queue="jobs") for i in range(3)]
    elsewhere = dash.submit(f"{JOBS}:boom", "other", queue="other")
    dash.drain("jobs,other")
    html = dash.http.get("/").text
    assert "Requeue failed" in html
    response = dash.post("/queues/jobs/requeue-failed", dash.csrf())
    assert response.status_code == 303
    assert [status_of(dash, t) for t in failed] == [TaskStatus.PENDING] * 3
    assert status_of(dash, elsewhere) is TaskStatus.FAILED


def test_pause_resume_and_remove_a_schedule(dash: Dash) -> None:
    dash.call("schedule", f"{JOBS}:add", (1, 2), interval=60, schedule_id="s1")
    token = dash.csrf("/schedules")
    assert dash.post("/schedules/s1/pause", token).status_code == 303
    assert dash.call("get_schedule", "s1").paused
    assert "Resume" in dash.http.get("/schedules").text
    dash.post("/schedules/s1/resume", token)
    assert not dash.call("get_schedule", "s1").paused
    response = dash.post("/schedules/s1/remove", token)
    assert response.headers["location"].endswith("/schedules?notice=removed")
    assert dash.call("get_schedule", "s1") is None
    response = dash.post("/schedules/s1/remove", token)
    assert response.headers["location"].endswith("notice=unknown-schedule")
    assert dash.post("/schedules/s1/explode", token).status_code == 404


def test_actions_refuse_cross_site_requests(dash: Dash) -> None:
    task_id = dash.submit(f"{JOBS}:add", 1, 1)
    token = dash.csrf()
    cookie = dash.http.cookies.get("omniq_csrf")
    assert cookie == token
    assert dash.post(f"/tasks/{task_id}/cancel").status_code == 403  # no token
    assert dash.post(f"/tasks/{task_id}/cancel", "x" * 43).status_code == 403  # wrong one
    refused = dash.post(f"/tasks/{task_id}/cancel", token, **{"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403
    dash.http.cookies.clear()  # another site's form: the token, but not our cookie
    assert dash.post(f"/tasks/{task_id}/cancel", token).status_code == 403
    assert dash.http.get(f"/tasks/{task_id}/cancel").status_code == 404  # POST only
    assert status_of(dash, task_id) is TaskStatus.PENDING


def test_the_csrf_cookie_is_strict_and_http_only(dash: Dash) -> None:
    response = dash.http.get("/")
    cookie = response.headers["set-cookie"].lower()
    assert "samesite=strict" in cookie and "httponly" in cookie and "path=/" in cookie


def test_read_only_shows_everything_and_refuses_actions(tmp_path: Path) -> None:
    oq = make_client("sync", tmp_path)
    assert isinstance(oq, OmniQ)
    with oq:
        task_id = oq.submit(f"{JOBS}:boom", ("x",))
        oq.worker(worker_type="thread").run(burst=True)
        oq.schedule(f"{JOBS}:add", (1, 2), interval=60, schedule_id="s1")
        with TestClient(create_app(oq, read_only=True)) as http:
            for path in ("/", f"/tasks/{task_id}", "/schedules", "/tasks?status=failed"):
                html = http.get(path).text
                assert "read-only" in html
                assert 'method="post"' not in html, path
            assert "Traceback" in http.get(f"/tasks/{task_id}").text
            token = http.cookies.get("omniq_csrf")
            for path in (
                f"/tasks/{task_id}/requeue",
                "/queues/default/requeue-failed",
                "/schedules/s1/pause",
            ):
                response = http.post(path, data={"csrf": token or ""}, follow_redirects=False)
                assert response.status_code == 403, path
        assert oq.get_task(task_id).status is TaskStatus.FAILED
        assert not oq.get_schedule("s1").paused


# -- auth -------------------------------------------------------------------------------


def test_basic_auth(tmp_path: Path) -> None:
    oq = make_client("sync", tmp_path)
    with TestClient(create_app(oq, auth="admin:s3cret")) as http:
        refused = http.get("/")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert http.get("/", auth=("admin", "wrong")).status_code == 401
        assert http.get("/", auth=("other", "s3cret")).status_code == 401
        assert http.get("/api/overview", auth=("admin", "wrong")).status_code == 401
        assert http.get("/static/dashboard.css").status_code == 401
        assert http.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
        assert http.get("/", headers={"Authorization": "Bearer x"}).status_code == 401
        assert http.get("/", auth=("admin", "s3cret")).status_code == 200
    oq.close()


def test_basic_auth_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    oq = make_client("sync", tmp_path)
    monkeypatch.setenv("OMNIQ_DASHBOARD_AUTH", "ops:pass:with:colons")
    with TestClient(create_app(oq)) as http:
        assert http.get("/").status_code == 401
        assert http.get("/", auth=("ops", "pass:with:colons")).status_code == 200
    monkeypatch.setenv("OMNIQ_DASHBOARD_AUTH", "no-colon")
    with pytest.raises(ConfigError, match="OMNIQ_DASHBOARD_AUTH"):
        create_app(oq)
    oq.close()


@pytest.mark.parametrize("bad", ["nocolon", ":pw", "user:", ""])
def test_a_bad_auth_is_a_clear_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="user:password"):
        create_app(make_client("async", tmp_path), auth=bad)


def test_create_app_refuses_what_is_not_a_client() -> None:
    with pytest.raises(ConfigError, match="expected an OmniQ or AsyncOmniQ"):
        create_app("redis://localhost")  # type: ignore[arg-type]


# -- mounting ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_links_work_under_a_prefix(tmp_path: Path, kind: str) -> None:
    oq = make_client(kind, tmp_path)
    outer = Starlette(routes=[Mount("/ops/queue", app=create_app(oq))])
    with TestClient(outer) as http:
        dash = Dash(oq, http)
        task_id = dash.submit(f"{JOBS}:add", 1, 2)
        first = http.get("/ops/queue/")
        assert "Path=/ops/queue;" in first.headers["set-cookie"]  # sent to the dashboard only
        html = first.text
        links = re.findall(r'(?:href|action|data-stream|data-tasks-url)="([^"]+)"', html)
        assert links and all(link.startswith("/ops/queue/") for link in links), links
        for link in links:
            if link.endswith("/api/stream"):
                link += "?limit=1"  # else it streams for ever
            assert http.get(link.replace("&amp;", "&")).status_code in (200, 405), link
        task_page = http.get(f"/ops/queue/tasks/{task_id}")
        assert 'data-api="/ops/queue/api/tasks/' in task_page.text
        token = dash.csrf(f"/ops/queue/tasks/{task_id}")
        response = dash.post(f"/ops/queue/tasks/{task_id}/cancel", token)
        assert response.status_code == 303
        assert response.headers["location"] == f"/ops/queue/tasks/{task_id}?notice=cancelled"
        if isinstance(oq, AsyncOmniQ):
            http.portal.call(oq.close)
    if isinstance(oq, OmniQ):
        oq.close()
