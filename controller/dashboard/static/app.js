// Mizzen's dashboard: plain JS and SVG, no build step. Reads the controller's debug API:
// /debug/graph (service graph), /debug/syncz and /debug/push_log (proxies), /debug/tap (live tap).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 2000;
const state = { view: "graph", pushProxy: null, tap: null };

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJSON(path) {
  const resp = await fetch(path, { cache: "no-store" });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

// -- service graph ---------------------------------------------------------------------------------

function health(edge) {
  if (edge.success_rate === null || edge.success_rate === undefined) return "idle";
  if (edge.success_rate >= 0.99) return "ok";
  if (edge.success_rate >= 0.95) return "warn";
  return "bad";
}

function fmtRate(r) {
  return r === null || r === undefined ? "-" : `${(r * 100).toFixed(1)}%`;
}

function fmtMs(v) {
  return v === null || v === undefined ? "-" : `${v} ms`;
}

function label(node) {
  return node.kind === "service" ? node.name : node.name;
}

// Columns by distance from the callers: workloads that nobody calls first, then what they call, ...
function layout(nodes, edges) {
  const incoming = new Map(nodes.map((n) => [n.id, 0]));
  const out = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) {
    incoming.set(e.target, (incoming.get(e.target) || 0) + 1);
    out.get(e.source).push(e.target);
  }
  const depth = new Map();
  let frontier = nodes.filter((n) => incoming.get(n.id) === 0).map((n) => n.id);
  if (frontier.length === 0 && nodes.length) frontier = [nodes[0].id];
  let level = 0;
  while (frontier.length) {
    const next = [];
    for (const id of frontier) {
      if (depth.has(id)) continue;
      depth.set(id, level);
      for (const t of out.get(id) || []) if (!depth.has(t)) next.push(t);
    }
    frontier = next;
    level += 1;
  }
  for (const n of nodes) if (!depth.has(n.id)) depth.set(n.id, level);
  const columns = new Map();
  for (const n of nodes) {
    const d = depth.get(n.id);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(n);
  }
  return { depth, columns };
}

function drawGraph(data) {
  const nsFilter = document.getElementById("graph-ns").value;
  const keep = (n) => !nsFilter || n.namespace === nsFilter || n.namespace === "";
  const nodes = data.nodes.filter(keep);
  const ids = new Set(nodes.map((n) => n.id));
  const edges = data.edges.filter((e) => ids.has(e.source) && ids.has(e.target));
  const root = document.getElementById("graph");
  root.replaceChildren();
  const width = root.clientWidth || 1000;
  const { columns } = layout(nodes, edges);
  const ncols = Math.max(1, columns.size);
  const colWidth = width / ncols;
  const boxW = Math.min(190, colWidth - 40);
  const boxH = 40;
  let height = 480;
  for (const col of columns.values()) height = Math.max(height, col.length * 70 + 40);
  root.setAttribute("height", height);
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const pos = new Map();
  for (const [d, col] of [...columns.entries()].sort((a, b) => a[0] - b[0])) {
    col.sort((a, b) => a.id.localeCompare(b.id));
    const gap = height / (col.length + 1);
    col.forEach((n, i) => pos.set(n.id, { x: 20 + d * colWidth, y: gap * (i + 1) - boxH / 2 }));
  }
  const edgeLayer = svg("g", { class: "edges" });
  const nodeLayer = svg("g", { class: "nodes" });
  for (const e of edges) {
    const a = pos.get(e.source);
    const b = pos.get(e.target);
    const x1 = a.x + boxW;
    const y1 = a.y + boxH / 2;
    const x2 = b.x;
    const y2 = b.y + boxH / 2;
    const mid = (x1 + x2) / 2;
    const g = svg("g", { class: `edge ${health(e)}`, "data-source": e.source, "data-target": e.target });
    g.appendChild(svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, class: health(e) }));
    const text = `${e.rps} rps · ${fmtRate(e.success_rate)} · p99 ${fmtMs(e.p99_ms)}`;
    g.appendChild(svg("text", { x: mid, y: (y1 + y2) / 2 - 4, "text-anchor": "middle" }, text));
    edgeLayer.appendChild(g);
  }
  for (const n of nodes) {
    const p = pos.get(n.id);
    const g = svg("g", { class: `node ${n.kind}`, transform: `translate(${p.x},${p.y})`, "data-id": n.id });
    g.appendChild(svg("rect", { width: boxW, height: boxH }));
    g.appendChild(svg("text", { x: 8, y: 17 }, label(n)));
    const sub = n.kind === "service" ? `service · ${n.namespace || n.host}` : `workload · ${n.namespace}`;
    g.appendChild(svg("text", { x: 8, y: 32, class: "sub" }, sub));
    nodeLayer.appendChild(g);
  }
  root.append(edgeLayer, nodeLayer);
  const body = document.querySelector("#edges tbody");
  body.replaceChildren();
  const name = new Map(nodes.map((n) => [n.id, `${n.kind === "service" ? "svc" : "wl"} ${n.name}.${n.namespace}`]));
  for (const e of edges) {
    const row = el("tr", { "data-source": e.source, "data-target": e.target });
    row.append(
      el("td", {}, name.get(e.source)),
      el("td", {}, name.get(e.target)),
      el("td", { class: "rps" }, String(e.rps)),
      el("td", { class: health(e) }, fmtRate(e.success_rate)),
      el("td", {}, fmtMs(e.p99_ms)),
      el("td", {}, e.requests === null ? "-" : String(e.requests)),
    );
    body.appendChild(row);
  }
  const select = document.getElementById("graph-ns");
  const namespaces = [...new Set(data.nodes.map((n) => n.namespace).filter(Boolean))].sort();
  const have = [...select.options].map((o) => o.value);
  for (const ns of namespaces) if (!have.includes(ns)) select.appendChild(el("option", { value: ns }, ns));
  const window = data.window_s ? `rates over ${data.window_s}s` : "first reading: totals since start";
  document.getElementById("graph-info").textContent =
    `${nodes.length} nodes, ${edges.length} edges · ${window} · from ${data.source}`;
  root.setAttribute("data-updated", String(Date.now()));
}

