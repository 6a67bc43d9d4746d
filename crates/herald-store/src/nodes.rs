//! The node set of a replicated cluster: which ingest nodes hold the
//! partitions' replicas (name and address), with an epoch that grows with
//! every change.
//!
//! It is a target, not the replicas themselves: each partition's Raft
//! group moves its members towards it (herald-raft). Losing it (a Redis
//! failover before a replica had the write) loses nothing stored: the
//! groups keep their members, and a change is made again.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::{Result, Store};

/// Hash: node name → `host:port`.
const NODES: &str = "h:{cluster}:nodes";
/// The epoch (1 for the set the cluster was made with).
const EPOCH: &str = "h:{cluster}:epoch";

/// The node set and its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSet {
    pub epoch: u64,
    /// (name, address), by name.
    pub nodes: Vec<(String, String)>,
}

/// What a change to the node set did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChange {
    /// Made; the new epoch.
    Changed(u64),
    /// Already so (the same name with the same address; or removed).
    Unchanged(u64),
    /// The name is taken by a node at this other address.
    NameTaken(String),
    /// No node of that name.
    Missing,
    /// Removing it would leave fewer nodes than this (the replication
    /// factor).
    TooFew(usize),
    /// The cluster has no node set yet (no replicated node started).
    NoSet,
}

// KEYS: nodes, epoch. ARGV: name1, addr1, name2, addr2, ...
// Makes the set from ARGV when there is none; returns epoch, then the
// set as name, addr pairs.
const INIT: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then
  for i = 1, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  redis.call('SET', KEYS[2], 1)
end
local out = {redis.call('GET', KEYS[2])}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do out[#out + 1] = all[i] end
return out
"#;

// KEYS: nodes, epoch. ARGV: name, addr. Answers "changed E", "same E",
// "taken ADDR" or "none".
const ADD: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return 'none' end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur == ARGV[2] then return 'same ' .. redis.call('GET', KEYS[2]) end
if cur then return 'taken ' .. cur end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 'changed ' .. redis.call('INCR', KEYS[2])
"#;

// KEYS: nodes, epoch. ARGV: name, least nodes left. Answers "changed E",
// "missing", "too_few N" or "none".
const REMOVE: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return 'none' end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 'missing' end
local n = redis.call('HLEN', KEYS[1])
if n - 1 < tonumber(ARGV[2]) then return 'too_few ' .. n end
redis.call('HDEL', KEYS[1], ARGV[1])
return 'changed ' .. redis.call('INCR', KEYS[2])
"#;

fn parse_change(s: &str) -> NodeChange {
    let (word, rest) = s.split_once(' ').unwrap_or((s, ""));
    let num = || rest.parse::<u64>().unwrap_or(0);
    match word {
        "changed" => NodeChange::Changed(num()),
        "same" => NodeChange::Unchanged(num()),
        "taken" => NodeChange::NameTaken(rest.to_string()),
        "missing" => NodeChange::Missing,
        "too_few" => NodeChange::TooFew(num() as usize),
        _ => NodeChange::NoSet,
    }
}

impl Store {
    /// The node set, made from `initial` (name, address) if the cluster
    /// has none yet.
    pub async fn node_set_or_init(&self, initial: &[(String, String)]) -> Result<NodeSet> {
        static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
        let script = SCRIPT.get_or_init(|| redis::Script::new(INIT));
        let mut inv = script.prepare_invoke();
        inv.key(NODES).key(EPOCH);
        for (n, a) in initial {
            inv.arg(n).arg(a);
        }
        let flat: Vec<String> = self.invoke(&inv).await?;
        let epoch = flat.first().and_then(|e| e.parse().ok()).unwrap_or(1);
        let nodes: BTreeMap<String, String> = flat[1.min(flat.len())..]
            .chunks(2)
            .filter_map(|c| Some((c.first()?.clone(), c.get(1)?.clone())))
            .collect();
        Ok(NodeSet {
            epoch,
            nodes: nodes.into_iter().collect(),
        })
    }

    /// The node set, if the cluster has one.
    pub async fn node_set(&self) -> Result<Option<NodeSet>> {
        let mut b = crate::Batch::new();
        b.cmd("GET").arg(EPOCH);
        b.cmd("HGETALL").arg(NODES);
        let (epoch, nodes): (Option<u64>, BTreeMap<String, String>) = self.run(&b).await?;
        Ok(epoch.map(|epoch| NodeSet {
            epoch,
            nodes: nodes.into_iter().collect(),
        }))
    }

    /// Adds a node to the node set.
    pub async fn add_node(&self, name: &str, addr: &str) -> Result<NodeChange> {
        static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
        let script = SCRIPT.get_or_init(|| redis::Script::new(ADD));
        let mut inv = script.prepare_invoke();
        inv.key(NODES).key(EPOCH).arg(name).arg(addr);
        let s: String = self.invoke(&inv).await?;
        Ok(parse_change(&s))
    }

    /// Removes a node from the node set, unless fewer than `least` would
    /// be left.
    pub async fn remove_node(&self, name: &str, least: usize) -> Result<NodeChange> {
        static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
        let script = SCRIPT.get_or_init(|| redis::Script::new(REMOVE));
        let mut inv = script.prepare_invoke();
        inv.key(NODES).key(EPOCH).arg(name).arg(least);
        let s: String = self.invoke(&inv).await?;
        Ok(parse_change(&s))
    }
}
