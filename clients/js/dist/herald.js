/**
 * Herald's client for browsers (and Node.js 20.10+ with
 * `--experimental-websocket`, or 22+): live notifications over one
 * WebSocket, with reconnects, batched acks and de-duplication, and the
 * user's feed and preferences over HTTP.
 *
 * Several tabs of one browser share one connection: the tab holding a Web
 * Lock is the leader and holds the socket; the others receive its events
 * over a BroadcastChannel and send their acks and reads through it. When
 * the leader closes, another tab takes the lock and connects.
 *
 * No dependencies. The protocol is `docs/asyncapi.yaml`; the HTTP routes
 * are `GET /v1/openapi.json`.
 */
import { decode as decodeMsgPack, encodeAck, encodePing } from "./msgpack.js";
/** Why the server closed, and whether the client tries again. */
const FINAL_CLOSES = {
    1008: "unauthorized",
    4000: "replaced by a newer connection",
};
/** Ids remembered for de-duplication across reconnects. */
const SEEN_MAX = 5000;
/**
 * Events: `notification` and `digest` (detail: the frame), `hello`,
 * `state` (detail: State), `error` (detail: `{code, message}`), `unread`
 * (detail: number, after a read through this client). Typed: a listener
 * added for a known name gets a `CustomEvent` of that event's detail.
 */