async function refreshGraph() {
  drawGraph(await getJSON("/debug/graph"));
}

// -- proxies: sync status and push log -------------------------------------------------------------

const TYPES = {
  CDS: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
  EDS: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
  LDS: "type.googleapis.com/envoy.config.listener.v3.Listener",
  RDS: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
};

async function refreshProxies() {
  const entries = await getJSON("/debug/syncz");
  const body = document.querySelector("#sync tbody");
  body.replaceChildren();
  for (const entry of entries) {
    const row = el("tr", { class: "clickable", title: "show this proxy's pushes" });
    row.appendChild(el("td", {}, entry.proxy));
    let error = "";
    for (const short of Object.keys(TYPES)) {
      const t = (entry.types || {})[TYPES[short]];
      const status = t ? t.status : "-";
      row.appendChild(el("td", { class: status }, status));
      if (t && t.error) error = `${short}: ${t.error}`;
    }
    row.appendChild(el("td", {}, error));
    row.addEventListener("click", () => {
      state.pushProxy = state.pushProxy === entry.proxy ? null : entry.proxy;
      refreshProxies();
    });
    body.appendChild(row);
  }
  const query = state.pushProxy ? `?limit=100&proxy=${encodeURIComponent(state.pushProxy)}` : "?limit=100";
  document.getElementById("push-filter").textContent = state.pushProxy ? `for ${state.pushProxy}` : "(all proxies)";
  const pushes = await getJSON(`/debug/push_log${query}`);
  const log = document.querySelector("#pushes tbody");
  log.replaceChildren();
  for (const p of pushes.slice().reverse()) {
    const row = el("tr");
    row.append(
      el("td", {}, new Date(p.time * 1000).toLocaleTimeString()),
      el("td", {}, p.proxy),
      el("td", {}, p.type),
      el("td", { title: (p.changed || []).join("\n") }, String(p.changed_count)),
      el("td", { title: (p.removed || []).join("\n") }, String(p.removed_count)),
      el("td", {}, (p.causes || []).join(", ") || "subscription"),
    );
    log.appendChild(row);
  }
}

// -- tap -------------------------------------------------------------------------------------------

function tapRow(e) {
  const row = el("tr");
  const when = new Date(e.time * 1000);
  const code = String(e.status);
  row.append(
    el("td", {}, `${when.toLocaleTimeString()}.${String(when.getMilliseconds()).padStart(3, "0")}`),
    el("td", {}, `${e.source} → ${e.destination}`),
    el("td", {}, e.method),
    el("td", {}, e.path),
    el("td", { class: `code-${code[0]}` }, code),
    el("td", {}, `${e.latency_ms} ms`),
    el("td", {}, e.flags),
    el("td", {}, e.trace_id ? e.trace_id.slice(0, 16) : "-"),
  );
  return row;
}

async function startTap(form) {
  stopTap();
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form).entries()) if (v) params.set(k, v);
  const controller = new AbortController();
  state.tap = controller;
  document.getElementById("tap-start").disabled = true;
  document.getElementById("tap-stop").disabled = false;
  const info = document.getElementById("tap-info");
  const body = document.querySelector("#tap-lines tbody");
  body.replaceChildren();
  let count = 0;
  try {
    const resp = await fetch(`/debug/tap?${params}`, { signal: controller.signal, cache: "no-store" });
    if (!resp.ok) {
      const err = await resp.json().catch(() => ({}));
      throw new Error(err.error || `HTTP ${resp.status}`);
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line);
        if (msg.proxies) {
          info.textContent = `tapping ${msg.proxies.length} sidecar(s) of ${msg.tap}`;
        } else if (msg.error) {
          info.textContent = msg.error;
        } else {
          count += 1;
          body.insertBefore(tapRow(msg), body.firstChild);
          while (body.rows.length > 500) body.deleteRow(-1);
          info.textContent = `${count} request(s)`;
        }
      }
    }
    info.textContent += " · ended";
  } catch (err) {
    if (err.name !== "AbortError") info.textContent = String(err.message || err);
  } finally {
    if (state.tap === controller) stopTap();
  }
}

function stopTap() {
  if (state.tap) state.tap.abort();
  state.tap = null;
  document.getElementById("tap-start").disabled = false;
  document.getElementById("tap-stop").disabled = true;
}

// -- wiring ----------------------------------------------------------------------------------------

function show(view) {
  state.view = view;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  tick();
}

async function tick() {
  try {
    if (state.view === "graph") await refreshGraph();
    else if (state.view === "proxies") await refreshProxies();
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    setStatus(String(err.message || err));
  }
}

for (const a of document.querySelectorAll("nav a")) {
  a.addEventListener("click", (ev) => {
    ev.preventDefault();
    history.replaceState(null, "", `#${a.dataset.view}`);
    show(a.dataset.view);
  });
}
document.getElementById("graph-ns").addEventListener("change", tick);
document.getElementById("tap-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  startTap(ev.target);
});
document.getElementById("tap-stop").addEventListener("click", stopTap);
window.addEventListener("hashchange", () => show(location.hash.slice(1) || "graph"));
show((location.hash || "#graph").slice(1) || "graph");
setInterval(tick, POLL_MS);
