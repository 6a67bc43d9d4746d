//! Preferences: how Herald may interrupt each user.
//!
//! Resolution, for one notification to one user (documented in docs/API.md):
//! 1. a mute of the actor or of the object (not expired) drops it;
//! 2. otherwise the mode for its kind (`kinds`), else the user's `default`
//!    when it is not `realtime`, else the kind's declared `default_mode`:
//!    `realtime` delivers it, `off` drops it, `digest` collects it for the
//!    user's digest window (sent in-app, or only by webhook with
//!    `digest.channel`);
//! 3. a realtime one inside the user's quiet hours is held until they end;
//! 4. parked for a user who was not reached, it also goes to the webhook
//!    when `webhook.enabled` and its kind allow it.
//!
//! Fan-out and the edge (for a celebrity's post, per follower) read
//! preferences through [`PrefsCache`]: entries
//! live at most `ttl` (1 s by default) and a change made through this node
//! invalidates its entry at once, so a change is honoured within a second
//! and the hot path does not read Redis per notification.

mod cache;
pub mod model;
mod windows;

use herald_types::{EventKind, UserId};

pub use cache::PrefsCache;
pub use model::{
    parse_document, DigestChannel, Document, Invalid, Mode, Preferences, WebhookPrefs,
};

/// A user's preferences with their active mutes, as the hot path reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    pub prefs: Preferences,
    /// (actor, until_ms; 0 = forever)
    pub muted_actors: Vec<(UserId, u64)>,
    /// (object, until_ms; 0 = forever)
    pub muted_objects: Vec<(String, u64)>,
    /// When > 0, every digest window lasts this long (tests and demos);
    /// set by the [`PrefsCache`] that loaded it.
    pub digest_override_ms: u64,
}

/// One mute, and how it is keyed in the store (`a:<actor>`, `o:<object>`):
/// the one place that knows the key layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mute {
    Actor(UserId),
    Object(String),
}

impl Mute {
    pub fn key(&self) -> String {
        match self {
            Mute::Actor(a) => format!("a:{a}"),
            Mute::Object(o) => format!("o:{o}"),
        }
    }

    pub fn parse(key: &str) -> Option<Mute> {
        if let Some(a) = key.strip_prefix("a:") {
            a.parse().ok().map(Mute::Actor)
        } else {
            key.strip_prefix("o:").map(|o| Mute::Object(o.to_string()))
        }
    }
}

/// What happens to one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Deliver,
    /// Collected for the digest.
    Digest,
    Drop(&'static str),
}

/// Where one notification goes now, all preferences applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Deliver it now.
    Now,
    /// Put it in a bucket released at the given time (ms): the digest, or
    /// the end of quiet hours.
    Wait(herald_store::Bucket, u64),
    /// Drop it, for this reason (counted in
    /// `herald_notifications_dropped_total{reason}`).
    Drop(&'static str),
}

fn active(until: u64, now_ms: u64) -> bool {
    until == 0 || until > now_ms
}

impl Resolved {
    pub fn from_stored(s: &herald_store::StoredPrefs) -> Resolved {
        let mut r = Resolved {
            prefs: Preferences::from_stored(s.doc.as_deref()),
            ..Resolved::default()
        };
        for (k, until) in &s.mutes {
            match Mute::parse(k) {
                Some(Mute::Actor(a)) => r.muted_actors.push((a, *until)),
                Some(Mute::Object(o)) => r.muted_objects.push((o, *until)),
                None => {}
            }
        }
        r
    }

    /// Applies the resolution order to a notification.
    pub fn decide(
        &self,
        kind: EventKind,
        actor: UserId,
        object: Option<&str>,
        now_ms: u64,
    ) -> Decision {
        if self
            .muted_actors
            .iter()
            .any(|&(a, until)| a == actor && active(until, now_ms))
        {
            return Decision::Drop("muted_actor");
        }
        if let Some(o) = object {
            if self
                .muted_objects
                .iter()
                .any(|(m, until)| m == o && active(*until, now_ms))
            {
                return Decision::Drop("muted_object");
            }
        }
        let mode = self.prefs.kinds.get(kind.as_str()).copied().unwrap_or(
            // The user's own default when they chose one; else the kind's
            // declared default_mode; else realtime.
            match (self.prefs.default, kind.rules().default_mode) {
                (Mode::Realtime, Some(d)) => Mode::from(d),
                (m, _) => m,
            },
        );
        match mode {
            Mode::Realtime => Decision::Deliver,
            Mode::Digest => Decision::Digest,
            Mode::Off => Decision::Drop("off"),
        }
    }

