//! Building one digest from the notifications of a window.

use std::sync::Arc;

use herald_types::{DigestBody, DigestItem, EventKind, Notification, UserId};

/// Actors listed per digest group.
const ACTORS: usize = 3;

/// The digest of `user` for the window `[start_ms, end_ms)`: a total count
/// and the notifications grouped by kind and object (oldest group first).
/// Its id is stable per user and window, so a repeat after a crash is the
/// same message.
pub fn build(user: UserId, start_ms: u64, end_ms: u64, items: &[Notification]) -> Notification {
    let mut groups: Vec<DigestItem> = Vec::new();
    let mut total = 0u64;
    for n in items {
        total += n.count.max(1);
        match groups
            .iter_mut()
            .find(|g| g.kind == n.kind && g.object.as_deref() == n.object.as_deref())
        {
            Some(g) => {
                g.count += n.count.max(1);
                for a in n.actors.iter() {
                    if g.actors.len() < ACTORS && !g.actors.contains(a) {
                        g.actors.push(*a);
                    }
                }
                g.event_id = n.event_id.to_string();
                g.data = n.data.clone();
            }
            None => groups.push(DigestItem {
                kind: n.kind,
                object: n.object.as_deref().map(String::from),
                count: n.count.max(1),
                actors: n.actors.iter().copied().take(ACTORS).collect(),
                event_id: n.event_id.to_string(),
                data: n.data.clone(),
            }),
        }
    }
    let newest = items.last();
    Notification {
        id: format!("d-{user}-{end_ms}").into(),
        event_id: newest.map_or_else(|| Arc::from(""), |n| n.event_id.clone()),
        kind: newest.map(|n| n.kind).unwrap_or(EventKind::Like),
        actor: newest.map(|n| n.actor).unwrap_or(0),
        object: None,
        text: None,
        ts_ms: end_ms,
        count: total,
        actors: Arc::from([]),
        order: end_ms * 1000,
        digest: Some(Box::new(DigestBody {
            window_start_ms: start_ms,
            window_end_ms: end_ms,
            items: groups,
        })),
        data: None,
        trace: None,
        supersedes: None,
    }
}
