// The a11i dashboard page: follows the server's WebSocket and renders wallets, agents, the
// spend chart and the live feed. Every piece of event data is rendered with textContent, never
// as HTML. The socket reconnects by itself and resumes from the last event id it saw.

const FEED_SIZE = 200;
const $ = (selector) => document.querySelector(selector);

const page = {
  session: null,
  lastId: null,
  feed: [],          // newest last
  view: null,
  socket: null,
  retryMs: 500,
  chart: null,
  chartKeys: "",
};

// --- small helpers -----------------------------------------------------------------------------

// An event id is "<ms>-<seq>", or "<namespace>/<ms>-<seq>" for a namespace's own stream (a
// Redis Cluster's); a cursor is one id per stream, comma-separated, as the server sends it.
function idKey(id) {
  const text = String(id);
  const [a, b] = text.slice(text.lastIndexOf("/") + 1).split("-");
  return [Number(a) || 0, Number(b) || 0];
}

function streamOf(id) {
  const text = String(id);
  const slash = text.lastIndexOf("/");
  return slash < 0 ? "" : text.slice(0, slash);
}

function parseCursor(cursor) {
  const positions = new Map();
  for (const id of String(cursor ?? "").split(",")) {
    if (id) positions.set(streamOf(id), id);
  }
  return positions;
}

function later(a, b) {
  const [a1, b1] = idKey(a);
  const [a2, b2] = idKey(b);
  return a1 > a2 || (a1 === a2 && b1 > b2);
}

function newer(id, cursor) {
  if (cursor === null || cursor === undefined) return true;
  const seen = parseCursor(cursor).get(streamOf(id));
  return seen === undefined || later(id, seen);
}

// The cursor moved past `ids` (each stream to the latest of its own).
function advanceCursor(cursor, ids) {
  const positions = parseCursor(cursor);
  for (const id of ids) {
    const stream = streamOf(id);
    const seen = positions.get(stream);
    if (seen === undefined || later(id, seen)) positions.set(stream, String(id));
  }
  const sorted = [...positions.keys()].sort();
  return sorted.length ? sorted.map((stream) => positions.get(stream)).join(",") : null;
}

// The page is in English: amounts and counts are grouped the English way ("$1,234.50",
// "12,345"), whatever the browser's locale, so that a "$" never meets a decimal comma.
const USD_CENTS = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
// Below a dollar, a call's cost needs more than cents: 6 decimals, aligned in a column.
const USD_SMALL = new Intl.NumberFormat("en-US", {
  style: "currency", currency: "USD", minimumFractionDigits: 6, maximumFractionDigits: 6,
});
const COUNT = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

function money(text) {
  if (text === null || text === undefined) return "—";
  const value = Number(text);
  if (!Number.isFinite(value)) return String(text);
  return (Math.abs(value) >= 1 || value === 0 ? USD_CENTS : USD_SMALL).format(value);
}

function count(value) {
  if (value === null || value === undefined) return "";
  const number = Number(value);
  return Number.isFinite(number) ? COUNT.format(number) : String(value);
}

function time(ts) {
  if (ts === null || ts === undefined) return "—";
  return new Date(ts * 1000).toLocaleTimeString();
}