    /// Whether a post on the pull path is listed in this user's feed: what
    /// they would be sent now (not muted, not `off`; a kind in digest mode
    /// reaches the feed as its digest instead). Counts nothing.
    pub fn in_feed(&self, n: &herald_types::Notification, now_ms: u64) -> bool {
        matches!(
            self.decide(n.kind, n.actor, n.object.as_deref(), now_ms),
            Decision::Deliver
        )
    }

    /// Whether [`Resolved::in_feed`] accepts every post: no mutes, every
    /// kind real-time (the user's default, no kind of their own set, no
    /// declared kind with a default mode).
    pub fn in_feed_all(&self) -> bool {
        self.muted_actors.is_empty()
            && self.muted_objects.is_empty()
            && self.prefs.kinds.is_empty()
            && self.prefs.default == Mode::Realtime
            && EventKind::declared()
                .iter()
                .all(|k| k.rules().default_mode.is_none())
    }

    /// The digest window holding `now_ms` (start, end).
    pub fn digest_window(&self, now_ms: u64) -> (u64, u64) {
        self.prefs.digest_window(now_ms, self.digest_override_ms)
    }

    /// Applies [`Resolved::decide`], then quiet hours, and counts drops.
    pub fn route(
        &self,
        kind: EventKind,
        actor: UserId,
        object: Option<&str>,
        now_ms: u64,
    ) -> Route {
        match self.decide(kind, actor, object, now_ms) {
            Decision::Drop(reason) => {
                metrics::counter!("herald_notifications_dropped_total", "reason" => reason)
                    .increment(1);
                Route::Drop(reason)
            }
            Decision::Digest => {
                Route::Wait(herald_store::Bucket::Digest, self.digest_window(now_ms).1)
            }
            Decision::Deliver => match self.prefs.quiet_until(now_ms) {
                Some(t) => Route::Wait(herald_store::Bucket::Held, t),
                None => Route::Now,
            },
        }
    }

    /// The API shape: the document with the active mutes as lists.
    pub fn to_api(&self, now_ms: u64) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.prefs).unwrap_or_default();
        let actors: Vec<UserId> = self
            .muted_actors
            .iter()
            .filter(|(_, u)| active(*u, now_ms))
            .map(|(a, _)| *a)
            .collect();
        let objects: Vec<&str> = self
            .muted_objects
            .iter()
            .filter(|(_, u)| active(*u, now_ms))
            .map(|(o, _)| o.as_str())
            .collect();
        if let Some(m) = v.as_object_mut() {
            m.insert("muted_actors".into(), serde_json::json!(actors));
            m.insert("muted_objects".into(), serde_json::json!(objects));
            m.entry("quiet_hours").or_insert(serde_json::Value::Null);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_order() {
        let mut r = Resolved::default();
        assert_eq!(r.decide(EventKind::Like, 1, None, 0), Decision::Deliver);
        r.prefs.kinds.insert("like".into(), Mode::Off);
        assert_eq!(r.decide(EventKind::Like, 1, None, 0), Decision::Drop("off"));
        assert_eq!(r.decide(EventKind::Comment, 1, None, 0), Decision::Deliver);
        r.prefs.default = Mode::Digest;
        assert_eq!(r.decide(EventKind::Comment, 1, None, 0), Decision::Digest);
        r.muted_actors.push((7, 0));
        r.muted_objects.push(("post:1".into(), 100));
        assert_eq!(
            r.decide(EventKind::Comment, 7, None, 0),
            Decision::Drop("muted_actor")
        );
        assert_eq!(
            r.decide(EventKind::Comment, 8, Some("post:1"), 50),
            Decision::Drop("muted_object")
        );
        // The object mute lapsed at 100.
        assert_eq!(
            r.decide(EventKind::Comment, 8, Some("post:1"), 100),
            Decision::Digest
        );
    }
}
