"""The dashboard (SPEC §8) on every backend: its pages and actions over an AsyncOmniQ
called on the test's own loop (through httpx2's ASGI transport)."""

from __future__ import annotations

import re

import httpx2

from omniq import AsyncOmniQ, TaskStatus
from omniq.dashboard import create_app

JOBS = "tests.dashboard.jobs"


async def test_the_dashboard_reads_and_acts_on_every_backend(oq: AsyncOmniQ) -> None:
    ok = await oq.submit(f"{JOBS}:add", ("<script>", "x"))
    bad = await oq.submit(f"{JOBS}:boom", ("disk full",), queue="jobs")
    await oq.schedule(f"{JOBS}:add", (1, 2), interval=3600, schedule_id="hourly")
    await oq.worker(worker_type="async", queues="default,jobs").run(burst=True)

    transport = httpx2.ASGITransport(app=create_app(oq))
    async with httpx2.AsyncClient(transport=transport, base_url="http://dash") as http:
        overview = (await http.get("/api/overview")).json()
        assert overview["queues"]["default"]["counts"]["complete"] == 1
        assert overview["queues"]["jobs"]["counts"]["failed"] == 1
        assert overview["queues"]["jobs"]["failure_rate"] == 100.0

        failed = (await http.get("/api/tasks", params={"status": "failed"})).json()["tasks"]
        assert [row["id"] for row in failed] == [bad]
        named = (await http.get("/api/tasks", params={"name": "add"})).json()["tasks"]
        assert [row["id"] for row in named] == [ok]

        page = (await http.get(f"/tasks/{bad}")).text
        assert "ValueError: boom: disk full" in page and 'id="traceback"' in page
        page = (await http.get(f"/tasks/{ok}")).text
        assert "&#39;&lt;script&gt;&#39;" in page and "<script>" not in page.split("<body")[1]
        events = (await http.get(f"/api/tasks/{ok}")).json()["events"]
        assert [e["type"] for e in events] == ["enqueued", "executing", "complete"]

        assert "hourly" in (await http.get("/schedules")).text
        assert (await http.get("/api/workers")).json() == {"workers": []}

        html = (await http.get("/")).text
        token = re.search(r'name="csrf" value="([^"]+)"', html)
        assert token is not None
        response = await http.post(f"/tasks/{bad}/requeue", data={"csrf": token.group(1)})
        assert response.status_code == 303
        task = await oq.get_task(bad)
        assert task is not None and task.status is TaskStatus.PENDING
        response = await http.post("/schedules/hourly/pause", data={"csrf": token.group(1)})
        assert response.status_code == 303
        schedule = await oq.get_schedule("hourly")
        assert schedule is not None and schedule.paused
