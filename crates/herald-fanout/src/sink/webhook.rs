//! The webhook: notifications that went to the inbox are also sent to
//! the product's webhook (`[webhook]`), for users whose preferences allow
//! it (`webhook.enabled`, `webhook.kinds`; a digest as kind `digest`).

use std::sync::Arc;

use herald_types::{Notification, UserId};

use super::{Fut, Parked, Parking, Sink};

pub(super) struct Webhook {
    hooks: Arc<herald_webhook::Webhooks>,
    prefs: Arc<herald_prefs::PrefsCache>,
}

impl Webhook {
    pub(super) fn new(
        hooks: Arc<herald_webhook::Webhooks>,
        prefs: Arc<herald_prefs::PrefsCache>,
    ) -> Webhook {
        Webhook { hooks, prefs }
    }
}

fn kind(n: &Notification) -> &'static str {
    match n.digest {
        Some(_) => "digest",
        None => n.kind.as_str(),
    }
}

impl Sink for Webhook {
    fn park<'a>(&'a self, p: &'a Parking<'a>) -> Fut<'a> {
        Box::pin(async move {
            let mut users: Vec<UserId> = p.items.iter().map(|(u, _)| *u).collect();
            users.sort_unstable();
            users.dedup();
            let prefs = self.prefs.get_many(&users).await?;
            let allowed: Vec<(UserId, &Notification)> = p
                .items
                .iter()
                .filter(|(u, n)| {
                    users
                        .binary_search(u)
                        .ok()
                        .and_then(|i| prefs.get(i))
                        .is_none_or(|r| r.prefs.webhook_allows(kind(n)))
                })
                .copied()
                .collect();
            match self.hooks.park(&allowed).await {
                Ok(()) => Ok(Parked::Held { dropped: 0 }),
                Err(herald_webhook::WebhookError::Store(e)) => Err(e),
                Err(e) => Err(herald_store::StoreError::Corrupt {
                    key: "webhook".into(),
                    reason: e.to_string(),
                }),
            }
        })
    }
}
