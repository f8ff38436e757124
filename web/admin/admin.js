// The admin dashboard: live numbers from GET /api/metrics (the registry
// /metrics serves), channels, a channel's presence and history, and
// disconnecting or banning a user. The API key stays in this tab
// (sessionStorage) and goes only to this origin.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "herald.admin.key";
const POINTS = 150; // 5 minutes at one sample every 2 s
const admin = { key: sessionStorage.getItem(KEY) || "", prev: null, series: { in: [], out: [], conns: [] }, last: null };
window.admin = admin; // for the browser tests

async function api(method, path, body) {
  const resp = await fetch(path, {
    method,
    headers: Object.assign({ Authorization: "Bearer " + admin.key }, body ? { "Content-Type": "application/json" } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  const j = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error((j && j.error && j.error.message) || resp.statusText);
  return j;
}

// sum adds a family's sample values whose labels match where.
function sum(m, name, where = {}) {
  const f = m[name];
  if (!f) return 0;
  return f.samples.filter((s) => Object.entries(where).every(([k, v]) => s.labels && s.labels[k] === v))
    .reduce((t, s) => t + (s.value || 0), 0);
}

// quantile reads q from a histogram's cumulative buckets (upper bounds in
// seconds), as Prometheus's histogram_quantile does.
function quantile(buckets, count, q) {
  if (!count) return null;
  const bs = Object.entries(buckets).map(([le, c]) => [Number(le), c]).sort((a, b) => a[0] - b[0]);
  const rank = q * count;
  let prevLe = 0, prevC = 0;
  for (const [le, c] of bs) {
    if (c >= rank) {
      if (!isFinite(le)) return prevLe;
      return prevLe + (le - prevLe) * ((rank - prevC) / Math.max(1, c - prevC));
    }
    prevLe = le; prevC = c;
  }
  return prevLe;
}

function fmtSecs(s) {
  if (s == null) return "–";
  return s < 0.001 ? (s * 1e6).toFixed(0) + " µs" : s < 1 ? (s * 1e3).toFixed(1) + " ms" : s.toFixed(2) + " s";
}

function push(series, v) { series.push(v); if (series.length > POINTS) series.shift(); }

function draw(canvas, lines) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...lines.flatMap((l) => l.data));
  ctx.strokeStyle = "#dcdfe5";
  ctx.fillStyle = "#6b6f7b";
  ctx.font = "11px system-ui";
  ctx.beginPath(); ctx.moveTo(0, h - 0.5); ctx.lineTo(w, h - 0.5); ctx.stroke();
  ctx.fillText(String(Math.round(max)), 4, 12);
  for (const l of lines) {
    ctx.strokeStyle = l.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    l.data.forEach((v, i) => {
      const x = (i / (POINTS - 1)) * w, y = h - 2 - (v / max) * (h - 16);
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
}

async function tick() {
  let m;
  try { m = await api("GET", "/api/metrics"); } catch (e) { $("updated").textContent = e.message; return; }
  const now = Date.now();
  const conns = {};
  for (const t of ["ws", "sse", "poll"]) conns[t] = sum(m, "herald_sessions", { transport: t });
  const total = Object.values(conns).reduce((a, b) => a + b, 0);
  const published = sum(m, "herald_messages_published_total");
  const delivered = sum(m, "herald_messages_delivered_total");
  const lat = (m.herald_delivery_latency_seconds || { samples: [] }).samples[0];
  let rin = 0, rout = 0, p50 = null, p99 = null;
  if (admin.prev) {
    const dt = (now - admin.prev.at) / 1000;
    rin = Math.max(0, (published - admin.prev.published) / dt);
    rout = Math.max(0, (delivered - admin.prev.delivered) / dt);
  }
  if (lat) {
    // The latency of the last interval when messages flowed, else since the start.
    let buckets = lat.buckets, count = lat.count;
    if (admin.prev && admin.prev.lat && lat.count > admin.prev.lat.count) {
      buckets = Object.fromEntries(Object.entries(lat.buckets).map(([k, v]) => [k, v - (admin.prev.lat.buckets[k] || 0)]));
      count = lat.count - admin.prev.lat.count;
    }
    p50 = quantile(buckets, count, 0.5);
    p99 = quantile(buckets, count, 0.99);
  }
  admin.prev = { at: now, published, delivered, lat };
  admin.last = { conns, total, published, delivered, rin, rout };
  $("conn-total").textContent = String(total);
  for (const t of ["ws", "sse", "poll"]) $("conn-" + t).textContent = String(conns[t]);
  $("msg-in").textContent = rin.toFixed(rin < 10 ? 1 : 0);
  $("msg-out").textContent = rout.toFixed(rout < 10 ? 1 : 0);
  $("msg-in-total").textContent = String(published);
  $("msg-out-total").textContent = String(delivered);
  $("lat-p50").textContent = fmtSecs(p50);
  $("lat-p99").textContent = fmtSecs(p99);
  $("rate-limited").textContent = String(sum(m, "herald_rate_limited_total"));
  $("slow").textContent = String(sum(m, "herald_sessions_closed_total", { reason: "slow_consumer" }));
  push(admin.series.in, rin);
  push(admin.series.out, rout);
  push(admin.series.conns, total);
  draw($("chart-msgs"), [{ data: admin.series.in, color: "#2f6fed" }, { data: admin.series.out, color: "#1f9d55" }]);
  draw($("chart-conns"), [{ data: admin.series.conns, color: "#7c3aed" }]);
  renderWebhooks(m);
  $("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
}

function renderWebhooks(m) {
  const depth = m.herald_webhook_outbox_depth;
  $("webhooks-panel").hidden = !depth;
  if (!depth) return;
  const breaker = ["closed", "half-open", "open"];
  $("webhooks").replaceChildren(...depth.samples.map((s) => {
    const ep = s.labels.endpoint;
    const tr = document.createElement("tr");
    for (const v of [ep, s.value, breaker[sum(m, "herald_webhook_breaker_state", { endpoint: ep })] || "?", sum(m, "herald_webhook_dead_letters", { endpoint: ep })]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.append(td);
    }
    return tr;
  }));
}

async function channels() {
  let list;
  try { list = await api("GET", "/api/channels?limit=100"); } catch (e) { return; }
  const rows = (list.channels || list || []).map((c) => {
    const tr = document.createElement("tr");
    for (const v of [c.channel || c.name, c.head, c.subscribers]) {
      const td = document.createElement("td");
      td.textContent = String(v == null ? "" : v);
      tr.append(td);
    }
    tr.addEventListener("click", () => { $("channel").value = c.channel || c.name; show(); });
    return tr;
  });
  $("channels").replaceChildren(...rows);
}

function item(text) { return Object.assign(document.createElement("li"), { textContent: text }); }

async function show() {
  const channel = $("channel").value.trim();
  if (!channel) return;
  const q = encodeURIComponent(channel);
  // Presence and history are read apart: a channel without presence
  // still shows its history.
  api("GET", "/api/presence?channel=" + q).then((p) => {
    $("presence").replaceChildren(...p.members.map((mb) => item(mb.user + " (" + mb.sessions + " session" + (mb.sessions > 1 ? "s" : "") + ")")));
  }, (e) => $("presence").replaceChildren(item(e.message)));
  try {
    const first = await api("GET", "/api/history?channel=" + q + "&limit=1");
    const h = await api("GET", "/api/history?channel=" + q + "&since=" + Math.max(0, first.head - 20) + "&limit=20");
    $("history").replaceChildren(...h.messages.reverse().map((env) =>
      item("#" + env.offset + " " + env.event + " " + JSON.stringify(env.data) + (env.from ? " — " + env.from.user : ""))));
  } catch (e) {
    $("history").replaceChildren(item(e.message));
  }
}

$("search").addEventListener("submit", (e) => { e.preventDefault(); show(); });

$("moderate").addEventListener("submit", (e) => e.preventDefault());
for (const b of $("moderate").querySelectorAll("button")) {
  b.addEventListener("click", async (e) => {
    e.preventDefault();
    const user = $("mod-user").value.trim();
    if (!user) return;
    const body = { user };
    if (b.dataset.act === "ban") body.duration = $("ban-for").value.trim() || "1h";
    try {
      const r = await api("POST", "/api/" + b.dataset.act, body);
      $("mod-result").textContent = b.dataset.act + " " + user + ": " + JSON.stringify(r);
    } catch (err) {
      $("mod-result").textContent = err.message;
    }
  });
}

let timers = [];
function start() {
  $("login").hidden = true;
  $("logout").hidden = false;
  $("board").hidden = false;
  tick();
  channels();
  timers = [setInterval(tick, 2000), setInterval(channels, 5000)];
}

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  admin.key = $("key").value;
  try {
    await api("GET", "/api/metrics");
  } catch (err) {
    $("updated").textContent = err.message;
    return;
  }
  sessionStorage.setItem(KEY, admin.key);
  start();
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  timers.forEach(clearInterval);
  location.reload();
});

if (admin.key) start();
