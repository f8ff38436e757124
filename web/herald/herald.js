/*! herald.js: the browser client of Herald (https://github.com/heraldrt/herald) */
// One client for WebSocket, Server-Sent Events and long polling. It keeps
// each channel's epoch and offset itself and resumes from them on whatever
// transport it uses next, so a change of transport (a proxy that blocks
// the upgrade, one that buffers the stream) loses nothing and repeats
// nothing. No dependencies; works as a classic script (window.Herald) and
// as a CommonJS module.
(function (root) {
  "use strict";

  const VERSION = "0.16.0";
  const ORDER = ["ws", "sse", "poll"];
  const DEFAULTS = {
    transports: ORDER, // tried in this order; the one that works is remembered for the tab
    heartbeat: 15000, // the server's heartbeat (sse.heartbeat); silence for twice it is a dead connection
    connectTimeout: 5000, // a transport that says nothing this long after opening is given up for the next
    pollTimeout: 25, // seconds a poll may wait on the server
    minDelay: 500, // reconnection backoff: from minDelay, doubling to maxDelay, with jitter
    maxDelay: 15000,
    upgradeAfter: 120000, // on a fallback transport, try the better ones again after this long
    remember: true, // keep the transport that worked in sessionStorage, per origin
  };

  // Emitter: on(name, fn) returns a function that removes fn.
  class Emitter {
    constructor() { this._h = new Map(); }
    on(name, fn) {
      if (!this._h.has(name)) this._h.set(name, new Set());
      this._h.get(name).add(fn);
      return () => this.off(name, fn);
    }
    off(name, fn) { const s = this._h.get(name); if (s) s.delete(fn); }
    _emit(name, ...args) {
      const s = this._h.get(name);
      if (!s) return;
      for (const fn of [...s]) {
        try { fn(...args); } catch (e) { setTimeout(() => { throw e; }); }
      }
    }
  }

  // HeraldError carries the server's error: code (the HTTP status) and message.
  class HeraldError extends Error {
    constructor(code, message, detail) {
      super(message);
      this.name = "HeraldError";
      this.code = code;
      Object.assign(this, detail || {});
    }
  }

  const serverEvents = { "herald.join": "join", "herald.leave": "leave", "herald.state": "state",
    "herald.online": "online", "herald.offline": "offline", "herald.unsubscribed": "unsubscribed" };

  // Subscription is one channel: its position (epoch, offset) and its
  // listeners. Events: the message's event name (data, envelope), "*"
  // (envelope), "reset" ({channel, reason, epoch, resume_after, head}),
  // "join", "leave", "state", "online", "offline" (member), "unsubscribed".
  class Subscription extends Emitter {
    constructor(client, channel, pos) {
      super();
      this.client = client;
      this.channel = channel;
      this.epoch = pos.epoch || "";
      this.offset = pos.since == null ? null : Number(pos.since); // null: from the head
    }
    position() { return { epoch: this.epoch, offset: this.offset }; }
    history(opts) { return this.client.history(this.channel, opts); }
    presence() { return this.client.presence(this.channel); }
    signal(state, opts = {}) {
      const body = { channel: this.channel, state: state === undefined ? null : state };
      if (opts.ttl != null) body.ttl = opts.ttl;
      return this.client._op("signal", body, "/api/signal");
    }
    unsubscribe() { this.client._unsubscribe(this); }
    // _take applies an envelope to the position and dispatches it; a
    // message at or before the position (a replay after a reconnect) is
    // dropped.
    _take(env) {
      if (env.event === "herald.reset") {
        const d = env.data || {};
        this.epoch = d.epoch;
        this.offset = d.resume_after;
        this._emit("reset", Object.assign({ channel: this.channel }, d));
        return;
      }
      if (env.offset) {
        if (env.epoch === this.epoch && this.offset != null && env.offset <= this.offset) return;
        this.epoch = env.epoch;
        this.offset = env.offset;
      }
      if (env.event === "herald.unsubscribed") this.client._subs.delete(this.channel);
      const name = serverEvents[env.event];
      if (name) this._emit(name, env.data, env);
      else this._emit(env.event, env.data, env);
      this._emit("*", env);
    }
    // _skip moves the position past a message not sent to this client.
    _skip(epoch, offset) {
      if (epoch === this.epoch && this.offset != null && offset <= this.offset) return;
      this.epoch = epoch;
      this.offset = offset;
    }
    // _head sets the position of a subscription that had none: where the
    // channel stood when the server started it.
    _head(epoch, offset) {
      if (this.offset == null) {
        this.epoch = epoch;
        this.offset = offset;
      }
    }
  }

  function jitter(ms) { return ms / 2 + Math.random() * ms / 2; }

  // final reports whether a server's disconnect ends the client for good:
  // it says not to reconnect, for a reason other than "replaced" — which
  // a stale request of this very client can cause (one sent before a
  // stall, answered after), so it reconnects.
  function final(d) { return d && d.reconnect === false && d.reason !== "replaced"; }

  function tokenExpiry(token) {
    try {
      const p = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
      return typeof p.exp === "number" ? p.exp * 1000 : 0;
    } catch (e) { return 0; }
  }

  function storage() {
    try { return root.sessionStorage || null; } catch (e) { return null; }
  }

  // Client is one connection to a Herald server, over the best transport
  // that works. Events: "connected" ({transport, session}), "disconnected"
  // ({transport, reason}), "transport" (name), "error" (HeraldError or
  // Error), "state" ("connecting" | "connected" | "disconnected" |
  // "closed"), "token" ({expires}: a token from getToken is in use; on a
  // WebSocket, expires is when the server now expects the next).
  class Client extends Emitter {
    constructor(url, opts = {}) {
      super();
      this.url = String(url || (root.location && root.location.origin) || "").replace(/\/+$/, "");
      this.opts = Object.assign({}, DEFAULTS, opts);
      const bad = this.opts.transports.filter((t) => !ORDER.includes(t));
      if (bad.length || !this.opts.transports.length) throw new Error("herald: transports must be some of ws, sse, poll");
      this.token = opts.token || "";
      this.session = "";
      this.transport = "";
      this.state = "disconnected";
      this._subs = new Map();
      this._conn = null;
      this._failures = 0;
      this._timer = null;
      this._closed = false;
      this._key = "herald.transport:" + this.url;
      this._online = () => this._reconnectNow();
      this._offline = () => { if (this._conn) this._drop(this._conn, "offline", false); };
      if (root.addEventListener) {
        root.addEventListener("online", this._online);
        root.addEventListener("offline", this._offline);
      }
      const kept = this.opts.remember && storage() && storage().getItem(this._key);
      this._index = Math.max(0, this.opts.transports.indexOf(kept));
      setTimeout(() => this._start(), 0);
    }

    subscribe(channel, pos = {}) {
      if (this._subs.has(channel)) return this._subs.get(channel);
      const sub = new Subscription(this, channel, pos);
      this._subs.set(channel, sub);
      if (this._conn && this._conn.open) this._conn.subscribe(sub);
      else if (this._conn) this._conn.stale = true; // an attempt under way names the channels it had
      return sub;
    }

    _unsubscribe(sub) {
      if (this._subs.get(sub.channel) !== sub) return;
      this._subs.delete(sub.channel);
      if (this._conn && this._conn.open) this._conn.unsubscribe(sub);
      else if (this._conn) this._conn.stale = true;
    }

    // publish stores a message; it resolves with {channel, offset, epoch,
    // id} once durable. excludeSelf: this client does not get it back.
    publish(channel, event, data, opts = {}) {
      const body = { channel, event, data };
      if (opts.idempotencyKey) body.idempotency_key = opts.idempotencyKey;
      if (opts.ephemeral) body.ephemeral = true;
      if (this._conn && this._conn.open && this._conn.name === "ws") {
        if (opts.excludeSelf) body.exclude_self = true;
        return this._conn.op("publish", body).then((r) => ({ channel: r.channel, offset: r.offset, epoch: r.epoch, id: r.message_id }));
      }
      if (opts.excludeSelf && this.session) { body.session = this.session; body.exclude_sender = true; }
      return this._api("POST", "/api/publish", null, body);
    }

    // history reads a channel's stored messages: {channel, epoch, head,
    // messages, next, reset}; since is exclusive (default 0: the oldest
    // kept), limit 1 to 1000 (default 100).
    history(channel, opts = {}) {
      const q = { channel };
      if (opts.since != null) q.since = opts.since;
      if (opts.limit != null) q.limit = opts.limit;
      return this._api("GET", "/api/history", q);
    }

    // presence lists a channel's members: {channel, members, count, sessions}.
    presence(channel) { return this._api("GET", "/api/presence", { channel }); }

    close() {
      this._closed = true;
      clearTimeout(this._timer);
      clearTimeout(this._upgrade);
      clearTimeout(this._refresh);
      if (root.removeEventListener) {
        root.removeEventListener("online", this._online);
        root.removeEventListener("offline", this._offline);
      }
      if (this._conn) this._conn.close();
      this._conn = null;
      this._setState("closed");
    }

    _setState(s) { if (this.state !== s) { this.state = s; this._emit("state", s); } }

    async _token() {
      if (this.opts.getToken && (!this.token || (tokenExpiry(this.token) && tokenExpiry(this.token) - Date.now() < 30000))) {
        this.token = await this.opts.getToken();
      }
      return this.token;
    }

    // _scheduleRefresh gets a new token 30 s before this one expires; a
    // WebSocket connection hands it to the server, the other transports
    // use it from their next request.
    _scheduleRefresh() {
      clearTimeout(this._refresh);
      const exp = tokenExpiry(this.token);
      if (!this.opts.getToken || !exp) return;
      this._refresh = setTimeout(async () => {
        try {
          this.token = await this.opts.getToken();
          let expires = "";
          if (this._conn && this._conn.open && this._conn.name === "ws") expires = (await this._conn.op("refresh", { token: this.token })).expires || "";
          this._emit("token", { expires });
          this._scheduleRefresh();
        } catch (e) { this._emit("error", e); }
      }, Math.max(1000, exp - Date.now() - 30000));
    }

    async _start() {
      if (this._closed) return;
      this._setState("connecting");
      let token;
      try { token = await this._token(); } catch (e) { this._emit("error", e); return this._retry(); }
      if (this._closed) return;
      const name = this.opts.transports[this._index];
      const conn = new TRANSPORTS[name](this, token);
      this._conn = conn;
      conn.timer = setTimeout(() => this._drop(conn, "no answer in time", true), this.opts.connectTimeout);
      conn.start();
    }

    // _opened: conn is live (the server said connected).
    _opened(conn, session) {
      if (conn !== this._conn) return;
      clearTimeout(conn.timer);
      conn.open = true;
      conn.since = Date.now();
      if (session) this.session = session;
      const name = conn.name;
      if (this.opts.remember && storage()) storage().setItem(this._key, name);
      if (this.transport !== name) { this.transport = name; this._emit("transport", name); }
      this._setState("connected");
      this._emit("connected", { transport: name, session: this.session });
      this._scheduleRefresh();
      clearTimeout(this._upgrade);
      if (this._index > 0) {
        this._upgrade = setTimeout(() => { if (this._conn === conn) { this._index = 0; this._drop(conn, "upgrade", false, true); } }, this.opts.upgradeAfter);
      }
    }

    // _drop ends conn. Before it was live, that is a failed attempt: the
    // next transport is tried (fallback). After, the same transport is
    // tried again after a backoff.
    _drop(conn, reason, failed, now) {
      if (conn !== this._conn) return;
      clearTimeout(conn.timer);
      this._conn = null;
      conn.close();
      const wasOpen = conn.open;
      if (reason === "resubscribe") return this._start(); // the same transport, at once, quietly
      if (wasOpen) {
        this._emit("disconnected", { transport: conn.name, reason });
        if (Date.now() - conn.since > 10000) this._failures = 0; // a good connection resets the backoff
      }
      if (this._closed) return;
      this._setState("disconnected");
      if (conn.fatal) { this._emit("error", conn.fatal); if (!conn.retry) return; }
      if (!wasOpen && failed && this._index < this.opts.transports.length - 1 && !conn.fatal) {
        this._index++; // fall back at once
        return this._start();
      }
      if (!wasOpen && failed) this._index = 0; // every transport failed: start over from the best, after a wait
      if (now) return this._start();
      this._retry();
    }

    _retry() {
      clearTimeout(this._timer);
      const d = Math.min(this.opts.maxDelay, this.opts.minDelay * 2 ** this._failures++);
      this._timer = setTimeout(() => this._start(), jitter(d));
    }

    _reconnectNow() {
      if (this._closed) return;
      clearTimeout(this._timer);
      this._failures = 0;
      if (this._conn) this._drop(this._conn, "online", false, true);
      else this._start();
    }

    // _deliver hands an envelope to its subscription.
    _deliver(env) {
      const sub = this._subs.get(env.channel);
      if (sub) sub._take(env);
    }

    // _params are a stream's or poll's query: its channels and where each
    // stands (since empty: from the head).
    _params(token) {
      const q = new URLSearchParams();
      for (const sub of this._subs.values()) {
        q.append("channel", sub.channel);
        q.append("since", sub.offset == null ? "" : String(sub.offset));
        q.append("epoch", sub.offset == null ? "" : sub.epoch);
      }
      if (this.session) q.set("session", this.session);
      if (token) q.set("token", token);
      return q;
    }

    // _op runs an operation over the WebSocket when it is open, else over
    // HTTP at path.
    _op(op, body, path) {
      if (this._conn && this._conn.open && this._conn.name === "ws") return this._conn.op(op, body);
      return this._api("POST", path, null, body);
    }

    async _api(method, path, query, body) {
      const token = await this._token();
      const url = this.url + path + (query ? "?" + new URLSearchParams(query) : "");
      const headers = {};
      if (token) headers.Authorization = "Bearer " + token;
      if (body) headers["Content-Type"] = "application/json";
      const resp = await fetch(url, { method, headers, body: body ? JSON.stringify(body) : undefined });
      const text = await resp.text();
      let j = null;
      try { j = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
      if (!resp.ok) {
        const err = (j && j.error) || { code: resp.status, message: text || resp.statusText };
        throw new HeraldError(err.code || resp.status, err.message, err);
      }
      return j;
    }
  }

  // Each transport is a connection with: name, open, start(),
  // subscribe(sub), unsubscribe(sub), close(); it calls client._opened,
  // client._deliver and client._drop.

  class WSConn {
    constructor(client, token) {
      this.c = client; this.name = "ws"; this.open = false; this.token = token;
      this.seq = 0; this.wait = new Map();
    }
    start() {
      const c = this.c;
      const q = new URLSearchParams();
      if (this.token) q.set("token", this.token);
      if (c.session) q.set("session", c.session);
      const ws = new WebSocket(c.url.replace(/^http/, "ws") + "/ws?" + q);
      this.ws = ws;
      ws.onmessage = (e) => this.frame(e.data);
      ws.onclose = (e) => this.closed(e);
      ws.onerror = () => {}; // onclose follows, with the code
    }
    frame(text) {
      this.seen = Date.now();
      let m;
      try { m = JSON.parse(text); } catch (e) { return; }
      if (m.id) {
        const w = this.wait.get(m.id);
        if (w) {
          this.wait.delete(m.id);
          if (m.ok) w.resolve(m); else w.reject(new HeraldError(m.error.code, m.error.message, m.error));
        }
        return;
      }
      const c = this.c;
      switch (m.type) {
        case "connected":
          this.session = m.session;
          for (const sub of c._subs.values()) this.subscribe(sub);
          c._opened(this, m.session);
          this.live = setInterval(() => this.check(), c.opts.heartbeat);
          break;
        case "message": case "reset": case "presence": c._deliver(m.message); break;
        case "batch": for (const env of m.messages) c._deliver(env); break;
        case "skip": { const sub = c._subs.get(m.channel); if (sub) sub._skip(m.epoch, m.offset); break; }
        case "unsubscribed": c._deliver({ channel: m.channel, event: "herald.unsubscribed", data: { reason: m.reason } }); break;
        case "disconnect": this.reason = m.reason; this.final = final(m); break;
      }
    }
    // check sends a ping and drops a connection that said nothing for
    // twice the heartbeat (a half-open TCP connection).
    check() {
      if (Date.now() - this.seen > 2 * this.c.opts.heartbeat) return this.c._drop(this, "silent", false);
      this.op("ping", {}).catch(() => {});
    }
    op(op, body) {
      const id = ++this.seq;
      return new Promise((resolve, reject) => {
        this.wait.set(id, { resolve, reject });
        try { this.ws.send(JSON.stringify(Object.assign({ id, op }, body))); } catch (e) { this.wait.delete(id); reject(e); }
      });
    }
    subscribe(sub) {
      const body = { channel: sub.channel };
      if (sub.offset != null) { body.since = sub.offset; if (sub.epoch) body.epoch = sub.epoch; }
      this.op("subscribe", body).then((r) => sub._head(r.epoch, r.offset), (e) => { sub._emit("error", e); this.c._emit("error", e); });
    }
    unsubscribe(sub) { this.op("unsubscribe", { channel: sub.channel }).catch(() => {}); }
    closed(e) {
      const lost = new Error("herald: connection closed");
      for (const w of this.wait.values()) w.reject(lost);
      this.wait.clear();
      if (e.code === 4001 || this.final) {
        this.fatal = new HeraldError(e.code === 4001 ? 401 : 403, e.reason || this.reason || "refused");
        this.retry = e.code === 4001 && !!this.c.opts.getToken;
        if (this.retry) this.c.token = "";
      }
      this.c._drop(this, this.reason || e.reason || "closed " + e.code, !this.open);
    }
    close() {
      clearInterval(this.live);
      if (this.ws) { this.ws.onclose = null; this.ws.onmessage = null; try { this.ws.close(1000); } catch (e) { /* closed */ } }
      for (const w of this.wait.values()) w.reject(new Error("herald: connection closed"));
      this.wait.clear();
    }
  }

  // SSEConn reads the stream with fetch (so any event name reaches the
  // client, the token goes in a header, and silence can be timed).
  class SSEConn {
    constructor(client, token) { this.c = client; this.name = "sse"; this.open = false; this.token = token; }
    async start() {
      const c = this.c;
      this.ctl = new AbortController();
      const headers = { Accept: "text/event-stream" };
      if (this.token) headers.Authorization = "Bearer " + this.token;
      let resp;
      try {
        resp = await fetch(c.url + "/sse?" + c._params(""), { headers, signal: this.ctl.signal, cache: "no-store" });
      } catch (e) { return c._drop(this, "unreachable", true); }
      if (!resp.ok) return this.refused(resp);
      this.seen = Date.now();
      this.live = setInterval(() => {
        if (Date.now() - this.seen > 2 * c.opts.heartbeat) c._drop(this, "silent", false);
      }, Math.min(1000, c.opts.heartbeat));
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "", ev = { event: "message", data: [] };
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          this.seen = Date.now();
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n")) >= 0) {
            let line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            if (line.endsWith("\r")) line = line.slice(0, -1);
            if (line === "") { this.dispatch(ev); ev = { event: "message", data: [] }; continue; }
            if (line[0] === ":") continue;
            const k = line.indexOf(":");
            const field = k < 0 ? line : line.slice(0, k);
            const val = k < 0 ? "" : line.slice(k + (line[k + 1] === " " ? 2 : 1));
            if (field === "event") ev.event = val; else if (field === "data") ev.data.push(val);
          }
        }
      } catch (e) { /* aborted or cut */ }
      c._drop(this, this.reason || "stream ended", !this.open);
    }
    dispatch(ev) {
      if (!ev.data.length) return; // an id-only event: a message not sent to this session
      let d;
      try { d = JSON.parse(ev.data.join("\n")); } catch (e) { return; }
      const c = this.c;
      if (ev.event === "herald.connected") {
        for (const ch of d.channels || []) { const sub = c._subs.get(ch.channel); if (sub) sub._head(ch.epoch, ch.offset); }
        c._opened(this, d.session);
        if (this.stale) c._drop(this, "resubscribe", false, true); // the channels changed while it opened
      } else if (ev.event === "herald.disconnect") {
        this.reason = d.reason;
        if (final(d)) this.fatal = new HeraldError(403, d.reason);
      } else c._deliver(d);
    }
    async refused(resp) {
      let err = { code: resp.status, message: resp.statusText };
      try { err = (await resp.json()).error || err; } catch (e) { /* not JSON */ }
      if (resp.status === 401 || resp.status === 403) {
        this.fatal = new HeraldError(err.code, err.message, err);
        this.retry = resp.status === 401 && !!this.c.opts.getToken;
        if (this.retry) this.c.token = "";
      }
      this.c._drop(this, err.message, !this.fatal);
    }
    // A change of channels opens the stream again from the positions held.
    subscribe() { this.c._drop(this, "resubscribe", false, true); }
    unsubscribe() { this.c._drop(this, "resubscribe", false, true); }
    close() { clearInterval(this.live); if (this.ctl) this.ctl.abort(); }
  }

  class PollConn {
    constructor(client, token) { this.c = client; this.name = "poll"; this.open = false; this.token = token; }
    async start() {
      const c = this.c;
      while (!this.stopped) {
        this.ctl = new AbortController();
        const q = c._params("");
        // A poll naming channels the last one did not answers at once, so
        // that their positions are known from the start.
        const named = q.getAll("channel").join("\n");
        q.set("timeout", this.open && named === this.named ? String(c.opts.pollTimeout) : "0");
        this.named = named;
        q.set("positions", "1");
        const headers = {};
        const token = await c._token().catch(() => this.token);
        if (token) headers.Authorization = "Bearer " + token;
        const limit = setTimeout(() => this.ctl.abort(), (this.open ? c.opts.pollTimeout * 1000 : 0) + 2 * c.opts.heartbeat);
        let resp, ans;
        try {
          resp = await fetch(c.url + "/poll?" + q, { headers, signal: this.ctl.signal, cache: "no-store" });
          if (resp.ok) ans = await resp.json();
        } catch (e) {
          clearTimeout(limit);
          if (this.stopped) return;
          return c._drop(this, this.resub ? "resubscribe" : "unreachable", !this.open, this.resub);
        }
        clearTimeout(limit);
        if (this.stopped) return;
        if (!resp.ok) return SSEConn.prototype.refused.call(this, resp);
        for (const env of ans.messages) {
          if (env.event === "herald.disconnect") {
            if (final(env.data)) this.fatal = new HeraldError(403, env.data.reason);
            return c._drop(this, env.data && env.data.reason, false);
          }
          c._deliver(env);
        }
        for (const p of ans.positions || []) { const sub = c._subs.get(p.channel); if (sub) sub._head(p.epoch, p.offset); }
        if (!this.open) c._opened(this, ans.session);
        else if (ans.session) c.session = ans.session;
      }
    }
    // A change of channels: the waiting poll ends, the next one names them.
    subscribe() { this.resub = true; this.ctl.abort(); }
    unsubscribe() { this.resub = true; this.ctl.abort(); }
    close() { this.stopped = true; if (this.ctl) this.ctl.abort(); }
  }

  const TRANSPORTS = { ws: WSConn, sse: SSEConn, poll: PollConn };

  const Herald = {
    version: VERSION,
    connect: (url, opts) => new Client(url, opts),
    Client, Subscription, HeraldError,
  };
  if (typeof module === "object" && module.exports) module.exports = Herald;
  else root.Herald = Herald;
})(typeof globalThis !== "undefined" ? globalThis : this);
