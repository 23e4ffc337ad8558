// The shoal dashboard: the job list, a form to start a job, and one job watched live over
// the service's event stream (read with fetch, so the bearer token goes in a header).
"use strict";

const $ = (sel) => document.querySelector(sel);
const ACTIVE = new Set(["queued", "running"]);
const POINTS = 120;

const state = {
  token: localStorage.getItem("shoal-token") || "",
  selected: null,
  stream: null,      // AbortController of the selected job's event stream
  last: null,        // the last event of the selected job
  history: newHistory(),
};
window.shoal = state; // for the browser test and for curious users

function newHistory() {
  return { t: [], rate: [], status: {}, errors: {}, inFlight: [], queued: [], events: 0 };
}

async function api(method, path, body, { raw = false } = {}) {
  const headers = {};
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) {
    $("#token-form").hidden = false;
    $("#service-state").textContent = "a token is needed";
    throw new Error("unauthorized");
  }
  if (raw) return resp;
  const data = resp.status === 204 ? null : await resp.json().catch(() => null);
  if (!resp.ok) {
    const message = (data && (data.message || (typeof data.detail === "string" && data.detail)))
      || `${resp.status} ${resp.statusText}`;
    throw new Error(message);
  }
  return data;
}

// -- job list -------------------------------------------------------------------------------
async function refreshJobs() {
  let data;
  try {
    data = await api("GET", "/v1/jobs?limit=50");
  } catch (err) {
    return;
  }
  $("#service-state").textContent = "connected";
  $("#token-form").hidden = true;
  const tbody = $("#jobs tbody");
  tbody.replaceChildren(...data.items.map(jobRow));
}

function jobRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.id = job.id;
  if (job.id === state.selected) tr.classList.add("selected");
  const total = job.counts.total, done = job.counts.done;
  const pct = total ? Math.min(100, (100 * done) / total) : (job.state === "completed" ? 100 : 0);
  tr.append(
    cell(job.id), cell(job.kind), badgeCell(job.state),
    progressCell(pct, total ? `${done}/${total}` : String(done)),
    cell(job.rates.pages_per_second.toFixed(1)),
  );
  tr.addEventListener("click", () => select(job.id));
  return tr;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  td.title = td.textContent;
  return td;
}

function badgeCell(value) {
  const td = document.createElement("td");
  const span = document.createElement("span");
  span.className = "badge " + value;
  span.textContent = value;
  td.append(span);
  return td;
}

function progressCell(pct, label) {
  const td = document.createElement("td");
  const bar = document.createElement("div");
  bar.className = "bar";
  const fill = document.createElement("div");
  fill.style.width = pct.toFixed(1) + "%";
  bar.append(fill);
  const text = document.createElement("span");
  text.className = "muted";
  text.textContent = " " + label;
  td.append(bar, text);
  td.style.display = "flex";
  td.style.alignItems = "center";
  td.style.gap = ".4rem";
  return td;
}

