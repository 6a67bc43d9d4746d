//! The follower graph.

use herald_types::UserId;

use crate::{ukey, Result, Store, StoreError};

/// One step of graph work, run in order inside one pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphOp {
    Follow {
        follower: UserId,
        followee: UserId,
    },
    Unfollow {
        follower: UserId,
        followee: UserId,
    },
    /// Read the followers of a user (answered in order).
    Followers(UserId),
    /// Count the followers of a user (answered in order).
    Count(UserId),
}

/// What a reading op answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphAnswer {
    Followers(Vec<UserId>),
    Count(u64),
}

/// Pairs per pipeline in bulk import.
const IMPORT_CHUNK: usize = 5000;

fn parse_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: "graph reply".into(),
        reason: e.to_string(),
    }
}

impl Store {
    /// Runs graph ops in order in one pipeline; returns the answers of the
    /// reading ops (`Followers`, `Count`), in the order asked.
    pub async fn graph(&self, ops: &[GraphOp]) -> Result<Vec<GraphAnswer>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        for op in ops {
            match *op {
                GraphOp::Follow { follower, followee } => {
                    p.cmd("SADD")
                        .arg(ukey(followee, "followers"))
                        .arg(follower)
                        .ignore();
                    p.cmd("SADD")
                        .arg(ukey(follower, "following"))
                        .arg(followee)
                        .ignore();
                }
                GraphOp::Unfollow { follower, followee } => {
                    p.cmd("SREM")
                        .arg(ukey(followee, "followers"))
                        .arg(follower)
                        .ignore();
                    p.cmd("SREM")
                        .arg(ukey(follower, "following"))
                        .arg(followee)
                        .ignore();
                }
                GraphOp::Followers(u) => {
                    p.cmd("SMEMBERS").arg(ukey(u, "followers"));
                }
                GraphOp::Count(u) => {
                    p.cmd("SCARD").arg(ukey(u, "followers"));
                }
            }
        }
        let reads: Vec<&GraphOp> = ops
            .iter()
            .filter(|o| matches!(o, GraphOp::Followers(_) | GraphOp::Count(_)))
            .collect();
        if reads.is_empty() {
            self.run::<()>(&p).await?;
            return Ok(Vec::new());
        }
        let values: Vec<redis::Value> = self.run(&p).await?;
        reads
            .into_iter()
            .zip(values)
            .map(|(op, v)| {
                Ok(match op {
                    GraphOp::Count(_) => {
                        GraphAnswer::Count(redis::from_redis_value(v).map_err(parse_err)?)
                    }
                    _ => GraphAnswer::Followers(redis::from_redis_value(v).map_err(parse_err)?),
                })
            })
            .collect()
    }

    /// Bulk import of `(follower, followee)` pairs, pipelined in chunks.
    pub async fn import_follows(&self, pairs: &[(UserId, UserId)]) -> Result<()> {
        for chunk in pairs.chunks(IMPORT_CHUNK) {
            let ops: Vec<GraphOp> = chunk
                .iter()
                .map(|&(follower, followee)| GraphOp::Follow { follower, followee })
                .collect();
            self.graph(&ops).await?;
        }
        Ok(())
    }

    pub async fn follower_count(&self, user: UserId) -> Result<u64> {
        let mut p = crate::Batch::new();
        p.cmd("SCARD").arg(ukey(user, "followers"));
        let (n,): (u64,) = self.run(&p).await?;
        Ok(n)
    }
}
