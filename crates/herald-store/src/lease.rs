//! Partition leases: which ingest node appends and processes each log
//! partition, shared like a consumer group's partitions.
//!
//! Every node calls [`Store::lease_round`] about once a second. One Lua
//! script does the whole round atomically (all keys share the `{lease}`
//! hash tag, so they live on one Redis Cluster slot): an ingest node
//! refreshes its membership, renews the leases it holds, gives back what
//! it holds beyond its fair share while another member holds less, and
//! takes unowned partitions up to its fair share. Because the round is
//! atomic there is no race between two nodes taking one partition; a lease
//! and a membership expire together, so a dead node's partitions are free
//! `ttl` after its last round.

use std::sync::OnceLock;
use std::time::Duration;

use crate::{Result, Store};

const MEMBERS: &str = "h:{lease}:members";

fn lease_key(p: u32) -> String {
    format!("h:{{lease}}:p:{p}")
}

/// What a node does in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRole {
    /// Holds partitions: renews, takes and gives back.
    Member,
    /// Reads who holds what (an edge node, to know where to forward).
    Observer,
    /// Leaves: gives back every lease and its membership (clean shutdown).
    Leave,
}

/// The cluster as one round saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// For each partition, its holder (`node#incarnation`), if any.
    pub holders: Vec<Option<String>>,
    /// Live members and their HTTP addresses.
    pub members: Vec<(String, String)>,
}

// KEYS[1] = members hash (node -> "expiry_ms addr"), KEYS[2..] = leases.
// ARGV: holder, node, addr, ttl_ms, role ("member" | "observer" | "leave").
const ROUND: &str = r#"
local holder, node, addr, ttl, role = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if role == 'member' then
  redis.call('HSET', KEYS[1], node, (now + ttl) .. ' ' .. addr)
elseif role == 'leave' then
  redis.call('HDEL', KEYS[1], node)
end
local members = {}
local count = {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local exp, a = string.match(flat[i + 1], '^(%d+) (.*)$')
  if exp == nil or tonumber(exp) < now then
    redis.call('HDEL', KEYS[1], flat[i])
  else
    table.insert(members, flat[i])
    table.insert(members, a)
    count[flat[i]] = 0
  end
end
local n = #KEYS - 1
local holders = {}
local mine = {}
for i = 2, #KEYS do
  local h = redis.call('GET', KEYS[i])
  if h then
    local owner = string.match(h, '^(.*)#')
    if h == holder then
      if role == 'leave' then
        redis.call('DEL', KEYS[i])
        h = false
      else
        redis.call('PEXPIRE', KEYS[i], ttl)
        table.insert(mine, i)
      end
    end
    if h and owner and count[owner] ~= nil then count[owner] = count[owner] + 1 end
  end
  holders[i - 1] = h or ''
end
if role == 'member' then
  local live = #members / 2
  local fair = math.ceil(n / live)
  local under = false
  for m, c in pairs(count) do
    if m ~= node and c < fair then under = true end
  end
  local have = #mine
  while have > fair and under do
    local i = table.remove(mine)
    redis.call('DEL', KEYS[i])
    holders[i - 1] = ''
    have = have - 1
  end
  for i = 2, #KEYS do
    if have >= fair then break end
    if holders[i - 1] == '' then
      redis.call('SET', KEYS[i], holder, 'PX', ttl)
      holders[i - 1] = holder
      have = have + 1
    end
  end
end
return {holders, members}
"#;

impl Store {
    /// One lease round of this node (see the module docs) over
    /// `partitions` partitions; `addr` is where other nodes reach this
    /// node's HTTP, `holder` names this process (`node#incarnation`).
    pub async fn lease_round(
        &self,
        partitions: u32,
        holder: &str,
        addr: &str,
        ttl: Duration,
        role: LeaseRole,
    ) -> Result<LeaseView> {
        static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
        let script = SCRIPT.get_or_init(|| redis::Script::new(ROUND));
        let mut inv = script.prepare_invoke();
        inv.key(MEMBERS);
        for p in 0..partitions {
            inv.key(lease_key(p));
        }
        let role = match role {
            LeaseRole::Member => "member",
            LeaseRole::Observer => "observer",
            LeaseRole::Leave => "leave",
        };
        inv.arg(holder)
            .arg(&self.cfg.node_id)
            .arg(addr)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(role);
        let (holders, flat): (Vec<String>, Vec<String>) = self.invoke(&inv).await?;
        let members = flat
            .chunks_exact(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        Ok(LeaseView {
            holders: holders
                .into_iter()
                .map(|h| (!h.is_empty()).then_some(h))
                .collect(),
            members,
        })
    }
}
