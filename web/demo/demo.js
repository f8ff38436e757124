// The demo chat: rooms, messages with their history, who is here, who is
// typing, and the transport in use — all through herald.js.
// URL parameters: user (join at once), room, transport (auto, ws, sse, poll).
"use strict";

const ROOMS = ["general", "random", "help"];
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const demo = { client: null, sub: null, room: params.get("room") || "general", user: "", token: "", reconnects: 0, typing: new Map() };
window.demo = demo; // for the browser tests and the curious

function channelOf(room) { return "demo_room_" + room; }

async function devToken(user) {
  const resp = await fetch("/demo/token", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user }) });
  if (resp.status === 404) return "";
  const j = await resp.json();
  if (!resp.ok) throw new Error(j.error ? j.error.message : resp.statusText);
  return j.token;
}

function transports() {
  const t = $("transport").value;
  return t === "auto" ? ["ws", "sse", "poll"] : [t];
}

function setStatus(state) {
  $("status").dataset.state = state;
  $("state").textContent = state;
  const on = state === "connected";
  $("text").disabled = !on && !demo.sub;
  $("send").disabled = !demo.sub;
}

function addLine(cls, who, text, when) {
  const li = document.createElement("li");
  li.className = cls;
  if (who) {
    const b = document.createElement("span");
    b.className = "who";
    b.textContent = who;
    li.append(b);
  }
  li.append(document.createTextNode(text));
  if (when) {
    const t = document.createElement("span");
    t.className = "when";
    t.textContent = new Date(when).toLocaleTimeString();
    li.append(t);
  }
  $("messages").append(li);
  $("messages").scrollTop = $("messages").scrollHeight;
}

function showMessage(env) {
  const user = (env.from && env.from.user) || (env.data && env.data.user) || "someone";
  const text = env.data && typeof env.data.text === "string" ? env.data.text : JSON.stringify(env.data);
  addLine(user === demo.user ? "msg mine" : "msg", user, text, env.time);
}

function renderTyping() {
  const now = Date.now();
  const who = [...demo.typing].filter(([, until]) => until > now).map(([u]) => u);
  $("typing").textContent = who.length ? who.join(", ") + (who.length > 1 ? " are" : " is") + " typing…" : "";
}

async function refreshMembers() {
  if (!demo.sub) return;
  try {
    const p = await demo.sub.presence();
    const ul = $("members");
    ul.replaceChildren(...p.members.map((m) => {
      const li = document.createElement("li");
      li.textContent = m.user + (m.user === demo.user ? " (you)" : "");
      return li;
    }));
  } catch (e) { /* the next refresh tries again */ }
}

// openRoom shows a room's recent history, then follows it from exactly
// where the history ended (from, when given, continues a position held).
async function openRoom(room, from) {
  if (demo.sub) demo.sub.unsubscribe();
  demo.sub = null;
  demo.room = room;
  demo.typing.clear();
  renderTyping();
  for (const li of $("rooms").children) li.classList.toggle("active", li.dataset.room === room);
  const channel = channelOf(room);
  let pos = from;
  if (!pos) {
    $("messages").replaceChildren();
    const page = await demo.client.history(channel, { limit: 50 }).catch(() => null);
    if (page) {
      let msgs = page.messages;
      if (page.head > 50 && msgs.length) { // the newest 50
        const tail = await demo.client.history(channel, { since: page.head - 50, limit: 50 }).catch(() => null);
        if (tail) msgs = tail.messages;
      }
      msgs.forEach(showMessage);
      pos = { since: page.head, epoch: page.epoch };
    }
  }
  const sub = demo.client.subscribe(channel, pos || {});
  demo.sub = sub;
  sub.on("message_sent", (data, env) => showMessage(env));
  sub.on("reset", () => addLine("notice", "", "(some older messages are no longer kept)"));
  sub.on("state", (m) => {
    if (m.user === demo.user) return;
    if (m.state && m.state.typing) demo.typing.set(m.user, Date.now() + 5000);
    else demo.typing.delete(m.user);
    renderTyping();
  });
  for (const ev of ["join", "leave"]) sub.on(ev, refreshMembers);
  $("send").disabled = false;
  $("text").disabled = false;
  refreshMembers();
}

function connect(from) {
  if (demo.client) demo.client.close();
  const client = Herald.connect(location.origin, {
    token: demo.token,
    getToken: demo.dev ? () => devToken(demo.user) : undefined,
    transports: transports(),
    remember: $("transport").value === "auto",
  });
  demo.client = client;
  let connectedOnce = false;
  client.on("state", setStatus);
  client.on("transport", (name) => { $("transport-name").textContent = name; });
  client.on("connected", () => {
    if (connectedOnce) $("reconnects").textContent = String(++demo.reconnects);
    connectedOnce = true;
    refreshMembers();
  });
  client.on("error", (e) => addLine("notice", "", "(" + e.message + ")"));
  return openRoom(demo.room, from);
}

async function join(user) {
  demo.user = user;
  try {
    demo.token = await devToken(user);
    demo.dev = !!demo.token;
  } catch (e) {
    addLine("notice", "", "(" + e.message + ")");
    return;
  }
  if (!demo.dev) {
    $("token").hidden = false;
    demo.token = $("token").value.trim();
    if (!demo.token) { addLine("notice", "", "(this server is not in dev mode: paste a user token, then join)"); return; }
  }
  $("login").querySelector("button").textContent = "Rejoin";
  await connect();
}

$("login").addEventListener("submit", (e) => { e.preventDefault(); join($("user").value.trim()); });

$("transport").addEventListener("change", () => {
  if (!demo.client) return;
  // A new client on the chosen transport continues from the position the
  // old one held: nothing is shown twice or missed.
  const from = demo.sub ? { since: demo.sub.offset, epoch: demo.sub.epoch } : undefined;
  demo.sub = null;
  connect(from && from.since != null ? from : undefined);
});

let lastTyping = 0;
$("text").addEventListener("input", () => {
  if (!demo.sub || Date.now() - lastTyping < 2000) return;
  lastTyping = Date.now();
  demo.sub.signal({ typing: true }, { ttl: 4 }).catch(() => {});
});

$("compose").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !demo.sub) return;
  $("text").value = "";
  lastTyping = 0;
  demo.sub.signal(null).catch(() => {});
  try {
    await demo.client.publish(demo.sub.channel, "message_sent", { text, user: demo.user });
  } catch (err) {
    addLine("notice", "", "(not sent: " + err.message + ")");
  }
});

for (const room of ROOMS) {
  const li = document.createElement("li");
  li.textContent = "# " + room;
  li.dataset.room = room;
  li.addEventListener("click", () => { if (demo.client && room !== demo.room) openRoom(room); });
  $("rooms").append(li);
}
setInterval(() => { refreshMembers(); renderTyping(); }, 3000);

if (params.get("transport")) $("transport").value = params.get("transport");
if (params.get("user")) { $("user").value = params.get("user"); join(params.get("user")); }
