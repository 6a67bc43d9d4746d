//! What travels between nodes: the messages ([`Wire`]), one channel per
//! node, and the publisher that sends each flush as one bundle per node.

use std::time::Duration;

use herald_store::Store;
use herald_types::{EdgeCommand, Notification, Outbox, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Outcome {
    Settled,
    Failed,
    Refused,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Wire {
    /// Push `n` (stored encoding) to `user`; answer to `from`.
    Push {
        from: String,
        push: u64,
        user: UserId,
        /// MessagePack `bin`, not an array of numbers.
        #[serde(with = "serde_bytes")]
        n: Vec<u8>,
        /// The fan-out span that made it, when its event was traced (last,
        /// and left out when absent, so a node of the version before reads
        /// the message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<herald_types::TraceContext>,
    },
    /// `user`'s inbox has new entries.
    Poke { user: UserId },
    /// The answer to push `push` of the receiver.
    Answer { push: u64, outcome: Outcome },
    /// A celebrity's post for every node's connected followers.
    Broadcast {
        celebrity: UserId,
        #[serde(with = "serde_bytes")]
        n: Vec<u8>,
    },
    /// `follower` started or stopped following `celebrity`.
    FollowChanged {
        follower: UserId,
        celebrity: UserId,
        follows: bool,
    },
    /// `user` became or stopped being a celebrity.
    CelebrityChanged {
        user: UserId,
        celebrity: bool,
        followers: Vec<UserId>,
    },
    /// A node's heartbeat to its own channel: while it arrives, the
    /// subscription is alive (one that died silently, as a sharded one
    /// does when its Redis master fails over, is made again).
    Ping,
    // Hot threads' messages come after the others (variants are sent by
    // name; a bundle holding one a node does not know was lost whole to
    // nodes older than `decode_bundle`, which skips only that message).
    /// A post to a thread on the pull path.
    ThreadBroadcast {
        thread: u64,
        #[serde(with = "serde_bytes")]
        n: Vec<u8>,
    },
    /// `follower` subscribed to (or left) a thread on the pull path.
    ThreadFollowChanged {
        follower: UserId,
        thread: u64,
        follows: bool,
    },
    /// A thread (its object named) moved to or off the pull path.
    ThreadChanged {
        thread: u64,
        object: String,
        on: bool,
        followers: Vec<UserId>,
    },
    /// `node` subscribed to its channel again (after its subscription
    /// broke: a network cut, a freeze, a Redis failover): what was
    /// published to it meanwhile is lost, so the pushes still waiting for
    /// its answer go to the inbox now (its connections drain) rather than
    /// when they time out. Last, as the hot threads' ones.
    Listening { node: String },
}

impl Wire {
    /// The message carrying a command every node's edge must hear (a post
    /// on the pull path, a follow or path change); None for the others,
    /// and for a thread's path change whose object is not known here.
    pub(super) fn for_every_node(cmd: &EdgeCommand) -> Option<Wire> {
        Some(match cmd {
            EdgeCommand::Broadcast { outbox, n } => match *outbox {
                Outbox::User(celebrity) => Wire::Broadcast {
                    celebrity,
                    n: n.to_storage(),
                },
                Outbox::Thread(thread) => Wire::ThreadBroadcast {
                    thread,
                    n: n.to_storage(),
                },
            },
            EdgeCommand::FollowChanged {
                follower,
                outbox,
                follows,
            } => match *outbox {
                Outbox::User(celebrity) => Wire::FollowChanged {
                    follower: *follower,
                    celebrity,
                    follows: *follows,
                },
                Outbox::Thread(thread) => Wire::ThreadFollowChanged {
                    follower: *follower,
                    thread,
                    follows: *follows,
                },
            },
            EdgeCommand::PathChanged {
                outbox,
                object,
                on,
                followers,
            } => match (*outbox, object) {
                (Outbox::User(user), _) => Wire::CelebrityChanged {
                    user,
                    celebrity: *on,
                    followers: followers.clone(),
                },
                (Outbox::Thread(thread), Some(object)) => Wire::ThreadChanged {
                    thread,
                    object: object.to_string(),
                    on: *on,
                    followers: followers.clone(),
                },
                // Other nodes learn its object from Redis.
                (Outbox::Thread(_), None) => return None,
            },
            EdgeCommand::Push { .. } | EdgeCommand::Poke { .. } | EdgeCommand::PokeAll => {
                return None
            }
        })
    }

    /// The command a message for every node's edge carries; None for the
    /// other messages (and a post that cannot be read).
    pub(super) fn into_edge_command(self) -> Option<EdgeCommand> {
        let post = |n: &[u8]| Notification::from_storage(n).ok();
        Some(match self {
            Wire::Broadcast { celebrity, n } => EdgeCommand::Broadcast {
                outbox: Outbox::User(celebrity),
                n: post(&n)?,
            },
            Wire::ThreadBroadcast { thread, n } => EdgeCommand::Broadcast {
                outbox: Outbox::Thread(thread),
                n: post(&n)?,
            },
            Wire::FollowChanged {
                follower,
                celebrity,
                follows,
            } => EdgeCommand::FollowChanged {
                follower,
                outbox: Outbox::User(celebrity),
                follows,
            },
            Wire::ThreadFollowChanged {
                follower,
                thread,
                follows,
            } => EdgeCommand::FollowChanged {
                follower,
                outbox: Outbox::Thread(thread),
                follows,
            },
            Wire::CelebrityChanged {
                user,
                celebrity,
                followers,
            } => EdgeCommand::PathChanged {
                outbox: Outbox::User(user),
                object: None,
                on: celebrity,
                followers,
            },
            Wire::ThreadChanged {
                thread,
                object,
                on,
                followers,
            } => EdgeCommand::PathChanged {
                outbox: Outbox::Thread(thread),
                object: Some(object.into()),
                on,
                followers,
            },
            Wire::Push { .. }
            | Wire::Poke { .. }
            | Wire::Answer { .. }
            | Wire::Ping
            | Wire::Listening { .. } => return None,
        })
    }
}

/// The messages of one published bundle (a MessagePack array). A message
/// this version cannot read (a variant a newer node added) is skipped and
/// counted, the others kept: in a cluster being upgraded one new message
/// does not cost the pushes and answers published beside it.
pub(super) fn decode_bundle(bytes: &[u8]) -> Vec<Wire> {
    use serde::Deserialize;
    if let Ok(all) = rmp_serde::from_slice::<Vec<Wire>>(bytes) {
        return all;
    }
    let (n, mut rest) = match bytes.split_first() {
        Some((&b, rest)) if (0x90..=0x9f).contains(&b) => (usize::from(b & 0x0f), rest),
        Some((0xdc, rest)) if rest.len() >= 2 => (
            usize::from(u16::from_be_bytes([rest[0], rest[1]])),
            &rest[2..],
        ),
        Some((0xdd, rest)) if rest.len() >= 4 => (
            u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize,
            &rest[4..],
        ),
        _ => {
            tracing::warn!("unreadable relay message");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let before = rest;
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        if serde::de::IgnoredAny::deserialize(&mut de).is_err() {
            tracing::warn!("unreadable relay message");
            break;
        }
        let one = &before[..before.len() - rest.len()];
        match rmp_serde::from_slice::<Wire>(one) {
            Ok(w) => out.push(w),
            Err(e) => {
                metrics::counter!("herald_relay_messages_skipped_total").increment(1);
                tracing::debug!(error = %e, "a relay message this version does not know; skipped");
            }
        }
    }
    out
}

pub(super) fn channel(node: &str) -> String {
    format!("herald:node:{node}")
}

/// Most messages taken from the queue for one flush.
const FLUSH_MAX: usize = 2048;

pub(super) async fn publish_loop(store: Store, mut rx: mpsc::Receiver<(String, Vec<u8>)>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < FLUSH_MAX {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        // One PUBLISH per destination node: a MessagePack array of the
        // messages (each already encoded), in queue order. Redis and the
        // receiver pay per publish, not per notification.
        let bundles = bundle(&mut batch);
        let mut wait =
            herald_types::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            match store.publish(&bundles).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "relay publish failed; retrying");
                    wait.sleep().await;
                }
            }
        }
    }
}

