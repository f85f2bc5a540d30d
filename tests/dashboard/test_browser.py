"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, against ``omniq dashboard`` and ``omniq worker``
processes.

With ``OMNIQ_TEST_SCREENSHOT`` set, the overview test saves docs/dashboard.png (and the
failed task's page docs/dashboard-task.png) for the README.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from omniq import TaskStatus
from tests.conftest import REPO_ROOT
from tests.dashboard._served import dashboard, worker, write_app

JOBS = "tests.dashboard.jobs"
WAIT = 30  # seconds a page may take to show what a test waits for


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or ((Path("/usr/bin") / name).exists() and f"/usr/bin/{name}")
        if found:
            return str(found)
    pytest.fail(f"{names[0]} is not installed: apt-get install chromium chromium-driver")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1440,900")
    # The network log: what status the browser got (a refused login shows no page).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    # A page that reloads itself (the task page, as its task's status changes) can drop
    # an element between finding it and reading it: look again at the next poll.
    return WebDriverWait(
        driver, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )


def text_of(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_the_overview_shows_tasks_enqueued_after_it_opened(
    browser: WebDriver, tmp_path: Path
) -> None:
    oq = write_app(tmp_path)
    with oq, dashboard(tmp_path) as base:
        oq.submit(f"{JOBS}:add", (1, 2))
        browser.get(f"{base}/")
        assert text_of(browser, '[data-total="pending"]') == "1"
        browser.execute_script("window.openedOnce = true")  # gone if the page reloads
        ids = oq.enqueue_many(f"{JOBS}:add", [(i, i) for i in range(3)], queue="webhooks")
        assert len(ids) == 3

        wait(browser).until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, 'tr[data-queue="webhooks"]')
                and text_of(d, 'tr[data-queue="webhooks"] a[data-status="pending"]') == "3"
            )
        )
        assert text_of(browser, '[data-total="pending"]') == "4"
        assert browser.execute_script("return window.openedOnce") is True
        assert "on" in str(browser.find_element(By.ID, "live").get_attribute("class"))
        link = browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="webhooks"] a.qname')
        assert str(link.get_attribute("href")).endswith("/tasks?queue=webhooks")

        if os.environ.get("OMNIQ_TEST_SCREENSHOT"):
            _screenshots(browser, base, oq, tmp_path)


def test_the_task_list_shows_tasks_enqueued_after_it_opened(
    browser: WebDriver, tmp_path: Path
) -> None:
    oq = write_app(tmp_path)
    with oq, dashboard(tmp_path) as base:
        first = oq.submit(f"{JOBS}:add", (1, 2))
        browser.get(f"{base}/tasks?status=pending")
        # Row ids are read in one script: the live list may rebuild its rows between a
        # lookup and a read of each (a stale element; seen in CI).
        assert row_ids(browser) == [first]
        browser.execute_script("window.openedOnce = true")  # gone if the page reloads
        done = oq.submit(f"{JOBS}:add", (3, 4), queue="elsewhere")
        oq.worker(worker_type="thread", queues="elsewhere").run(burst=True)  # not pending
        later = oq.submit(f"{JOBS}:add", ("<b>x</b>", 1), queue="<i>q</i>")

        wait(browser).until(lambda d: row_ids(d) == [later, first])
        assert done not in browser.page_source  # the status filter still holds
        assert browser.execute_script("return window.openedOnce") is True

        def later_row_shown(d: WebDriver) -> bool:
            row = d.find_element(By.CSS_SELECTOR, f'tr[data-id="{later}"]')
            link = row.find_element(By.CSS_SELECTOR, ".tname")
            return (
                row.find_element(By.CSS_SELECTOR, ".tqueue").text == "<i>q</i>"  # as text
                and row.find_element(By.CSS_SELECTOR, ".pill").text == "pending"
                and link.text == "add"
                and str(link.get_attribute("href")).endswith(f"/tasks/{later}")
            )

        wait(browser).until(later_row_shown)  # stale rows looked up again
        assert "on" in str(browser.find_element(By.ID, "live").get_attribute("class"))


