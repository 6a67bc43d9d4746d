//! Event kinds and every rule of a kind, in one place: the six built-in
//! kinds and those a product declares in its configuration
//! (`[kinds.<name>]`), read the same way.
//!
//! A kind is an index into this process's registry ([`EventKind`] is
//! `Copy` and compares as an integer); its name is what every format
//! carries (JSON, MessagePack, preferences, digests), except Redis'
//! compact entries, where the six built-in kinds keep their one-byte
//! codes 0-5 and a declared kind is stored by name ([`EventKind::code`]):
//! entries keep their meaning when kinds are added, reordered or removed
//! (a removed kind's entries still read back, under its name, notifying
//! nobody new).

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sync::{Locked, Shared};

/// Kinds a process can know at once (declared and read back).
pub const MAX_KINDS: usize = 256;

/// Bytes of a kind's name.
pub const MAX_KIND_NAME: usize = 32;

/// One kind of event. Built-in kinds have constants (`EventKind::Like`);
/// declared ones come from [`EventKind::parse`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKind(u8);

/// Who is told about an event of a kind (several allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    /// The event's `recipient`.
    pub recipient: bool,
    /// Each of the event's `mentions`.
    pub mentions: bool,
    /// The actor's followers (the celebrity path above the threshold).
    pub followers: bool,
    /// Every subscriber of the event's `object`.
    pub subscribers: bool,
}

impl Notify {
    pub fn anyone(self) -> bool {
        self.recipient || self.mentions || self.followers || self.subscribers
    }
}

/// How bursts of a kind fold into aggregates ("Ana and 41 others ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folding {
    /// Bursts about the same object fold (an event without an object
    /// does not).
    PerObject,
    /// Bursts about the same object fold; events without an object fold
    /// per recipient.
    Always,
    Never,
}

/// Which user's partition an event is appended to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionBy {
    /// The recipient (else the first mention, else the actor): one
    /// worker sees everything for a recipient.
    Recipient,
    /// The actor: an actor's events stay in order with their follows.
    Actor,
}

/// What an event of a kind does to the follow graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphChange {
    /// Adds the edge actor -> recipient.
    Follow,
    /// Removes it.
    Unfollow,
}

/// The mode a kind is delivered in for a user who chose none for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultMode {
    Realtime,
    Digest,
    Off,
}

/// Every rule of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindRules {
    pub notify: Notify,
    pub folding: Folding,
    /// None: the user's own default.
    pub default_mode: Option<DefaultMode>,
    pub partition_by: PartitionBy,
    /// The actor is subscribed to the event's object (commenting follows
    /// the thread).
    pub subscribe_actor: bool,
    pub graph: Option<GraphChange>,
}

impl KindRules {
    /// A kind that notifies nobody and does nothing (a removed kind read
    /// back from storage).
    pub const INERT: KindRules = KindRules {
        notify: Notify {
            recipient: false,
            mentions: false,
            followers: false,
            subscribers: false,
        },
        folding: Folding::Never,
        default_mode: None,
        partition_by: PartitionBy::Recipient,
        subscribe_actor: false,
        graph: None,
    };
}

/// Why a declaration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KindError {
    #[error("kind name {0:?} must be 1 to {MAX_KIND_NAME} bytes of a-z, 0-9 and _")]
    Name(String),
    #[error("kind {0}: {1}")]
    Rule(String, String),
    #[error("more than {MAX_KINDS} kinds")]
    TooMany,
    #[error(
        "kind {0} is already in use with other rules (declare kinds before anything reads them)"
    )]
    Conflict(String),
}

struct Def {
    name: &'static str,
    rules: KindRules,
    /// Declared (or built in): events of it are accepted. A kind only
    /// recalled from storage is not.
    declared: bool,
}

struct Registry {
    /// Index -> definition; filled in order, never changed once set.
    defs: Vec<OnceLock<&'static Def>>,
    by_name: RwLock<HashMap<&'static str, u8>>,
    /// Serialises additions.
    adding: std::sync::Mutex<()>,
}

const BUILT_IN: [(&str, KindRules); 6] = {
    const fn r(
        recipient: bool,
        mentions: bool,
        followers: bool,
        folding: Folding,
        partition_by: PartitionBy,
        graph: Option<GraphChange>,
    ) -> KindRules {
        KindRules {
            notify: Notify {
                recipient,
                mentions,
                followers,
                subscribers: false,
            },
            folding,
            default_mode: None,
            partition_by,
            subscribe_actor: false,
            graph,
        }
    }
    use Folding::*;
    use PartitionBy::*;
    [
        ("like", r(true, false, false, PerObject, Recipient, None)),
        ("comment", r(true, true, false, PerObject, Recipient, None)),
        ("mention", r(false, true, false, PerObject, Recipient, None)),
        (
            "follow",
            r(
                true,
                false,
                false,
                Always,
                Recipient,
                Some(GraphChange::Follow),
            ),
        ),
        (
            "unfollow",
            r(
                false,
                false,
                false,
                Never,
                Recipient,
                Some(GraphChange::Unfollow),
            ),
        ),
        ("post", r(false, false, true, Never, Actor, None)),
    ]
};

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        defs: (0..MAX_KINDS).map(|_| OnceLock::new()).collect(),
        by_name: RwLock::new(HashMap::new()),
        adding: std::sync::Mutex::new(()),
    })
}

