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

export type Kind =
  | "like"
  | "comment"
  | "mention"
  | "follow"
  | "unfollow"
  | "post"
  // A kind the node's configuration declares ([kinds.<name>]).
  | (string & {});

/** A user id: a number, or a decimal string past 2^53 (no digit lost). */
export type UserId = number | string;

/** A notification, as the `notification` frame and the feed carry it. */
export interface Notification {
  type: "notification";
  id: string;
  event_id: string;
  kind: Kind;
  actor: UserId;
  object?: string;
  text?: string;
  /** The event's own data, as the product posted it (an aggregate: its
   * newest event's). */
  data?: Record<string, unknown>;
  ts_ms: number;
  count: number;
  actors: UserId[];
  /** Feed entries only. */
  read?: boolean;
}

export interface DigestItem {
  kind: Kind;
  object?: string;
  count: number;
  actors: UserId[];
  event_id: string;
  /** The newest event's data. */
  data?: Record<string, unknown>;
}

/** A summary of a digest window. */
export interface Digest {
  type: "digest";
  id: string;
  window_start_ms: number;
  window_end_ms: number;
  count: number;
  items: DigestItem[];
  read?: boolean;
}

export interface Hello {
  type: "hello";
  user: UserId;
  /** Notifications waiting, sent right after. */
  pending: number;
  /** Waiting notifications the inbox cap dropped since the last connection. */
  dropped?: number;
  /** Unread entries of the feed. */
  unread: number;
}

export type State = "connecting" | "open" | "reconnecting" | "closed";

export interface FeedPage {
  notifications: Array<Notification | Digest>;
  unread: number;
  next: string | null;
}

export interface Options {
  /** The node, e.g. `http://127.0.0.1:7400`. */
  url: string;
  /** A JWT for the user (production). */
  token?: string;
  /**
   * Where a fresh JWT comes from (production): called before every
   * connection, and once more at once when the server refuses a token
   * (close 1008 `unauthorized: ...`, e.g. expired). A second refusal in a
   * row emits `error` (`closed_1008`) and stops. Without `user` (or a
   * static `token`) the tabs of a browser do not share one connection.
   */
  getToken?: () => string | Promise<string>;
  /** The user id (development mode only, when the node allows `?user=`). */
  user?: number;
  /** Ack after this many ms, or as soon as `ackBatch` ids wait. */
  ackDelayMs?: number;
  ackBatch?: number;
  /** Reconnect backoff: full jitter over `min(max, initial * 2^attempt)`. */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Frames as JSON text (default) or MessagePack binary (smaller). */
  format?: "json" | "msgpack";
  /** Share one connection between the tabs of a browser (default true). */
  shareTabs?: boolean;
  /** Every HTTP call fails after this long (default 10 s). */
  timeoutMs?: number;
  /**
   * A socket silent this long gets a `ping` frame; still silent as long
   * again, it is taken for half-dead (a laptop that slept, a NAT that
   * forgot it), closed and connected again (default 20 s; 0: never).
   */
  pingMs?: number;
}

/** Why the server closed, and whether the client tries again. */
const FINAL_CLOSES: Record<number, string> = {
  1008: "unauthorized",
  4000: "replaced by a newer connection",
};

/** Ids remembered for de-duplication across reconnects. */
const SEEN_MAX = 5000;

type Message =
  | { t: "event"; name: string; detail: unknown }
  | { t: "ack"; ids: string[] }
  | { t: "hello?" };

/** Each event's `detail`. */
export interface HeraldEventMap {
  notification: Notification;
  digest: Digest;
  hello: Hello;
  state: State;
  error: { code: string; message: string };
  unread: number;
}

/**
 * Events: `notification` and `digest` (detail: the frame), `hello`,
 * `state` (detail: State), `error` (detail: `{code, message}`), `unread`
 * (detail: number, after a read through this client). Typed: a listener
 * added for a known name gets a `CustomEvent` of that event's detail.
 */
export class HeraldClient extends EventTarget {
  addEventListener<K extends keyof HeraldEventMap>(
    type: K,
    listener: ((ev: CustomEvent<HeraldEventMap[K]>) => void) | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | ((ev: CustomEvent<never>) => void) | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    super.addEventListener(type, listener as EventListenerOrEventListenerObject | null, options);
  }

