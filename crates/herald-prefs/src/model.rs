//! The preference document, its validation and its wire shape.

use std::collections::BTreeMap;

use herald_types::{EventKind, UserId};
use serde::Serialize;
use serde_json::{Map, Value};

/// Most muted actors or objects per user.
pub const MAX_MUTES: usize = 10_000;
/// Longest muted object.
pub const MAX_OBJECT: usize = 128;

/// How a kind of notification reaches a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Realtime,
    Digest,
    Off,
}

impl From<herald_types::kind::DefaultMode> for Mode {
    fn from(m: herald_types::kind::DefaultMode) -> Mode {
        match m {
            herald_types::kind::DefaultMode::Realtime => Mode::Realtime,
            herald_types::kind::DefaultMode::Digest => Mode::Digest,
            herald_types::kind::DefaultMode::Off => Mode::Off,
        }
    }
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "realtime" => Some(Mode::Realtime),
            "digest" => Some(Mode::Digest),
            "off" => Some(Mode::Off),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Hourly,
    Daily,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Digest {
    pub interval: Interval,
    pub timezone: String,
    pub hour: u8,
    /// Where a window's summary goes.
    pub channel: DigestChannel,
}

/// Where a digest window's summary goes: the inbox (in-app, and the
/// webhook too when it is on for `digest`), or only the webhook (e.g. for
/// an email).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestChannel {
    Inbox,
    Webhook,
}

/// The webhook channel: notifications that go to the inbox (the user was
/// offline, or did not ack in time) are also sent to the product's
/// webhook, unless turned off here, wholly or per kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookPrefs {
    pub enabled: bool,
    /// Kind (or `digest`) -> on or off; kinds not listed are on.
    pub kinds: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
    pub timezone: String,
}

/// A user's preferences. Mutes are kept apart (they can expire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preferences {
    pub default: Mode,
    pub kinds: BTreeMap<String, Mode>,
    pub digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    pub webhook: WebhookPrefs,
}

impl Preferences {
    /// Whether a notification of `kind` (a kind's name, or `digest`) that
    /// goes to the inbox is also sent to the webhook.
    pub fn webhook_allows(&self, kind: &str) -> bool {
        self.webhook.enabled && self.webhook.kinds.get(kind).copied().unwrap_or(true)
    }
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            default: Mode::Realtime,
            kinds: BTreeMap::new(),
            digest: Digest {
                interval: Interval::Hourly,
                timezone: "UTC".into(),
                hour: 9,
                channel: DigestChannel::Inbox,
            },
            quiet_hours: None,
            webhook: WebhookPrefs {
                enabled: true,
                kinds: BTreeMap::new(),
            },
        }
    }
}

/// Why a document was refused: the field (dotted path) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        code: "invalid_field",
        field: field.into(),
        message: message.into(),
    }
}

fn unknown(field: impl Into<String>) -> Invalid {
    let field = field.into();
    Invalid {
        code: "unknown_field",
        message: format!("unknown field {field:?}"),
        field,
    }
}

fn only(m: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Result<(), Invalid> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(unknown(format!("{prefix}{k}"))),
        None => Ok(()),
    }
}

fn mode(v: &Value, field: &str) -> Result<Mode, Invalid> {
    v.as_str()
        .and_then(Mode::parse)
        .ok_or_else(|| bad(field, "must be \"realtime\", \"digest\" or \"off\""))
}

/// A valid IANA time zone name (from the bundled tz database).
pub fn timezone(v: &Value, field: &str) -> Result<String, Invalid> {
    let s = v
        .as_str()
        .ok_or_else(|| bad(field, "must be a time zone name"))?;
    if s.len() > 64 || jiff::tz::TimeZone::get(s).is_err() {
        return Err(bad(field, format!("unknown time zone {s:?}")));
    }
    Ok(s.to_string())
}

/// "HH:MM", 00:00 to 23:59; returns minutes after midnight.
pub fn clock(v: &Value, field: &str) -> Result<u16, Invalid> {
    let err = || bad(field, "must be a time \"HH:MM\" (00:00 to 23:59)");
    let s = v.as_str().ok_or_else(err)?;
    let (h, m) = s.split_once(':').ok_or_else(err)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(err());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
    if h > 23 || m > 59 {
        return Err(err());
    }
    Ok(h * 60 + m)
}

/// A user id as the API accepts it.
pub fn user_id(v: &Value) -> Option<UserId> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => herald_types::ids::parse_user(s),
        _ => None,
    }
}