function exhausts(ts, now) {
  if (ts === null || ts === undefined) return "—";
  if (ts <= now) return "now";
  const seconds = ts - now;
  if (seconds < 3600) return `in ${Math.ceil(seconds / 60)} min`;
  if (seconds < 86400 * 2) return `in ${(seconds / 3600).toFixed(1)} h`;
  return new Date(ts * 1000).toLocaleString();
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function button(label, className, slot, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (className) b.className = className;
  b.dataset.slot = slot;
  b.addEventListener("click", onClick);
  return b;
}

// Where a wallet's button sits (its row and slot): when the button is replaced (stop becomes
// resume, a row moves) the focus goes to its successor, not back to the top of the page.
function focusSlot(element) {
  const row = element && element.closest ? element.closest("#wallets tr[data-namespace]") : null;
  if (row === null || !element.dataset.slot) return null;
  return { namespace: row.dataset.namespace, slot: element.dataset.slot };
}

function refocus(where) {
  if (where === null) return;
  for (const row of $("#wallets tbody").rows) {
    if (row.dataset.namespace !== where.namespace) continue;
    const target = row.querySelector(`button[data-slot="${where.slot}"]`);
    if (target !== null) target.focus();
    return;
  }
}

// --- session and actions -------------------------------------------------------------------------

async function loadSession() {
  const response = await fetch("/api/session", { credentials: "same-origin" });
  if (response.status === 401) {
    window.location.assign("/login");
    return null;
  }
  const session = await response.json();
  page.session = session;
  $("#who").textContent = `${session.role} (${session.who})` +
    (session.insecure_no_auth ? " — NO AUTH: anyone reaching this port is admin" : "");
  $("#top-up-note").textContent = session.top_up_note;
  document.body.classList.toggle("can-act", Boolean(session.can_act));
  return session;
}

async function act(path, body) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-A11I-CSRF": page.session.csrf },
      body: JSON.stringify(body || {}),
    });
  } catch {
    throw new Error("the dashboard does not answer. Try again when the page is live.");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).error || detail; } catch { /* not JSON */ }
    const retry = response.status === 503 ? " Try again when the data source answers." : "";
    throw new Error(`${detail} (HTTP ${response.status}).${retry}`);
  }
  return response.json();
}

function confirmAction({ title, text, amount, confirmLabel, run }) {
  const dialog = $("#confirm");
  const opener = document.activeElement;
  const openerSlot = focusSlot(opener);
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-error").textContent = "";
  $("#confirm-amount-row").hidden = !amount;
  $("#confirm-amount").required = Boolean(amount);
  $("#confirm-amount").value = amount ? "10.00" : "";
  $("#confirm-ok").textContent = confirmLabel;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    // The browser gives focus back to the opener, unless an update replaced it meanwhile.
    if (openerSlot !== null && !opener.isConnected) refocus(openerSlot);
    if (dialog.returnValue !== "ok") return;
    // Some browsers keep the last returnValue on Escape: cleared, so that closing the dialog
    // shown again after an error with Escape cannot run the action a second time.
    dialog.returnValue = "";
    try {
      await run(amount ? $("#confirm-amount").value.trim() : undefined);
    } catch (error) {
      $("#confirm-error").textContent = `Failed: ${error.message}`;
      dialog.showModal();
    }
  };
  dialog.showModal();
}

function stopNamespace(ns) {
  confirmAction({
    title: `Emergency stop: ${ns}`,
    text: `Every sidecar of ${ns} will answer 403 emergency_stop to every call, within a second, until resumed.`,
    confirmLabel: `Stop ${ns}`,
    run: () => act(`/api/namespaces/${encodeURIComponent(ns)}/stop`),
  });
}

function resumeNamespace(ns) {
  confirmAction({
    title: `Resume ${ns}`,
    text: `Calls of ${ns} will be decided against its budget again.`,
    confirmLabel: `Resume ${ns}`,
    run: () => act(`/api/namespaces/${encodeURIComponent(ns)}/resume`),
  });
}

function topUp(ns) {
  const throughBudget = page.session.top_up_via === "agentbudget" && !ns.includes("/");
  confirmAction({
    title: `Top up ${ns}`,
    text: throughBudget
      ? `Raise the limit of ${ns}'s AgentBudget by this amount (its wallet follows at once; ` +
        "a namespace without an AgentBudget has its wallet raised directly)."
      : `Raise the limit of ${ns}'s wallet by this amount.`,
    amount: true,
    confirmLabel: "Top up",
    run: async (amount) => {
      const answer = await act(
        `/api/namespaces/${encodeURIComponent(ns)}/top-up`, { amount_usd: amount });
      if (answer.wallet_updated === false) {
        notify(`${ns}: the AgentBudget's limit is now ${money(answer.limit_usd)}; its wallet ` +
          "follows when Redis answers (the operator writes it). Do not top up again.");
      }
    },
  });
}