def test_the_workers_page_shows_a_worker_started_after_it_opened(
    browser: WebDriver, tmp_path: Path
) -> None:
    write_app(tmp_path).close()
    with dashboard(tmp_path) as base:
        browser.get(f"{base}/workers")
        assert "No worker running" in text_of(browser, "#worker-list")
        browser.execute_script("window.openedOnce = true")
        with worker(tmp_path) as proc:

            def worker_shown(d: WebDriver) -> bool:
                # Looked up afresh at each poll: the live list rebuilds its rows as the
                # worker's heartbeat changes them (a stale element otherwise).
                found = d.find_elements(By.CSS_SELECTOR, "#worker-list tr[data-id]")
                return bool(found) and [
                    found[0].find_element(By.CSS_SELECTOR, css).text
                    for css in (".wpid", ".wtype", ".wqueues")
                ] == [str(proc.pid), "thread", "default"]

            wait(browser).until(worker_shown)
        # Stopped: it deregisters, and the page says no worker runs.
        wait(browser).until(lambda d: "No worker running" in text_of(d, "#worker-list"))
        assert browser.execute_script("return window.openedOnce") is True


def row_ids(driver: WebDriver) -> list[str]:
    """The ids of the task rows the list shows, read at once in the page."""
    ids = driver.execute_script(
        "return Array.from(document.querySelectorAll('#task-list tbody tr[data-id]'),"
        " r => r.dataset.id)"
    )
    return [str(i) for i in ids]


def _screenshots(browser: WebDriver, base: str, oq: object, directory: Path) -> None:
    """A busy-looking system for the README: several queues, some done, some failed,
    a worker alive."""
    from omniq import OmniQ

    assert isinstance(oq, OmniQ)
    people = [(f"user{i}@example.com",) for i in range(52)]
    oq.enqueue_many(f"{JOBS}:send_email", people[:40], queue="emails")
    oq.enqueue_many(
        f"{JOBS}:build_report", [(f"2026-{m:02}",) for m in range(1, 13)], queue="reports"
    )
    oq.enqueue_many(
        f"{JOBS}:charge_card", [(f"INV-{i}",) for i in (1041, 1042, 1057)], queue="billing"
    )
    oq.enqueue_many(f"{JOBS}:add", [(i, i) for i in range(17)], queue="billing")
    oq.worker(worker_type="thread", queues="emails,billing,reports").run(burst=True)
    oq.enqueue_many(f"{JOBS}:send_email", people[40:], queue="emails")
    oq.enqueue_many(
        f"{JOBS}:build_report", [(f"2027-{m:02}",) for m in range(1, 9)], queue="reports"
    )
    oq.enqueue_many(
        f"{JOBS}:resize_image", [(f"img{i}.png",) for i in range(7)], queue="images", delay=3600
    )
    oq.schedule(
        f"{JOBS}:build_report", ("daily",), cron="0 7 * * mon-fri", schedule_id="daily-report"
    )
    failed = oq.list_tasks(queue="billing", status=TaskStatus.FAILED, limit=1)[0]
    with worker(directory):
        browser.get(f"{base}/")
        wait(browser).until(lambda d: text_of(d, "#workers-count") == "1")
        wait(browser).until(lambda d: text_of(d, '[data-total="complete"]') != "0")
        browser.save_screenshot(str(REPO_ROOT / "docs" / "dashboard.png"))
    browser.get(f"{base}/tasks/{failed.id}")
    browser.save_screenshot(str(REPO_ROOT / "docs" / "dashboard-task.png"))


def test_a_failed_tasks_traceback_is_shown(browser: WebDriver, tmp_path: Path) -> None:
    oq = write_app(tmp_path)
    with oq, dashboard(tmp_path) as base:
        task_id = oq.submit(f"{JOBS}:boom", ("disk full",))
        oq.worker(worker_type="thread").run(burst=True)
        browser.get(f"{base}/tasks/{task_id}")
        traceback = text_of(browser, "#traceback")
        assert traceback.startswith("Traceback (most recent call last)")
        assert "ValueError: boom: disk full" in traceback
        assert text_of(browser, ".error-line") == "builtins.ValueError: boom: disk full"


