// The Comet console: a hash-routed single page over the JSON API under /api. Every value from
// the server is inserted as text (never as HTML). With auth on, any 401 shows the login form;
// the session lives in an HttpOnly cookie the page never sees.

import { draw } from "/assets/chart.js";

const page = document.getElementById("page");
let timer = null; // the current page's refresh timer

// ---- helpers -------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch("/api" + path, opts);
  } catch (e) {
    throw new Error(`the console did not answer: ${e.message}`);
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!resp.ok) {
    let msg = (data && data.error) || text || resp.statusText;
    if (data && data.leader) msg += ` (the leader is at ${data.leader})`;
    if (resp.status === 401 && path !== "/login") {
      loginPage(msg);
      throw new Error(msg);
    }
    throw new Error(msg);
  }
  return data;
}

// ---- login ---------------------------------------------------------------------------------

function showUser(session) {
  const who = document.getElementById("user-box");
  const name = document.getElementById("user-name-label");
  const auth = session && session.auth_enabled;
  who.hidden = !auth;
  name.textContent = auth && session.user ? `${session.user} (${session.user_type})` : "";
}

function loginPage(message) {
  if (timer) { clearInterval(timer); timer = null; }
  showUser(null);
  const form = h("form", { id: "login-form", class: "login" },
    h("label", {}, "User name", h("input", { id: "login-username", name: "username", autocomplete: "username", required: true })),
    h("label", {}, "Password", h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { id: "login-submit", type: "submit", text: "Log in" }));
  page.replaceChildren(h("h2", { text: "Log in" }),
    h("section", { class: "card" },
      h("p", { class: "muted", text: "This cluster has authentication on: log in with the name and password of a Comet user." }),
      form, errorBox("login-error")));
  if (message && !/log in first/.test(message)) showError("login-error", new Error(message));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError("login-error", null);
    const f = new FormData(form);
    try {
      const r = await api("POST", "/login", { username: f.get("username"), password: f.get("password") });
      showUser({ auth_enabled: true, user: r.user, user_type: r.user_type });
      route();
    } catch (e) { showError("login-error", e); }
  });
}

async function logout() {
  try { await api("POST", "/logout", {}); } catch (_) { /* the cookie is gone either way */ }
  loginPage(null);
}

function table(id, headers, rows) {
  return h("table", { id },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { text: x })))),
    h("tbody", {}, rows));
}

function fmtTime(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "";
}