export class HeraldClient extends EventTarget {
    addEventListener(type, listener, options) {
        super.addEventListener(type, listener, options);
    }
    removeEventListener(type, listener, options) {
        super.removeEventListener(type, listener, options);
    }
    constructor(options) {
        super();
        this.ws = null;
        this.state = "closed";
        this.attempt = 0;
        this.stopped = true;
        this.timer = null;
        this.acks = [];
        this.ackTimer = null;
        /** Id -> the highest `count` shown (an aggregate grows under one id). */
        this.seen = new Map();
        this.channel = null;
        this.leader = false;
        this.releaseLock = null;
        this.lastHello = null;
        /** The last token was refused; a fresh one is being tried. */
        this.refused = false;
        /** When the socket last brought a frame, and the watch on it. */
        this.heardAt = 0;
        this.pingSent = false;
        this.watch = null;
        if (!options.token && !options.getToken && options.user === undefined) {
            throw new Error("HeraldClient needs a token, or a user id in development mode");
        }
        this.options = {
            ackDelayMs: 5,
            ackBatch: 32,
            backoffInitialMs: 250,
            backoffMaxMs: 30000,
            shareTabs: true,
            timeoutMs: 10000,
            pingMs: 20000,
            format: "json",
            ...options,
            url: options.url.replace(/\/+$/, ""),
        };
    }
    /** The connection's state. */
    get connectionState() {
        return this.state;
    }
    /** Starts (and keeps) the connection, or joins the tab that holds it. */
    start() {
        if (!this.stopped)
            return;
        this.stopped = false;
        const locks = globalThis.navigator?.locks;
        const known = this.options.user !== undefined || (this.options.token && !this.options.getToken);
        if (this.options.shareTabs && known && locks && typeof BroadcastChannel !== "undefined") {
            this.channel = new BroadcastChannel(`herald:${this.identity()}`);
            this.channel.onmessage = (e) => this.onChannel(e.data);
            // Followers ask the leader for its last hello.
            this.channel.postMessage({ t: "hello?" });
            this.setState("connecting");
            void locks.request(`herald:${this.identity()}`, () => {
                if (this.stopped)
                    return undefined;
                this.leader = true;
                this.connect();
                return new Promise((resolve) => (this.releaseLock = resolve));
            });
        }
        else {
            this.leader = true;
            this.connect();
        }
    }
    /** Closes the connection for good (acks waiting are sent first). */
    stop() {
        this.stopped = true;
        if (this.watch)
            clearInterval(this.watch);
        this.watch = null;
        this.flushAcks();
        if (this.timer)
            clearTimeout(this.timer);
        this.timer = null;
        this.ws?.close(1000, "client stopped");
        this.ws = null;
        this.releaseLock?.();
        this.releaseLock = null;
        this.leader = false;
        this.channel?.close();
        this.channel = null;
        this.setState("closed");
    }
    /** Acknowledges notifications (batched; `notification` events are acked
     * automatically unless `autoAck` is turned off by calling this yourself). */
    ack(ids) {
        if (!this.leader) {
            this.channel?.postMessage({ t: "ack", ids });
            return;
        }
        this.acks.push(...ids);
        if (this.acks.length >= this.options.ackBatch) {
            this.flushAcks();
        }
        else if (!this.ackTimer) {
            this.ackTimer = setTimeout(() => this.flushAcks(), this.options.ackDelayMs);
        }
    }
    // ---- HTTP helpers (the user's own token) ----
    /** A page of the feed, newest first; pass the previous page's `next`. */
    feed(opts = {}) {
        const q = new URLSearchParams();
        if (opts.limit !== undefined)
            q.set("limit", String(opts.limit));
        if (opts.before)
            q.set("before", opts.before);
        const qs = q.toString();
        return this.http("GET", `/notifications${qs ? `?${qs}` : ""}`);
    }
    /** Marks entries read (or every one, with `"all"`); resolves to the unread count. */
    async markRead(ids) {
        const body = ids === "all" ? { all: true } : { ids };
        const r = await this.http("POST", "/notifications/read", body);
        this.emit("unread", r.unread);
        this.channel?.postMessage({ t: "event", name: "unread", detail: r.unread });
        return r.unread;
    }
    preferences() {
        return this.http("GET", "/preferences");
    }
    setPreferences(doc) {
        return this.http("PUT", "/preferences", doc);
    }
    /** Mutes an actor or an object (`{actor: 42}` or `{object: "post:7"}`). */
    mute(target) {
        return this.http("POST", "/mutes", target);
    }
    unmute(target) {
        return this.http("DELETE", "/mutes", target);
    }
    // ---- internals ----
    identity() {
        return this.options.user !== undefined ? `u${this.options.user}` : `t${this.options.token}`;
    }
    userPath() {
        const user = this.options.user ?? subject(this.options.token ?? "");
        if (user === undefined)
            throw new Error("the token has no numeric sub claim");
        return `${this.options.url}/v1/users/${user}`;
    }
    async http(method, path, body) {
        const headers = {};
        if (this.options.token)
            headers.authorization = `Bearer ${this.options.token}`;
        if (body !== undefined)
            headers["content-type"] = "application/json";
        const ctl = new AbortController();
        const t = setTimeout(() => ctl.abort(), this.options.timeoutMs);
        try {
            const r = await fetch(this.userPath() + path, {
                method,
                headers,
                body: body === undefined ? undefined : JSON.stringify(body),
                signal: ctl.signal,
            });
            const v = await r.json().catch(() => ({}));
            if (!r.ok) {
                const e = v.error ?? {};
                throw new HeraldError(r.status, e.code ?? "http_error", e.message ?? r.statusText);
            }
            return v;
        }
        finally {
            clearTimeout(t);
        }
    }
    wsUrl() {
        const u = new URL(this.options.url + "/v1/ws");
        u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
        if (this.options.token)
            u.searchParams.set("token", this.options.token);
        else
            u.searchParams.set("user", String(this.options.user));
        return u.toString();
    }
    connect() {
        if (this.stopped)
            return;
        this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
        const get = this.options.getToken;
        if (!get) {
            this.open();
            return;
        }
        Promise.resolve()
            .then(get)
            .then((token) => {
            if (this.stopped)
                return;
            this.options.token = token;
            this.open();
        }, (e) => {
            this.emit("error", { code: "token_failed", message: String(e) });
            this.retry();
        });
    }
    open() {
        if (this.stopped)
            return;
        let ws;
        try {
            ws =
                this.options.format === "msgpack"
                    ? new WebSocket(this.wsUrl(), "herald.msgpack")
                    : new WebSocket(this.wsUrl());
            ws.binaryType = "arraybuffer";
        }
        catch (e) {
            this.emit("error", { code: "connect_failed", message: String(e) });
            this.retry();
            return;
        }
        this.ws = ws;
        this.heardAt = Date.now();
        this.pingSent = false;
        this.watchSocket(ws);
        ws.onmessage = (m) => {
            this.heardAt = Date.now();
            this.pingSent = false;
            if (typeof m.data === "string") {
                this.onFrame(m.data);
            }
            else if (m.data instanceof ArrayBuffer) {
                try {
                    this.onFrame(decodeMsgPack(new Uint8Array(m.data)));
                }
                catch (e) {
                    this.emit("error", { code: "bad_frame", message: String(e) });
                }
            }
        };
        ws.onclose = (c) => this.closed(ws, c.code, c.reason);
        // Some implementations (Node.js 20) report a failed connect with an
        // error and no close.
        ws.onerror = () => {
            if (ws.readyState !== 1)
                this.closed(ws, 1006, "");
        };
    }
    /** Pings a silent socket; closes one that stays silent (half-dead). */
    watchSocket(ws) {
        if (this.watch)
            clearInterval(this.watch);
        this.watch = null;
        const every = this.options.pingMs;
        if (!every)
            return;
        this.watch = setInterval(() => {
            if (this.ws !== ws || ws.readyState !== 1)
                return;
            const silent = Date.now() - this.heardAt;
            if (silent >= 2 * every && this.pingSent) {
                this.emit("error", { code: "half_dead", message: `no frame for ${silent} ms; reconnecting` });
                ws.close(4000, "no answer to ping");
                this.closed(ws, 1006, "");
            }
            else if (silent >= every && !this.pingSent) {
                this.pingSent = true;
                ws.send(this.options.format === "msgpack" ? encodePing() : JSON.stringify({ type: "ping" }));
            }
        }, Math.max(50, Math.floor(every / 4)));
    }
    closed(ws, code, reason) {
        if (this.ws !== ws)
            return;
        this.ws = null;
        if (this.watch)
            clearInterval(this.watch);
        this.watch = null;
        if (this.ackTimer)
            clearTimeout(this.ackTimer);
        this.ackTimer = null;
        // Unsent acks are moot: what was not acked is sent again.
        this.acks = [];
        // A refused token: one fresh one is tried at once.
        if (code === 1008 && reason.startsWith("unauthorized") && this.options.getToken && !this.refused) {
            this.refused = true;
            this.connect();
            return;
        }
        const final = FINAL_CLOSES[code];
        if (final) {
            this.emit("error", { code: `closed_${code}`, message: reason || final });
            this.stop();
            return;
        }
        this.retry();
    }
    retry() {
        if (this.stopped)
            return;
        this.setState("reconnecting");
        const cap = Math.min(this.options.backoffMaxMs, this.options.backoffInitialMs * 2 ** this.attempt);
        this.attempt = Math.min(this.attempt + 1, 30);
        this.timer = setTimeout(() => this.connect(), Math.random() * cap);
    }
    onFrame(frame) {
        let f;
        if (typeof frame === "string") {
            try {
                f = parseExact(frame);
            }
            catch {
                return;
            }
        }
        else if (frame && typeof frame === "object") {
            f = frame;
        }
        else {
            return;
        }
        switch (f.type) {
            case "hello":
                this.attempt = 0;
                this.refused = false;
                this.lastHello = f;
                this.setState("open");
                this.broadcast("hello", f);
                break;
            case "notification":
            case "digest": {
                const id = f.id ?? "";
                const count = typeof f.count === "number" ? f.count : 1;
                // Acked again (the server may not have had the ack), shown once;
                // an aggregate re-sent with a higher count is shown again (same
                // id: replace the one shown).
                this.ack([id]);
                const shown = this.seen.get(id);
                if (shown !== undefined && count <= shown)
                    return;
                this.seen.delete(id);
                this.seen.set(id, count);
                if (this.seen.size > SEEN_MAX) {
                    const oldest = this.seen.keys().next().value;
                    if (oldest !== undefined)
                        this.seen.delete(oldest);
                }
                this.broadcast(f.type, f);
                break;
            }
            case "error":
                this.broadcast("error", { code: f.code, message: f.message });
                break;
            default:
                break;
        }
    }
    flushAcks() {
        if (this.ackTimer)
            clearTimeout(this.ackTimer);
        this.ackTimer = null;
        if (!this.acks.length || !this.ws || this.ws.readyState !== 1)
            return;
        // The server takes at most 1000 ids per ack frame.
        while (this.acks.length) {
            const ids = this.acks.splice(0, 1000);
            this.ws.send(this.options.format === "msgpack" ? encodeAck(ids) : JSON.stringify({ type: "ack", ids }));
        }
    }
    onChannel(m) {
        if (m.t === "ack" && this.leader)
            this.ack(m.ids);
        else if (m.t === "hello?" && this.leader && this.lastHello)
            this.channel?.postMessage({ t: "event", name: "hello", detail: this.lastHello });
        else if (m.t === "event" && !this.leader) {
            if (m.name === "state")
                this.state = m.detail;
            this.emit(m.name, m.detail);
        }
    }
    /** Emits here and, as the leader, in the other tabs. */
    broadcast(name, detail) {
        this.emit(name, detail);
        if (this.leader)
            this.channel?.postMessage({ t: "event", name, detail });
    }
    setState(s) {
        if (this.state === s)
            return;
        this.state = s;
        this.broadcast("state", s);
    }
    emit(name, detail) {
        this.dispatchEvent(new CustomEvent(name, { detail }));
    }
}
/** An HTTP error from Herald: status, stable code, message. */
export class HeraldError extends Error {
    constructor(status, code, message) {
        super(`${status} ${code}: ${message}`);
        this.status = status;
        this.code = code;
    }
}
/** The numeric `sub` claim of a JWT (not verified: the server does that). */
function subject(token) {
    try {
        const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
        const claims = JSON.parse(atob(part));
        const n = Number(claims.sub);
        return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
    }
    catch {
        return undefined;
    }
}
/**
 * `JSON.parse`, except that integers past 2^53 (64-bit ids such as
 * snowflakes) come back as decimal strings instead of losing digits.
 */
export function parseExact(text) {
    let out = "";
    let last = 0;
    let inString = false;
    for (let k = 0; k < text.length; k++) {
        const c = text.charCodeAt(k);
        if (inString) {
            if (c === 92)
                k++; // a backslash escapes the next character
            else if (c === 34)
                inString = false;
            continue;
        }
        if (c === 34) {
            inString = true;
            continue;
        }
        const digit = c >= 48 && c <= 57;
        if (!digit && c !== 45)
            continue;
        let end = k + 1;
        while (end < text.length && /[0-9.eE+-]/.test(text[end]))
            end++;
        const token = text.slice(k, end);
        if (/^-?[0-9]{16,}$/.test(token) && !Number.isSafeInteger(Number(token))) {
            out += text.slice(last, k) + '"' + token + '"';
            last = end;
        }
        k = end - 1;
    }
    return JSON.parse(last === 0 ? text : out + text.slice(last));
}