/// The definition at `i`, the built-in ones set with their own rules on
/// first use when nothing declared them before.
fn def(i: u8) -> Option<&'static Def> {
    let r = registry();
    if let Some(d) = r.defs[usize::from(i)].get() {
        return Some(d);
    }
    if usize::from(i) < BUILT_IN.len() {
        built_ins(&[]).ok()?;
        return r.defs[usize::from(i)].get().copied();
    }
    None
}

/// Sets the built-in kinds, with `overrides`' rules where given.
fn built_ins(overrides: &[(String, KindRules)]) -> Result<(), KindError> {
    let r = registry();
    for (i, (name, rules)) in BUILT_IN.iter().enumerate() {
        let rules = overrides
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| rules.clone(), |(_, r)| r.clone());
        let d = *r.defs[i].get_or_init(|| leak(name, rules.clone(), true));
        if d.rules != rules {
            return Err(KindError::Conflict(name.to_string()));
        }
        r.by_name.writing().insert(d.name, i as u8);
    }
    Ok(())
}

fn leak(name: &str, rules: KindRules, declared: bool) -> &'static Def {
    Box::leak(Box::new(Def {
        name: Box::leak(name.to_string().into_boxed_str()),
        rules,
        declared,
    }))
}

/// Whether `name` can name a kind.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_KIND_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Declares kinds (the configuration's `[kinds.*]`): the built-in ones
/// take the rules given for them (their own otherwise), the others are
/// added in order. Declaring the same kinds again with the same rules is a
/// no-op; a kind already in use with other rules is refused.
pub fn declare(kinds: &[(String, KindRules)]) -> Result<(), KindError> {
    declare_with_aliases(
        &kinds
            .iter()
            .map(|(n, r)| (n.clone(), r.clone(), Vec::new()))
            .collect::<Vec<_>>(),
    )
}

/// [`declare`], each kind with its former names: notifications stored
/// under a former name read back as this kind (a renamed kind).
pub fn declare_with_aliases(kinds: &[(String, KindRules, Vec<String>)]) -> Result<(), KindError> {
    let mut names = std::collections::HashSet::new();
    for (name, rules, aliases) in kinds {
        check(name, rules)?;
        for a in std::iter::once(name).chain(aliases) {
            if !valid_name(a) {
                return Err(KindError::Name(a.clone()));
            }
            if !names.insert(a.as_str()) {
                return Err(KindError::Rule(
                    name.clone(),
                    format!("{a:?} names two kinds"),
                ));
            }
        }
    }
    let r = registry();
    let _one = r.adding.locked();
    let plain: Vec<(String, KindRules)> = kinds
        .iter()
        .map(|(n, r, _)| (n.clone(), r.clone()))
        .collect();
    built_ins(&plain)?;
    for (name, rules, aliases) in kinds {
        let k = if BUILT_IN.iter().any(|(b, _)| b == name) {
            EventKind::known_by_name(name).ok_or(KindError::TooMany)?
        } else {
            add(name, rules.clone(), true)?
        };
        for a in aliases {
            if BUILT_IN.iter().any(|(b, _)| b == a) {
                return Err(KindError::Rule(
                    name.clone(),
                    format!("{a:?} is a built-in kind, not a former name"),
                ));
            }
            let mut by_name = r.by_name.writing();
            match by_name.get(a.as_str()) {
                Some(&i) if i != k.0 => return Err(KindError::Conflict(a.clone())),
                _ => {
                    let a: &'static str = Box::leak(a.clone().into_boxed_str());
                    by_name.insert(a, k.0);
                }
            }
        }
    }
    Ok(())
}

/// Adds `name` (the caller holds `adding`), or checks it is there with
/// these rules.
fn add(name: &str, rules: KindRules, declared: bool) -> Result<EventKind, KindError> {
    let r = registry();
    let known = r.by_name.reading().get(name).copied();
    if let Some(i) = known {
        let d = def(i).ok_or(KindError::TooMany)?;
        if declared && (d.rules != rules || !d.declared) {
            return Err(KindError::Conflict(name.to_string()));
        }
        return Ok(EventKind(i));
    }
    let i = r
        .defs
        .iter()
        .position(|s| s.get().is_none())
        .ok_or(KindError::TooMany)?;
    let d = *r.defs[i].get_or_init(|| leak(name, rules, declared));
    r.by_name.writing().insert(d.name, i as u8);
    Ok(EventKind(i as u8))
}

/// Whether `name` with `rules` can be declared: a valid name, and rules
/// that keep Herald's guarantees.
pub fn check(name: &str, r: &KindRules) -> Result<(), KindError> {
    if !valid_name(name) {
        return Err(KindError::Name(name.to_string()));
    }
    let bad = |why: &str| Err(KindError::Rule(name.to_string(), why.to_string()));
    if r.notify.followers && r.partition_by != PartitionBy::Actor {
        return bad("a kind that notifies followers must have partition_by = \"actor\" (its events stay in order with the actor's follows)");
    }
    if r.graph.is_some() && (r.notify.followers || r.notify.subscribers) {
        return bad("a follow or unfollow kind notifies its recipient at most");
    }
    Ok(())
}

