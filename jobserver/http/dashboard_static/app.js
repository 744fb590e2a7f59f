// jobserver dashboard: plain JavaScript against the server's own HTTP API, no build step.
// Every API call goes to a URL relative to this page's directory, so the page works when the
// API is mounted under a prefix (the page at /jobs-api/ calls /jobs-api/jobs).
"use strict";

(() => {
  const BASE = location.pathname.replace(/[^/]*$/, "");
  const TOKEN_KEY = "jobserver.token:" + BASE;
  const POLL_MS = 2000;
  const PAGE = 50;
  const MAX_PAGE = 1000;
  const CHART_POINTS = 60; // two minutes at one poll every 2 s
  const SPARK_POINTS = 30;
  const STATES = ["pending", "running", "succeeded", "failed", "cancelled"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  // -- small DOM helpers ---------------------------------------------------------------------
  const $ = (selector) => document.querySelector(selector);

  /** An element: el("td", {class: "num", title: "..."}, "text", childNode, ...). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  // -- formatting ----------------------------------------------------------------------------
  const pad = (n) => String(n).padStart(2, "0");

  /** This browser's zone as an offset, e.g. UTC+01:00 (UTC for none). */
  function zoneOf(d) {
    const minutes = -d.getTimezoneOffset();
    if (minutes === 0) return "UTC";
    const sign = minutes > 0 ? "+" : "-";
    const abs = Math.abs(minutes);
    return `UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  }

  /** A time in this browser's zone, the zone said: "14:03:12 UTC+01:00" (today) or with the date. */
  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const now = new Date();
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zoneOf(d)}`;
    if (d.toDateString() === now.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, seconds);
    if (s < 1) return "<1 s";
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} m ${pad(Math.floor(s % 60))} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} m`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function fmtRate(rate) {
    if (!rate) return "0";
    return rate < 10 ? rate.toFixed(1) : String(Math.round(rate));
  }

  function json(value) {
    return JSON.stringify(value, null, 2);
  }

  function badge(status) {
    return el("span", { class: `badge s-${status}` }, status);
  }

  function timeCell(iso) {
    return el("td", { class: "time", title: iso || "" }, fmtTime(iso));
  }

  // -- alerts --------------------------------------------------------------------------------
  const alerts = new Map();

  /** Show a message in the alert bar; a later one with the same key replaces it. */
  function showAlert(key, message, kind = "error", extra = null) {
    clearAlert(key);
    const box = el(
      "div",
      { class: `alert ${kind}`, role: kind === "error" ? "alert" : "status", dataset: { key } },
      el("span", { class: "alert-text" }, message),
      extra,
      el("button", { type: "button", class: "ghost close", "aria-label": "Dismiss", onclick: () => clearAlert(key) }, "×"),
    );
    $("#alerts").append(box);
    const entry = { box, timer: null };
    if (kind !== "error") entry.timer = setTimeout(() => clearAlert(key), 8000);
    alerts.set(key, entry);
  }

  function clearAlert(key) {
    const entry = alerts.get(key);
    if (!entry) return;
    clearTimeout(entry.timer);
    entry.box.remove();
    alerts.delete(key);
  }

  function showError(key, err) {
    showAlert(key, err instanceof ApiError ? err.describe() : String(err && err.message ? err.message : err));
  }

  // -- the API -------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
    describe() {
      return this.status ? `${this.message} (HTTP ${this.status})` : this.message;
    }
  }

  let token = readToken();
  let needToken = false;
  let authed = false; // an API call has worked since the page loaded or the token changed

  function readToken() {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  }

  function writeToken(value) {
    try {
      if (value) localStorage.setItem(TOKEN_KEY, value);
      else localStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage refused (private mode): the token lasts as long as the page
    }
  }

  /** Call the API; resolve to the parsed JSON body (null when empty), or reject with ApiError. */
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(BASE + path, init);
    } catch (err) {
      throw new ApiError(0, "network", `cannot reach the server (${err.message})`);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    // A read-only token's answers say so: its page hides what it may not do.
    document.body.classList.toggle("read-only", response.headers.get("X-Jobserver-Access") === "read");
    if (response.ok) {
      authed = true;
      document.body.classList.remove("locked");
      return data;
    }
    const error = data && data.error ? data.error : {};
    const message = error.message || `${response.status} ${response.statusText}`.trim();
    if (response.status === 401) askForToken(token ? "The saved token was refused." : null);
    throw new ApiError(response.status, error.code || "http_error", message);
  }

  // -- the token box -------------------------------------------------------------------------
  function askForToken(reason) {
    needToken = true;
    authed = false;
    document.body.classList.add("locked");
    $("#token-box").hidden = false;
    $("#token-reason").textContent =
      (reason ? reason + " " : "") +
      "Every API call needs Authorization: Bearer <token>. The token is kept in this " +
      "browser's local storage and sent with each call.";
    setLive("needs a token", "warn");
    $("#token-input").focus();
  }

  function initToken() {
    $("#token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("#token-input").value.trim();
      if (!value) return;
      token = value;
      authed = false;
      writeToken(value);
      $("#token-input").value = "";
      $("#token-box").hidden = true;
      needToken = false;
      clearAlert("poll");
      clearAlert("action"); // a 403 of the last token is not this one's
      loadTaskNames();
      refresh();
    });
    $("#token-clear").addEventListener("click", () => {
      token = "";
      writeToken("");
      authed = false;
      $("#token-input").value = "";
      refresh();
    });
    $("#token-button").addEventListener("click", () => {
      const box = $("#token-box");
      box.hidden = !box.hidden;
      if (!box.hidden) $("#token-input").focus();
    });
  }

  // -- keyed table rows: a row is rebuilt only when its data changed, so a button under the
  //    pointer is not swapped out by a poll between mouse down and up --------------------------
  function syncRows(tbody, cache, items, key, build) {
    const seen = new Set();
    let index = 0;
    for (const item of items) {
      const k = String(key(item));
      seen.add(k);
      const sig = JSON.stringify(item);
      let entry = cache.get(k);
      if (!entry || entry.sig !== sig) {
        const row = build(item);
        if (entry) entry.row.replaceWith(row);
        entry = { row, sig };
        cache.set(k, entry);
      }
      const at = tbody.children[index];
      if (at !== entry.row) tbody.insertBefore(entry.row, at || null);
      index += 1;
    }
    for (const [k, entry] of cache) {
      if (!seen.has(k)) {
        entry.row.remove();
        cache.delete(k);
      }
    }
  }

  // -- queues and throughput -----------------------------------------------------------------
  const queueRows = new Map();
  const sparkCells = new Map();
  const lastCounts = new Map(); // queue -> {at, succeeded}
  const queueHistory = new Map(); // queue -> [succeeded per second, ...]
  const totalHistory = []; // [{ok, bad}, ...]
  let queues = [];

  async function refreshQueues() {
    const data = await api("GET", "queues");
    queues = data.items;
    recordThroughput(queues);
    renderQueues();
  }

  /** Each queue's succeeded/s since the last poll (its sparkline), from its counts by state.
   *  A count that went down (old jobs pruned) counts as none, never as a negative rate. */
  function recordThroughput(items) {
    const now = performance.now();
    for (const q of items) {
      const counts = { at: now, succeeded: q.counts.succeeded || 0 };
      const prev = lastCounts.get(q.name);
      lastCounts.set(q.name, counts);
      const history = queueHistory.get(q.name) || [];
      queueHistory.set(q.name, history);
      if (!prev) continue;
      const dt = Math.max(0.001, (now - prev.at) / 1000);
      history.push(Math.max(0, counts.succeeded - prev.succeeded) / dt);
      if (history.length > CHART_POINTS) history.shift();
    }
  }

  /** The chart: jobs that ended a second, over the last two minutes, as the server kept them
   *  (so it has a history when the page opens, and polls at any pace draw the same line). */
  async function refreshThroughput() {
    const data = await api("GET", "stats/throughput");
    totalHistory.length = 0;
    for (const p of data.points.slice(-CHART_POINTS)) {
      totalHistory.push({ ok: p.succeeded / data.bucket_s, bad: p.failed / data.bucket_s });
    }
    renderChart();
  }

  function renderChart() {
    const chart = $("#chart");
    const width = 600;
    const height = 90;
    chart.replaceChildren();
    for (const y of [0.25, 0.5, 0.75]) {
      chart.append(svg("line", { x1: 0, x2: width, y1: height * y, y2: height * y, class: "grid" }));
    }
    if (totalHistory.length < 2) {
      $("#chart-now").textContent = "· collecting…";
      return;
    }
    const peak = Math.max(1, ...totalHistory.map((p) => Math.max(p.ok, p.bad)));
    const step = width / (CHART_POINTS - 1);
    const offset = (CHART_POINTS - totalHistory.length) * step;
    const y = (v) => (height - 4 - (v / peak) * (height - 12)).toFixed(1);
    const points = (field) =>
      totalHistory.map((p, i) => `${(offset + i * step).toFixed(1)},${y(p[field])}`).join(" ");
    const ok = points("ok");
    chart.append(
      svg("polygon", { points: `${offset.toFixed(1)},${height} ${ok} ${width},${height}`, class: "area" }),
      svg("polyline", { points: ok, class: "line ok", "vector-effect": "non-scaling-stroke" }),
      svg("polyline", { points: points("bad"), class: "line bad", "vector-effect": "non-scaling-stroke" }),
    );
    const last = totalHistory[totalHistory.length - 1];
    $("#chart-now").textContent =
      `· now ${fmtRate(last.ok)}/s succeeded, ${fmtRate(last.bad)}/s failed · scale 0–${fmtRate(peak)}/s`;
  }

  /** The last minute of a queue's succeeded/s, stretched across the cell until it fills. */
  function sparkline(history) {
    const width = 80;
    const height = 20;
    const values = history.slice(-SPARK_POINTS);
    const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark", "aria-hidden": "true" });
    box.append(svg("line", { x1: 0, x2: width, y1: height - 1, y2: height - 1, class: "base" }));
    if (values.length >= 2) {
      const peak = Math.max(1, ...values);
      const step = width / (values.length - 1);
      const pts = values
        .map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / peak) * (height - 4)).toFixed(1)}`)
        .join(" ");
      box.append(svg("polyline", { points: pts, class: "line ok" }));
    }
    return box;
  }

  function limitsText(limits) {
    const parts = [];
    if (limits.concurrency_limit !== null) parts.push(`concurrency ${limits.concurrency_limit}`);
    if (limits.rate_limit !== null) {
      const burst = limits.rate_burst !== null ? ` (burst ${limits.rate_burst})` : "";
      parts.push(`rate ${limits.rate_limit}/s${burst}`);
    }
    if (limits.max_depth !== null) parts.push(`max depth ${limits.max_depth}`);
    if (limits.key_concurrency_limit != null) parts.push(`per key: concurrency ${limits.key_concurrency_limit}`);
    if (limits.key_rate_limit != null) {
      const burst = limits.key_rate_burst != null ? ` (burst ${limits.key_rate_burst})` : "";
      parts.push(`per key: rate ${limits.key_rate_limit}/s${burst}`);
    }
    return parts.length ? parts.join(" · ") : "none";
  }

  function countCell(queue, state, n) {
    return el(
      "td",
      { class: "num" },
      n
        ? el(
            "a",
            {
              href: "#",
              class: `count s-${state}`,
              title: `Show ${state} jobs of ${queue}`,
              onclick: (e) => {
                e.preventDefault();
                setJobFilters({ status: state, queue, task: "" });
              },
            },
            n,
          )
        : el("span", { class: "zero" }, "0"),
    );
  }

  function buildQueueRow(q) {
    const spark = el("td", { class: "spark-cell" });
    sparkCells.set(q.name, spark);
    const action = q.paused
      ? el("button", { type: "button", class: "resume write", dataset: { action: "resume" }, onclick: () => setPaused(q.name, false) }, "Resume")
      : el("button", { type: "button", class: "pause ghost write", dataset: { action: "pause" }, onclick: () => setPaused(q.name, true) }, "Pause");
    return el(
      "tr",
      { dataset: { queue: q.name }, class: q.paused ? "paused" : "" },
      el(
        "td",
        { class: "name" },
        el(
          "a",
          {
            href: "#",
            title: `Show the jobs of ${q.name}`,
            onclick: (e) => {
              e.preventDefault();
              setJobFilters({ status: "", queue: q.name, task: "" });
            },
          },
          q.name,
        ),
        busiestKeys(q),
      ),
      STATES.map((s) => countCell(q.name, s, q.counts[s] || 0)),
      el("td", { class: "num", title: "How long the oldest due pending job has waited" }, fmtAge(q.oldest_due_age_s)),
      el("td", { class: "limits" }, limitsText(q.limits)),
      spark,
      el("td", {}, q.paused ? el("span", { class: "badge s-paused" }, "paused") : el("span", { class: "badge s-active" }, "active")),
      el("td", { class: "actions" }, action),
    );
  }

  /** A keyed queue's busiest fairness keys (the server sends ten at most), under its name. */
  function busiestKeys(q) {
    const keys = q.busiest_keys || [];
    if (!keys.length) return null;
    return el(
      "div",
      { class: "keys", title: "Its busiest fairness keys: jobs pending + running" },
      "keys: ",
      keys.flatMap((k, i) => [i ? ", " : "", el("span", { class: "key", dataset: { key: k.key } }, `${k.key} ${k.pending}+${k.running}`)]),
    );
  }

  function renderQueues() {
    // the oldest due age moves every poll; keep it out of the row's signature by rounding
    const items = queues.map((q) => ({ ...q, oldest_due_age_s: q.oldest_due_age_s === null ? null : Math.floor(q.oldest_due_age_s) }));
    syncRows($("#queues tbody"), queueRows, items, (q) => q.name, buildQueueRow);
    for (const q of queues) {
      const cell = sparkCells.get(q.name);
      const history = queueHistory.get(q.name) || [];
      const last = history.length ? history[history.length - 1] : 0;
      if (cell) cell.replaceChildren(sparkline(history), el("span", { class: "rate" }, `${fmtRate(last)}/s`));
    }
    $("#queues-empty").hidden = queues.length > 0;
    const names = $("#queue-names");
    names.replaceChildren(...queues.map((q) => el("option", { value: q.name })));
    renderTotals();
  }

  function sumCounts(items) {
    const totals = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const q of items) for (const s of STATES) totals[s] += q.counts[s] || 0;
    return totals;
  }

  function renderTotals() {
    const totals = sumCounts(queues);
    // the tabs count the jobs of the queue the list is filtered by, if it names one
    const inQueue = queues.filter((q) => q.name === jobFilters.queue);
    const tabCounts = inQueue.length ? sumCounts(inQueue) : totals;
    const all = STATES.reduce((n, s) => n + tabCounts[s], 0);
    const current = jobFilters.status;
    const tab = (state, label, n) =>
      el(
        "button",
        {
          type: "button",
          class: `tab${current === state ? " active" : ""}`,
          dataset: { state: state || "all" },
          onclick: () => setJobFilters({ ...jobFilters, status: state }),
        },
        label,
        el("span", { class: "n" }, n),
      );
    $("#state-tabs").replaceChildren(tab("", "all", all), ...STATES.map((s) => tab(s, s, tabCounts[s])));
    $("#totals").replaceChildren(
      ...STATES.filter((s) => s !== "cancelled").map((s) =>
        el("span", { class: `total s-${s}` }, el("b", {}, totals[s]), " ", s),
      ),
    );
  }

  async function setPaused(name, paused) {
    try {
      await api("POST", `queues/${encodeURIComponent(name)}/${paused ? "pause" : "resume"}`);
      showAlert("action", `Queue ${name} ${paused ? "paused" : "resumed"}.`, "ok");
    } catch (err) {
      showError("action", err);
    }
    await refresh();
  }

  // -- jobs ----------------------------------------------------------------------------------
  let jobFilters = { status: "", queue: "", task: "" };
  let jobs = [];
  let jobsCursor = null;
  let jobsVersion = 0; // moves when the filters change or a page is added: older answers are dropped
  const jobRows = new Map();
  const taskNames = new Set();

  function jobsQuery(limit, cursor) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(jobFilters)) if (v) params.set(k, v);
    params.set("limit", String(limit));
    if (cursor) params.set("cursor", cursor);
    return "jobs?" + params.toString();
  }

  async function refreshJobs() {
    const version = jobsVersion;
    const limit = Math.min(MAX_PAGE, Math.max(PAGE, jobs.length));
    const data = await api("GET", jobsQuery(limit, null));
    if (version !== jobsVersion) return;
    jobs = data.items;
    jobsCursor = data.next_cursor;
    renderJobs();
  }

  async function moreJobs() {
    if (!jobsCursor) return;
    const version = jobsVersion;
    const button = $("#jobs-more");
    button.disabled = true;
    try {
      const data = await api("GET", jobsQuery(PAGE, jobsCursor));
      if (version !== jobsVersion) return;
      jobsVersion += 1;
      const have = new Set(jobs.map((j) => j.id));
      jobs = jobs.concat(data.items.filter((j) => !have.has(j.id)));
      jobsCursor = data.next_cursor;
      renderJobs();
    } catch (err) {
      showError("action", err);
    } finally {
      button.disabled = false;
    }
  }

  function progressBar(progress, wide) {
    if (!progress) return null;
    const pct = Math.round(Math.min(1, Math.max(0, progress.fraction)) * 100);
    const fill = el("div", { class: "fill" });
    fill.style.width = pct + "%";
    return el(
      "div",
      { class: `progress${wide ? " wide" : ""}` },
      el(
        "div",
        { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct, title: progress.message || `${pct}%` },
        fill,
      ),
      el("span", { class: "pct" }, `${pct}%`),
      wide && progress.message ? el("span", { class: "msg" }, progress.message) : null,
    );
  }

  function buildJobRow(job) {
    const row = el(
      "tr",
      {
        dataset: { id: job.id, status: job.status },
        tabindex: 0,
        class: detailId === job.id ? "selected" : "",
        onclick: () => openDetail(job.id),
        onkeydown: (e) => {
          if (e.key === "Enter") openDetail(job.id);
        },
      },
      el("td", { class: "num" }, job.id),
      el("td", { class: "task" }, job.task),
      el("td", {}, job.queue),
      el("td", {}, badge(job.status), job.cancel_requested && !job.is_terminal ? el("span", { class: "muted small" }, " cancelling") : null),
      el("td", { class: "num" }, job.priority),
      el("td", { class: "num" }, `${job.attempts}/${job.max_retries + 1}`),
      el("td", {}, progressBar(job.progress, false)),
      timeCell(job.created_at),
    );
    row.title = job.error ? `${job.error.type}: ${job.error.message}` : "";
    return row;
  }

  function renderJobs() {
    for (const j of jobs) taskNames.add(j.task);
    const items = jobs.map((j) => ({ ...j, _selected: j.id === detailId }));
    syncRows($("#jobs tbody"), jobRows, items, (j) => j.id, buildJobRow);
    $("#jobs-empty").hidden = jobs.length > 0;
    $("#jobs-more").hidden = !jobsCursor;
    renderTaskNames();
  }

  function renderTaskNames() {
    const names = [...taskNames].sort();
    const list = $("#task-names");
    if (list.children.length !== names.length) list.replaceChildren(...names.map((n) => el("option", { value: n })));
  }

  async function loadTaskNames() {
    // the server's registered tasks, for the filter's suggestions; optional
    try {
      const spec = await api("GET", "openapi.json");
      const names = spec.components.schemas.JobRequest.properties.task.enum || [];
      for (const n of names) taskNames.add(n);
      renderTaskNames();
    } catch {
      // not there or not allowed: the names seen in jobs still fill the list
    }
  }

  function readFilterForm() {
    return {
      status: $("#f-status").value,
      queue: $("#f-queue").value.trim(),
      task: $("#f-task").value.trim(),
      search: $("#f-search").value.trim(),
    };
  }

  function setJobFilters(filters) {
    jobFilters = { ...filters };
    $("#f-status").value = filters.status;
    $("#f-queue").value = filters.queue;
    $("#f-task").value = filters.task;
    $("#f-search").value = filters.search || "";
    jobsVersion += 1;
    jobs = [];
    jobsCursor = null;
    renderJobs();
    renderTotals();
    refreshJobs().catch((err) => showError("poll", err));
  }

  function initJobs() {
    $("#job-filters").addEventListener("submit", (event) => {
      event.preventDefault();
      setJobFilters(readFilterForm());
    });
    $("#f-status").addEventListener("change", () => setJobFilters(readFilterForm()));
    $("#f-reset").addEventListener("click", () => setJobFilters({ status: "", queue: "", task: "", search: "" }));
    $("#jobs-more").addEventListener("click", moreJobs);
  }

  // -- a job's detail ------------------------------------------------------------------------
  let detailId = null;
  let detailJob = null;
  let detailAttempts = [];
  let detailSteps = [];
  let detailSig = "";

  function openDetail(id) {
    detailId = id;
    workflowId = null;
    detailJob = null;
    detailAttempts = [];
    detailSteps = [];
    detailSig = "";
    history.replaceState(null, "", `#job/${id}`);
    $("#detail").hidden = false;
    $("#detail-title").textContent = `Job ${id}`;
    $("#detail-body").replaceChildren(el("p", { class: "muted" }, "loading…"));
    renderJobs();
    refreshDetail().catch((err) => showError("detail", err));
  }

  // -- a workflow: its jobs and status, in the detail panel -----------------------------------
  let workflowId = null;

  function workflowLink(id) {
    return el("a", { href: `#workflow/${id}`, class: "workflow-link" }, `#${id}`);
  }

  function openWorkflow(id) {
    detailId = null;
    detailJob = null;
    workflowId = id;
    $("#detail").hidden = false;
    $("#detail-title").textContent = `Workflow ${id}`;
    $("#detail-body").replaceChildren(el("p", { class: "muted" }, "loading…"));
    refreshWorkflow().catch((err) => showError("detail", err));
  }

  async function refreshWorkflow() {
    const id = workflowId;
    if (id === null) return;
    let flow;
    try {
      flow = await api("GET", `workflows/${id}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404 && id === workflowId) {
        $("#detail-body").replaceChildren(el("p", { class: "empty" }, err.message));
        return;
      }
      throw err;
    }
    if (id !== workflowId) return;
    $("#detail-title").textContent = `Workflow ${id} · ${flow.status}`;
    const rows = flow.jobs.map((j) =>
      el("tr", { dataset: { id: j.id } }, el("td", { class: "num" }, jobLink(j.id)), el("td", {}, j.task), el("td", {}, badge(j.status))),
    );
    $("#detail-body").replaceChildren(
      el("div", { class: "detail-status" }, badge(flow.status), el("span", { class: "muted" }, `${flow.jobs.length} jobs, dependencies first`)),
      el("div", { class: "table-wrap" }, el("table", { id: "workflow-jobs" }, el("thead", {}, el("tr", {}, el("th", { class: "num" }, "Job"), el("th", {}, "Task"), el("th", {}, "Status"))), el("tbody", {}, ...rows))),
    );
  }

  function closeDetail() {
    workflowId = null;
    detailId = null;
    detailJob = null;
    $("#detail").hidden = true;
    history.replaceState(null, "", location.pathname + location.search);
    renderJobs();
  }

  async function refreshDetail() {
    const id = detailId;
    if (id === null) return;
    if (detailJob && detailJob.is_terminal && detailJob.id === id) return; // it will not change
    try {
      const [job, attempts, steps] = await Promise.all([
        api("GET", `jobs/${id}`),
        api("GET", `jobs/${id}/attempts`),
        api("GET", `jobs/${id}/steps`),
      ]);
      if (id === detailId) renderDetail(job, attempts.items, steps.items);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404 && id === detailId) {
        $("#detail-body").replaceChildren(el("p", { class: "empty" }, err.message));
        detailJob = null;
        return;
      }
      throw err;
    }
  }

  function field(label, ...value) {
    return [el("dt", {}, label), el("dd", {}, ...value)];
  }

  function renderDetail(job, attempts = detailAttempts, steps = detailSteps) {
    detailJob = job;
    detailAttempts = attempts;
    detailSteps = steps;
    const sig = JSON.stringify([job, attempts, steps]);
    if (sig === detailSig) return;
    detailSig = sig;
    $("#detail-title").textContent = `Job ${job.id} · ${job.task}`;
    const body = [];
    body.push(
      el(
        "div",
        { class: "detail-status" },
        badge(job.status),
        job.cancel_requested && !job.is_terminal ? el("span", { class: "muted" }, "cancel requested") : null,
        el("span", { class: "spacer" }),
        el(
          "button",
          {
            type: "button",
            id: "detail-cancel",
            class: "danger write",
            disabled: job.is_terminal || job.cancel_requested,
            onclick: () => cancelJob(job.id),
          },
          "Cancel job",
        ),
        el(
          "button",
          {
            type: "button",
            id: "detail-again",
            class: "ghost write",
            title: "Enqueue a new job with this one's task, arguments, queue and priority",
            onclick: () => runAgain(job),
          },
          "Run again",
        ),
        el(
          "button",
          {
            type: "button",
            id: "detail-delete",
            class: "ghost danger-text write",
            disabled: !job.is_terminal,
            title: "Only a finished job can be deleted",
            onclick: () => deleteJob(job.id),
          },
          "Delete",
        ),
      ),
    );
    body.push(
      el("h3", {}, "Progress"),
      job.progress
        ? progressBar(job.progress, true)
        : el("p", { class: "muted" }, job.status === "succeeded" ? "done (no progress reported)" : "no progress reported"),
    );
    if (job.waiting) {
      const until = job.waiting.until ? ` (until ${fmtTime(job.waiting.until)})` : "";
      body.push(el("div", { class: "waiting", dataset: { code: job.waiting.code } }, el("b", {}, "Waiting: "), job.waiting.message + until));
    }
    if (job.error) {
      body.push(el("div", { class: "error-box" }, el("b", {}, job.error.type || "Error"), ": ", job.error.message || ""));
    }
    const dl = el(
      "dl",
      { class: "fields" },
      field("Attempts", `${job.attempts} (max retries ${job.max_retries})`),
      field("Queue", job.queue),
      job.fairness_key ? field("Fairness key", job.fairness_key) : null,
      field("Priority", job.priority),
      field("Timeout", job.timeout === null ? "none" : `${job.timeout} s`),
      field("Created", el("span", { title: job.created_at }, fmtTime(job.created_at))),
      field("Run at", el("span", { title: job.run_at }, fmtTime(job.run_at))),
      job.started_at ? field("Started", el("span", { title: job.started_at }, fmtTime(job.started_at))) : null,
      job.completed_at ? field("Completed", el("span", { title: job.completed_at }, fmtTime(job.completed_at))) : null,
      job.deadline ? field("Deadline", el("span", { title: job.deadline }, fmtTime(job.deadline))) : null,
      job.unique_key ? field("Unique key", job.unique_key) : null,
      job.depends_on && job.depends_on.length ? field("Depends on", job.depends_on.map((d, i) => [i ? ", " : "", jobLink(d)])) : null,
      job.workflow_id ? field("Workflow", workflowLink(job.workflow_id)) : null,
    );
    body.push(dl);
    body.push(el("h3", {}, "Arguments"), el("pre", {}, json({ args: job.args, kwargs: job.kwargs })));
    if (job.status === "succeeded") body.push(el("h3", {}, "Result"), el("pre", {}, json(job.result)));
    if (steps && steps.length) body.push(el("h3", {}, "Steps"), stepList(steps));
    if (attempts && attempts.length) body.push(el("h3", {}, "Attempts"), attemptList(attempts));
    $("#detail-body").replaceChildren(...body);
  }

  /** A job's durable steps (ctx.step, sleeps, waits for a signal), in order, with results. */
  function stepList(steps) {
    return el(
      "ol",
      { class: "steps", id: "detail-steps" },
      ...steps.map((s) =>
        el(
          "li",
          { dataset: { kind: s.kind, status: s.status } },
          el("b", {}, s.name),
          el("span", { class: "muted" }, ` ${s.kind} · ${s.status} · attempt ${s.attempt} · `),
          el("span", { class: "muted", title: s.started_at || "" }, fmtTime(s.started_at)),
          el("pre", { class: "step-result" }, json(s.result)),
        ),
      ),
    );
  }

  /** A job's history: each attempt's outcome, times, node and error, its traceback folded. */
  function attemptList(attempts) {
    return el(
      "ol",
      { class: "attempts", id: "detail-attempts" },
      ...attempts.map((a) =>
        el(
          "li",
          { dataset: { outcome: a.outcome } },
          badge(a.outcome),
          " ",
          el("span", { class: "muted", title: a.started_at || "" }, fmtTime(a.started_at)),
          a.ended_at ? el("span", { class: "muted" }, ` → ${fmtTime(a.ended_at)}`) : null,
          a.node ? el("span", { class: "muted" }, ` on ${a.node}`) : null,
          a.error ? el("div", { class: "error-box" }, el("b", {}, a.error.type || "Error"), ": ", a.error.message || "") : null,
          a.error && a.error.traceback
            ? el("details", {}, el("summary", {}, "Traceback"), el("pre", { class: "traceback" }, a.error.traceback))
            : null,
        ),
      ),
    );
  }

  async function runAgain(job) {
    try {
      const body = { task: job.task, args: job.args, kwargs: job.kwargs, queue: job.queue, priority: job.priority };
      const made = await api("POST", "jobs", body);
      showAlert("action", `Job ${made.id} enqueued, a copy of job ${job.id}.`, "ok");
      openDetail(made.id);
    } catch (err) {
      showError("action", err);
    }
    await refresh();
  }

  async function deleteJob(id) {
    if (!confirm(`Delete job ${id}?`)) return;
    try {
      await api("DELETE", `jobs/${id}`);
      showAlert("action", `Job ${id} deleted.`, "ok");
      closeDetail();
    } catch (err) {
      showError("action", err);
    }
    await refresh();
  }

  function jobLink(id) {
    return el(
      "a",
      {
        href: `#job/${id}`,
        onclick: (e) => {
          e.preventDefault();
          openDetail(id);
        },
      },
      `#${id}`,
    );
  }

  async function cancelJob(id) {
    try {
      const job = await api("POST", `jobs/${id}/cancel`);
      showAlert("action", `Job ${id}: ${job.status === "cancelled" ? "cancelled" : "asked to stop"}.`, "ok");
      if (id === detailId) renderDetail(job);
    } catch (err) {
      showError("action", err);
    }
    await refresh();
  }

  // -- dead letters --------------------------------------------------------------------------
  let deadLetters = [];
  let dlCursor = null;
  let dlVersion = 0;
  let dlTask = "";
  const dlSelected = new Set();
  const dlRows = new Map();
  let dlBusy = false;

  async function refreshDeadLetters() {
    const version = dlVersion;
    const limit = Math.min(MAX_PAGE, Math.max(PAGE, deadLetters.length));
    const data = await api("GET", `dead-letters?limit=${limit}`);
    if (version !== dlVersion) return;
    deadLetters = data.items;
    dlCursor = data.next_cursor;
    renderDeadLetters();
  }

  async function moreDeadLetters() {
    if (!dlCursor) return;
    const version = dlVersion;
    try {
      const data = await api("GET", `dead-letters?limit=${PAGE}&cursor=${encodeURIComponent(dlCursor)}`);
      if (version !== dlVersion) return;
      dlVersion += 1;
      const have = new Set(deadLetters.map((d) => d.id));
      deadLetters = deadLetters.concat(data.items.filter((d) => !have.has(d.id)));
      dlCursor = data.next_cursor;
      renderDeadLetters();
    } catch (err) {
      showError("action", err);
    }
  }

  function shownDeadLetters() {
    return dlTask ? deadLetters.filter((d) => d.task === dlTask) : deadLetters;
  }

  function buildDeadLetterRow(d) {
    const box = el("input", {
      type: "checkbox",
      class: "dl-check",
      "aria-label": `Select dead letter ${d.id}`,
      checked: d._selected,
      onchange: (e) => {
        if (e.target.checked) dlSelected.add(d.id);
        else dlSelected.delete(d.id);
        renderDeadLetters();
      },
    });
    const error = d.error ? `${d.error.type}: ${d.error.message}` : "";
    return el(
      "tr",
      { dataset: { id: d.id, jobId: d.job_id } },
      el("td", { class: "check" }, box),
      el("td", { class: "num" }, d.id),
      el("td", { class: "num" }, jobLink(d.job_id)),
      el("td", { class: "task" }, d.task),
      el("td", {}, d.queue),
      el("td", { class: "error", title: error }, d.error ? [el("b", {}, d.error.type), " ", d.error.message] : ""),
      el("td", { class: "num" }, d.attempts),
      timeCell(d.failed_at),
      el(
        "td",
        { class: "actions" },
        el("button", { type: "button", class: "requeue write", dataset: { action: "requeue" }, disabled: dlBusy, onclick: () => requeueOne(d.id) }, "Requeue"),
        el("button", { type: "button", class: "delete ghost danger write", dataset: { action: "delete" }, disabled: dlBusy, onclick: () => deleteOne(d.id) }, "Delete"),
      ),
    );
  }

  function renderDeadLetters() {
    const ids = new Set(deadLetters.map((d) => d.id));
    for (const id of [...dlSelected]) if (!ids.has(id)) dlSelected.delete(id);
    const shown = shownDeadLetters();
    const items = shown.map((d) => ({ ...d, _selected: dlSelected.has(d.id), _busy: dlBusy }));
    syncRows($("#dead-letters tbody"), dlRows, items, (d) => d.id, buildDeadLetterRow);
    $("#dl-empty").hidden = shown.length > 0;
    $("#dl-empty").textContent = deadLetters.length ? "No dead letters of this task." : "No dead letters.";
    $("#dl-more").hidden = !dlCursor;
    const n = dlSelected.size;
    $("#dl-selected").textContent = `${n} selected`;
    $("#dl-requeue-selected").disabled = dlBusy || n === 0;
    $("#dl-delete-selected").disabled = dlBusy || n === 0;
    const all = $("#dl-all");
    all.checked = shown.length > 0 && shown.every((d) => dlSelected.has(d.id));
    all.indeterminate = !all.checked && shown.some((d) => dlSelected.has(d.id));
    // the task filter's choices: every task among the loaded dead letters
    const tasks = [...new Set(deadLetters.map((d) => d.task))].sort();
    if (dlTask && !tasks.includes(dlTask)) tasks.unshift(dlTask);
    const select = $("#dl-task");
    const wanted = ["", ...tasks];
    const have = [...select.options].map((o) => o.value);
    if (have.join("\n") !== wanted.join("\n")) {
      select.replaceChildren(...wanted.map((t) => el("option", { value: t }, t || "all")));
      select.value = dlTask;
    }
  }

  async function requeueOne(id) {
    try {
      const created = await api("POST", `dead-letters/${id}/requeue`);
      showAlert("action", `Dead letter ${id} requeued as job ${created.id}. `, "ok", jobLink(created.id));
    } catch (err) {
      showError("action", err);
    }
    await refresh();
  }

  async function deleteOne(id) {
    if (!confirm(`Delete dead letter ${id}? Its job's record stays; the dead letter is gone.`)) return;
    try {
      await api("DELETE", `dead-letters/${id}`);
      showAlert("action", `Dead letter ${id} deleted.`, "ok");
    } catch (err) {
      showError("action", err);
    }
    await refresh();
  }

  /** Requeue or delete every selected dead letter, one call each; report how many worked. */
  async function bulk(kind) {
    const ids = deadLetters.filter((d) => dlSelected.has(d.id)).map((d) => d.id);
    if (!ids.length) return;
    const verb = kind === "requeue" ? "Requeue" : "Delete";
    if (!confirm(`${verb} ${ids.length} dead letter${ids.length === 1 ? "" : "s"}?`)) return;
    dlBusy = true;
    renderDeadLetters();
    let done = 0;
    const failures = [];
    const status = $("#dl-selected");
    for (const id of ids) {
      status.textContent = `${verb.toLowerCase()}ing ${done + failures.length + 1} of ${ids.length}…`;
      try {
        if (kind === "requeue") await api("POST", `dead-letters/${id}/requeue`);
        else await api("DELETE", `dead-letters/${id}`);
        done += 1;
        dlSelected.delete(id);
      } catch (err) {
        failures.push([id, err]);
        if (err instanceof ApiError && (err.status === 401 || err.status === 403)) break; // all would fail
      }
    }
    dlBusy = false;
    const past = kind === "requeue" ? "requeued" : "deleted";
    if (failures.length) {
      const [id, err] = failures[0];
      const rest = ids.length - done - failures.length;
      showAlert(
        "action",
        `${done} of ${ids.length} dead letters ${past}; dead letter ${id}: ${err instanceof ApiError ? err.describe() : err}` +
          (rest ? ` (${rest} not tried)` : ""),
      );
    } else {
      showAlert("action", `${done} dead letter${done === 1 ? "" : "s"} ${past}.`, "ok");
    }
    await refresh();
  }

  /** Requeue or delete every dead letter of the chosen task (all when none is chosen) on the
   * server, in one transaction: a dry run first says how many, to confirm. */
  async function bulkMatching(kind) {
    const selection = dlTask ? { task: dlTask } : {};
    const path = `dead-letters/${kind}`;
    try {
      const dry = await api("POST", path, { ...selection, dry_run: true, limit: 10000 });
      if (!dry.matched) {
        showAlert("action", "No dead letters match.", "ok");
        return;
      }
      const count = `${dry.matched}${dry.more ? "+" : ""}`;
      const what = dlTask ? `of task ${dlTask}` : "of every task";
      const verb = kind === "requeue" ? "Requeue" : "Delete";
      if (!confirm(`${verb} ${count} dead letter${dry.matched === 1 ? "" : "s"} ${what}?`)) return;
      const done = await api("POST", path, { ...selection, limit: 10000 });
      const n = (kind === "requeue" ? done.job_ids : done.deleted).length;
      const past = kind === "requeue" ? "requeued" : "deleted";
      showAlert("action", `${n} dead letter${n === 1 ? "" : "s"} ${past}${done.more ? "; more remain" : ""}.`, "ok");
      dlSelected.clear();
    } catch (err) {
      showError("action", err);
    }
    await refresh();
  }

  function initDeadLetters() {
    $("#dl-task").addEventListener("change", (e) => {
      dlTask = e.target.value;
      for (const d of deadLetters) if (dlTask && d.task !== dlTask) dlSelected.delete(d.id); // hidden rows leave the selection
      renderDeadLetters();
    });
    const selectShown = (on) => {
      for (const d of shownDeadLetters()) {
        if (on) dlSelected.add(d.id);
        else dlSelected.delete(d.id);
      }
      renderDeadLetters();
    };
    $("#dl-select-shown").addEventListener("click", () => selectShown(true));
    $("#dl-select-none").addEventListener("click", () => {
      dlSelected.clear();
      renderDeadLetters();
    });
    $("#dl-all").addEventListener("change", (e) => selectShown(e.target.checked));
    $("#dl-requeue-selected").addEventListener("click", () => bulk("requeue"));
    $("#dl-delete-selected").addEventListener("click", () => bulk("delete"));
    $("#dl-requeue-matching").addEventListener("click", () => bulkMatching("requeue"));
    $("#dl-delete-matching").addEventListener("click", () => bulkMatching("delete"));
    $("#dl-more").addEventListener("click", moreDeadLetters);
  }

  // -- schedules -------------------------------------------------------------------------------
  const scheduleRows = new Map();

  async function refreshSchedules() {
    const data = await api("GET", "schedules");
    $("#schedules-empty").hidden = data.items.length > 0;
    syncRows($("#schedules tbody"), scheduleRows, data.items, (x) => x.name, (x) =>
      el(
        "tr",
        { dataset: { name: x.name } },
        el("td", {}, x.name),
        el("td", {}, x.task),
        el("td", {}, el("code", {}, x.cron)),
        el("td", {}, x.timezone),
        timeCell(x.next_run_at),
        x.last_run_at ? timeCell(x.last_run_at) : el("td", { class: "muted" }, "never"),
        el("td", {}, x.queue),
        el("td", {}, x.paused ? badge("paused") : x.source === "task" ? "from @task" : "active"),
      ),
    );
  }

  // -- polling -------------------------------------------------------------------------------
  let inFlight = null;
  let again = false;
  let timer = null;

  function setLive(text, kind) {
    const live = $("#live");
    live.textContent = text;
    live.className = `live ${kind || ""}`;
  }

  async function tick() {
    if (needToken) return;
    if (!authed) {
      // one call first: when it needs a token, one refused call is enough (the server counts
      // refusals per client and throttles after a few)
      try {
        await api("GET", "queues");
      } catch {
        if (needToken) return;
      }
    }
    const results = await Promise.allSettled([
      refreshQueues(),
      refreshJobs(),
      refreshDeadLetters(),
      refreshDetail(),
      refreshWorkflow(),
      refreshSchedules(),
      refreshThroughput(),
    ]);
    if (needToken) return;
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      showError("poll", failed.reason);
      setLive("error", "bad");
    } else {
      clearAlert("poll");
      const now = new Date();
      setLive(`updated ${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}`, "ok");
    }
  }

  /** Poll now; a call while a poll is running makes one more run after it. */
  function refresh() {
    if (inFlight) {
      again = true;
      return inFlight;
    }
    inFlight = (async () => {
      try {
        do {
          again = false;
          await tick();
        } while (again);
      } finally {
        inFlight = null;
      }
    })();
    return inFlight;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if ($("#auto-refresh").checked && !document.hidden) await refresh();
      schedule();
    }, streaming ? STREAM_POLL_MS : POLL_MS);
  }

  // -- live: the server's event stream ---------------------------------------------------------
  // GET /events (Server-Sent Events) read with fetch, which can send the token (EventSource
  // cannot). Each job event refreshes the page soon after (debounced); while the stream is up
  // the page polls only every STREAM_POLL_MS, for counts that no event carries.
  const STREAM_POLL_MS = 15000;
  const DEBOUNCE_MS = 300;
  let streaming = false;
  let soon = null;
  let streamTries = 0;

  function refreshSoon() {
    if (soon || !$("#auto-refresh").checked) return;
    soon = setTimeout(() => {
      soon = null;
      refresh();
    }, DEBOUNCE_MS);
  }

  async function streamEvents() {
    if (!window.ReadableStream) return;
    if (needToken) {
      setTimeout(streamEvents, POLL_MS); // again once a token is given
      return;
    }
    const headers = { Accept: "text/event-stream" };
    if (token) headers.Authorization = "Bearer " + token;
    try {
      const response = await fetch(BASE + "events", { headers, cache: "no-store" });
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      streaming = true;
      streamTries = 0;
      document.body.dataset.live = "stream";
      schedule();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const blocks = buffer.split("\n\n");
        buffer = blocks.pop();
        if (blocks.some((b) => /^event: (job|gap)$/m.test(b))) refreshSoon();
      }
    } catch {
      // the stream is not there (an old server, a proxy that buffers): polling goes on
    }
    streaming = false;
    delete document.body.dataset.live;
    schedule();
    streamTries += 1;
    setTimeout(streamEvents, Math.min(30000, 1000 * 2 ** Math.min(streamTries, 5)));
  }

  function init() {
    initToken();
    initJobs();
    initDeadLetters();
    $("#detail-close").addEventListener("click", closeDetail);
    $("#refresh").addEventListener("click", () => refresh());
    $("#auto-refresh").addEventListener("change", (e) => {
      if (e.target.checked) refresh();
      else setLive("paused", "");
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
    });
    renderChart();
    const openFromHash = () => {
      if (needToken) return;
      const job = /^#job\/(\d{1,18})$/.exec(location.hash);
      if (job) openDetail(Number(job[1]));
      const flow = /^#workflow\/(\d{1,18})$/.exec(location.hash);
      if (flow) openWorkflow(Number(flow[1]));
    };
    window.addEventListener("hashchange", openFromHash);
    $("#jump").addEventListener("submit", (e) => {
      e.preventDefault();
      const id = $("#jump-id").value.trim();
      if (!/^\d{1,18}$/.test(id)) return;
      if (location.hash === `#job/${id}`) openFromHash();
      else location.hash = `#job/${id}`;
    });
    refresh().then(() => {
      if (needToken) return;
      loadTaskNames();
      openFromHash();
    });
    streamEvents();
    schedule();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