function notify(text) {
  const note = $("#top-up-note");
  note.textContent = text;
  note.classList.add("warning");
}

function setupHeader() {
  $("#cluster-stop").addEventListener("click", () => confirmAction({
    title: "Emergency stop: whole cluster",
    text: "Every sidecar in every namespace will answer 403 emergency_stop until resumed.",
    confirmLabel: "Stop every agent",
    run: () => act("/api/cluster/stop"),
  }));
  $("#cluster-resume").addEventListener("click", () => confirmAction({
    title: "Resume the cluster",
    text: "Lift the cluster-wide stop (namespaces stopped on their own stay stopped).",
    confirmLabel: "Resume cluster",
    run: () => act("/api/cluster/resume"),
  }));
  $("#logout").addEventListener("click", async () => {
    await fetch("/logout", {
      method: "POST", credentials: "same-origin", headers: { "X-A11I-CSRF": page.session.csrf },
    });
    window.location.assign("/login");
  });
}

// --- rendering -----------------------------------------------------------------------------------

const WALLET_CELLS = ["name", "phase", "limit num", "spent num", "remaining num", "burn num",
  "exhausts", "calls num", "blocked num", "actions admin-only"];

function setCell(td, text, className) {
  const value = text === null || text === undefined ? "" : String(text);
  if (td.textContent !== value) td.textContent = value;
  if (td.className !== className) td.className = className;
}

// A wallet's row is kept and updated in place: spend moves several times a second under load,
// and a row rebuilt between the press and the release of its Emergency stop loses the click.
function walletRow(existing, namespace) {
  const found = existing.get(namespace);
  if (found !== undefined) return found;
  const row = document.createElement("tr");
  row.dataset.namespace = namespace;
  for (const className of WALLET_CELLS) cell(row, "", className);
  return row;
}

function fillWalletRow(row, ns, now, canAct) {
  row.dataset.phase = ns.phase || "";
  row.dataset.suspended = ns.suspended ? "true" : "false";
  const [name, phase, limit, spent, remaining, burn, runsOut, calls, blocked, actions] = row.cells;
  setCell(name, ns.namespace, "name");
  setCell(phase, ns.phase || (ns.has_wallet ? "" : "no wallet"), `phase phase-${(ns.phase || "none").toLowerCase()}`);
  setCell(limit, ns.has_wallet ? (ns.limit_usd === null ? "unlimited" : money(ns.limit_usd)) : "—", "limit num");
  setCell(spent, money(ns.spent_usd), "spent num");
  setCell(remaining, money(ns.remaining_usd), "remaining num");
  setCell(burn, `${money(ns.burn_usd_per_hour)}/h`, "burn num");
  setCell(runsOut, exhausts(ns.exhausts_at, now), "exhausts");
  setCell(calls, count(ns.calls), "calls num");
  setCell(blocked, count(ns.blocked), "blocked num");
  // The buttons are only replaced when what they do changes (stop becomes resume).
  const buttons = !canAct || !ns.has_wallet ? "none" : ns.suspended ? "resume" : "stop";
  if (actions.dataset.buttons === buttons) return;
  const focused = focusSlot(document.activeElement);
  actions.dataset.buttons = buttons;
  actions.replaceChildren();
  if (buttons === "resume") {
    actions.appendChild(button("Resume", "resume", "toggle", () => resumeNamespace(ns.namespace)));
  } else if (buttons === "stop") {
    actions.appendChild(button("Emergency stop", "danger stop", "toggle", () => stopNamespace(ns.namespace)));
  }
  if (buttons !== "none") actions.appendChild(button("Top up", "top-up", "top-up", () => topUp(ns.namespace)));
  refocus(focused);
}