function fmtAgo(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return "now";
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s}s ago` : `${Math.round(s / 60)}m ago`;
}

function fmtDuration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function errorBox(id) { return h("div", { id, class: "error", role: "alert" }); }
function showError(id, e) { const b = document.getElementById(id); if (b) b.textContent = e ? e.message || String(e) : ""; }

// Asks for the resource's name before a destructive action; resolves to the typed name or null.
function confirmName(text, name) {
  const dialog = document.getElementById("confirm-dialog");
  const input = document.getElementById("confirm-input");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-name").textContent = name;
  input.value = "";
  return new Promise((resolve) => {
    const cancel = document.getElementById("confirm-cancel");
    const done = (value) => {
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("close", onClose);
      resolve(value);
    };
    const onCancel = () => { dialog.close("cancel"); };
    const onClose = () => done(dialog.returnValue === "ok" ? input.value : null);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("close", onClose);
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
}

function every(ms, fn) {
  fn();
  timer = setInterval(fn, ms);
}

// ---- cluster -------------------------------------------------------------------------------

function pill(text, cls) { return h("span", { class: "pill " + (cls || "") , text }); }

async function clusterPage() {
  const body = h("div", { id: "cluster-body" });
  const charts = h("section", { class: "card" }, h("h3", { text: "Live charts" }),
    h("div", { class: "charts" },
      h("div", { class: "chart" }, h("b", { text: "Throughput (messages/s)" }),
        h("div", { class: "legend" }, h("span", { style: "color:#3559d9", text: "■ in" }), h("span", { style: "color:#1f8a4c", text: "■ out" })),
        document.createElementNS("http://www.w3.org/2000/svg", "svg")),
      h("div", { class: "chart" }, h("b", { text: "Backlog (messages)" }),
        h("div", { class: "legend" }, h("span", { style: "color:#c62d2d", text: "■ not yet consumed" })),
        document.createElementNS("http://www.w3.org/2000/svg", "svg")),
      h("div", { class: "chart" }, h("b", { text: "RPC latency at the proxies (ms) " }),
        h("select", { id: "latency-rpc", "aria-label": "RPC" }),
        h("div", { class: "legend" }, h("span", { style: "color:#3559d9", text: "■ p50" }), h("span", { style: "color:#c62d2d", text: "■ p99" }),
          h("span", { id: "latency-now", class: "muted" })),
        document.createElementNS("http://www.w3.org/2000/svg", "svg"))));
  charts.querySelectorAll("svg")[0].id = "chart-throughput";
  charts.querySelectorAll("svg")[1].id = "chart-backlog";
  charts.querySelectorAll("svg")[2].id = "chart-latency";
  page.replaceChildren(h("h2", { text: "Cluster" }), errorBox("cluster-error"), charts, body);
  every(2000, async () => {
    try {
      const [o, s] = await Promise.all([api("GET", "/overview"), api("GET", "/series")]);
      showError("cluster-error", null);
      renderOverview(body, o);
      const times = s.samples.map((x) => x.t_ms);
      draw(document.getElementById("chart-throughput"), times, [
        { name: "in", color: "#3559d9", values: s.samples.map((x) => x.in_rate) },
        { name: "out", color: "#1f8a4c", values: s.samples.map((x) => x.out_rate) },
      ], "msg/s");
      draw(document.getElementById("chart-backlog"), times, [
        { name: "backlog", color: "#c62d2d", values: s.samples.map((x) => x.backlog) },
      ], "messages");
      drawLatency(s.samples);
    } catch (e) { showError("cluster-error", e); }
  });
}

// The latency chart of the RPC chosen in its selector (send_message first when there is one).
function drawLatency(samples) {
  const select = document.getElementById("latency-rpc");
  const rpcs = [...new Set(samples.flatMap((x) => Object.keys(x.latency || {})))].sort();
  const chosen = select.value || (rpcs.includes("send_message") ? "send_message" : rpcs[0] || "");
  const have = [...select.options].map((o) => o.value).join(",");
  if (have !== rpcs.join(",")) {
    select.replaceChildren(...rpcs.map((r) => h("option", { value: r, text: r, selected: r === chosen })));
  }
  const rows = samples.filter((x) => x.latency && x.latency[chosen]);
  const last = rows[rows.length - 1];
  document.getElementById("latency-now").textContent = rpcs.length === 0
    ? "no RPC timed yet (the proxies report their rocketmq_rpc_latency histograms; metrics must be on)"
    : last ? `${chosen}: p50 ${last.latency[chosen].p50_ms.toFixed(2)} ms, p99 ${last.latency[chosen].p99_ms.toFixed(2)} ms over ${last.latency[chosen].calls} calls` : "";
  draw(document.getElementById("chart-latency"), rows.map((x) => x.t_ms), [
    { name: "p50", color: "#3559d9", values: rows.map((x) => x.latency[chosen].p50_ms) },
    { name: "p99", color: "#c62d2d", values: rows.map((x) => x.latency[chosen].p99_ms) },
  ], "ms");
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function diskCell(d) {
  if (!d) return h("td", { class: "muted", text: "no answer" });
  const pct = (x) => `${(x * 100).toFixed(1)}%`;
  const cls = d.state === "ok" ? "good" : "bad";
  const label = d.state === "ok" ? "ok" : d.state === "cleaning" ? "above high: cleaning" : "above refuse: appends refused";
  return h("td", { class: "disk" },
    h("meter", { min: 0, max: 1, low: d.high_watermark, high: d.refuse_watermark, optimum: 0, value: d.used_ratio }),
    ` ${pct(d.used_ratio)} used (high ${pct(d.high_watermark)}, refuse ${pct(d.refuse_watermark)}) `,
    pill(label, cls), h("span", { class: "muted", text: ` ${fmtBytes(d.storage_bytes)} stored` }));
}

function renderOverview(body, o) {
  const n = o.node;
  document.getElementById("node-state").textContent =
    `${o.cluster} · node ${n.node_id} (${n.state}) · term ${n.term}`;
  body.replaceChildren(
    h("section", { class: "card" }, h("h3", { text: "Controllers" }),
      h("p", { class: "muted", text: `This page is served by node ${n.node_id} (${n.state}); leader ${n.leader_id ?? "unknown"}${n.leader_address ? " at " + n.leader_address : ""}; last log index ${n.last_log_index ?? "-"}, applied ${n.last_applied_index ?? "-"}; metadata revision ${o.revision}.` }),
      table("controllers-table", ["node", "address", "role", "leader"],
        o.controllers.map((c) => h("tr", {}, h("td", { text: c.node_id }), h("td", { text: c.address }),
          h("td", { text: c.voter ? "voter" : "learner" }), h("td", {}, c.leader ? pill("leader", "good") : ""))))),
    h("section", { class: "card" }, h("h3", { text: "Broker sets" }),
      o.broker_sets.length === 0 ? h("p", { class: "muted", text: "No broker registered yet." }) :
      table("brokers-table", ["broker set", "id", "address", "role", "epoch", "in sync", "alive", "replication lag", "disk use / watermarks", "last heartbeat"],
        o.broker_sets.flatMap((s) => s.members.map((m) => h("tr", { "data-broker": `${s.name}/${m.broker_id}` },
          h("td", { text: s.name }), h("td", { text: m.broker_id }), h("td", { text: m.address }),
          h("td", { text: m.role }), h("td", { text: s.master_epoch }),
          h("td", {}, m.in_sync ? pill("yes", "good") : pill("no", "bad")),
          h("td", {}, m.alive ? pill("alive", "good") : pill("down", "bad")),
          h("td", { class: "lag", text: m.replication_lag_bytes === null ? (m.role === "replica" ? "unknown" : "") : fmtBytes(m.replication_lag_bytes) }),
          diskCell(m.disk),
          h("td", { text: fmtTime(m.last_heartbeat_ms) })))))),
    h("section", { class: "card" }, h("h3", { text: "Proxies" }),
      o.proxies.length === 0 ? h("p", { class: "muted", text: "No proxy has reported to this controller yet." }) :
      table("proxies-table", ["proxy", "address", "clients", "uptime", "last report"],
        o.proxies.map((p) => h("tr", { "data-proxy": p.address }, h("td", { text: p.proxy_id }), h("td", { text: p.address }),
          h("td", { text: p.clients }), h("td", { class: "uptime", text: fmtDuration(p.uptime_ms) }),
          h("td", { text: fmtAgo(p.reported_ms_ago) }))))),
  );
}

// ---- topics --------------------------------------------------------------------------------

async function topicsPage() {
  const form = h("form", { id: "topic-form", class: "inline" },
    h("label", {}, "Name", h("input", { id: "topic-name", name: "name", required: true })),
    h("label", {}, "Namespace", h("input", { id: "topic-namespace", name: "namespace", placeholder: "(none)" })),
    h("label", {}, "Type", h("select", { id: "topic-type", name: "type" },
      ["NORMAL", "FIFO", "DELAY", "TRANSACTION", "MIXED"].map((t) => h("option", { value: t, text: t })))),
    h("label", {}, "Queues per broker set", h("input", { id: "topic-queues", name: "queues", type: "number", min: 1, value: 8 })),
    h("label", {}, "Permission", h("select", { id: "topic-permission", name: "permission" },
      ["READ_WRITE", "READ", "WRITE"].map((t) => h("option", { value: t, text: t })))),
    h("button", { id: "topic-create", type: "submit", text: "Create topic" }));
  const list = h("div", { id: "topics-list" });
  const detail = h("div", { id: "topic-detail" });
  page.replaceChildren(h("h2", { text: "Topics" }),
    h("section", { class: "card" }, h("h3", { text: "Create a topic" }), form, errorBox("topic-error"),
      h("div", { id: "topic-ok", class: "ok" })),
    detail, h("section", { class: "card" }, list));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError("topic-error", null);
    document.getElementById("topic-ok").textContent = "";
    const f = new FormData(form);
    try {
      const t = await api("POST", "/topics", {
        name: f.get("name"), namespace: f.get("namespace") || undefined, type: f.get("type"),
        queues: Number(f.get("queues")), permission: f.get("permission"),
      });
      document.getElementById("topic-ok").textContent = `Created topic ${t.name}.`;
      form.reset();
      await refresh();
    } catch (e) { showError("topic-error", e); }
  });
  const refresh = async () => {
    try {
      const d = await api("GET", "/topics");
      list.replaceChildren(table("topics-table", ["name", "type", "permission", "queues", "broker sets", "messages/s in"],
        d.topics.map((t) => h("tr", { class: "clickable", "data-name": t.name, onclick: () => showTopic(detail, t.name, refresh) },
          h("td", { text: t.name }), h("td", { text: t.type }), h("td", { text: t.permission }),
          h("td", { text: t.queues }), h("td", { text: t.placements.map((p) => `${p.broker_set}×${p.queues}`).join(", ") }),
          h("td", { text: t.rate_in === null ? "" : t.rate_in.toFixed(1) })))));
    } catch (e) { showError("topic-error", e); }
  };
  every(5000, refresh);
}

async function showTopic(detail, name, refresh) {
  try {
    const t = await api("GET", "/topics/" + encodeURIComponent(name));
    const edit = h("form", { id: "topic-edit", class: "inline" },
      h("label", {}, "Type", h("select", { name: "type" },
        ["NORMAL", "FIFO", "DELAY", "TRANSACTION", "MIXED"].map((x) => h("option", { value: x, text: x, selected: x === t.type })))),
      h("label", {}, "Queues per broker set", h("input", { name: "queues", type: "number", min: 1, value: Math.max(...t.placements.map((p) => p.queues)) })),
      h("label", {}, "Permission", h("select", { name: "permission" },
        ["READ_WRITE", "READ", "WRITE"].map((x) => h("option", { value: x, text: x, selected: x === t.permission })))),
      h("button", { type: "submit", text: "Update" }),
      h("button", { type: "button", class: "danger", id: "topic-delete", text: "Delete topic", onclick: async () => {
        const typed = await confirmName(`Delete topic ${name}? Its stored messages age out with retention.`, name);
        if (typed === null) return;
        try {
          await api("DELETE", "/topics/" + encodeURIComponent(name), { confirm: typed });
          detail.replaceChildren();
          await refresh();
        } catch (e) { showError("topic-detail-error", e); }
      } }));
    edit.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(edit);
      try {
        await api("PUT", "/topics/" + encodeURIComponent(name), { type: f.get("type"), queues: Number(f.get("queues")), permission: f.get("permission") });
        await showTopic(detail, name, refresh);
        await refresh();
      } catch (e) { showError("topic-detail-error", e); }
    });
    detail.replaceChildren(h("section", { class: "card" }, h("h3", { text: `Topic ${t.name}` }),
      h("h3", { text: "Route (as a client sees it)" }),
      table("topic-route", ["broker set", "queues", "master address", "master alive", "permission"],
        t.route.map((r) => h("tr", {}, h("td", { text: r.broker_set }), h("td", { text: r.queues }),
          h("td", { text: r.master_address || "" }), h("td", {}, r.master_alive ? pill("alive", "good") : pill("down", "bad")),
          h("td", { text: r.permission })))),
      h("h3", { text: "Change" }), edit, errorBox("topic-detail-error")));
  } catch (e) { showError("topic-error", e); }
}

// ---- groups --------------------------------------------------------------------------------

async function groupsPage() {
  const form = h("form", { id: "group-form", class: "inline" },
    h("label", {}, "Name", h("input", { id: "group-name", name: "name", required: true })),
    h("label", {}, "Namespace", h("input", { name: "namespace", placeholder: "(none)" })),
    h("label", {}, "Max retries", h("input", { name: "max_retries", type: "number", min: 0, value: 16 })),
    h("label", {}, "FIFO", h("input", { name: "fifo", type: "checkbox" })),
    h("button", { type: "submit", id: "group-create", text: "Create group" }));
  const list = h("div", { id: "groups-list" });
  const open = h("form", { id: "group-open", class: "inline" },
    h("label", {}, "Open any group (also ones used without being created)", h("input", { id: "group-open-name", name: "name", required: true })),
    h("button", { type: "submit", text: "Open" }));
  open.addEventListener("submit", (ev) => { ev.preventDefault(); location.hash = "#/group/" + encodeURIComponent(new FormData(open).get("name")); });
  page.replaceChildren(h("h2", { text: "Groups" }),
    h("section", { class: "card" }, h("h3", { text: "Create a group" }), form, errorBox("group-error"), open),
    h("section", { class: "card" }, list));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError("group-error", null);
    const f = new FormData(form);
    try {
      await api("POST", "/groups", { name: f.get("name"), namespace: f.get("namespace") || undefined,
        max_retries: Number(f.get("max_retries")), fifo: f.get("fifo") === "on" });
      form.reset();
      await refresh();
    } catch (e) { showError("group-error", e); }
  });
  const refresh = async () => {
    try {
      const d = await api("GET", "/groups");
      list.replaceChildren(table("groups-table", ["name", "max retries", "FIFO", "consumers connected"],
        d.groups.map((g) => h("tr", { class: "clickable", "data-name": g.name, onclick: () => { location.hash = "#/group/" + encodeURIComponent(g.name); } },
          h("td", { text: g.name }), h("td", { text: g.max_retries }), h("td", { text: g.fifo ? "yes" : "no" }),
          h("td", { text: g.consumers })))));
    } catch (e) { showError("group-error", e); }
  };
  every(5000, refresh);
}

async function groupPage(name) {
  const topicForm = h("form", { id: "group-topic-form", class: "inline" },
    h("label", {}, "Topic (empty: the topics its consumers subscribe to)", h("input", { id: "group-topic", name: "topic" })),
    h("button", { type: "submit", text: "Show" }));
  const reset = h("form", { id: "reset-form", class: "inline" },
    h("label", {}, "Topic", h("input", { id: "reset-topic", name: "topic", required: true })),
    h("label", {}, "Reset to time (RFC 3339 or ms)", h("input", { id: "reset-time", name: "timestamp", required: true, value: new Date().toISOString() })),
    h("button", { type: "submit", class: "danger", id: "reset-submit", text: "Reset offsets" }));
  const body = h("div", { id: "group-body" });
  const settings = h("div", { id: "group-settings" });
  page.replaceChildren(h("h2", {}, "Group ", h("span", { id: "group-title", text: name })), errorBox("group-page-error"),
    h("section", { class: "card" }, topicForm, body),
    h("section", { class: "card" }, h("h3", { text: "Reset offsets by time" }), reset, errorBox("reset-error"), h("div", { id: "reset-ok", class: "ok" })),
    settings);
  let topic = "";
  topicForm.addEventListener("submit", (ev) => { ev.preventDefault(); topic = new FormData(topicForm).get("topic"); load(); });
  reset.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError("reset-error", null);
    const f = new FormData(reset);
    const typed = await confirmName(`Reset the offsets of ${name} on ${f.get("topic")}? Its messages in flight are forgotten.`, name);
    if (typed === null) return;
    try {
      const r = await api("POST", `/groups/${encodeURIComponent(name)}/reset-offset`, { topic: f.get("topic"), timestamp: f.get("timestamp"), confirm: typed });
      document.getElementById("reset-ok").textContent = `Reset ${r.broker_sets.reduce((n, s) => n + s.queues.length, 0)} queues.`;
      await load();
    } catch (e) { showError("reset-error", e); }
  });
  const load = async () => {
    try {
      const g = await api("GET", `/groups/${encodeURIComponent(name)}` + (topic ? `?topic=${encodeURIComponent(topic)}` : ""));
      showError("group-page-error", null);
      const total = g.topics.reduce((n, t) => n + t.backlog, 0);
      const inflight = g.topics.reduce((n, t) => n + t.inflight, 0);
      body.replaceChildren(
        h("p", {}, "Backlog ", h("b", { id: "group-backlog", text: total }), " · in flight ", h("b", { id: "group-inflight", text: inflight }),
          " · dead letters ", h("b", { id: "group-dlq", text: g.dead_letters }), ` (${g.dead_letter_topic})`,
          g.fifo ? pill("FIFO") : "", g.settings ? "" : pill("not created: default settings")),
        g.topics.length === 0 ? h("p", { class: "muted", text: "No topic: name one above, or connect a consumer." }) :
        table("group-queues", ["topic", "broker set", "queue", "min", "max", "consumed to", "backlog", "in flight"],
          g.topics.flatMap((t) => t.queues.map((q) => h("tr", {}, h("td", { text: t.topic }), h("td", { text: q.broker_set }),
            h("td", { text: q.queue_id }), h("td", { text: q.min_offset }), h("td", { text: q.max_offset }),
            h("td", { text: q.consume_offset ?? "-" }), h("td", { text: q.backlog }), h("td", { text: q.inflight }))))),
        h("h3", { text: "Connected consumers" }),
        clientsTable("group-consumers", g.consumers));
      settings.replaceChildren(groupSettings(name, g.settings));
    } catch (e) { showError("group-page-error", e); }
  };
  every(2000, load);
}

function groupSettings(name, s) {
  if (!s) return h("section", { class: "card" }, h("p", { class: "muted", text: "This group was never created; it runs with the default settings." }));
  const f = h("form", { class: "inline", id: "group-edit" },
    h("label", {}, "Max retries", h("input", { name: "max_retries", type: "number", min: 0, value: s.max_retries })),
    h("label", {}, "FIFO", h("input", { name: "fifo", type: "checkbox", checked: s.fifo })),
    h("button", { type: "submit", text: "Update" }),
    h("button", { type: "button", class: "danger", id: "group-delete", text: "Delete group", onclick: async () => {
      const typed = await confirmName(`Delete group ${name}?`, name);
      if (typed === null) return;
      try {
        await api("DELETE", "/groups/" + encodeURIComponent(name), { confirm: typed });
        location.hash = "#/groups";
      } catch (e) { showError("group-edit-error", e); }
    } }));
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const d = new FormData(f);
    try {
      await api("PUT", "/groups/" + encodeURIComponent(name), { max_retries: Number(d.get("max_retries")), fifo: d.get("fifo") === "on" });
    } catch (e) { showError("group-edit-error", e); }
  });
  return h("section", { class: "card" }, h("h3", { text: "Settings" }), f, errorBox("group-edit-error"));
}

// ---- clients -------------------------------------------------------------------------------

function clientsTable(id, clients) {
  if (clients.length === 0) return h("p", { id, class: "muted", text: "No client connected." });
  return table(id, ["client id", "language", "version", "type", "group", "topics / subscriptions", "host", "proxy", "last heard"],
    clients.map((c) => h("tr", { "data-client": c.client_id },
      h("td", { text: c.client_id }), h("td", { text: c.language }), h("td", { text: c.version }),
      h("td", { text: c.client_type }), h("td", { text: c.group }),
      h("td", { text: c.subscriptions.length ? c.subscriptions.map((s) => `${s.topic} (${s.type} ${s.expression})`).join(", ") : c.topics.join(", ") }),
      h("td", { text: c.hostname }), h("td", { text: c.proxy }),
      h("td", { text: c.telemetry_streams > 0 ? "connected" : fmtAgo(c.idle_ms) }))));
}

async function clientsPage() {
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  const form = h("form", { id: "clients-filter", class: "inline" },
    h("label", {}, "Topic", h("input", { id: "clients-topic", name: "topic", value: q.get("topic") || "" })),
    h("label", {}, "Group", h("input", { id: "clients-group", name: "group", value: q.get("group") || "" })),
    h("button", { type: "submit", text: "Filter" }));
  const list = h("div", { id: "clients-list" });
  page.replaceChildren(h("h2", { text: "Clients" }),
    h("p", { class: "muted", text: "Every producer and consumer connected to any proxy, as the proxies report them." }),
    h("section", { class: "card" }, form, errorBox("clients-error"), list));
  let filter = { topic: q.get("topic") || "", group: q.get("group") || "" };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    filter = { topic: f.get("topic"), group: f.get("group") };
    load();
  });
  const load = async () => {
    try {
      const params = new URLSearchParams();
      if (filter.topic) params.set("topic", filter.topic);
      if (filter.group) params.set("group", filter.group);
      const d = await api("GET", "/clients?" + params.toString());
      showError("clients-error", null);
      list.replaceChildren(clientsTable("clients-table", d.clients));
    } catch (e) { showError("clients-error", e); }
  };
  every(2000, load);
}

// ---- messages ------------------------------------------------------------------------------

async function messagesPage() {
  const form = h("form", { id: "message-form", class: "inline" },
    h("label", {}, "Topic (a dead-letter topic is %DLQ%<group>)", h("input", { id: "message-topic", name: "topic", required: true })),
    h("label", {}, "Search by", h("select", { id: "message-by", name: "by" },
      h("option", { value: "key", text: "key" }), h("option", { value: "id", text: "message id" }),
      h("option", { value: "offset", text: "queue offset" }))),
    h("label", {}, "Key / id", h("input", { id: "message-value", name: "value" })),
    h("label", {}, "Queue", h("input", { name: "queue", type: "number", min: 0 })),
    h("label", {}, "Offset", h("input", { name: "offset", type: "number", min: 0 })),
    h("label", {}, "Broker set", h("input", { name: "broker_set" })),
    h("label", {}, "From (RFC 3339)", h("input", { name: "begin" })),
    h("label", {}, "To (RFC 3339)", h("input", { name: "end" })),
    h("button", { type: "submit", id: "message-search", text: "Search" }));
  const results = h("div", { id: "message-results" });
  const detail = h("div", { id: "message-detail" });
  page.replaceChildren(h("h2", { text: "Messages" }),
    h("section", { class: "card" }, form, errorBox("message-error")),
    h("section", { class: "card" }, results), detail);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError("message-error", null);
    const f = new FormData(form);
    const p = new URLSearchParams({ topic: f.get("topic") });
    const by = f.get("by");
    if (by === "key") {
      p.set("key", f.get("value"));
      if (f.get("begin")) p.set("begin", f.get("begin"));
      if (f.get("end")) p.set("end", f.get("end"));
    } else if (by === "id") p.set("id", f.get("value"));
    else {
      p.set("queue", f.get("queue"));
      p.set("offset", f.get("offset"));
      if (f.get("broker_set")) p.set("broker_set", f.get("broker_set"));
    }
    try {
      const d = await api("GET", "/messages?" + p.toString());
      detail.replaceChildren();
      results.replaceChildren(h("p", { class: "muted", text: `${d.count} message(s) in ${d.topic}.` }),
        table("messages-table", ["message id", "queue", "offset", "tag", "keys", "stored", "size"],
          d.messages.map((m) => h("tr", { class: "clickable", "data-id": m.message_id, onclick: () => showMessage(detail, m) },
            h("td", { text: m.message_id }), h("td", { text: `${m.broker_set}/${m.queue_id}` }),
            h("td", { text: m.queue_offset }), h("td", { text: m.tag || "" }), h("td", { text: m.keys.join(", ") }),
            h("td", { text: fmtTime(m.store_ms) }), h("td", { text: m.body.size })))));
    } catch (e) { showError("message-error", e); results.replaceChildren(); }
  });
}

function showMessage(detail, m) {
  const kv = (pairs) => h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v ?? "" })]));
  const group = m.topic && m.topic.startsWith("%DLQ%") ? m.topic.slice(5) : null;
  const resend = group ? h("div", {},
    h("button", { id: "message-resend", type: "button", text: `Resend to ${m.dead_letter_of || "its topic"}`, onclick: async () => {
      showError("resend-error", null);
      try {
        const r = await api("POST", "/dead-letters/resend", { group, message_id: m.message_id });
        document.getElementById("resend-ok").textContent = `Resent to ${r.topic} (broker set ${r.broker_set}, queue ${r.queue_id}, offset ${r.offset}).`;
      } catch (e) { showError("resend-error", e); }
    } }), errorBox("resend-error"), h("div", { id: "resend-ok", class: "ok" })) : null;
  const trace = [
    ["born (sent)", `${fmtTime(m.born_ms)} from ${m.born_host}`],
    ["stored", `${fmtTime(m.store_ms)} on ${m.store_host} (${m.broker_set}, queue ${m.queue_id}, offset ${m.queue_offset})`],
  ];
  if (m.delivery_ms) trace.push(["deliverable from", fmtTime(m.delivery_ms)]);
  if (m.dead_letter_of) trace.push(["dead-lettered", `from ${m.dead_letter_of} (group ${group})`]);
  detail.replaceChildren(h("section", { class: "card", id: "message-view" },
    h("h3", {}, "Message ", h("span", { id: "message-view-id", text: m.message_id })),
    kv([["topic", m.topic], ["type", m.message_type], ["tag", m.tag], ["keys", m.keys.join(", ")],
      ["message group", m.message_group], ["body size", `${m.body.size} B${m.body.truncated ? " (shown: first 64 KiB)" : ""}`]]),
    h("h3", { text: "Trace (what the broker knows)" }), kv(trace),
    h("h3", { text: "User properties" }), kv(Object.entries(m.user_properties)),
    h("h3", {}, "Body ", h("span", { class: "pill", text: m.body.format })),
    h("pre", { id: "message-body", text: m.body.content }),
    resend));
}

// ---- users and ACLs ------------------------------------------------------------------------

async function usersPage() {
  const form = h("form", { id: "user-form", class: "inline" },
    h("label", {}, "Name", h("input", { id: "user-name", name: "name", required: true, autocomplete: "off" })),
    h("label", {}, "Password (its secret key)", h("input", { id: "user-password", name: "password", type: "password", required: true, autocomplete: "new-password" })),
    h("label", {}, "Type", h("select", { id: "user-type", name: "user_type" },
      h("option", { value: "normal", text: "normal (its ACL decides)" }), h("option", { value: "super", text: "super (allowed everything)" }))),
    h("button", { id: "user-create", type: "submit", text: "Create user" }));
  const list = h("div", { id: "users-list" });
  const edit = h("div", { id: "user-edit" });
  page.replaceChildren(h("h2", { text: "Users" }),
    h("section", { class: "card" }, h("h3", { text: "Create a user" }), form, errorBox("user-error"), h("div", { id: "user-ok", class: "ok" })),
    edit, h("section", { class: "card" }, list));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError("user-error", null);
    document.getElementById("user-ok").textContent = "";
    const f = new FormData(form);
    try {
      const u = await api("POST", "/users", { name: f.get("name"), password: f.get("password"), user_type: f.get("user_type") });
      document.getElementById("user-ok").textContent = `Created user ${u.name} (${u.user_type}).`;
      form.reset();
      await refresh();
    } catch (e) { showError("user-error", e); }
  });
  const showEdit = (u) => {
    const f = h("form", { id: "user-update", class: "inline" },
      h("label", {}, "New password (empty: keep)", h("input", { name: "password", type: "password", autocomplete: "new-password" })),
      h("label", {}, "Type", h("select", { name: "user_type" },
        ["normal", "super"].map((t) => h("option", { value: t, text: t, selected: t === u.user_type })))),
      h("button", { type: "submit", text: "Update" }),
      h("button", { type: "button", class: "danger", id: "user-delete", text: "Delete user", onclick: async () => {
        const typed = await confirmName(`Delete user ${u.name}? Its clients and console sessions stop working; its ACL stays until deleted.`, u.name);
        if (typed === null) return;
        try {
          await api("DELETE", "/users/" + encodeURIComponent(u.name), { confirm: typed });
          edit.replaceChildren();
          await refresh();
        } catch (e) { showError("user-edit-error", e); }
      } }));
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const d = new FormData(f);
      try {
        await api("PUT", "/users/" + encodeURIComponent(u.name), { password: d.get("password") || undefined, user_type: d.get("user_type") });
        document.getElementById("user-edit-ok").textContent = `Updated user ${u.name}.`;
        await refresh();
      } catch (e) { showError("user-edit-error", e); }
    });
    edit.replaceChildren(h("section", { class: "card" }, h("h3", { text: `User ${u.name}` }), f,
      errorBox("user-edit-error"), h("div", { id: "user-edit-ok", class: "ok" })));
  };
  const refresh = async () => {
    try {
      const d = await api("GET", "/users");
      showError("user-error", null);
      list.replaceChildren(
        d.auth_enabled ? "" : h("p", { class: "muted", text: "Authentication is off on this cluster (auth.enabled = false): users are stored but nothing is checked." }),
        d.users.length === 0 ? h("p", { id: "users-table", class: "muted", text: "No user yet." }) :
        table("users-table", ["name", "type"],
          d.users.map((u) => h("tr", { class: "clickable", "data-name": u.name, onclick: () => showEdit(u) },
            h("td", { text: u.name }), h("td", { text: u.user_type })))));
    } catch (e) { showError("user-error", e); }
  };
  every(5000, refresh);
}

async function aclsPage() {
  const form = h("form", { id: "acl-form", class: "inline" },
    h("label", {}, "User", h("input", { id: "acl-user", name: "user", required: true, autocomplete: "off" })),
    h("label", {}, "Resources (comma-separated: Topic:orders, Group:*, Cluster, *)", h("input", { id: "acl-resources", name: "resources", required: true })),
    h("label", {}, "Actions (Pub, Sub, Create, Update, Delete, Get, List, All)", h("input", { id: "acl-actions", name: "actions", required: true, value: "Pub,Sub" })),
    h("label", {}, "Decision", h("select", { id: "acl-decision", name: "decision" },
      h("option", { value: "Allow", text: "Allow" }), h("option", { value: "Deny", text: "Deny" }))),
    h("label", {}, "Source CIDRs (empty: any)", h("input", { id: "acl-sources", name: "source_ips" })),
    h("button", { id: "acl-create", type: "submit", text: "Add entries" }),
    h("button", { id: "acl-update", type: "button", class: "secondary", text: "Replace entries" }));
  const list = h("div", { id: "acls-list" });
  page.replaceChildren(h("h2", { text: "ACLs" }),
    h("section", { class: "card" }, h("h3", { text: "Add or replace a user's entries" }),
      h("p", { class: "muted", text: "Add creates one entry per resource (refused if the user already has one for it); Replace changes existing entries. Deny wins over Allow; super users need no entry." }),
      form, errorBox("acl-error"), h("div", { id: "acl-ok", class: "ok" })),
    h("section", { class: "card" }, list));
  const split = (v) => String(v || "").split(",").map((x) => x.trim()).filter((x) => x);
  const body = () => {
    const f = new FormData(form);
    return { user: f.get("user").trim(), resources: split(f.get("resources")), actions: f.get("actions"), decision: f.get("decision"), source_ips: split(f.get("source_ips")) };
  };
  const submit = async (method) => {
    showError("acl-error", null);
    document.getElementById("acl-ok").textContent = "";
    const b = body();
    try {
      const a = method === "POST" ? await api("POST", "/acls", b)
        : await api("PUT", "/acls/" + encodeURIComponent(b.user), { resources: b.resources, actions: b.actions, decision: b.decision, source_ips: b.source_ips });
      document.getElementById("acl-ok").textContent = `${method === "POST" ? "Added" : "Replaced"} entries of ${a.subject}.`;
      await refresh();
    } catch (e) { showError("acl-error", e); }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); submit("POST"); });
  document.getElementById("acl-update").addEventListener("click", () => { if (form.reportValidity()) submit("PUT"); });
  const remove = async (user, resource) => {
    const what = resource ? `the entry ${resource} of ${user}` : `every entry of ${user}`;
    const typed = await confirmName(`Delete ${what}?`, user);
    if (typed === null) return;
    try {
      await api("DELETE", "/acls/" + encodeURIComponent(user), { confirm: typed, resources: resource ? [resource] : [] });
      await refresh();
    } catch (e) { showError("acl-error", e); }
  };
  const refresh = async () => {
    try {
      const d = await api("GET", "/acls");
      list.replaceChildren(d.acls.length === 0 ? h("p", { id: "acls-table", class: "muted", text: "No ACL entry yet." }) :
        table("acls-table", ["user", "resource", "actions", "decision", "sources", ""],
          d.acls.flatMap((a) => a.entries.map((e) => h("tr", { "data-user": a.user, "data-resource": e.resource },
            h("td", { text: a.user }), h("td", { text: e.resource }), h("td", { text: e.actions }),
            h("td", {}, pill(e.decision, e.decision === "Allow" ? "good" : "bad")),
            h("td", { text: e.source_ips.length ? e.source_ips.join(", ") : "any" }),
            h("td", {}, h("button", { type: "button", class: "danger small", text: "Delete", onclick: () => remove(a.user, e.resource) })))))));
    } catch (e) { showError("acl-error", e); }
  };
  every(5000, refresh);
}

// ---- router --------------------------------------------------------------------------------

function route() {
  if (timer) { clearInterval(timer); timer = null; }
  const hash = location.hash || "#/cluster";
  const [path] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === "#/" + (parts[0] === "group" ? "groups" : parts[0]));
  }
  switch (parts[0]) {
    case "topics": return topicsPage();
    case "groups": return groupsPage();
    case "group": return groupPage(decodeURIComponent(parts.slice(1).join("/")));
    case "clients": return clientsPage();
    case "messages": return messagesPage();
    case "users": return usersPage();
    case "acls": return aclsPage();
    default: return clusterPage();
  }
}

window.addEventListener("hashchange", route);
document.getElementById("logout").addEventListener("click", logout);
api("GET", "/session").then((s) => { showUser(s); route(); }).catch(() => { /* the login form is shown */ });
