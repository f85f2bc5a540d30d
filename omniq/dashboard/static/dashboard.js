// OmniQ dashboard: live updates over server-sent events (overview, task list, workers)
// and a light poll of the task page. Every value goes in through textContent, never as
// HTML.
"use strict";

(function () {
  const body = document.body;
  const live = document.getElementById("live");
  const FINAL = ["complete", "failed", "cancelled", "expired"];

  function setLive(on) {
    if (live) live.classList.toggle("on", on);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 10) return seconds.toFixed(1) + " s";
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    return Math.floor(seconds / 86400) + " d " + Math.floor((seconds % 86400) / 3600) + " h";
  }

  function tasksLink(base, queue, status) {
    const params = new URLSearchParams();
    params.set("queue", queue);
    if (status) params.set("status", status);
    return base + "?" + params.toString();
  }

  function rowFor(table, name) {
    for (const row of table.tBodies[0].rows) {
      if (row.dataset.queue === name) return row;
    }
    const template = document.getElementById("queue-row");
    const row = template.content.firstElementChild.cloneNode(true);
    const base = table.dataset.tasksUrl;
    row.dataset.queue = name;
    const link = row.querySelector(".qname");
    link.textContent = name;
    link.href = tasksLink(base, name, null);
    for (const cell of row.querySelectorAll("a.count")) {
      cell.href = tasksLink(base, name, cell.dataset.status);
    }
    const empty = table.querySelector(".empty-row");
    if (empty) empty.remove();
    // Keep the rows in name order, as the server renders them.
    const next = Array.from(table.tBodies[0].rows).find((r) => r.dataset.queue > name);
    table.tBodies[0].insertBefore(row, next || null);
    return row;
  }

  function showOverview(data) {
    for (const [status, count] of Object.entries(data.totals)) {
      const cell = document.querySelector('[data-total="' + status + '"]');
      if (cell) cell.textContent = count;
    }
    const workers = document.getElementById("workers-count");
    if (workers && data.workers !== undefined) workers.textContent = data.workers;
    const table = document.getElementById("queues");
    if (table) {
      for (const [name, queue] of Object.entries(data.queues)) {
        const row = rowFor(table, name);
        for (const cell of row.querySelectorAll("a.count")) {
          const count = queue.counts[cell.dataset.status] || 0;
          cell.textContent = count;
          cell.classList.toggle("zero", count === 0);
        }
        const field = (key) => row.querySelector('[data-field="' + key + '"]');
        if (queue.per_minute !== undefined) field("per_minute").textContent = queue.per_minute;
        if (queue.failure_rate !== undefined) {
          field("failure_rate").textContent =
            queue.failure_rate === null ? "—" : queue.failure_rate + " %";
        }
        if (queue.oldest_wait !== undefined) {
          field("oldest_wait").textContent =
            (queue.oldest_exact ? "" : "> ") + duration(queue.oldest_wait);
        }
      }
    }
    const updated = document.getElementById("updated");
    if (updated) updated.textContent = new Date(data.at).toLocaleTimeString();
  }

  function streamOverview() {
    const source = new EventSource(body.dataset.stream);
    source.addEventListener("overview", (event) => {
      setLive(true);
      showOverview(JSON.parse(event.data));
    });
    source.addEventListener("error", () => setLive(false));
  }

  function ago(iso) {
    if (!iso) return "—";
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    return seconds < 1 ? "just now" : duration(seconds) + " ago";
  }

  function setTime(el, iso) {
    el.dateTime = iso || "";
    el.title = iso || "";
    el.textContent = ago(iso);
  }

  function fromTemplate(id) {
    return document.getElementById(id).content.firstElementChild.cloneNode(true);
  }

  // A list page follows its stream: rows are rebuilt when what the server sends changes
  // (same filters and page as the page shows), and the times they show age each tick.
  function streamList(table, eventName, render) {
    let last = null;
    const source = new EventSource(table.dataset.stream);
    source.addEventListener(eventName, (event) => {
      setLive(true);
      if (event.data !== last) {
        last = event.data;
        render(table, JSON.parse(event.data));
      } else {
        for (const el of table.tBodies[0].querySelectorAll("time[datetime]")) {
          el.textContent = ago(el.dateTime);
        }
      }
    });
    source.addEventListener("error", () => setLive(false));
  }

  function progressCell(cell, progress) {
    if (!progress) return;
    const box = document.createElement("div");
    box.className = "progress";
    const bar = document.createElement("progress");
    if (progress.total) {
      bar.max = progress.total;
      bar.value = progress.done;
    }
    const text = document.createElement("span");
    text.className = "progress-text";
    let line = String(progress.done);
    if (progress.total) line += " / " + progress.total;
    if (progress.percent !== null) line += " (" + Math.round(progress.percent) + " %)";
    if (progress.message) line += " · " + progress.message;
    text.textContent = line;
    box.append(bar, " ", text);
    cell.append(box);
  }

  function showTasks(table, data) {
    const base = table.dataset.tasksUrl;
    const rows = data.tasks.map((task) => {
      const row = fromTemplate("task-row");
      row.dataset.id = task.id;
      const href = base + "/" + encodeURIComponent(task.id);
      const name = row.querySelector(".tname");
      name.textContent = task.name;
      name.title = task.func;
      name.href = href;
      const queue = row.querySelector(".tqueue");
      queue.textContent = task.queue;
      queue.href = base + "?" + new URLSearchParams({ queue: task.queue }).toString();
      const pill = row.querySelector(".pill");
      pill.textContent = task.status;
      pill.classList.add("s-" + task.status);
      row.querySelector(".tattempts").textContent = task.attempts;
      progressCell(row.querySelector(".tprogress"), task.progress);
      setTime(row.querySelector(".tcreated"), task.created_at);
      setTime(row.querySelector(".tupdated"), task.updated_at);
      const id = row.querySelector(".tid");
      id.textContent = task.id.length > 14 ? "…" + task.id.slice(-12) : task.id;
      id.title = task.id;
      id.href = href;
      return row;
    });
    if (!rows.length) {
      const empty = document.createElement("tr");
      empty.className = "empty-row";
      const cell = document.createElement("td");
      cell.colSpan = 8;
      cell.className = "empty";
      cell.textContent = "No tasks match.";
      empty.append(cell);
      rows.push(empty);
    }
    table.tBodies[0].replaceChildren(...rows);
    const older = document.getElementById("older");
    if (older) older.hidden = !data.more;
  }

  function showWorkers(table, data) {
    const rows = data.workers.map((worker) => {
      const row = fromTemplate("worker-row");
      row.dataset.id = worker.id;
      row.querySelector(".wid").textContent = worker.id;
      row.querySelector(".whost").textContent = worker.hostname;
      row.querySelector(".wpid").textContent = worker.pid;
      row.querySelector(".wtype").textContent = worker.worker_type;
      const bar = row.querySelector("progress");
      bar.max = worker.concurrency;
      bar.value = worker.running;
      row.querySelector(".wbusy").textContent = worker.running + " / " + worker.concurrency;
      row.querySelector(".wqueues").textContent = worker.queues.join(", ");
      setTime(row.querySelector(".wstarted"), worker.started_at);
      setTime(row.querySelector(".wseen"), worker.last_seen);
      return row;
    });
    if (!rows.length) rows.push(fromTemplate("no-workers"));
    table.tBodies[0].replaceChildren(...rows);
  }

  function watchTask(panel) {
    const shown = panel.dataset.status;
    if (FINAL.includes(shown)) {
      setLive(true);
      return;
    }
    async function poll() {
      try {
        const response = await fetch(panel.dataset.api, { headers: { Accept: "application/json" } });
        if (response.ok) {
          setLive(true);
          const task = await response.json();
          if (task.status !== shown || task.progress) {
            // A new status (or progress) brings a new page: its result, error, events.
            if (task.status !== shown) return window.location.reload();
            updateProgress(task.progress);
          }
        } else {
          setLive(false);
        }
      } catch (err) {
        setLive(false);
      }
      window.setTimeout(poll, 1000);
    }
    window.setTimeout(poll, 1000);
  }

  function updateProgress(progress) {
    const bar = document.querySelector("#task progress");
    const text = document.querySelector("#task .progress-text");
    if (!bar || !text) return window.location.reload();
    if (progress.total) {
      bar.max = progress.total;
      bar.value = progress.done;
    }
    let line = String(progress.done);
    if (progress.total) line += " / " + progress.total;
    if (progress.percent !== null) line += " (" + Math.round(progress.percent) + " %)";
    if (progress.message) line += " · " + progress.message;
    text.textContent = line;
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (body.dataset.page === "overview") streamOverview();
    const tasks = document.getElementById("task-list");
    if (tasks) streamList(tasks, "tasks", showTasks);
    const workers = document.getElementById("worker-list");
    if (workers) streamList(workers, "workers", showWorkers);
    const panel = document.getElementById("task");
    if (panel) watchTask(panel);
  });
})();