function renderWallets(view) {
  const body = $("#wallets tbody");
  const canAct = Boolean(page.session && page.session.can_act);
  const existing = new Map([...body.rows].map((row) => [row.dataset.namespace, row]));
  const rows = view.namespaces.map((ns) => walletRow(existing, ns.namespace));
  const focused = focusSlot(document.activeElement);
  const keep = new Set(rows);
  for (const row of [...body.rows]) if (!keep.has(row)) row.remove();
  // Only rows out of place move (moving a row takes the focus from its button: given back).
  rows.forEach((row, index) => {
    if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] || null);
  });
  view.namespaces.forEach((ns, index) => fillWalletRow(rows[index], ns, view.now, canAct));
  if (focused !== null && document.activeElement === document.body) refocus(focused);
  $("#cluster-banner").hidden = !view.cluster_stop;
}

function renderAgents(view) {
  const rows = view.agents.map((agent) => {
    const row = document.createElement("tr");
    row.dataset.namespace = agent.namespace;
    row.dataset.agent = agent.agent;
    cell(row, agent.namespace);
    cell(row, agent.agent, "name");
    cell(row, money(agent.spent_usd), "spent num");
    cell(row, count(agent.input_tokens), "num");
    cell(row, count(agent.output_tokens), "num");
    cell(row, count(agent.calls), "calls num");
    cell(row, count(agent.blocked), "blocked num");
    cell(row, agent.models.join(", "));
    return row;
  });
  $("#agents tbody").replaceChildren(...rows);
}

function renderFeed() {
  const rows = page.feed.slice().reverse().map((event) => {
    const row = document.createElement("tr");
    row.dataset.id = event.id;
    row.dataset.kind = event.kind;
    cell(row, time(event.ts), "time");
    cell(row, event.namespace === "*" ? "(cluster)" : event.namespace);
    if (event.kind === "action") {
      cell(row, event.actor);
      cell(row, event.action);
      cell(row, "action", "decision decision-action");
      const via = event.via ? ` via ${event.via}` : "";
      cell(row, event.amount_usd === null ? "" : `+${money(event.amount_usd)}${via}`, "num");
    } else {
      cell(row, event.agent);
      cell(row, event.model);
      cell(row, event.decision, `decision decision-${event.decision}`);
      cell(row, money(event.cost_usd), "num");
    }
    return row;
  });
  $("#feed tbody").replaceChildren(...rows);
}

const PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4"];
const CHART_HEIGHT = 260;
// The axes' font, set explicitly so that the labels' widths can be measured before drawing.
const AXIS_FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const MINUTE = 60;
const DAY = 86400;
const MONTH = 30 * DAY;
const YEAR = 365 * DAY;
// Steps between time ticks (the scale is in unix seconds): whole seconds and up, as uPlot's own.
const TIME_INCRS = [
  1, 5, 10, 15, 30,
  MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
  3600, 2 * 3600, 3 * 3600, 4 * 3600, 6 * 3600, 8 * 3600, 12 * 3600,
  DAY, 2 * DAY, 3 * DAY, 7 * DAY, 15 * DAY,
  MONTH, 2 * MONTH, 3 * MONTH, 6 * MONTH,
  YEAR, 2 * YEAR, 5 * YEAR, 10 * YEAR,
];
const CLOCK_SECONDS = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit", second: "2-digit" });
const CLOCK = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const DAY_AND_CLOCK = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });
const DAY_ONLY = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const MONTH_ONLY = new Intl.DateTimeFormat(undefined, { month: "short", year: "numeric" });
const YEAR_ONLY = new Intl.DateTimeFormat(undefined, { year: "numeric" });

// One line per time label, in the one format the step needs (uPlot's default adds a second line
// with the date under the first tick, which runs into its neighbours on a narrow chart).
function timeFormat(incr, span) {
  if (incr >= YEAR) return YEAR_ONLY;
  if (incr >= MONTH) return MONTH_ONLY;
  if (incr >= DAY) return DAY_ONLY;
  if (span > DAY) return DAY_AND_CLOCK;
  return incr < MINUTE ? CLOCK_SECONDS : CLOCK;
}