/// A muted object: a non-empty string of at most `MAX_OBJECT` bytes.
pub fn object(v: &Value, field: &str) -> Result<String, Invalid> {
    match v.as_str() {
        Some(s) if !s.is_empty() && s.len() <= MAX_OBJECT => Ok(s.to_string()),
        _ => Err(bad(
            field,
            format!("must be a string of 1 to {MAX_OBJECT} bytes"),
        )),
    }
}

/// A parsed `PUT` body: preferences and the mutes it sets (without expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub prefs: Preferences,
    pub muted_actors: Vec<UserId>,
    pub muted_objects: Vec<String>,
}

/// Validates a whole `PUT /v1/users/{id}/preferences` body: every kind it
/// names must be declared.
pub fn parse_document(v: &Value) -> Result<Document, Invalid> {
    parse_with(v, Kinds::Declared)
}

/// Which kind names a document may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kinds {
    /// Declared ones only (a request).
    Declared,
    /// Any (a stored document: a kind removed from the configuration
    /// since must not make the rest of the user's choices unreadable).
    Any,
}

fn parse_with(v: &Value, kinds: Kinds) -> Result<Document, Invalid> {
    let m = v
        .as_object()
        .ok_or_else(|| bad("", "body must be a preferences object"))?;
    only(
        m,
        &[
            "default",
            "kinds",
            "digest",
            "muted_actors",
            "muted_objects",
            "quiet_hours",
            "webhook",
        ],
        "",
    )?;
    let mut prefs = Preferences::default();
    if let Some(d) = m.get("default") {
        prefs.default = mode(d, "default")?;
    }
    if let Some(k) = m.get("kinds") {
        prefs.kinds = parse_kinds(k, kinds)?;
    }
    if let Some(d) = m.get("digest") {
        prefs.digest = parse_digest(d)?;
    }
    if let Some(q) = m.get("quiet_hours") {
        prefs.quiet_hours = parse_quiet_hours(q)?;
    }
    if let Some(w) = m.get("webhook") {
        prefs.webhook = parse_webhook(w, kinds)?;
    }
    let muted_actors = match m.get("muted_actors") {
        Some(a) => parse_muted_actors(a)?,
        None => Vec::new(),
    };
    let muted_objects = match m.get("muted_objects") {
        Some(o) => parse_muted_objects(o)?,
        None => Vec::new(),
    };
    Ok(Document {
        prefs,
        muted_actors,
        muted_objects,
    })
}

/// `kinds`: kind -> mode, for kinds that notify anyone.
fn parse_kinds(k: &Value, kinds: Kinds) -> Result<BTreeMap<String, Mode>, Invalid> {
    let k = k
        .as_object()
        .ok_or_else(|| bad("kinds", "must be an object of kind -> mode"))?;
    let mut out = BTreeMap::new();
    for (name, v) in k {
        let field = format!("kinds.{name}");
        match EventKind::parse(name) {
            Some(kind) if !kind.notifies() => {
                return Err(bad(field, format!("{name} is never notified")));
            }
            Some(_) => {
                out.insert(name.clone(), mode(v, &field)?);
            }
            None if kinds == Kinds::Any => {
                out.insert(name.clone(), mode(v, &field)?);
            }
            None => return Err(bad(field, format!("unknown kind {name:?}"))),
        }
    }
    Ok(out)
}

/// `digest`: interval, time zone and hour (defaults for what is absent).
fn parse_digest(d: &Value) -> Result<Digest, Invalid> {
    let d = d
        .as_object()
        .ok_or_else(|| bad("digest", "must be an object"))?;
    only(d, &["interval", "timezone", "hour", "channel"], "digest.")?;
    let mut digest = Preferences::default().digest;
    if let Some(i) = d.get("interval") {
        digest.interval = match i.as_str() {
            Some("hourly") => Interval::Hourly,
            Some("daily") => Interval::Daily,
            _ => return Err(bad("digest.interval", "must be \"hourly\" or \"daily\"")),
        };
    }
    if let Some(t) = d.get("timezone") {
        digest.timezone = timezone(t, "digest.timezone")?;
    }
    if let Some(h) = d.get("hour") {
        digest.hour =
            h.as_u64()
                .filter(|h| *h < 24)
                .ok_or_else(|| bad("digest.hour", "must be an hour 0 to 23"))? as u8;
    }
    if let Some(c) = d.get("channel") {
        digest.channel = match c.as_str() {
            Some("inbox") => DigestChannel::Inbox,
            Some("webhook") => DigestChannel::Webhook,
            _ => return Err(bad("digest.channel", "must be \"inbox\" or \"webhook\"")),
        };
    }
    Ok(digest)
}

