// The client against a real Herald node (started by the Rust test
// `tests/js_client.rs`, which passes its address in HERALD_URL).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { createServer } from "node:net";
import { HeraldClient, parseExact } from "../dist/herald.js";

const url = process.env.HERALD_URL;
if (!url) throw new Error("HERALD_URL is not set (run through tests/js_client.rs)");

/** An HS256 JWT for `sub` with the node's secret, expiring in `expS` s. */
function jwt(sub, expS) {
  const secret = process.env.HERALD_JWT_SECRET;
  if (!secret) throw new Error("HERALD_JWT_SECRET is not set");
  const now = Math.floor(Date.now() / 1000);
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub: String(sub), exp: now + expS, iat: now - 300 })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

const next = (client, name, ms = 5000) =>
  new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${name} within ${ms} ms`)), ms);
    client.addEventListener(name, (e) => { clearTimeout(t); resolve(e.detail); }, { once: true });
  });

async function post(event) {
  const r = await fetch(`${url}/v1/events`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(event),
  });
  const text = await r.text();
  assert.equal(r.status, 202, text);
  return JSON.parse(text).ids[0];
}

async function inboxPending(user) {
  const r = await fetch(`${url}/v1/users/${user}/inbox`);
  return (await r.json()).pending;
}

async function until(what, f, ms = 5000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("live notifications arrive, are acked in batches, and land in the feed", async () => {
  const c = new HeraldClient({ url, user: 31 });
  const states = [];
  c.addEventListener("state", (e) => states.push(e.detail));
  const hello = next(c, "hello");
  c.start();
  assert.equal((await hello).user, 31);
  assert.equal(c.connectionState, "open");
  const got = next(c, "notification");
  const ev = await post({ kind: "comment", actor: 8, recipient: 31, object: "post:1", text: "hi" });
  const n = await got;
  assert.equal(n.event_id, ev);
  assert.equal(n.text, "hi");
  // The ack went out (batched): nothing is left to redeliver, even once
  // the connection is gone (an unacked one would go back to the inbox).
  await new Promise((r) => setTimeout(r, 300));
  c.ws.close();
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await inboxPending(31), 0);
  const page = await until("feed entry", async () => {
    const p = await c.feed({ limit: 10 });
    return p.notifications.length === 1 ? p : null;
  });
  assert.equal(page.notifications[0].id, n.id);
  assert.equal(page.unread, 1);
  assert.equal(page.notifications[0].read, false);
  const unread = next(c, "unread");
  assert.equal(await c.markRead([n.id]), 0);
  assert.equal(await unread, 0);
  c.stop();
  assert.deepEqual(states.slice(0, 3), ["connecting", "open", "reconnecting"], String(states));
  assert.equal(states.at(-1), "closed");
});

test("a notification redelivered after a reconnect is shown once", async () => {
  // Acks held back: the server sends the same notification again.
  const c = new HeraldClient({ url, user: 32, ackDelayMs: 60_000, ackBatch: 1000, backoffInitialMs: 10 });
  const seen = [];
  c.addEventListener("notification", (e) => seen.push(e.detail.id));
  const hello = next(c, "hello");
  c.start();
  await hello;
  const got = next(c, "notification");
  await post({ kind: "like", actor: 9, recipient: 32, object: "post:2" });
  await got;
  // The socket drops; the client reconnects by itself.
  const again = next(c, "hello");
  c.ws.close();
  const h = await again;
  assert.equal(h.pending, 1, "the unacked one waited in the inbox");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(seen.length, 1, `shown once: ${seen}`);
  // Once acked it is gone for good.
  c.ack([]);
  c.options.ackBatch = 1;
  c.ack([seen[0]]);
  await until("inbox empty", async () => (await inboxPending(32)) === 0);
  c.stop();
});

test("MessagePack frames work the same way", async () => {
  const c = new HeraldClient({ url, user: 35, format: "msgpack" });
  const hello = next(c, "hello");
  c.start();
  assert.equal((await hello).user, 35);
  const got = next(c, "notification");
  const ev = await post({ kind: "comment", actor: 8, recipient: 35, object: "post:5", text: "héllo ✓" });
  const n = await got;
  assert.equal(n.event_id, ev);
  assert.equal(n.text, "héllo ✓");
  assert.deepEqual(n.actors, [8]);
  // Acked in MessagePack: once the connection closes nothing waits (an
  // unacked notification would be put back in the inbox).
  await new Promise((r) => setTimeout(r, 300));
  c.stop();
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await inboxPending(35), 0);
});

test("preferences and mutes go through the user's helpers", async () => {
  const c = new HeraldClient({ url, user: 33 });
  const hello = next(c, "hello");
  c.start();
  await hello;
  await c.mute({ actor: 77 });
  await post({ kind: "like", actor: 77, recipient: 33, object: "post:3" });
  const got = next(c, "notification");
  await post({ kind: "like", actor: 78, recipient: 33, object: "post:3" });
  assert.equal((await got).actor, 78, "the muted actor's like never came");
  const prefs = await c.preferences();
  assert.deepEqual(prefs.muted_actors, [77], JSON.stringify(prefs));
  await assert.rejects(c.feed({ limit: 0 }), (e) => e.status === 400 && e.code === "invalid_field");
  c.stop();
});

test("an aggregate that grows under its id is shown again with the higher count", async () => {
  const c = new HeraldClient({ url, user: 36 });
  const hello = next(c, "hello");
  c.start();
  await hello;
  const seen = [];
  c.addEventListener("notification", (e) => seen.push(e.detail));
  // Likes about one object fold: past the first two, one aggregate whose
  // count grows, re-sent under the same id.
  for (let a = 1; a <= 3; a++) await post({ kind: "like", actor: 100 + a, recipient: 36, object: "post:agg" });
  const first = await until("the aggregate", async () => seen.find((n) => n.count >= 3));
  for (let a = 4; a <= 6; a++) await post({ kind: "like", actor: 100 + a, recipient: 36, object: "post:agg" });
  const grown = await until("the grown aggregate", async () =>
    seen.find((n) => n.id === first.id && n.count > first.count));
  assert.ok(grown.count >= 4, JSON.stringify(grown));
  // Shown once per count: never twice with the same one.
  const shown = seen.filter((n) => n.id === first.id).map((n) => n.count);
  assert.deepEqual(shown, [...new Set(shown)].sort((x, y) => x - y), JSON.stringify(shown));
  c.stop();
});

test("ids past 2^53 keep every digit, in JSON and MessagePack frames", async () => {
  const big = "1152921504606846977"; // 2^60 + 1: a number would read ...7000
  for (const [user, format] of [[37, "json"], [38, "msgpack"]]) {
    const c = new HeraldClient({ url, user, format });
    const hello = next(c, "hello");
    c.start();
    await hello;
    const got = next(c, "notification");
    // Sent as raw JSON text: JSON.stringify of a number would round it.
    const r = await fetch(`${url}/v1/events`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: `{"kind": "comment", "actor": ${big}, "recipient": ${user}, "object": "post:big", "text": "id ${big}"}`,
    });
    assert.equal(r.status, 202, await r.text());
    const n = await got;
    assert.equal(n.actor, big, `${format}: ${JSON.stringify(n)}`);
    assert.deepEqual(n.actors, [big], format);
    assert.equal(n.text, `id ${big}`, format);
    c.stop();
  }
  // Small numbers stay numbers; digits inside strings are left alone.
  const v = parseExact('{"a": 12, "b": "9007199254740993", "c": [9007199254740993, -9007199254740993], "d": 1.5e3}');
  assert.deepEqual(v, { a: 12, b: "9007199254740993", c: ["9007199254740993", "-9007199254740993"], d: 1500 });
});

test("an expired token is refused visibly and getToken's fresh one connects", async () => {
  const tokens = [jwt(39, -120), jwt(39, 600)];
  let asked = 0;
  const c = new HeraldClient({ url, getToken: () => tokens[Math.min(asked++, 1)], shareTabs: false });
  const errors = [];
  c.addEventListener("error", (e) => errors.push(e.detail));
  const hello = next(c, "hello");
  c.start();
  assert.equal((await hello).user, 39);
  assert.equal(asked, 2, "asked once more after the refusal");
  assert.deepEqual(errors, []);
  c.stop();
});

test("a token a fresh one does not cure ends in an error", async () => {
  let asked = 0;
  const c = new HeraldClient({ url, getToken: async () => (asked++, jwt(40, -120)), shareTabs: false });
  const err = next(c, "error");
  c.start();
  const e = await err;
  assert.equal(e.code, "closed_1008", JSON.stringify(e));
  assert.match(e.message, /^unauthorized: /);
  assert.equal(asked, 2);
  await until("closed", async () => c.connectionState === "closed");
});

test("an idle socket is pinged and answered, so it stays open", async () => {
  const c = new HeraldClient({ url, user: 41, pingMs: 150 });
  const errors = [];
  c.addEventListener("error", (e) => errors.push(e.detail));
  const hello = next(c, "hello");
  c.start();
  await hello;
  const ws = c.ws;
  await new Promise((r) => setTimeout(r, 1200));
  assert.equal(c.ws, ws, "reconnected although the node answered its pings");
  assert.deepEqual(errors, []);
  c.stop();
});

test("a half-dead socket (upgraded, then silent) is closed and connected again", async () => {
  // A server that completes the WebSocket handshake and then says nothing.
  let upgrades = 0;
  const socks = new Set();
  const server = createServer((sock) => {
    socks.add(sock);
    sock.once("data", (req) => {
      const key = /sec-websocket-key: *(\S+)/i.exec(req.toString())?.[1] ?? "";
      const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
      upgrades++;
      sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
      sock.on("data", () => {}); // pings read, never answered
    });
    sock.on("error", () => {});
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const silent = `http://127.0.0.1:${server.address().port}`;
  const c = new HeraldClient({ url: silent, user: 42, pingMs: 100, backoffInitialMs: 5, backoffMaxMs: 20 });
  const err = next(c, "error", 5000);
  c.start();
  const e = await err;
  assert.equal(e.code, "half_dead", JSON.stringify(e));
  await until("a second connection", async () => upgrades >= 2);
  c.stop();
  for (const s of socks) s.destroy();
  server.close();
});

test("backoff keeps trying an unreachable node without throwing", async () => {
  const c = new HeraldClient({ url: "http://127.0.0.1:9", user: 34, backoffInitialMs: 5, backoffMaxMs: 20 });
  const states = [];
  c.addEventListener("state", (e) => states.push(e.detail));
  c.start();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(c.connectionState, "reconnecting");
  assert.ok(c.attempt >= 3, `attempts ${c.attempt}`);
  c.stop();
  assert.equal(states.at(-1), "closed");
});

test("options are checked", () => {
  assert.throws(() => new HeraldClient({ url }), /token, or a user id/);
});