def test_requeue_from_the_task_page_runs_it_again(browser: WebDriver, tmp_path: Path) -> None:
    marker = tmp_path / "second-run"
    oq = write_app(tmp_path)
    with oq, dashboard(tmp_path) as base:
        task_id = oq.submit(f"{JOBS}:fail_until_marked", (str(marker),))
        oq.worker(worker_type="thread").run(burst=True)
        assert oq.get_task(task_id).status is TaskStatus.FAILED
        marker.touch()
        with worker(tmp_path):
            browser.get(f"{base}/tasks/{task_id}")
            assert text_of(browser, "h1 .pill") == "failed"
            browser.find_element(By.XPATH, "//button[text()='Requeue']").click()
            # The task page follows the task (it reloads as its status changes).
            wait(browser).until(lambda d: text_of(d, "h1 .pill") == "complete")
            assert text_of(browser, "#result") == "'second run ok'"
            events = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".ev-type")]
            assert "requeued" in events and events[-1] == "complete"
        assert oq.get_result(task_id).result == "second run ok"


def test_the_task_page_follows_a_running_tasks_progress(browser: WebDriver, tmp_path: Path) -> None:
    marker = tmp_path / "go-on"
    oq = write_app(tmp_path)
    with oq, dashboard(tmp_path) as base, worker(tmp_path):
        task_id = oq.submit(f"{JOBS}:step_until_marked", (str(marker),))
        browser.get(f"{base}/tasks/{task_id}")
        wait(browser).until(lambda d: "1 / 4" in text_of(d, "#task"))
        assert text_of(browser, "h1 .pill") == "running"
        assert "step 1" in text_of(browser, "#task .progress-text")
        marker.touch()
        wait(browser).until(lambda d: text_of(d, "h1 .pill") == "complete")
        assert "4 / 4 (100 %) · all done" in text_of(browser, "#task .progress-text")
        assert text_of(browser, "#result") == "'stepped'"


def test_basic_auth_refuses_a_wrong_password(browser: WebDriver, tmp_path: Path) -> None:
    write_app(tmp_path).close()
    with dashboard(tmp_path, "--auth", "admin:s3cret") as base:
        host = base.removeprefix("http://")
        browser.get_log("performance")  # drop what earlier pages logged
        browser.get(f"http://admin:wrong@{host}/")
        assert f"http://admin:wrong@{host}/" in statuses(browser, 401)
        assert not browser.find_elements(By.ID, "queues")
        browser.get(f"http://admin:s3cret@{host}/")
        assert browser.find_element(By.ID, "queues")
        assert f"http://admin:s3cret@{host}/" in statuses(browser, 200)


def statuses(driver: WebDriver, status: int) -> set[str]:
    """The URLs the browser received ``status`` for since the last call."""
    found = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            if response["status"] == status:
                found.add(response["url"])
    return found


def test_an_argument_with_a_script_tag_shows_as_text(browser: WebDriver, tmp_path: Path) -> None:
    script = "<script>window.ran = true; alert('x')</script>"
    image = '<img src=x onerror="window.ran = true">'
    oq = write_app(tmp_path)
    with oq, dashboard(tmp_path) as base:
        task_id = oq.submit(f"{JOBS}:add", (script, image), queue="<b>q</b>")
        for path in (f"/tasks/{task_id}", "/tasks", "/"):
            browser.get(f"{base}{path}")
            with pytest.raises(NoAlertPresentException):
                browser.switch_to.alert.text  # noqa: B018 - raises when no alert is open
            assert browser.execute_script("return window.ran === undefined") is True
        browser.get(f"{base}/tasks/{task_id}")
        shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "pre.value")]
        assert shown == [repr(script), repr(image)]
        assert text_of(browser, ".crumbs a") == "<b>q</b>"