let measureContext = null;
function textWidth(text) {
  if (measureContext === null) {
    measureContext = document.createElement("canvas").getContext("2d");
    measureContext.font = AXIS_FONT;
  }
  return measureContext.measureText(text).width;
}

// The widest label a format can give (digits and month names differ in width), measured once.
const widest = new Map();
function widestLabel(format) {
  if (!widest.has(format)) {
    let most = 0;
    for (let month = 0; month < 12; month += 1) {
      for (const hour of [0, 9, 10, 11, 12, 20, 21, 22, 23]) {
        const date = new Date(2026, month, 28, hour, 58, 58);
        most = Math.max(most, textWidth(format.format(date)));
      }
    }
    widest.set(format, most);
  }
  return widest.get(format);
}

// Ticks at least one widest label apart, plus a gap: labels centred on them can never overlap.
function timeSpace(_u, _axis, min, max) {
  return Math.ceil(widestLabel(max - min > DAY ? DAY_AND_CLOCK : CLOCK_SECONDS)) + 24;
}

function timeValues(u, ticks, _axis, _space, incr) {
  const format = timeFormat(incr, u.scales.x.max - u.scales.x.min);
  return ticks.map((t) => format.format(new Date(t * 1000)));
}

const usdTicks = new Map();
function usdValues(_u, ticks, _axis, _space, incr) {
  // As many decimals as the step between ticks needs, cents at least below a dollar
  // ($0.0002, $0.05, $0.10, $1, $1,000).
  const needed = -Math.floor(Math.log10(incr) + 1e-9);
  const digits = incr >= 1 ? 0 : Math.min(6, Math.max(2, needed));
  if (!usdTicks.has(digits)) {
    usdTicks.set(digits, new Intl.NumberFormat("en-US", {
      style: "currency", currency: "USD", minimumFractionDigits: digits, maximumFractionDigits: digits,
    }));
  }
  const format = usdTicks.get(digits);
  return ticks.map((v) => format.format(v));
}

function usdSize(_u, values) {
  const most = Math.max(0, ...(values || []).map(textWidth));
  return Math.ceil(most) + 20;  // the ticks (10 px), the gap (5 px) and a little air
}

function timeRange(u, min, max) {
  const times = u.data[0];
  // A single time: uPlot would open the axis 86,400,000 s wide (a day in its millisecond units).
  if (times.length === 1) return [times[0] - 300, times[0] + 10];
  // A few points would stretch over the whole width: show at least the last five minutes.
  return max - min < 300 ? [max - 300, max + 10] : [min, max];
}

// The chart is a picture: its accessible name says what it shows (the window and the totals).
function describeChart(u) {
  const { min, max } = u.scales.x;
  if (min === null || max === null) return;
  const format = max - min > DAY ? DAY_AND_CLOCK : CLOCK;
  const totals = u.series.slice(1).map((series, index) => {
    const column = u.data[index + 1];
    return `${series.label} ${money(column[column.length - 1])}`;
  });
  $("#chart").setAttribute("aria-label", `Cumulative spend per namespace from ` +
    `${format.format(new Date(min * 1000))} to ${format.format(new Date(max * 1000))}: ${totals.join(", ")}`);
}

function chartWidth() {
  return Math.max(200, $("#chart").clientWidth || 800);
}

