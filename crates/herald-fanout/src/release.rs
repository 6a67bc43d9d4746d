//! Releasing a partition's due buckets (quiet hours ended, digest windows
//! closed).

use herald_store::Bucket;
use herald_types::{Notification, UserId};

use crate::worker::Worker;

impl Worker {
    /// Releases this partition's due buckets: quiet hours that ended (their
    /// notifications are parked, in order: the inbox, the webhook) and
    /// digest windows that closed (one `digest` per window, parked the
    /// same way, or only by webhook when the user asked). The inbox write comes
    /// first and ids are stable, so a crash in between repeats nothing the
    /// client has not already been told. Both writes carry the leader's
    /// term: once a newer leader released for a user, a deposed one can
    /// neither write that user's inbox nor empty its buckets.
    pub(crate) async fn release_due(&mut self) {
        if !self.settlements.owns(self.partition) {
            return;
        }
        let now = herald_types::now_ms();
        for b in [Bucket::Held, Bucket::Digest] {
            let store = self.store.clone();
            let p = self.partition;
            let Ok(due) = self
                .retry("bucket schedule", || store.bucket_due(b, p, now, 200))
                .await
            else {
                return;
            };
            for (user, due_ms) in due {
                match self.release_one(user, b, due_ms, now).await {
                    Ok(true) => {}
                    Ok(false) => {
                        self.deposed("release");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(partition = p, user, error = %e, "bucket release failed; will retry");
                    }
                }
            }
        }
    }

    async fn release_one(
        &mut self,
        user: UserId,
        b: Bucket,
        due_ms: u64,
        now: u64,
    ) -> herald_store::Result<bool> {
        let items = self.store.bucket_read(user, b, 1000).await?;
        let ids: Vec<String> = items.iter().map(|n| n.id.to_string()).collect();
        let prefs = self.prefs.get(user).await?;
        let window = |t: u64| prefs.digest_window(t);
        let out = match b {
            Bucket::Held => items,
            Bucket::Digest if items.is_empty() => Vec::new(),
            Bucket::Digest => {
                let (start, _) = window(due_ms.saturating_sub(1));
                vec![crate::digest::build(user, start, due_ms, &items)]
            }
        };
        if !out.is_empty() {
            let refs: Vec<(UserId, &Notification)> = out.iter().map(|n| (user, n)).collect();
            // A digest the user wants only by webhook (when one is there
            // and takes digests for them) skips the inbox.
            let sinks = self.settlements.sinks();
            let webhook_only = b == Bucket::Digest
                && sinks.has_webhook()
                && prefs.prefs.digest.channel == herald_prefs::DigestChannel::Webhook
                && prefs.prefs.webhook_allows("digest");
            let parking = crate::sink::Parking {
                items: &refs,
                fence: Some(self.fence),
                webhook_only,
            };
            match sinks.park(&parking).await? {
                crate::sink::Parked::Fenced => return Ok(false),
                crate::sink::Parked::Held { dropped } if dropped > 0 => {
                    metrics::counter!("herald_notifications_dropped_total", "reason" => "inbox_full").increment(dropped);
                }
                crate::sink::Parked::Held { .. } => {}
            }
            // Parked in the inbox, it is in the feed too (one entry).
            let label = if b == Bucket::Held { "held" } else { "digest" };
            metrics::counter!("herald_buckets_released_total", "bucket" => label).increment(1);
            self.edge.send(herald_types::EdgeCommand::Poke { user });
        }
        let next = match b {
            Bucket::Held => now,
            Bucket::Digest => window(now + 1).1,
        };
        self.store
            .bucket_done(user, b, self.fence, &ids, next)
            .await
    }
}
