// OmniQ dashboard: live updates over server-sent events (overview) and a light poll of
// the task page. Every value goes in through textContent, never as HTML.
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
    const panel = document.getElementById("task");
    if (panel) watchTask(panel);
  });
})();