// -- one job, live --------------------------------------------------------------------------
async function select(id) {
  if (state.stream) state.stream.abort();
  state.selected = id;
  state.last = null;
  state.history = newHistory();
  for (const tr of document.querySelectorAll("#jobs tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.id === id);
  }
  $("#empty").hidden = true;
  $("#job").hidden = false;
  $("#job-id").textContent = id;
  try {
    onEvent(await api("GET", `/v1/jobs/${id}`));
  } catch (err) {
    return;
  }
  watch(id);
}

async function watch(id) {
  const controller = new AbortController();
  state.stream = controller;
  while (state.selected === id && !controller.signal.aborted) {
    try {
      const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
      const resp = await fetch(`/v1/jobs/${id}/events`, { headers, signal: controller.signal });
      if (!resp.ok) return;
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          for (const line of message.split("\n")) {
            if (line.startsWith("data: ") && state.selected === id) {
              onEvent(JSON.parse(line.slice(6)));
            }
          }
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    if (!state.last || !ACTIVE.has(state.last.state)) return; // the job has stopped
    await new Promise((r) => setTimeout(r, 2000)); // the service went away: try again
  }
}

function onEvent(job) {
  const h = state.history;
  const prev = state.last;
  const now = performance.now() / 1000;
  if (prev && prev.id === job.id && ACTIVE.has(job.state)) {
    const dt = Math.max(0.2, now - h.t[h.t.length - 1]);
    push(h.t, now);
    push(h.rate, job.rates.pages_per_second);
    push(h.inFlight, job.counts.in_flight);
    push(h.queued, job.counts.queued);
    deltas(h.status, job.status_classes, prev.status_classes, dt, h.t.length);
    deltas(h.errors, job.errors, prev.errors, dt, h.t.length);
    h.events += 1;
  } else if (!prev) {
    push(h.t, now);
    push(h.rate, job.rates.pages_per_second);
    push(h.inFlight, job.counts.in_flight);
    push(h.queued, job.counts.queued);
  }
  state.last = job;
  render(job);
}

function push(arr, v) {
  arr.push(v);
  if (arr.length > POINTS) arr.shift();
}

function deltas(series, current, previous, dt, length) {
  const names = new Set([...Object.keys(current || {}), ...Object.keys(previous || {})]);
  for (const name of names) {
    if (!series[name]) series[name] = new Array(Math.max(0, length - 1)).fill(0);
    push(series[name], Math.max(0, ((current[name] || 0) - ((previous || {})[name] || 0)) / dt));
  }
  for (const name of Object.keys(series)) {
    if (!names.has(name)) push(series[name], 0);
  }
}

function render(job) {
  const badge = $("#job-state");
  badge.textContent = job.state;
  badge.className = "badge " + job.state;
  $("#pause").disabled = !ACTIVE.has(job.state);
  $("#resume").disabled = job.state !== "paused";
  $("#cancel").disabled = !(ACTIVE.has(job.state) || job.state === "paused");
  const c = job.counts;
  const numbers = [
    ["done", c.done + (c.total != null ? ` / ${c.total}` : "")],
    ["pages/s", job.rates.pages_per_second.toFixed(1)],
    ["in flight", c.in_flight], ["queued", c.queued],
    ["data", window.shoalCharts.formatNumber(job.bytes) + "B"],
    ["errors", Object.values(job.errors).reduce((a, b) => a + b, 0)],
    ["elapsed", job.rates.elapsed.toFixed(0) + " s"],
  ];
  $("#job-numbers").replaceChildren(...numbers.map(([label, value]) => {
    const div = document.createElement("div");
    const b = document.createElement("b");
    b.textContent = value;
    const span = document.createElement("span");
    span.textContent = label;
    div.append(b, span);
    return div;
  }));
  const h = state.history;
  const named = (obj) => Object.keys(obj).sort().map((name) => ({ name, values: obj[name] }));
  window.shoalCharts.drawChart($("#chart-rate"), [{ name: "pages/s", values: h.rate }]);
  window.shoalCharts.drawChart($("#chart-status"), named(h.status));
  window.shoalCharts.drawChart($("#chart-errors"), named(h.errors));
  window.shoalCharts.drawChart($("#chart-load"), [
    { name: "in flight", values: h.inFlight }, { name: "queued", values: h.queued }]);
  $("#hosts tbody").replaceChildren(...(job.hosts || []).map((host) => {
    const tr = document.createElement("tr");
    tr.append(cell(host.host), cell(host.pages), cell(host.errors), cell(host.in_flight),
      cell(host.queued), cell(host.delay), cell(host.robots));
    return tr;
  }));
  $("#latest tbody").replaceChildren(...(job.latest || []).slice().reverse().map((r) => {
    const tr = document.createElement("tr");
    tr.append(cell(r.url), cell(r.status), cell(r.error ? r.error.kind : ""), cell(r.title),
      cell(r.bytes), cell(r.elapsed_ms));
    return tr;
  }));
}

async function act(action) {
  const id = state.selected;
  if (!id) return;
  try {
    onEvent(await api("POST", `/v1/jobs/${id}/${action}`));
    if (action === "resume") watch(id);
  } catch (err) {
    $("#form-error").textContent = err.message;
  }
  refreshJobs();
}

async function download(format) {
  const id = state.selected;
  const resp = await api("GET", `/v1/jobs/${id}/export?format=${format}`, undefined,
    { raw: true });
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = `${id}.${format}`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// -- the form -------------------------------------------------------------------------------
async function upload(file, options) {
  // the file goes as the body, streamed by the browser; the options as query parameters
  const query = new URLSearchParams(Object.entries(options).map(([k, v]) => [k, String(v)]));
  const headers = { "Content-Type": "text/plain" };
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const resp = await fetch(`/v1/jobs/upload?${query}`, { method: "POST", headers, body: file });
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    throw new Error((data && (data.message || data.detail)) || `${resp.status}`);
  }
  return data;
}

function syncKind() {
  const crawl = $("#kind").value === "crawl";
  $("#urls-label").firstChild.textContent = crawl ? "Seeds, one per line" : "URLs, one per line";
  for (const el of document.querySelectorAll(".crawl-only")) el.hidden = !crawl;
  for (const el of document.querySelectorAll(".fetch-only")) el.hidden = crawl;
}

async function submitJob(event) {
  event.preventDefault();
  const form = event.target;
  const kind = form.kind.value;
  const urls = form.urls.value.split("\n").map((s) => s.trim()).filter(Boolean);
  const options = { no_robots: form.no_robots.checked };
  const numbers = ["concurrency", "per_host", "delay", "timeout"];
  if (kind === "crawl") numbers.push("max_pages", "max_depth");
  for (const name of numbers) {
    const value = form[name].value.trim();
    if (value !== "") options[name] = Number(value);
  }
  if (kind === "crawl") options.scope = form.scope.value;
  const body = kind === "crawl" ? { kind, seeds: urls, options } : { kind, urls, options };
  const file = kind === "fetch" && form.file.files.length ? form.file.files[0] : null;
  $("#form-error").textContent = "";
  if (!file && !urls.length) {
    $("#form-error").textContent = kind === "crawl" ? "give at least one seed"
      : "give at least one URL, or a file of them";
    return;
  }
  try {
    const job = file ? await upload(file, options) : await api("POST", "/v1/jobs", body);
    await refreshJobs();
    select(job.id);
  } catch (err) {
    $("#form-error").textContent = err.message;
  }
}

function init() {
  $("#kind").addEventListener("change", syncKind);
  $("#job-form").addEventListener("submit", submitJob);
  $("#pause").addEventListener("click", () => act("pause"));
  $("#resume").addEventListener("click", () => act("resume"));
  $("#cancel").addEventListener("click", () => act("cancel"));
  $("#export-jsonl").addEventListener("click", () => download("jsonl"));
  $("#export-csv").addEventListener("click", () => download("csv"));
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("#token").value.trim();
    localStorage.setItem("shoal-token", state.token);
    refreshJobs();
  });
  syncKind();
  refreshJobs();
  setInterval(refreshJobs, 2000);
}

document.addEventListener("DOMContentLoaded", init);
