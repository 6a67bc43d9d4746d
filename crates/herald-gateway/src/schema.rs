//! The shapes of request and response bodies, for the OpenAPI document
//! (`GET /v1/openapi.json`). Handlers read bodies by hand (to name the bad
//! field and index in errors); these types describe the same contract and
//! are used only to generate the document.

#![allow(dead_code)]

use serde::Serialize;
use utoipa::ToSchema;

/// The one error body of every route.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, never reused: `invalid_field`, `malformed`, `unauthorized`,
    /// `forbidden`, `too_large`, `unsupported_media_type`, `rate_limited`,
    /// `storage_full`, `storage_failed`, `unavailable`, ...
    pub code: String,
    pub message: String,
    /// The event's index in a batch.
    pub index: Option<usize>,
    /// The field at fault, dotted (`events.3.recipient`, `kinds.like`).
    pub field: Option<String>,
}

/// One event. `recipient` is required for like, comment, follow, unfollow;
/// `mentions` for mention.
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// Client idempotency key (<= 128 bytes): the same key again never
    /// produces a second notification.
    pub id: Option<String>,
    /// A declared kind: built in, `like`, `comment`, `mention`, `follow`,
    /// `unfollow`, `post`; others as the node's `[kinds.*]` declares.
    #[schema(example = "like")]
    pub kind: String,
    pub actor: u64,
    pub recipient: Option<u64>,
    pub mentions: Option<Vec<u64>>,
    /// What it is about (`post:123`, <= 128 bytes).
    pub object: Option<String>,
    /// Shown to the user (<= 1,000 bytes).
    pub text: Option<String>,
    /// Client time (ms); the server's is kept as well.
    pub ts_ms: Option<u64>,
    /// The product's own data, delivered unchanged in every notification
    /// of the event (a JSON object, <= `gateway.max_data_bytes`, 4 KiB by
    /// default, once compact).
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

/// One event, or a batch (all or nothing).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventsBody {
    One(Event),
    Batch { events: Vec<Event> },
}

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub accepted: usize,
    /// Event ids, in the order sent.
    pub ids: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Follows {
    /// `[follower, followee]` pairs.
    pub follows: Vec<[u64; 2]>,
}

#[derive(Serialize, ToSchema)]
pub struct Imported {
    pub imported: usize,
}

#[derive(Serialize, ToSchema)]
pub struct FollowerCount {
    pub user: u64,
    pub followers: u64,
}

