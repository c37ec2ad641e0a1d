// The Comet console: a hash-routed single page over the JSON API under /api. Every value from
// the server is inserted as text (never as HTML).

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
    throw new Error(msg);
  }
  return data;
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
        document.createElementNS("http://www.w3.org/2000/svg", "svg"))),
    h("p", { class: "muted", text: "RPC latency percentiles are not available: the controller sees no request timings." }));
  charts.querySelectorAll("svg")[0].id = "chart-throughput";
  charts.querySelectorAll("svg")[1].id = "chart-backlog";
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
    } catch (e) { showError("cluster-error", e); }
  });
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
      table("brokers-table", ["broker set", "id", "address", "role", "epoch", "in sync", "alive", "replication lag", "last heartbeat"],
        o.broker_sets.flatMap((s) => s.members.map((m) => h("tr", {},
          h("td", { text: s.name }), h("td", { text: m.broker_id }), h("td", { text: m.address }),
          h("td", { text: m.role }), h("td", { text: s.master_epoch }),
          h("td", {}, m.in_sync ? pill("yes", "good") : pill("no", "bad")),
          h("td", {}, m.alive ? pill("alive", "good") : pill("down", "bad")),
          h("td", { text: m.replication_lag_bytes === null ? "" : `${m.replication_lag_bytes} B` }),
          h("td", { text: fmtTime(m.last_heartbeat_ms) })))))),
    h("section", { class: "card" }, h("h3", { text: "Proxies" }),
      o.proxies.length === 0 ? h("p", { class: "muted", text: "No proxy has reported to this controller yet." }) :
      table("proxies-table", ["proxy", "address", "clients", "uptime", "last report"],
        o.proxies.map((p) => h("tr", {}, h("td", { text: p.proxy_id }), h("td", { text: p.address }),
          h("td", { text: p.clients }), h("td", { text: fmtDuration(p.uptime_ms) }),
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
    default: return clusterPage();
  }
}

window.addEventListener("hashchange", route);
route();
