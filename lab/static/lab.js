// The lab page: a column per implementation the lab runs, built from the snapshots
// the server pushes over server-sent events (the implementations, their titles,
// services and controls all come from there); the actions are POSTs. No build step,
// no framework.
"use strict";

const COUNTERS = ["submitted", "queued", "running", "retrying", "redelivery",
                  "succeeded", "failed", "lost", "skipped", "abandoned", "dead-lettered"];
const COUNTER_LABELS = {redelivery: "awaiting redelivery"};
const COLORS = {
  queued: "#6b7f99", running: "#1f6fd6", retrying: "#d08a00", redelivery: "#8a4fd0",
  succeeded: "#23884a", failed: "#d0452f", lost: "#a4001d", skipped: "#8d8d8d",
  abandoned: "#b85c00", "dead-lettered": "#6d4c41",
};
const MARKS = {kill: "#a4001d", stop: "#d08a00", restart: "#23884a", fail: "#8a4fd0"};
const ACTION_BUTTONS = {
  kill: {label: "kill", cls: "danger", title: "SIGKILL: it dies at once, with whatever it runs"},
  stop: {label: "stop", cls: "warn", title: "SIGTERM: a graceful stop (SIGKILL if it takes too long)"},
  restart: {label: "restart", cls: "ok", title: "stop it if it runs, then start it and wait until it serves"},
};
// Which columns this browser shows: {implementation: true|false} for the ones the
// user chose; any other column shows if the lab says it does by default.
const SHOWN_KEY = "lab.shown-columns";

let snap = null;
let columns = [];  // the implementations the lab runs, in its order
let layout = "";  // what the columns were built from: rebuilt only when it changes
let clockOffset = 0;  // server time minus this browser's, in seconds
const localEvents = [];  // actions the lab refused (never reached its log)

const $ = (id) => document.getElementById(id);
const serverNow = () => Date.now() / 1000 + clockOffset;
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const titleOf = (impl) => snap?.implementations[impl]?.title || impl;