/// A notification, as the WebSocket frame carries it (a digest has
/// `window_start_ms`, `window_end_ms` and `items` instead of the event
/// fields).
#[derive(Serialize, ToSchema)]
pub struct Notification {
    /// `notification` or `digest`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Stable: a redelivery carries the same id.
    pub id: String,
    pub event_id: String,
    /// The event's kind (built in or declared).
    #[schema(example = "like")]
    pub kind: String,
    pub actor: u64,
    pub object: Option<String>,
    pub text: Option<String>,
    /// The event's data, unchanged (an aggregate: its newest event's).
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    pub ts_ms: u64,
    /// Events folded into this one (aggregates).
    pub count: u64,
    pub actors: Vec<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct Inbox {
    pub user: u64,
    /// Waiting in all.
    pub pending: u64,
    /// The oldest first.
    pub notifications: Vec<Notification>,
}

/// A feed entry: the notification and whether the user read it.
#[derive(Serialize, ToSchema)]
pub struct FeedEntry {
    #[serde(flatten)]
    pub notification: Notification,
    pub read: bool,
}

#[derive(Serialize, ToSchema)]
pub struct FeedPage {
    pub user: u64,
    /// Newest first.
    pub notifications: Vec<FeedEntry>,
    /// Unread entries in the whole feed.
    pub unread: u64,
    /// Pass as `before` for the next page; null on the last.
    pub next: Option<String>,
}

/// `{"ids": [...]}` (1 to 1,000) or `{"all": true}`.
#[derive(Serialize, ToSchema)]
pub struct MarkRead {
    pub ids: Option<Vec<String>>,
    pub all: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct Unread {
    pub unread: u64,
}

/// Delivery modes: `realtime`, `digest`, `off`.
#[derive(Serialize, ToSchema)]
pub struct Preferences {
    pub default: Option<String>,
    /// Kind -> mode.
    pub kinds: Option<std::collections::BTreeMap<String, String>>,
    /// `{"interval": "hourly"|"daily", "timezone": IANA, "hour": 0-23,
    /// "channel": "inbox"|"webhook"}`: `channel` says where a window's
    /// summary goes (`webhook`: only to the webhook, not in-app).
    pub digest: Option<serde_json::Value>,
    pub muted_actors: Option<Vec<u64>>,
    pub muted_objects: Option<Vec<String>>,
    /// `{"start": "22:00", "end": "07:00", "timezone": IANA}`.
    pub quiet_hours: Option<serde_json::Value>,
    /// The webhook channel: `{"enabled": true, "kinds": {"like": false,
    /// "digest": true}}`. Notifications that go to the inbox are also
    /// sent to the product's webhook unless turned off here (wholly, or
    /// per kind; kinds not listed are on). Quiet hours hold it; mutes and
    /// `off` stop it.
    pub webhook: Option<WebhookChannel>,
}

/// The webhook channel of a user's preferences.
#[derive(Serialize, ToSchema)]
pub struct WebhookChannel {
    /// `false`: no webhook call for this user. Default `true`.
    pub enabled: Option<bool>,
    /// Kind (or `digest`) -> on (`true`) or off (`false`).
    pub kinds: Option<std::collections::BTreeMap<String, bool>>,
}

/// `{"actor": 42}` or `{"object": "post:7"}`.
#[derive(Serialize, ToSchema)]
pub struct Mute {
    pub actor: Option<u64>,
    pub object: Option<String>,
    /// Until when (ms since the epoch); forever when absent.
    pub until_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetter {
    pub id: String,
    pub partition: u32,
    pub offset: u64,
    pub reason: String,
    pub at_ms: u64,
    /// The event, when it could be decoded.
    pub event: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetters {
    pub dead_letters: Vec<DeadLetter>,
}

/// `{"ids": [...]}` or `{"all": true}`.
#[derive(Serialize, ToSchema)]
pub struct Replay {
    pub ids: Option<Vec<String>>,
    pub all: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    pub replayed: usize,
}

/// A node to add to the cluster's node set.
#[derive(Serialize, ToSchema)]
pub struct NodeBody {
    /// Its `server.node_id`: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// `host:port` of its HTTP listener, as the other nodes reach it.
    pub addr: String,
}

/// One node of the node set.
#[derive(Serialize, ToSchema)]
pub struct NodeEntry {
    pub id: String,
    pub addr: String,
}

/// The node set after a change.
#[derive(Serialize, ToSchema)]
pub struct NodeSetView {
    /// Grows with every change (1: the set the cluster was made with).
    pub epoch: u64,
    pub nodes: Vec<NodeEntry>,
    /// False when the set already was so (the request changed nothing).
    pub changed: bool,
}

/// Whether a user is connected now.
#[derive(Serialize, ToSchema)]
pub struct Presence {
    /// At least one WebSocket open.
    pub online: bool,
    /// How many (one per device or tab).
    pub devices: u64,
}

/// Users to subscribe to or unsubscribe from an object.
#[derive(Serialize, ToSchema)]
pub struct Users {
    /// 1 to 10,000 user ids.
    pub users: Vec<u64>,
}

/// An object's subscriber count after a change.
#[derive(Serialize, ToSchema)]
pub struct Subscribers {
    pub subscribers: u64,
}

/// A page of an object's subscribers, in id order.
#[derive(Serialize, ToSchema)]
pub struct SubscriberPage {
    pub users: Vec<u64>,
    /// The cursor of the next page; null after the last.
    pub next: Option<String>,
}
