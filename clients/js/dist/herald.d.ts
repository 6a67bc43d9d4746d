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
export type Kind = "like" | "comment" | "mention" | "follow" | "unfollow" | "post" | (string & {});
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
/** Each event's `detail`. */
export interface HeraldEventMap {
    notification: Notification;
    digest: Digest;
    hello: Hello;
    state: State;
    error: {
        code: string;
        message: string;
    };
    unread: number;
}
/**
 * Events: `notification` and `digest` (detail: the frame), `hello`,
 * `state` (detail: State), `error` (detail: `{code, message}`), `unread`
 * (detail: number, after a read through this client). Typed: a listener
 * added for a known name gets a `CustomEvent` of that event's detail.
 */
export declare class HeraldClient extends EventTarget {
    addEventListener<K extends keyof HeraldEventMap>(type: K, listener: ((ev: CustomEvent<HeraldEventMap[K]>) => void) | null, options?: boolean | AddEventListenerOptions): void;
    addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
    removeEventListener<K extends keyof HeraldEventMap>(type: K, listener: ((ev: CustomEvent<HeraldEventMap[K]>) => void) | null, options?: boolean | EventListenerOptions): void;
    removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
    readonly options: Required<Omit<Options, "token" | "user" | "getToken">> & Pick<Options, "token" | "user" | "getToken">;
    private ws;
    private state;
    private attempt;
    private stopped;
    private timer;
    private acks;
    private ackTimer;
    /** Id -> the highest `count` shown (an aggregate grows under one id). */
    private seen;
    private channel;
    private leader;
    private releaseLock;
    private lastHello;
    /** The last token was refused; a fresh one is being tried. */
    private refused;
    /** When the socket last brought a frame, and the watch on it. */
    private heardAt;
    private pingSent;
    private watch;
    constructor(options: Options);
    /** The connection's state. */
    get connectionState(): State;
    /** Starts (and keeps) the connection, or joins the tab that holds it. */
    start(): void;
    /** Closes the connection for good (acks waiting are sent first). */
    stop(): void;
    /** Acknowledges notifications (batched; `notification` events are acked
     * automatically unless `autoAck` is turned off by calling this yourself). */
    ack(ids: string[]): void;
    /** A page of the feed, newest first; pass the previous page's `next`. */
    feed(opts?: {
        limit?: number;
        before?: string | null;
    }): Promise<FeedPage>;
    /** Marks entries read (or every one, with `"all"`); resolves to the unread count. */
    markRead(ids: string[] | "all"): Promise<number>;
    preferences(): Promise<Record<string, unknown>>;
    setPreferences(doc: Record<string, unknown>): Promise<Record<string, unknown>>;
    /** Mutes an actor or an object (`{actor: 42}` or `{object: "post:7"}`). */
    mute(target: {
        actor?: number;
        object?: string;
        until_ms?: number;
    }): Promise<unknown>;
    unmute(target: {
        actor?: number;
        object?: string;
    }): Promise<unknown>;
    private identity;
    private userPath;
    private http;
    private wsUrl;
    private connect;
    private open;
    /** Pings a silent socket; closes one that stays silent (half-dead). */
    private watchSocket;
    private closed;
    private retry;
    private onFrame;
    private flushAcks;
    private onChannel;
    /** Emits here and, as the leader, in the other tabs. */
    private broadcast;
    private setState;
    private emit;
}
/** An HTTP error from Herald: status, stable code, message. */
export declare class HeraldError extends Error {
    readonly status: number;
    readonly code: string;
    constructor(status: number, code: string, message: string);
}
/**
 * `JSON.parse`, except that integers past 2^53 (64-bit ids such as
 * snowflakes) come back as decimal strings instead of losing digits.
 */
export declare function parseExact(text: string): any;
