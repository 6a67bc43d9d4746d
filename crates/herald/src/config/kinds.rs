//! `[kinds.<name>]`: the kinds of event a node accepts and who hears of
//! each. The six built-in kinds are declared in `config/default.toml` the
//! same way; a configuration that leaves one out keeps its built-in rules.
//! The rules themselves live in `herald_types::kind`, the one place every
//! stage reads them from.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use herald_types::kind::{DefaultMode, Folding, GraphChange, KindRules, Notify, PartitionBy};
use serde::{Deserialize, Serialize};

/// One declared kind, as written in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KindConfig {
    /// Who is told: any of `recipient`, `mentions`, `followers`,
    /// `subscribers` (of the event's object; none: nobody, as for
    /// unfollow).
    #[serde(default)]
    pub notify: Vec<String>,
    /// Whether bursts fold into aggregates: `true` (about the same object;
    /// events without one fold per recipient), `"object"` (only events
    /// about an object fold) or `false`.
    #[serde(default)]
    pub fold: Fold,
    /// `realtime`, `digest` or `off` for users who chose no mode for this
    /// kind and kept the default `realtime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<String>,
    /// `recipient` or `actor`.
    #[serde(default = "recipient")]
    pub partition_by: String,
    /// The actor is subscribed to the event's object.
    #[serde(default)]
    pub subscribe_actor: bool,
    /// `follow` or `unfollow`: the event changes the follow graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<String>,
    /// Former names of this kind: notifications stored under them read
    /// back as this kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

fn recipient() -> String {
    "recipient".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Fold {
    Bool(bool),
    Mode(String),
}

impl Default for Fold {
    fn default() -> Fold {
        Fold::Bool(false)
    }
}

/// Every declared kind by name.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Kinds(pub BTreeMap<String, KindConfig>);

impl Default for Kinds {
    /// The six built-in kinds with their rules.
    fn default() -> Kinds {
        let k = |notify: &[&str], fold: Fold, partition_by: &str, graph: Option<&str>| KindConfig {
            notify: notify.iter().map(|s| s.to_string()).collect(),
            fold,
            default_mode: None,
            partition_by: partition_by.into(),
            subscribe_actor: false,
            graph: graph.map(String::from),
            aliases: Vec::new(),
        };
        let object = || Fold::Mode("object".into());
        Kinds(BTreeMap::from([
            (
                "like".into(),
                k(&["recipient"], object(), "recipient", None),
            ),
            (
                "comment".into(),
                k(&["recipient", "mentions"], object(), "recipient", None),
            ),
            (
                "mention".into(),
                k(&["mentions"], object(), "recipient", None),
            ),
            (
                "follow".into(),
                k(
                    &["recipient"],
                    Fold::Bool(true),
                    "recipient",
                    Some("follow"),
                ),
            ),
            (
                "unfollow".into(),
                k(&[], Fold::Bool(false), "recipient", Some("unfollow")),
            ),
            (
                "post".into(),
                k(&["followers"], Fold::Bool(false), "actor", None),
            ),
        ]))
    }
}

impl KindConfig {
    /// The rules this declaration states, or why it cannot be used.
    pub fn rules(&self, name: &str) -> anyhow::Result<KindRules> {
        let mut notify = Notify::default();
        for n in &self.notify {
            match n.as_str() {
                "recipient" => notify.recipient = true,
                "mentions" => notify.mentions = true,
                "followers" => notify.followers = true,
                "subscribers" => notify.subscribers = true,
                other => bail!(
                    "kinds.{name}.notify: {other:?} is not recipient, mentions, followers or subscribers"
                ),
            }
        }
        let folding = match &self.fold {
            Fold::Bool(true) => Folding::Always,
            Fold::Bool(false) => Folding::Never,
            Fold::Mode(m) if m == "object" => Folding::PerObject,
            Fold::Mode(m) => bail!("kinds.{name}.fold: {m:?} is not true, false or \"object\""),
        };
        let default_mode = match self.default_mode.as_deref() {
            None => None,
            Some("realtime") => Some(DefaultMode::Realtime),
            Some("digest") => Some(DefaultMode::Digest),
            Some("off") => Some(DefaultMode::Off),
            Some(m) => bail!("kinds.{name}.default_mode: {m:?} is not realtime, digest or off"),
        };
        let partition_by = match self.partition_by.as_str() {
            "recipient" => PartitionBy::Recipient,
            "actor" => PartitionBy::Actor,
            p => bail!("kinds.{name}.partition_by: {p:?} is not recipient or actor"),
        };
        let graph = match self.graph.as_deref() {
            None => None,
            Some("follow") => Some(GraphChange::Follow),
            Some("unfollow") => Some(GraphChange::Unfollow),
            Some(g) => bail!("kinds.{name}.graph: {g:?} is not follow or unfollow"),
        };
        Ok(KindRules {
            notify,
            folding,
            default_mode,
            partition_by,
            subscribe_actor: self.subscribe_actor,
            graph,
        })
    }
}

impl Kinds {
    /// Every declaration as rules, checked, with its former names.
    pub fn rules(&self) -> anyhow::Result<Vec<(String, KindRules, Vec<String>)>> {
        if self.0.len() > herald_types::kind::MAX_KINDS / 2 {
            bail!(
                "at most {} kinds may be declared",
                herald_types::kind::MAX_KINDS / 2
            );
        }
        let mut out = Vec::new();
        for (name, k) in &self.0 {
            let rules = k.rules(name)?;
            herald_types::kind::check(name, &rules).with_context(|| format!("kinds.{name}"))?;
            out.push((name.clone(), rules, k.aliases.clone()));
        }
        Ok(out)
    }

    /// Makes these the kinds this process accepts.
    pub fn declare(&self) -> anyhow::Result<()> {
        herald_types::kind::declare_with_aliases(&self.rules()?).context("declaring kinds")
    }
}