  removeEventListener<K extends keyof HeraldEventMap>(
    type: K,
    listener: ((ev: CustomEvent<HeraldEventMap[K]>) => void) | null,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | ((ev: CustomEvent<never>) => void) | null,
    options?: boolean | EventListenerOptions,
  ): void {
    super.removeEventListener(type, listener as EventListenerOrEventListenerObject | null, options);
  }

  readonly options: Required<Omit<Options, "token" | "user" | "getToken">> &
    Pick<Options, "token" | "user" | "getToken">;
  private ws: WebSocket | null = null;
  private state: State = "closed";
  private attempt = 0;
  private stopped = true;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private acks: string[] = [];
  private ackTimer: ReturnType<typeof setTimeout> | null = null;
  /** Id -> the highest `count` shown (an aggregate grows under one id). */
  private seen = new Map<string, number>();
  private channel: BroadcastChannel | null = null;
  private leader = false;
  private releaseLock: (() => void) | null = null;
  private lastHello: Hello | null = null;
  /** The last token was refused; a fresh one is being tried. */
  private refused = false;
  /** When the socket last brought a frame, and the watch on it. */
  private heardAt = 0;
  private pingSent = false;
  private watch: ReturnType<typeof setInterval> | null = null;

  constructor(options: Options) {
    super();
    if (!options.token && !options.getToken && options.user === undefined) {
      throw new Error("HeraldClient needs a token, or a user id in development mode");
    }
    this.options = {
      ackDelayMs: 5,
      ackBatch: 32,
      backoffInitialMs: 250,
      backoffMaxMs: 30_000,
      shareTabs: true,
      timeoutMs: 10_000,
      pingMs: 20_000,
      format: "json",
      ...options,
      url: options.url.replace(/\/+$/, ""),
    };
  }

  /** The connection's state. */
  get connectionState(): State {
    return this.state;
  }

