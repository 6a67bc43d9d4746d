//! Where a notification nobody took goes: the sinks, in order. Fan-out's
//! settlement is the one owner of an undelivered notification (a user not
//! connected, a push refused or not acked, quiet hours that ended, a
//! digest window that closed) and parks it through [`Sinks::park`]; its
//! record settles once every sink holds it.
//!
//! A channel is one file here with a [`Sink`] and its config: the inbox
//! (always first: the user drains it on reconnecting) and the webhook
//! (when `[webhook]` is configured).

mod inbox;
mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use herald_store::{Fence, Store};
use herald_types::{Notification, UserId};

/// What one call parks.
pub struct Parking<'a> {
    /// Recipients and their notifications.
    pub items: &'a [(UserId, &'a Notification)],
    /// Set by a partition's leader releasing a bucket: the inbox write is
    /// refused once a newer leader released for the user.
    pub fence: Option<Fence>,
    /// Skip the inbox (a digest the user wants only by webhook).
    pub webhook_only: bool,
}

/// What the sinks did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// Held; the inbox cap dropped this many older entries.
    Held { dropped: u64 },
    /// A newer leader of the partition holds the user: nothing written.
    Fenced,
}

type Fut<'a> = Pin<Box<dyn Future<Output = herald_store::Result<Parked>> + Send + 'a>>;

/// One channel for notifications nobody took.
pub trait Sink: Send + Sync {
    /// Holds what `p` names that this channel takes (a user's preferences
    /// may turn it off); returns once it is durable.
    fn park<'a>(&'a self, p: &'a Parking<'a>) -> Fut<'a>;
}

/// The sinks of this node, in order.
#[derive(Clone)]
pub struct Sinks {
    list: Arc<Vec<Box<dyn Sink>>>,
    webhook: bool,
}

impl Sinks {
    /// The inbox, and the webhook when one is configured.
    pub fn new(
        store: Store,
        prefs: Arc<herald_prefs::PrefsCache>,
        webhook: Option<Arc<herald_webhook::Webhooks>>,
    ) -> Sinks {
        let mut list: Vec<Box<dyn Sink>> = vec![Box::new(inbox::Inbox::new(store))];
        let has_webhook = webhook.is_some();
        if let Some(w) = webhook {
            list.push(Box::new(webhook::Webhook::new(w, prefs)));
        }
        Sinks {
            list: Arc::new(list),
            webhook: has_webhook,
        }
    }

    /// Whether a webhook takes notifications.
    pub fn has_webhook(&self) -> bool {
        self.webhook
    }

    /// Parks through every sink in order; the first that fails or is
    /// fenced stops the rest (the caller retries the whole: every sink is
    /// idempotent by notification id).
    pub async fn park(&self, p: &Parking<'_>) -> herald_store::Result<Parked> {
        let mut dropped = 0;
        for s in self.list.iter() {
            match s.park(p).await? {
                Parked::Fenced => return Ok(Parked::Fenced),
                Parked::Held { dropped: d } => dropped += d,
            }
        }
        Ok(Parked::Held { dropped })
    }
}