function renderChart(view) {
  const element = $("#chart");
  if (typeof window.uPlot !== "function") return;
  const names = Object.keys(view.series);
  const times = [...new Set(names.flatMap((ns) => view.series[ns].map((p) => p[0])))].sort((a, b) => a - b);
  if (times.length === 0) return;
  const columns = names.map((ns) => {
    const points = new Map(view.series[ns]);
    let last = null;
    return times.map((t) => {
      if (points.has(t)) last = points.get(t);
      return last;
    });
  });
  const data = [times, ...columns];
  const keys = names.join("\u0000");
  if (page.chart === null || page.chartKeys !== keys) {
    if (page.chart !== null) page.chart.destroy();
    page.chartKeys = keys;
    page.chart = new window.uPlot({
      width: chartWidth(),
      height: CHART_HEIGHT,
      series: [
        {},
        ...names.map((ns, i) => ({
          label: ns,
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          value: (_u, v) => (v === null ? "—" : money(v)),
        })),
      ],
      // Room on the right for half a time label, so that the last one is not cut off.
      padding: [null, Math.ceil(widestLabel(CLOCK_SECONDS) / 2), null, null],
      scales: { x: { time: true, range: timeRange } },
      hooks: { draw: [describeChart] },
      axes: [
        { font: AXIS_FONT, space: timeSpace, incrs: TIME_INCRS, values: timeValues },
        { font: AXIS_FONT, values: usdValues, size: usdSize },
      ],
    }, data, element);
  } else {
    page.chart.setData(data);
  }
}

function render() {
  if (page.view === null) return;
  renderWallets(page.view);
  renderAgents(page.view);
  renderChart(page.view);
}

function setConnection(text, state) {
  const status = $("#connection");
  status.textContent = text;
  status.dataset.state = state;
}

// --- the socket ----------------------------------------------------------------------------------

function addEvents(events, lastId) {
  let added = false;
  const fresh = [];
  for (const event of events) {
    if (!newer(event.id, page.lastId)) continue;  // already shown (a replay overlaps live events)
    page.feed.push(event);
    fresh.push(event.id);
    added = true;
  }
  // The server's cursor names every stream it follows, those without news too.
  page.lastId = advanceCursor(page.lastId, [...fresh, ...String(lastId ?? "").split(",").filter(Boolean)]);
  if (page.feed.length > FEED_SIZE) page.feed.splice(0, page.feed.length - FEED_SIZE);
  if (added) renderFeed();
}

function onMessage(message) {
  switch (message.type) {
    case "hello":
      break;
    case "view": {
      page.view = message;
      const source = $("#source-banner");
      source.hidden = message.source.ok;
      source.textContent = message.source.ok ? "" : `Data source unavailable: ${message.source.detail}`;
      render();
      break;
    }
    case "events":
      addEvents(message.events, message.last_id);
      break;
    case "error":
      setConnection(`error: ${message.message}`, "error");
      break;
    default:
      break;
  }
}

function connect() {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${window.location.host}/ws`);
  page.socket = socket;
  setConnection("connecting…", "connecting");
  socket.addEventListener("open", () => {
    socket.send(JSON.stringify({ type: "resume", since: page.lastId }));
    setConnection("live", "live");
    page.retryMs = 500;
  });
  socket.addEventListener("message", (event) => {
    try {
      onMessage(JSON.parse(event.data));
    } catch (error) {
      console.error("a11i: bad message", error);
    }
  });
  socket.addEventListener("close", async () => {
    if (page.socket !== socket) return;
    setConnection(`disconnected — reconnecting in ${(page.retryMs / 1000).toFixed(1)} s`, "reconnecting");
    const wait = page.retryMs;
    page.retryMs = Math.min(page.retryMs * 2, 5000);
    setTimeout(async () => {
      // A session that expired (or a restarted server with new tokens) goes back to the login.
      try {
        const session = await loadSession();
        if (session === null) return;
      } catch { /* the server is still away: try the socket again anyway */ }
      connect();
    }, wait);
  });
}

async function start() {
  setupHeader();
  const session = await loadSession();
  if (session === null) return;
  connect();
  // The chart follows its box (the window, a scroll bar appearing), not only window resizes.
  new ResizeObserver(() => {
    if (page.chart !== null && page.chart.width !== chartWidth()) {
      page.chart.setSize({ width: chartWidth(), height: CHART_HEIGHT });
    }
  }).observe($("#chart"));
}

start();
