// The dashboard's script: asks before destructive actions, and keeps the overview live by
// polling /api/overview. Text is set with textContent only (never parsed as HTML).
"use strict";

document.addEventListener("submit", (ev) => {
  const msg = ev.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) ev.preventDefault();
});

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

const taskLink = (id) => el("a", { href: "/tasks/" + encodeURIComponent(id) }, id);

function retryForm(key) {
  const f = el("form", { method: "post", action: "/actions/dead/retry", class: "inline" },
    el("input", { type: "hidden", name: "csrf", value: csrf() }),
    el("input", { type: "hidden", name: "key", value: key }),
    el("input", { type: "hidden", name: "next", value: "/" }),
    el("button", { type: "submit" }, "Retry"));
  return f;
}

function fillRows(tbody, items, empty, cols, row) {
  tbody.replaceChildren();
  if (items.length === 0) {
    tbody.append(el("tr", {}, el("td", { colspan: cols, class: "muted" }, empty)));
  }
  for (const it of items) tbody.append(row(it));
}

function text(v) {
  if (v === null || v === undefined) return "";
  if (Array.isArray(v)) return v.join(", ");
  return String(v);
}

function workers(c) {
  const td = el("td");
  for (const w of c.workers || []) {
    const d = el("div", {}, "worker " + text(w.pid) + ": ");
    if (w.task_id) d.append(text(w.task) + " ", taskLink(w.task_id), " since " + text(w.since));
    else d.append(el("span", { class: "muted" }, "idle"));
    td.append(d);
  }
  return td;
}

function render(o) {
  for (const [k, v] of Object.entries(o.counts)) {
    const e = document.querySelector('[data-count="' + k + '"]');
    if (e) e.textContent = String(v);
  }
  document.getElementById("updated").textContent = o.now;
  fillRows(document.querySelector("#queues tbody"), o.queues, "no queue", 4, (q) =>
    el("tr", { "data-queue": q.name },
      el("td", {}, q.name), el("td", { class: "num" }, String(q.ready) + (q.more ? "+" : "")),
      el("td", { class: "num" }, text(q.in_flight)), el("td", {}, q.consumers.join(", "))));
  fillRows(document.querySelector("#consumers tbody"), o.consumers, "no live consumer", 8, (c) =>
    el("tr", { "data-consumer": text(c.id) },
      el("td", {}, text(c.id)), el("td", {}, text(c.host)), el("td", { class: "num" }, text(c.pid)),
      el("td", {}, text(c.kind)), el("td", {}, text(c.queues)), el("td", {}, text(c.started)),
      el("td", {}, text(c.last_seen)), workers(c)));
  fillRows(document.querySelector("#dead tbody"), o.dead, "no dead letters", 6, (d) =>
    el("tr", { "data-key": d.key },
      el("td", {}, d.at), el("td", {}, d.task || "?"), el("td", {}, d.id ? taskLink(d.id) : ""),
      el("td", {}, d.queue), el("td", { class: "err" }, d.error), el("td", {}, retryForm(d.key))));
}

let polls = 0;
async function poll() {
  try {
    const r = await fetch("/api/overview", { credentials: "same-origin", cache: "no-store" });
    if (r.ok) render(await r.json());
    if (++polls % 5 === 0) {
      const img = document.getElementById("chart");
      if (img) img.src = "/chart.svg?t=" + Date.now();
    }
  } catch (e) {
    // The server may be restarting: try again at the next tick.
  }
}

// The next poll starts 2 s after the previous one ended, never beside it: a slow answer (a
// task looked up in a queue of millions) is not asked for again while it is being computed.
function every(ms, f) {
  const tick = async () => {
    await f();
    setTimeout(tick, ms);
  };
  setTimeout(tick, ms);
}

if (document.body.dataset.page === "overview") every(2000, poll);

// A task page reloads when the task's state changes (queued → running → done...).
if (document.body.dataset.page === "task") {
  const shown = document.getElementById("state")?.textContent;
  const api = "/api" + location.pathname;
  every(2000, async () => {
    try {
      const r = await fetch(api, { credentials: "same-origin", cache: "no-store" });
      const state = r.ok ? (await r.json()).state : "unknown";
      if (state !== shown) location.reload();
    } catch (e) {
      // Try again at the next tick.
    }
  });
}