function age(seconds) {
  if (seconds == null || seconds < 0) return "";
  const s = Math.floor(seconds);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

function clock(t) {
  const d = new Date(t * 1000);
  return d.toLocaleTimeString([], {hour12: false}) + "." + String(d.getMilliseconds()).padStart(3, "0").slice(0, 1);
}

function stateChip(state, text) {
  const label = state === "redelivery" ? "awaiting redelivery" : state;
  return `<span class="st ${esc(state)}">${esc(text ?? label)}</span>`;
}

// --- which columns are shown --------------------------------------------------------

function chosen() {
  try {
    const stored = JSON.parse(localStorage.getItem(SHOWN_KEY) || "{}");
    return stored && typeof stored === "object" ? stored : {};
  } catch {
    return {};  // unreadable, or storage refused: the defaults
  }
}

function shownColumns() {
  const choice = chosen();
  const shown = columns.filter((impl) =>
    impl in choice ? Boolean(choice[impl]) : snap.implementations[impl].shown_by_default);
  // None of the defaults runs and nothing was chosen here: every column.
  if (!shown.length && !columns.some((impl) => impl in choice)) return columns.slice();
  return shown;
}

function choose(impl, show) {
  const choice = chosen();
  choice[impl] = show;
  try { localStorage.setItem(SHOWN_KEY, JSON.stringify(choice)); } catch { /* kept for this page only */ }
  applyShown();
}

function applyShown() {
  const shown = shownColumns();
  $("columns").style.setProperty("--columns", String(Math.max(shown.length, 1)));
  for (const impl of columns) {
    const visible = shown.includes(impl);
    $(`col-${impl}`).hidden = !visible;
    const box = document.querySelector(`#choose input[data-column="${impl}"]`);
    if (box) box.checked = visible;
    if (visible && snap) renderColumn(impl);
  }
}

// --- the columns, built from the snapshot --------------------------------------------

function controlsRow(impl, controls) {
  return Object.entries(controls).map(([service, actions]) =>
    `<span class="svcname">${esc(service)}</span>` + actions.map((action) => {
      const b = ACTION_BUTTONS[action] || {label: action, cls: "", title: ""};
      return `<button type="button" class="${b.cls}" title="${esc(b.title)}" data-implementation="${esc(impl)}" ` +
        `data-action="${esc(action)}" data-service="${esc(service)}">${esc(b.label)}</button>`;
    }).join("")).join("");
}

function columnHtml(impl, d) {
  const i = esc(impl);
  return `<section class="column" id="col-${i}" data-implementation="${i}">` +
    `<h2>${esc(d.title)} <small>${esc(d.delivery)}</small></h2>` +
    `<div class="about"><span id="${i}-about"></span> <span class="links" id="${i}-links"></span></div>` +
    `<div class="procs" id="${i}-procs"></div>` +
    `<div class="actions"><div class="row">` +
    `<button type="button" data-implementation="${i}" data-action="item">create an item</button>` +
    `<label class="count">N <input type="number" id="${i}-count" value="5" min="1" max="100"></label>` +
    `<button type="button" class="primary" data-implementation="${i}" data-action="send">send 5 notifications</button>` +
    `<button type="button" data-implementation="${i}" data-action="fail" id="${i}-fail">make the next notifications fail</button>` +
    `</div><div class="row svc">${controlsRow(impl, d.controls)}</div></div>` +
    `<table class="counters" id="${i}-counters"></table>` +
    `<svg class="timeline" id="${i}-timeline" role="img" aria-label="${esc(d.title)} timeline"></svg>` +
    `<div class="tasks"><table>` +
    `<thead><tr><th>task</th><th>kind</th><th>state</th><th>att.</th><th>age</th><th>why</th></tr></thead>` +
    `<tbody id="${i}-tasks"></tbody></table></div></section>`;
}

function buildColumns(data) {
  columns = Object.keys(data.implementations);
  $("columns").innerHTML = columns.map((impl) => columnHtml(impl, data.implementations[impl])).join("");
  $("choose").innerHTML = "show: " + columns.map((impl) =>
    `<label><input type="checkbox" data-column="${esc(impl)}"> ${esc(data.implementations[impl].title)}</label>`).join(" ");
  for (const impl of columns) {
    buildCounters(impl);
    $(`${impl}-count`).addEventListener("input", updateSendLabels);
  }
  $("titles").textContent = columns.map(titleOf).join(" vs ");
  updateSendLabels();
}

// --- counters -------------------------------------------------------------------------

function buildCounters(impl) {
  const head = COUNTERS.map((c) => `<th>${COUNTER_LABELS[c] || c}</th>`).join("");
  const row = (label, prefix) => `<tr><th>${label}</th>` +
    COUNTERS.map((c) => `<td id="${prefix}-${c}" class="c-${c}" data-counter="${c}">0</td>`).join("") + "</tr>";
  $(`${impl}-counters`).innerHTML = `<thead><tr><th></th>${head}</tr></thead><tbody>` +
    row("notifications", impl) + row("all tasks", `${impl}-all`) + "</tbody>";
}

function renderCounters(impl, data) {
  for (const [key, prefix] of [["counters", impl], ["all", `${impl}-all`]]) {
    for (const c of COUNTERS) {
      const cell = $(`${prefix}-${c}`);
      const value = data[key][c] || 0;
      if (cell.textContent !== String(value)) cell.textContent = value;
      cell.classList.toggle("nonzero", value > 0);
    }
  }
}

// --- processes, links, buttons ---------------------------------------------------------

function renderProcs(impl, data) {
  $(`${impl}-procs`).innerHTML = data.processes.map((p) =>
    `<span class="proc ${p.up ? "up" : "down"}" id="${esc(impl)}-proc-${esc(p.service)}" data-up="${p.up}">` +
    `${esc(p.service)} ${p.up ? "up" : "down"}` +
    (p.detail ? `<span class="detail">${esc(p.detail)}</span>` : "") + "</span>").join("");
  const fail = $(`${impl}-fail`);
  const n = data.fail_first;
  fail.classList.toggle("on", n > 0);
  fail.dataset.state = n > 0 ? "on" : "off";
  fail.textContent = n > 0
    ? `failing: first ${n} attempts fail (turn off)`
    : "make the next notifications fail";
}

function renderAbout(impl, data) {
  const about = (data.redelivery ? `${data.about}; a dead worker's task: ${data.redelivery.when}` : data.about) + ".";
  const node = $(`${impl}-about`);
  if (node.textContent !== about) node.textContent = about;
  const links = data.links.map((l) => l.url
    ? `<a href="${esc(l.url)}" target="_blank" rel="noopener">${esc(l.label)}</a>`
    : `<span class="why">${esc(l.label)}: ${esc(l.note || "")}</span>`).join(" ");
  if ($(`${impl}-links`).innerHTML !== links) $(`${impl}-links`).innerHTML = links;
}

function updateSendLabels() {
  for (const impl of columns) {
    const n = Math.max(1, parseInt($(`${impl}-count`).value, 10) || 1);
    document.querySelector(`button[data-implementation="${impl}"][data-action="send"]`).textContent =
      `send ${n} notification${n === 1 ? "" : "s"}`;
  }
}

// --- task table -----------------------------------------------------------------------

function renderTasks(impl, data) {
  const now = serverNow();
  const rows = data.tasks.slice().reverse().map((t) => {
    const why = [t.note, t.error].filter(Boolean).join(" · ");
    const attempts = t.attempts + (t.retries ? ` (${t.retries} retr.)` : "");
    return `<tr data-task="${esc(t.id)}" data-state="${esc(t.state)}">` +
      `<td class="mono" title="${esc(t.id)}">${esc(t.short)}</td><td>${esc(t.kind)}</td>` +
      `<td>${stateChip(t.state)}</td><td>${esc(attempts)}</td>` +
      `<td class="age" data-since="${t.queued_at ?? ""}">${age(now - t.queued_at)}</td>` +
      `<td class="why" title="${esc(t.runner ?? "")}">${esc(why)}</td></tr>`;
  });
  $(`${impl}-tasks`).innerHTML = rows.join("") ||
    `<tr><td colspan="6" class="why">no tasks yet in this round</td></tr>`;
}

function tickAges() {
  const now = serverNow();
  for (const cell of document.querySelectorAll("td.age[data-since]")) {
    const since = parseFloat(cell.dataset.since);
    if (!Number.isNaN(since)) cell.textContent = age(now - since);
  }
  if (snap) for (const impl of shownColumns()) renderTimeline(impl);
}

// --- timeline (SVG): a bar per task, a line per kill / stop / restart ----------------

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

function renderTimeline(impl) {
  const svg = $(`${impl}-timeline`);
  const width = svg.clientWidth || 600;
  const height = svg.clientHeight || 170;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const now = serverNow();
  const tasks = snap.implementations[impl].tasks.filter((t) => t.kind !== "beat").slice(-18);
  // Its own actions, and those on a service every column shares (Redis).
  const marks = snap.events.filter((e) => e.service && (e.implementation === impl || e.shared));
  let t0 = snap.since;
  if (tasks.length) t0 = Math.max(t0, Math.min(...tasks.map((t) => t.queued_at)) - 1);
  t0 = Math.max(t0, now - 180);
  // Once nothing is in flight the story is over: stop scrolling and keep it in view.
  const busy = tasks.some((t) => t.in_flight);
  const last = Math.max(t0, ...tasks.map((t) => t.ended_at ?? t.started_at ?? t.queued_at),
                        ...marks.map((e) => e.at));
  const t1 = Math.max(busy ? now + 1 : Math.min(now + 1, last + 6), t0 + 20);
  const left = 4, right = width - 6, top = 22, bottom = height - 16;
  const x = (t) => left + (right - left) * (Math.min(Math.max(t, t0), t1) - t0) / (t1 - t0);
  // time axis: a tick every 5 or 10 s
  const step = (t1 - t0) > 90 ? 30 : (t1 - t0) > 40 ? 10 : 5;
  // ticks counted from the start of the round, as the labels are
  for (let t = snap.since + Math.ceil((t0 - snap.since) / step) * step; t <= t1; t += step) {
    svg.append(el("line", {x1: x(t), x2: x(t), y1: top - 4, y2: bottom, stroke: "#eceff3"}));
    svg.append(el("text", {x: x(t) + 2, y: height - 4}, `${age(t - snap.since)}`));
  }
  const rowH = Math.max(4, Math.min(9, (bottom - top) / Math.max(tasks.length, 1)));
  tasks.forEach((t, i) => {
    const y = top + i * rowH;
    const h = Math.max(2, rowH - 2);
    const end = t.ended_at ?? now;
    const started = t.started_at;
    // waiting (queued): a thin line; running: a bar in the state's colour
    svg.append(el("line", {x1: x(t.queued_at), x2: x(started ?? end), y1: y + h / 2, y2: y + h / 2,
                           stroke: COLORS.queued, "stroke-width": 1}));
    if (started != null) {
      const bar = el("rect", {x: x(started), y, width: Math.max(2, x(end) - x(started)), height: h,
                              fill: COLORS[t.state] || "#999", rx: 1});
      if (t.state === "redelivery") bar.setAttribute("fill-opacity", "0.45");
      bar.append(el("title", {}, `${t.short} ${t.kind}: ${t.state}, attempts ${t.attempts}`));
      svg.append(bar);
    }
    if (t.state === "lost") {
      svg.append(el("text", {x: x(end) + 2, y: y + h, fill: COLORS.lost, style: `fill:${COLORS.lost};font-weight:700`}, "✕"));
    }
    if (t.executions > 1 && t.state !== "lost") {
      svg.append(el("text", {x: x(end) + 2, y: y + h}, `×${t.executions}`));
    }
  });
  let lastLabelX = -100;
  for (const e of marks) {
    if (e.at < t0 || e.at > t1) continue;
    const color = MARKS[e.action] || "#555";
    svg.append(el("line", {x1: x(e.at), x2: x(e.at), y1: 12, y2: bottom, stroke: color,
                           "stroke-width": 1.5, "stroke-dasharray": e.action === "kill" ? "" : "4 2"}));
    const label = `${e.action} ${e.service}`;
    const lx = Math.max(x(e.at) + 2, lastLabelX + 4);
    svg.append(el("text", {x: Math.min(lx, right - 70), y: 10, style: `fill:${color}`}, label));
    lastLabelX = lx + label.length * 5.4;
  }
  if (!tasks.length) {
    svg.append(el("text", {x: width / 2 - 90, y: height / 2}, "the tasks of this round appear here"));
  }
}

// --- event log ------------------------------------------------------------------------

function inFlightSummary(list) {
  if (!list.length) return "";
  const tally = (key) => {
    const counts = {};
    for (const t of list) counts[t[key]] = (counts[t[key]] || 0) + 1;
    return Object.entries(counts).map(([s, n]) => `${n} ${s === "redelivery" ? "awaiting redelivery" : s}`).join(", ");
  };
  const chips = list.slice(0, 24).map((t) => stateChip(t.now, t.id.slice(0, 8))).join(" ");
  const more = list.length > 24 ? ` … and ${list.length - 24} more` : "";
  return `<div>in flight then: <b>${list.length}</b> (${tally("then")}) → now: ${tally("now")}</div>` +
         `<div class="chips">${chips}${more}</div>`;
}

function renderEvents() {
  const events = [...snap.events, ...localEvents].sort((a, b) => b.at - a.at);
  $("events").innerHTML = events.map((e) => {
    const status = e.status === "pending" ? "…running" : e.status === "ok" ? "✓ ok" : "✗ error";
    const took = e.duration != null ? ` <span class="why">(${e.duration.toFixed(1)} s)</span>` : "";
    return `<tr data-event="${esc(e.id)}" data-status="${esc(e.status)}" data-action="${esc(e.action)}" ` +
      `data-implementation="${esc(e.implementation)}" data-service="${esc(e.service ?? "")}">` +
      `<td class="time">${clock(e.at)}</td><td class="impl">${esc(titleOf(e.implementation))}</td>` +
      `<td>${esc(e.label)}</td><td class="status-${esc(e.status)}">${status}${took}</td>` +
      `<td>${esc(e.result)}${inFlightSummary(e.in_flight || [])}</td></tr>`;
  }).join("") || `<tr><td class="why">nothing done yet in this round</td></tr>`;
}

// --- snapshot -------------------------------------------------------------------------

function renderColumn(impl) {
  const d = snap.implementations[impl];
  renderAbout(impl, d);
  renderProcs(impl, d);
  renderCounters(impl, d);
  renderTasks(impl, d);
  renderTimeline(impl);
}

function render(data) {
  snap = data;
  clockOffset = data.now - Date.now() / 1000;
  const shape = JSON.stringify(Object.entries(data.implementations).map(
    ([impl, d]) => [impl, d.title, d.delivery, d.controls]));
  if (shape !== layout) {
    layout = shape;
    buildColumns(data);
    applyShown();
  }
  $("target").textContent = data.target;
  const s = data.settings;
  // Each column's subtitle says when its broker hands a dead worker's task back.
  $("settings-line").textContent =
    `${s.compose ? "The compose stack's settings" : "Demo settings"}: a notification takes ` +
    `${s.notification_delay} s.`;
  const note = $("ledger-note");
  note.hidden = !data.ledger_note;
  note.textContent = data.ledger_note || "";
  for (const impl of shownColumns()) renderColumn(impl);
  renderEvents();
  document.body.dataset.version = String((Number(document.body.dataset.version) || 0) + 1);
}

function connect() {
  const conn = $("conn");
  const source = new EventSource("/api/events");
  source.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  source.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; };
}

// --- actions --------------------------------------------------------------------------

async function act(button) {
  const implementation = button.dataset.implementation;
  const body = {
    implementation,
    action: button.dataset.action,
    service: button.dataset.service || null,
    count: Math.max(1, parseInt($(`${implementation}-count`).value, 10) || 1),
  };
  const refused = (result) => {
    localEvents.push({id: `local-${localEvents.length}`, at: serverNow(), implementation, action: body.action,
                      service: body.service, label: `${body.action} ${body.service || ""}`, status: "error", result});
    if (snap) renderEvents();
  };
  button.disabled = true;
  try {
    const r = await fetch("/api/actions", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    });
    if (!r.ok) {
      const detail = (await r.json().catch(() => ({}))).detail;
      refused(`refused: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    }
  } catch (err) {
    refused(`the lab did not answer: ${err}`);
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action][data-implementation]");
    if (button) act(button);
  });
  document.addEventListener("change", (e) => {
    const box = e.target.closest("#choose input[data-column]");
    if (box) choose(box.dataset.column, box.checked);
  });
  $("reset").addEventListener("click", async () => {
    localEvents.length = 0;
    await fetch("/api/reset", {method: "POST"});
  });
  connect();
  setInterval(tickAges, 1000);
});
