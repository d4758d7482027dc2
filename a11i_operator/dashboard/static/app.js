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

function idKey(id) {
  const [a, b] = String(id).split("-");
  return [Number(a) || 0, Number(b) || 0];
}

function newer(id, than) {
  if (than === null || than === undefined) return true;
  const [a1, b1] = idKey(id);
  const [a2, b2] = idKey(than);
  return a1 > a2 || (a1 === a2 && b1 > b2);
}

function money(text) {
  if (text === null || text === undefined) return "—";
  const value = Number(text);
  if (!Number.isFinite(value)) return String(text);
  const digits = Math.abs(value) >= 1 || value === 0 ? 2 : 6;
  return "$" + value.toFixed(digits);
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

function button(label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (className) b.className = className;
  b.addEventListener("click", onClick);
  return b;
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
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-A11I-CSRF": page.session.csrf },
    body: JSON.stringify(body || {}),
  });
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error || message; } catch { /* not JSON */ }
    throw new Error(message);
  }
  return response.json();
}

function confirmAction({ title, text, amount, confirmLabel, run }) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-error").textContent = "";
  $("#confirm-amount-row").hidden = !amount;
  $("#confirm-amount").required = Boolean(amount);
  $("#confirm-amount").value = amount ? "10.00" : "";
  $("#confirm-ok").textContent = confirmLabel;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
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
  confirmAction({
    title: `Top up ${ns}`,
    text: `Raise the limit of ${ns}'s wallet by this amount.`,
    amount: true,
    confirmLabel: "Top up",
    run: (amount) => act(`/api/namespaces/${encodeURIComponent(ns)}/top-up`, { amount_usd: amount }),
  });
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

function renderWallets(view) {
  const body = $("#wallets tbody");
  const rows = [];
  const canAct = page.session && page.session.can_act;
  for (const ns of view.namespaces) {
    const row = document.createElement("tr");
    row.dataset.namespace = ns.namespace;
    row.dataset.phase = ns.phase || "";
    row.dataset.suspended = ns.suspended ? "true" : "false";
    cell(row, ns.namespace, "name");
    cell(row, ns.phase || (ns.has_wallet ? "" : "no wallet"), `phase phase-${(ns.phase || "none").toLowerCase()}`);
    cell(row, ns.has_wallet ? (ns.limit_usd === null ? "unlimited" : money(ns.limit_usd)) : "—", "limit num");
    cell(row, money(ns.spent_usd), "spent num");
    cell(row, money(ns.remaining_usd), "remaining num");
    cell(row, `${money(ns.burn_usd_per_hour)}/h`, "burn num");
    cell(row, exhausts(ns.exhausts_at, view.now), "exhausts");
    cell(row, ns.calls, "calls num");
    cell(row, ns.blocked, "blocked num");
    const actions = cell(row, "", "actions admin-only");
    if (canAct && ns.has_wallet) {
      if (ns.suspended) {
        actions.appendChild(button("Resume", "resume", () => resumeNamespace(ns.namespace)));
      } else {
        actions.appendChild(button("Emergency stop", "danger stop", () => stopNamespace(ns.namespace)));
      }
      actions.appendChild(button("Top up", "top-up", () => topUp(ns.namespace)));
    }
    rows.push(row);
  }
  body.replaceChildren(...rows);
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
    cell(row, agent.input_tokens.toLocaleString(), "num");
    cell(row, agent.output_tokens.toLocaleString(), "num");
    cell(row, agent.calls, "calls num");
    cell(row, agent.blocked, "blocked num");
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
    cell(row, time(event.ts));
    cell(row, event.namespace === "*" ? "(cluster)" : event.namespace);
    if (event.kind === "action") {
      cell(row, event.actor);
      cell(row, event.action);
      cell(row, "action", "decision decision-action");
      cell(row, event.amount_usd === null ? "" : `+${money(event.amount_usd)}`, "num");
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
  const width = Math.max(320, element.clientWidth || 800);
  if (page.chart === null || page.chartKeys !== keys) {
    if (page.chart !== null) page.chart.destroy();
    page.chartKeys = keys;
    page.chart = new window.uPlot({
      width,
      height: 260,
      series: [
        {},
        ...names.map((ns, i) => ({
          label: ns,
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          value: (_u, v) => (v === null ? "—" : `$${v.toFixed(6)}`),
        })),
      ],
      // A lone point would stretch the time axis over years: show at least the last minutes.
      scales: { x: { time: true, range: (_u, min, max) => (max - min < 300 ? [max - 300, max + 10] : [min, max]) } },
      axes: [{}, { values: (_u, ticks) => ticks.map((v) => `$${v}`), size: 70 }],
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

function addEvents(events) {
  let added = false;
  for (const event of events) {
    if (!newer(event.id, page.lastId)) continue;  // already shown (a replay overlaps live events)
    page.feed.push(event);
    page.lastId = event.id;
    added = true;
  }
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
      addEvents(message.events);
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
  window.addEventListener("resize", () => {
    if (page.chart !== null) page.chart.setSize({ width: Math.max(320, $("#chart").clientWidth), height: 260 });
  });
}

start();