  /** Starts (and keeps) the connection, or joins the tab that holds it. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
    const known = this.options.user !== undefined || (this.options.token && !this.options.getToken);
    if (this.options.shareTabs && known && locks && typeof BroadcastChannel !== "undefined") {
      this.channel = new BroadcastChannel(`herald:${this.identity()}`);
      this.channel.onmessage = (e: MessageEvent<Message>) => this.onChannel(e.data);
      // Followers ask the leader for its last hello.
      this.channel.postMessage({ t: "hello?" } satisfies Message);
      this.setState("connecting");
      void locks.request(`herald:${this.identity()}`, () => {
        if (this.stopped) return undefined;
        this.leader = true;
        this.connect();
        return new Promise<void>((resolve) => (this.releaseLock = resolve));
      });
    } else {
      this.leader = true;
      this.connect();
    }
  }

  /** Closes the connection for good (acks waiting are sent first). */
  stop(): void {
    this.stopped = true;
    if (this.watch) clearInterval(this.watch);
    this.watch = null;
    this.flushAcks();
    if (this.timer) clearTimeout(this.timer);
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
  ack(ids: string[]): void {
    if (!this.leader) {
      this.channel?.postMessage({ t: "ack", ids } satisfies Message);
      return;
    }
    this.acks.push(...ids);
    if (this.acks.length >= this.options.ackBatch) {
      this.flushAcks();
    } else if (!this.ackTimer) {
      this.ackTimer = setTimeout(() => this.flushAcks(), this.options.ackDelayMs);
    }
  }

  // ---- HTTP helpers (the user's own token) ----

  /** A page of the feed, newest first; pass the previous page's `next`. */
  feed(opts: { limit?: number; before?: string | null } = {}): Promise<FeedPage> {
    const q = new URLSearchParams();
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    if (opts.before) q.set("before", opts.before);
    const qs = q.toString();
    return this.http("GET", `/notifications${qs ? `?${qs}` : ""}`);
  }

  /** Marks entries read (or every one, with `"all"`); resolves to the unread count. */
  async markRead(ids: string[] | "all"): Promise<number> {
    const body = ids === "all" ? { all: true } : { ids };
    const r = await this.http<{ unread: number }>("POST", "/notifications/read", body);
    this.emit("unread", r.unread);
    this.channel?.postMessage({ t: "event", name: "unread", detail: r.unread } satisfies Message);
    return r.unread;
  }

  preferences(): Promise<Record<string, unknown>> {
    return this.http("GET", "/preferences");
  }

  setPreferences(doc: Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.http("PUT", "/preferences", doc);
  }

  /** Mutes an actor or an object (`{actor: 42}` or `{object: "post:7"}`). */
  mute(target: { actor?: number; object?: string; until_ms?: number }): Promise<unknown> {
    return this.http("POST", "/mutes", target);
  }

  unmute(target: { actor?: number; object?: string }): Promise<unknown> {
    return this.http("DELETE", "/mutes", target);
  }

  // ---- internals ----

  private identity(): string {
    return this.options.user !== undefined ? `u${this.options.user}` : `t${this.options.token}`;
  }

  private userPath(): string {
    const user = this.options.user ?? subject(this.options.token ?? "");
    if (user === undefined) throw new Error("the token has no numeric sub claim");
    return `${this.options.url}/v1/users/${user}`;
  }

  private async http<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
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
        const e = (v as { error?: { code?: string; message?: string } }).error ?? {};
        throw new HeraldError(r.status, e.code ?? "http_error", e.message ?? r.statusText);
      }
      return v as T;
    } finally {
      clearTimeout(t);
    }
  }

  private wsUrl(): string {
    const u = new URL(this.options.url + "/v1/ws");
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    if (this.options.token) u.searchParams.set("token", this.options.token);
    else u.searchParams.set("user", String(this.options.user));
    return u.toString();
  }

  private connect(): void {
    if (this.stopped) return;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const get = this.options.getToken;
    if (!get) {
      this.open();
      return;
    }
    Promise.resolve()
      .then(get)
      .then(
        (token) => {
          if (this.stopped) return;
          this.options.token = token;
          this.open();
        },
        (e) => {
          this.emit("error", { code: "token_failed", message: String(e) });
          this.retry();
        },
      );
  }

  private open(): void {
    if (this.stopped) return;
    let ws: WebSocket;
    try {
      ws =
        this.options.format === "msgpack"
          ? new WebSocket(this.wsUrl(), "herald.msgpack")
          : new WebSocket(this.wsUrl());
      ws.binaryType = "arraybuffer";
    } catch (e) {
      this.emit("error", { code: "connect_failed", message: String(e) });
      this.retry();
      return;
    }
    this.ws = ws;
    this.heardAt = Date.now();
    this.pingSent = false;
    this.watchSocket(ws);
    ws.onmessage = (m: MessageEvent) => {
      this.heardAt = Date.now();
      this.pingSent = false;
      if (typeof m.data === "string") {
        this.onFrame(m.data);
      } else if (m.data instanceof ArrayBuffer) {
        try {
          this.onFrame(decodeMsgPack(new Uint8Array(m.data)));
        } catch (e) {
          this.emit("error", { code: "bad_frame", message: String(e) });
        }
      }
    };
    ws.onclose = (c: CloseEvent) => this.closed(ws, c.code, c.reason);
    // Some implementations (Node.js 20) report a failed connect with an
    // error and no close.
    ws.onerror = () => {
      if (ws.readyState !== 1) this.closed(ws, 1006, "");
    };
  }

  /** Pings a silent socket; closes one that stays silent (half-dead). */
  private watchSocket(ws: WebSocket): void {
    if (this.watch) clearInterval(this.watch);
    this.watch = null;
    const every = this.options.pingMs;
    if (!every) return;
    this.watch = setInterval(() => {
      if (this.ws !== ws || ws.readyState !== 1) return;
      const silent = Date.now() - this.heardAt;
      if (silent >= 2 * every && this.pingSent) {
        this.emit("error", { code: "half_dead", message: `no frame for ${silent} ms; reconnecting` });
        ws.close(4000, "no answer to ping");
        this.closed(ws, 1006, "");
      } else if (silent >= every && !this.pingSent) {
        this.pingSent = true;
        ws.send(this.options.format === "msgpack" ? encodePing() : JSON.stringify({ type: "ping" }));
      }
    }, Math.max(50, Math.floor(every / 4)));
  }

  private closed(ws: WebSocket, code: number, reason: string): void {
    if (this.ws !== ws) return;
    this.ws = null;
    if (this.watch) clearInterval(this.watch);
    this.watch = null;
    if (this.ackTimer) clearTimeout(this.ackTimer);
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

  private retry(): void {
    if (this.stopped) return;
    this.setState("reconnecting");
    const cap = Math.min(this.options.backoffMaxMs, this.options.backoffInitialMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    this.timer = setTimeout(() => this.connect(), Math.random() * cap);
  }

  private onFrame(frame: string | unknown): void {
    let f: { type?: string; id?: string; count?: number; code?: string; message?: string };
    if (typeof frame === "string") {
      try {
        f = parseExact(frame);
      } catch {
        return;
      }
    } else if (frame && typeof frame === "object") {
      f = frame as typeof f;
    } else {
      return;
    }
    switch (f.type) {
      case "hello":
        this.attempt = 0;
        this.refused = false;
        this.lastHello = f as Hello;
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
        if (shown !== undefined && count <= shown) return;
        this.seen.delete(id);
        this.seen.set(id, count);
        if (this.seen.size > SEEN_MAX) {
          const oldest = this.seen.keys().next().value;
          if (oldest !== undefined) this.seen.delete(oldest);
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

  private flushAcks(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (!this.acks.length || !this.ws || this.ws.readyState !== 1) return;
    // The server takes at most 1000 ids per ack frame.
    while (this.acks.length) {
      const ids = this.acks.splice(0, 1000);
      this.ws.send(this.options.format === "msgpack" ? encodeAck(ids) : JSON.stringify({ type: "ack", ids }));
    }
  }

  private onChannel(m: Message): void {
    if (m.t === "ack" && this.leader) this.ack(m.ids);
    else if (m.t === "hello?" && this.leader && this.lastHello)
      this.channel?.postMessage({ t: "event", name: "hello", detail: this.lastHello } satisfies Message);
    else if (m.t === "event" && !this.leader) {
      if (m.name === "state") this.state = m.detail as State;
      this.emit(m.name, m.detail);
    }
  }

  /** Emits here and, as the leader, in the other tabs. */
  private broadcast(name: string, detail: unknown): void {
    this.emit(name, detail);
    if (this.leader) this.channel?.postMessage({ t: "event", name, detail } satisfies Message);
  }

  private setState(s: State): void {
    if (this.state === s) return;
    this.state = s;
    this.broadcast("state", s);
  }

  private emit(name: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}

/** An HTTP error from Herald: status, stable code, message. */
export class HeraldError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`${status} ${code}: ${message}`);
  }
}

/** The numeric `sub` claim of a JWT (not verified: the server does that). */
function subject(token: string): number | undefined {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part)) as { sub?: string | number };
    const n = Number(claims.sub);
    return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `JSON.parse`, except that integers past 2^53 (64-bit ids such as
 * snowflakes) come back as decimal strings instead of losing digits.
 */
export function parseExact(text: string): any {
  let out = "";
  let last = 0;
  let inString = false;
  for (let k = 0; k < text.length; k++) {
    const c = text.charCodeAt(k);
    if (inString) {
      if (c === 92) k++; // a backslash escapes the next character
      else if (c === 34) inString = false;
      continue;
    }
    if (c === 34) {
      inString = true;
      continue;
    }
    const digit = c >= 48 && c <= 57;
    if (!digit && c !== 45) continue;
    let end = k + 1;
    while (end < text.length && /[0-9.eE+-]/.test(text[end])) end++;
    const token = text.slice(k, end);
    if (/^-?[0-9]{16,}$/.test(token) && !Number.isSafeInteger(Number(token))) {
      out += text.slice(last, k) + '"' + token + '"';
      last = end;
    }
    k = end - 1;
  }
  return JSON.parse(last === 0 ? text : out + text.slice(last));
}