impl EventKind {
    #[allow(non_upper_case_globals)]
    pub const Like: EventKind = EventKind(0);
    #[allow(non_upper_case_globals)]
    pub const Comment: EventKind = EventKind(1);
    #[allow(non_upper_case_globals)]
    pub const Mention: EventKind = EventKind(2);
    #[allow(non_upper_case_globals)]
    pub const Follow: EventKind = EventKind(3);
    #[allow(non_upper_case_globals)]
    pub const Unfollow: EventKind = EventKind(4);
    #[allow(non_upper_case_globals)]
    pub const Post: EventKind = EventKind(5);

    /// The built-in kinds.
    pub const ALL: [EventKind; 6] = [
        EventKind::Like,
        EventKind::Comment,
        EventKind::Mention,
        EventKind::Follow,
        EventKind::Unfollow,
        EventKind::Post,
    ];

    /// Every declared kind, built-in first.
    pub fn declared() -> Vec<EventKind> {
        (0..MAX_KINDS)
            .map_while(|i| def(i as u8).map(|d| (i, d)))
            .filter(|(_, d)| d.declared)
            .map(|(i, _)| EventKind(i as u8))
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        def(self.0).map_or("unknown", |d| d.name)
    }

    /// A declared (or built-in) kind by name; None for any other name
    /// (a kind only recalled from storage included).
    pub fn parse(s: &str) -> Option<EventKind> {
        def(0)?;
        let i = registry().by_name.reading().get(s).copied()?;
        // Its own name only: a former name is read back, not accepted.
        def(i)
            .filter(|d| d.declared && d.name == s)
            .map(|_| EventKind(i))
    }

    /// Any kind this process knows by name, recalled ones included.
    fn known_by_name(s: &str) -> Option<EventKind> {
        def(0)?;
        registry().by_name.reading().get(s).copied().map(EventKind)
    }

    /// A kind read back from storage by name: a kind no longer declared is
    /// known again under its name, with no rules (it notifies nobody).
    pub fn recall(s: &str) -> Option<EventKind> {
        if let Some(k) = EventKind::known_by_name(s) {
            return Some(k);
        }
        if !valid_name(s) {
            return None;
        }
        let _one = registry().adding.locked();
        add(s, KindRules::INERT, false).ok()
    }

    pub fn rules(self) -> &'static KindRules {
        def(self.0).map_or(&KindRules::INERT, |d| &d.rules)
    }

    /// Whether this node declares this kind (or it is built in); false
    /// for a kind only recalled from storage or a record.
    pub fn is_declared(self) -> bool {
        def(self.0).is_some_and(|d| d.declared)
    }

    /// Whether this kind is one of the six built in.
    pub fn built_in(self) -> bool {
        usize::from(self.0) < BUILT_IN.len()
    }

    /// The storage code of a built-in kind (0-5); None for a declared one
    /// (stored by name).
    pub fn code(self) -> Option<u8> {
        self.built_in().then_some(self.0)
    }

    /// The built-in kind of storage code `c`.
    pub fn from_code(c: u8) -> Option<EventKind> {
        (usize::from(c) < BUILT_IN.len()).then_some(EventKind(c))
    }

    /// Whether this kind needs a `recipient`.
    pub fn needs_recipient(self) -> bool {
        let r = self.rules();
        r.notify.recipient || r.graph.is_some()
    }

    /// Whether this kind needs a non-empty `mentions`: it notifies the
    /// mentioned and nobody else directly.
    pub fn needs_mentions(self) -> bool {
        let n = self.rules().notify;
        n.mentions && !n.recipient && !n.followers && !n.subscribers
    }

    /// Whether this kind needs an `object`: its subscribers are told, or
    /// its actor subscribes to it.
    pub fn needs_object(self) -> bool {
        let r = self.rules();
        r.notify.subscribers || r.subscribe_actor
    }

    /// What the event does to the follow graph: `Some(true)` adds the edge
    /// actor -> recipient, `Some(false)` removes it.
    pub fn graph_change(self) -> Option<bool> {
        self.rules().graph.map(|g| g == GraphChange::Follow)
    }

    /// Whether anyone is ever notified of it (an unfollow only changes the
    /// graph).
    pub fn notifies(self) -> bool {
        self.rules().notify.anyone()
    }

    /// Whether the actor's followers are told.
    pub fn to_followers(self) -> bool {
        self.rules().notify.followers
    }

    /// How bursts of it fold into aggregates.
    pub fn folding(self) -> Folding {
        self.rules().folding
    }
}

impl std::fmt::Debug for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Read back by name (a log record, a relayed push, a digest): a kind
/// no longer declared is recalled under its name.
impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventKind::recall(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event kind {s:?}")))
    }
}

#[cfg(test)]
mod tests;
