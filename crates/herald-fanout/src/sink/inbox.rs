//! The inbox: what a user finds when they reconnect.

use herald_store::Store;
use herald_types::UserId;

use super::{Fut, Parked, Parking, Sink};

pub(super) struct Inbox {
    store: Store,
}

impl Inbox {
    pub(super) fn new(store: Store) -> Inbox {
        Inbox { store }
    }
}

impl Sink for Inbox {
    fn park<'a>(&'a self, p: &'a Parking<'a>) -> Fut<'a> {
        Box::pin(async move {
            if p.webhook_only || p.items.is_empty() {
                return Ok(Parked::Held { dropped: 0 });
            }
            let Some(fence) = p.fence else {
                let dropped = self.store.inbox_push(p.items).await?;
                return Ok(Parked::Held { dropped });
            };
            // A release: one fenced write per user.
            let mut dropped = 0;
            let mut users: Vec<UserId> = p.items.iter().map(|(u, _)| *u).collect();
            users.dedup();
            for u in users {
                let mine: Vec<_> = p
                    .items
                    .iter()
                    .filter(|(v, _)| *v == u)
                    .map(|(_, n)| (*n).clone())
                    .collect();
                match self.store.bucket_release(u, &mine, fence).await? {
                    None => return Ok(Parked::Fenced),
                    Some(d) => dropped += d,
                }
            }
            Ok(Parked::Held { dropped })
        })
    }
}