/// Groups encoded messages by channel into one MessagePack array each.
fn bundle(batch: &mut Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let mut by: Vec<(String, u32, Vec<u8>)> = Vec::new();
    for (ch, bytes) in batch.drain(..) {
        match by.iter_mut().find(|(c, ..)| *c == ch) {
            Some((_, n, body)) => {
                *n += 1;
                body.extend_from_slice(&bytes);
            }
            None => by.push((ch, 1, bytes)),
        }
    }
    by.into_iter()
        .map(|(ch, n, body)| {
            // array 32: 0xdd and the count, big-endian.
            let mut m = Vec::with_capacity(body.len() + 5);
            m.push(0xdd);
            m.extend_from_slice(&n.to_be_bytes());
            m.extend_from_slice(&body);
            (ch, m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of a newer version in a bundle costs only itself.
    #[test]
    fn a_bundle_keeps_the_messages_it_knows() {
        let poke = |user| rmp_serde::to_vec(&Wire::Poke { user }).expect("encoded");
        let mut unknown = poke(3);
        // Variants go by name: "Poke" renamed to one no version has yet.
        assert_eq!(&unknown[..6], b"\x81\xa4Poke", "{unknown:?}");
        unknown[2..6].copy_from_slice(b"Zzzz");
        let mut batch = vec![
            ("c".to_string(), poke(1)),
            ("c".to_string(), unknown),
            ("c".to_string(), poke(2)),
        ];
        let bundles = bundle(&mut batch);
        assert_eq!(bundles.len(), 1);
        let got: Vec<u64> = decode_bundle(&bundles[0].1)
            .into_iter()
            .map(|w| match w {
                Wire::Poke { user } => user,
                _ => 0,
            })
            .collect();
        assert_eq!(got, [1, 2]);
        assert!(decode_bundle(b"junk").is_empty());
    }

    /// Every command for every node crosses as a message and comes back
    /// the same, a thread's as a thread's.
    #[test]
    fn pull_path_commands_cross_nodes_unchanged() {
        let followers = vec![4, 5];
        let cmds = [
            (Outbox::User(7), Some("post:1")),
            (Outbox::Thread(3), Some("post:1")),
        ];
        for (outbox, object) in cmds {
            let sent = [
                EdgeCommand::FollowChanged {
                    follower: 9,
                    outbox,
                    follows: true,
                },
                EdgeCommand::PathChanged {
                    outbox,
                    object: object.map(Into::into),
                    on: true,
                    followers: followers.clone(),
                },
            ];
            for cmd in sent {
                let w = Wire::for_every_node(&cmd).expect("a message");
                let bytes = rmp_serde::to_vec(&w).expect("encoded");
                let back: Wire = rmp_serde::from_slice(&bytes).expect("decoded");
                let got = back.into_edge_command().expect("a command");
                match (&cmd, &got) {
                    (
                        EdgeCommand::FollowChanged { outbox: a, .. },
                        EdgeCommand::FollowChanged { outbox: b, .. },
                    ) => assert_eq!(a, b),
                    (
                        EdgeCommand::PathChanged {
                            outbox: a,
                            followers: fa,
                            ..
                        },
                        EdgeCommand::PathChanged {
                            outbox: b,
                            followers: fb,
                            object,
                            ..
                        },
                    ) => {
                        assert_eq!((a, fa), (b, fb));
                        if let Outbox::Thread(_) = b {
                            assert_eq!(object.as_deref(), Some("post:1"));
                        }
                    }
                    _ => panic!("{cmd:?} came back as {got:?}"),
                }
            }
        }
        // A thread's path change without its object stays on this node.
        let unnamed = EdgeCommand::PathChanged {
            outbox: Outbox::Thread(3),
            object: None,
            on: true,
            followers,
        };
        assert!(Wire::for_every_node(&unnamed).is_none());
        assert!(Wire::Ping.into_edge_command().is_none());
    }

    #[test]
    fn a_push_reads_the_same_with_or_without_its_trace() {
        let push = |trace| Wire::Push {
            from: "a".into(),
            push: 1,
            user: 2,
            n: vec![1, 2, 3],
            trace,
        };
        // Without a trace, the message is the four fields of before.
        let plain = rmp_serde::to_vec(&push(None)).unwrap_or_default();
        let tc = herald_types::TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let traced = rmp_serde::to_vec(&push(tc)).unwrap_or_default();
        assert!(traced.len() > plain.len() + 50);
        for (bytes, want) in [(plain, None), (traced, tc)] {
            match rmp_serde::from_slice::<Wire>(&bytes).expect("decodes") {
                Wire::Push { user, trace, .. } => assert_eq!((user, trace), (2, want)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_bundle_reads_back_as_its_messages_in_order() {
        let msgs = [
            Wire::Poke { user: 1 },
            Wire::Answer {
                push: 7,
                outcome: Outcome::Refused,
            },
            Wire::Poke { user: 2 },
        ];
        let mut batch: Vec<(String, Vec<u8>)> = msgs
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let ch = if i == 1 { "b" } else { "a" };
                (ch.to_string(), rmp_serde::to_vec(w).unwrap_or_default())
            })
            .collect();
        let out = bundle(&mut batch);
        assert_eq!(out.len(), 2);
        let a: Vec<Wire> = rmp_serde::from_slice(&out[0].1).expect("bundle a");
        assert!(matches!(
            a[..],
            [Wire::Poke { user: 1 }, Wire::Poke { user: 2 }]
        ));
        let b: Vec<Wire> = rmp_serde::from_slice(&out[1].1).expect("bundle b");
        assert!(matches!(b[..], [Wire::Answer { push: 7, .. }]));
    }
}
