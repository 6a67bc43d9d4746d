//! A pipeline of single-key commands that runs the same on one Redis and
//! on Redis Cluster.
//!
//! Every command Herald sends names its key first. On one Redis a batch is
//! one pipeline. On Redis Cluster a pipeline may only touch one hash slot,
//! so a batch is split by slot (each user's keys share a slot through
//! their `{u:ID}` hash tag), the parts run concurrently, and the answers
//! are put back in the order of the commands. An atomic batch (MULTI/EXEC)
//! must stay in one slot.

use std::collections::HashMap;

use redis::{Cmd, FromRedisValue, RedisResult, Value};

/// Arguments and bytes a command's buffers start with.
const CMD_ARGS: usize = 4;
const CMD_BYTES: usize = 192;

/// Hash slots of Redis Cluster.
const SLOTS: u16 = 16384;

/// Built like a `redis::Pipeline` (which it wraps, so one Redis pays
/// nothing extra); it also remembers which answers are ignored, which the
/// cluster path needs to put the parts back together.
pub struct Batch {
    pipe: redis::Pipeline,
    ignored: Vec<bool>,
    atomic: bool,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            pipe: redis::pipe(),
            ignored: Vec::new(),
            atomic: false,
        }
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Starts a command. Its buffers are sized for the usual command (a
    /// few arguments, one compact entry) so building it does not grow them
    /// argument by argument.
    pub fn cmd(&mut self, name: &str) -> &mut Batch {
        let mut c = Cmd::with_capacity(CMD_ARGS, CMD_BYTES);
        c.arg(name);
        self.pipe.add_command(c);
        self.ignored.push(false);
        self
    }

    pub fn add_command(&mut self, c: Cmd) -> &mut Batch {
        self.pipe.add_command(c);
        self.ignored.push(false);
        self
    }

    pub fn arg<T: redis::ToRedisArgs>(&mut self, a: T) -> &mut Batch {
        self.pipe.arg(a);
        self
    }

    /// The last command's answer is not part of the result.
    pub fn ignore(&mut self) -> &mut Batch {
        self.pipe.ignore();
        if let Some(i) = self.ignored.last_mut() {
            *i = true;
        }
        self
    }

    /// Runs as one MULTI/EXEC transaction (all keys in one slot).
    pub fn atomic(&mut self) -> &mut Batch {
        self.pipe.atomic();
        self.atomic = true;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ignored.is_empty()
    }

    /// One pipeline, as on a single Redis.
    pub(crate) fn whole(&self) -> &redis::Pipeline {
        &self.pipe
    }

    /// Runs on a cluster connection: split by slot, run concurrently,
    /// answers reassembled in command order.
    pub(crate) async fn run_cluster<T: FromRedisValue>(
        &self,
        conn: &redis::cluster_async::ClusterConnection,
    ) -> RedisResult<T> {
        let cmds: Vec<&Cmd> = self.pipe.cmd_iter().collect();
        let mut groups: HashMap<Option<u16>, Vec<usize>> = HashMap::new();
        for (i, c) in cmds.iter().enumerate() {
            groups.entry(slot_of(c)).or_default().push(i);
        }
        if self.atomic || groups.len() <= 1 {
            let mut c = conn.clone();
            return self.pipe.query_async(&mut c).await;
        }
        let parts = groups.into_values().map(|idx| {
            let mut p = redis::pipe();
            for &i in &idx {
                p.add_command(cmds[i].clone());
            }
            let mut c = conn.clone();
            async move {
                let vals: Vec<Value> = p.query_async(&mut c).await?;
                Ok::<_, redis::RedisError>((idx, vals))
            }
        });
        let answers = futures_util::future::try_join_all(parts).await?;
        let mut slots: Vec<Option<Value>> = vec![None; cmds.len()];
        for (idx, vals) in answers {
            for (i, v) in idx.into_iter().zip(vals) {
                slots[i] = Some(v);
            }
        }
        let kept: Vec<Value> = slots
            .into_iter()
            .zip(&self.ignored)
            .filter(|(_, ignored)| !**ignored)
            .map(|(v, _)| v.unwrap_or(Value::Nil))
            .collect();
        Ok(T::from_redis_value(Value::Array(kept))?)
    }
}

/// The hash slot of a command's key (its first argument after the name,
/// or a script call's first key: `EVALSHA sha numkeys key ...`); None for
/// a command without a key.
fn slot_of(c: &Cmd) -> Option<u16> {
    let mut args = c.args_iter();
    let at = match args.next()? {
        redis::Arg::Simple(b"EVALSHA") => 2,
        _ => 0,
    };
    match args.nth(at)? {
        redis::Arg::Simple(key) => Some(key_slot(key)),
        _ => None,
    }
}

/// Redis Cluster's slot of `key`: CRC16 (XMODEM) of its hash tag (the part
/// between the first `{` and the next `}`, when not empty) or of the key.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hash_tags() {
        // Values from Redis' CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"h:{u:7}:ib"), key_slot(b"h:{u:7}:fd"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(
            key_slot(b"{}bar"),
            crc16::State::<crc16::XMODEM>::calculate(b"{}bar") % SLOTS
        );
    }
}
