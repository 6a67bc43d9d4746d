//! Raw preference storage: a user's preference document (JSON) and mutes.
//! The model and its rules live in `herald-prefs`.

use herald_types::UserId;

use crate::{ukey, Result, Store};

/// What is stored for one user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredPrefs {
    /// The preference document (without mutes), if ever set.
    pub doc: Option<String>,
    /// Mutes: ("a:<id>" | "o:<object>", until_ms; 0 = forever).
    pub mutes: Vec<(String, u64)>,
}

impl Store {
    /// Reads the preferences of many users in one pipeline.
    pub async fn prefs_get_many(&self, users: &[UserId]) -> Result<Vec<StoredPrefs>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        for u in users {
            p.cmd("GET").arg(ukey(*u, "prefs"));
            p.cmd("HGETALL").arg(ukey(*u, "mutes"));
        }
        let values: Vec<redis::Value> = self.run(&p).await?;
        let mut out = Vec::with_capacity(users.len());
        let mut it = values.into_iter();
        while let (Some(doc), Some(mutes)) = (it.next(), it.next()) {
            let doc: Option<String> = redis::from_redis_value(doc).unwrap_or(None);
            let mutes: Vec<(String, u64)> = redis::from_redis_value(mutes).unwrap_or_default();
            out.push(StoredPrefs { doc, mutes });
        }
        Ok(out)
    }

    /// Replaces a user's preference document and mutes.
    pub async fn prefs_put(&self, user: UserId, doc: &str, mutes: &[(String, u64)]) -> Result<()> {
        let mut p = crate::Batch::new();
        p.atomic();
        p.cmd("SET").arg(ukey(user, "prefs")).arg(doc).ignore();
        p.cmd("DEL").arg(ukey(user, "mutes")).ignore();
        if !mutes.is_empty() {
            let mut h = redis::cmd("HSET");
            h.arg(ukey(user, "mutes"));
            for (k, until) in mutes {
                h.arg(k).arg(until);
            }
            p.add_command(h).ignore();
        }
        self.run::<()>(&p).await
    }

    /// Adds (or, with `until_ms = None`, removes) one mute.
    pub async fn mute_set(&self, user: UserId, key: &str, until_ms: Option<u64>) -> Result<()> {
        let mut p = crate::Batch::new();
        match until_ms {
            Some(u) => p
                .cmd("HSET")
                .arg(ukey(user, "mutes"))
                .arg(key)
                .arg(u)
                .ignore(),
            None => p.cmd("HDEL").arg(ukey(user, "mutes")).arg(key).ignore(),
        };
        self.run::<()>(&p).await
    }
}