/// `webhook`: `enabled` (default true) and `kinds` (kind or `digest` ->
/// true/false).
fn parse_webhook(w: &Value, kinds: Kinds) -> Result<WebhookPrefs, Invalid> {
    let w = w
        .as_object()
        .ok_or_else(|| bad("webhook", "must be an object"))?;
    only(w, &["enabled", "kinds"], "webhook.")?;
    let mut out = Preferences::default().webhook;
    if let Some(e) = w.get("enabled") {
        out.enabled = e
            .as_bool()
            .ok_or_else(|| bad("webhook.enabled", "must be true or false"))?;
    }
    if let Some(k) = w.get("kinds") {
        let k = k
            .as_object()
            .ok_or_else(|| bad("webhook.kinds", "must be an object of kind -> true/false"))?;
        for (name, v) in k {
            let field = format!("webhook.kinds.{name}");
            match EventKind::parse(name) {
                Some(kind) if !kind.notifies() => {
                    return Err(bad(field, format!("{name} is never notified")));
                }
                None if name != "digest" && kinds == Kinds::Declared => {
                    return Err(bad(field, format!("unknown kind {name:?}")))
                }
                _ => {}
            }
            let on = v
                .as_bool()
                .ok_or_else(|| bad(&field, "must be true or false"))?;
            out.kinds.insert(name.clone(), on);
        }
    }
    Ok(out)
}

/// `quiet_hours`: start and end (distinct), time zone (UTC by default);
/// null clears them.
fn parse_quiet_hours(q: &Value) -> Result<Option<QuietHours>, Invalid> {
    if q.is_null() {
        return Ok(None);
    }
    let q = q
        .as_object()
        .ok_or_else(|| bad("quiet_hours", "must be an object or null"))?;
    only(q, &["start", "end", "timezone"], "quiet_hours.")?;
    let get = |k: &str| {
        q.get(k).ok_or_else(|| Invalid {
            code: "missing_field",
            field: format!("quiet_hours.{k}"),
            message: format!("quiet_hours.{k} is required"),
        })
    };
    let (s, e) = (get("start")?, get("end")?);
    if clock(s, "quiet_hours.start")? == clock(e, "quiet_hours.end")? {
        return Err(bad("quiet_hours.end", "must differ from start"));
    }
    let tz = match q.get("timezone") {
        Some(t) => timezone(t, "quiet_hours.timezone")?,
        None => "UTC".into(),
    };
    Ok(Some(QuietHours {
        start: s.as_str().unwrap_or_default().to_string(),
        end: e.as_str().unwrap_or_default().to_string(),
        timezone: tz,
    }))
}

fn parse_muted_actors(a: &Value) -> Result<Vec<UserId>, Invalid> {
    let a = a
        .as_array()
        .ok_or_else(|| bad("muted_actors", "must be an array of user ids"))?;
    if a.len() > MAX_MUTES {
        return Err(bad("muted_actors", format!("at most {MAX_MUTES}")));
    }
    a.iter()
        .map(|v| user_id(v).ok_or_else(|| bad("muted_actors", "must be an array of user ids")))
        .collect()
}

fn parse_muted_objects(o: &Value) -> Result<Vec<String>, Invalid> {
    let o = o
        .as_array()
        .ok_or_else(|| bad("muted_objects", "must be an array of strings"))?;
    if o.len() > MAX_MUTES {
        return Err(bad("muted_objects", format!("at most {MAX_MUTES}")));
    }
    o.iter().map(|v| object(v, "muted_objects")).collect()
}

impl Preferences {
    /// The stored form (the same JSON as the API, without mutes).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored document; anything unreadable falls back to defaults
    /// (and is logged), so a bad record never blocks delivery.
    pub fn from_stored(doc: Option<&str>) -> Preferences {
        let Some(doc) = doc else {
            return Preferences::default();
        };
        match serde_json::from_str::<Value>(doc)
            .map_err(|e| e.to_string())
            .and_then(|v| parse_with(&v, Kinds::Any).map_err(|e| e.to_string()))
        {
            Ok(d) => d.prefs,
            Err(e) => {
                tracing::warn!(error = %e, "stored preferences unreadable, using defaults");
                Preferences::default()
            }
        }
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
