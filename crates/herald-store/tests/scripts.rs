//! The store's Lua scripts and multi-command steps where they live,
//! against a real `redis-server` on a free port (no Herald process): the
//! inbox snapshot (page, order, cap, the hello's dropped count), the feed
//! page (newest first, cursors, read state), the feed's cap and lifetime
//! when Redis forgot its scripts, an inbox from before one entry per
//! notification, idempotency claims and the
//! partition lease rounds.

// Test code: a panic with its message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_store::{LeaseRole, Store, StoreConfig};
use herald_types::{EventKind, Notification, UserId};

/// A private `redis-server`, stopped when dropped.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (deploy/ensure-deps.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { port, child }
    }

    async fn store(&self, f: impl FnOnce(&mut StoreConfig)) -> Store {
        let mut cfg = StoreConfig {
            url: format!("redis://127.0.0.1:{}", self.port),
            ..StoreConfig::default()
        };
        f(&mut cfg);
        Store::connect(cfg).await.expect("connect")
    }
}

impl Redis {
    /// One command through `redis-cli`, its answer trimmed.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (installed with redis-server)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A comment for a recipient, accepted at `order` microseconds.
fn note(id: &str, order: u64) -> Notification {
    Notification {
        id: id.into(),
        event_id: format!("e-0-{order}").into(),
        kind: EventKind::Comment,
        actor: 9,
        object: Some("post:1".into()),
        text: Some(format!("text {order}").into()),
        ts_ms: order / 1000,
        count: 1,
        actors: Arc::from([9]),
        order,
        digest: None,
        data: None,
        trace: None,
        supersedes: None,
    }
}

fn ids(items: &[Notification]) -> Vec<String> {
    items.iter().map(|n| n.id.to_string()).collect()
}

const USER: UserId = 42;

#[tokio::test]
async fn the_inbox_pages_oldest_first_caps_and_reports_what_it_dropped() {
    let redis = Redis::start();
    let store = redis.store(|c| c.inbox_cap = 4).await;
    // Written out of order: the page is in acceptance order.
    let notes: Vec<Notification> = [5u64, 1, 4, 2, 3]
        .iter()
        .map(|&o| note(&format!("n-{o}"), o * 1_000_000))
        .collect();
    let items: Vec<(UserId, &Notification)> = notes.iter().map(|n| (USER, n)).collect();
    let dropped = store.inbox_push(&items).await.unwrap();
    assert_eq!(dropped, 1, "five into a cap of four");
    let page = store.inbox_snapshot(USER, 3, true).await.unwrap();
    assert_eq!(page.pending, 4);
    assert_eq!(ids(&page.items), ["n-2", "n-3", "n-4"], "the oldest went");
    assert_eq!(page.dropped, 1, "the hello hears of the drop");
    assert_eq!(page.items[0], notes[3], "read back whole");
    // Said once: the next hello starts counting again.
    assert_eq!(
        store.inbox_snapshot(USER, 3, true).await.unwrap().dropped,
        0
    );
    // A page as large as the inbox comes whole, in order too.
    let all = store.inbox_snapshot(USER, 10, false).await.unwrap();
    assert_eq!(ids(&all.items), ["n-2", "n-3", "n-4", "n-5"]);
    store
        .inbox_remove_many(&[(USER, vec!["n-2".into(), "n-4".into(), "n-unknown".into()])])
        .await
        .unwrap();
    let left = store.inbox_snapshot(USER, 10, false).await.unwrap();
    assert_eq!(
        (left.pending, ids(&left.items)),
        (2, vec!["n-3".into(), "n-5".into()])
    );
    // Another user's inbox is untouched by all of it.
    assert_eq!(store.inbox_snapshot(7, 10, false).await.unwrap().pending, 0);
}

/// An inbox written by the version before one entry per notification (its
/// own hash, `h:{u:ID}:ib`, next to a feed copy) is read, moved into the
/// user's one hash as waiting entries (keeping the feed copy's read mark)
/// and acked like any other; nothing is lost or doubled.
#[tokio::test]
async fn an_inbox_from_before_one_entry_per_notification_survives() {
    use herald_types::compact;
    let redis = Redis::start();
    let store = redis.store(|_| {}).await;
    let now_us = herald_types::now_us();
    let old: Vec<Notification> = (1..=3u64)
        .map(|i| note(&format!("n-old{i}"), now_us - (10 - i) * 1_000_000))
        .collect();
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut p = redis::pipe();
    for n in &old {
        let f = compact::field(&n.id, USER);
        p.cmd("HSET")
            .arg(format!("h:{{u:{USER}}}:ib"))
            .arg(&f)
            .arg(compact::entry(n, USER));
    }
    // The old version's feed copy of the first one, read, and the marker.
    let mut read = compact::entry(&old[0], USER);
    read[0] |= compact::READ;
    p.cmd("HSET")
        .arg(format!("h:{{u:{USER}}}:fd"))
        .arg(compact::field(&old[0].id, USER))
        .arg(read)
        .arg("")
        .arg("");
    let () = p.query_async(&mut c).await.unwrap();
    // Parked after the upgrade.
    let new = note("n-new", now_us - 1_000_000);
    store.inbox_push(&[(USER, &new)]).await.unwrap();

    let snap = store.inbox_snapshot(USER, 10, true).await.unwrap();
    assert_eq!(snap.pending, 4);
    assert_eq!(ids(&snap.items), ["n-old1", "n-old2", "n-old3", "n-new"]);
    assert_eq!(snap.items[1], old[1], "read back whole");
    assert_eq!(snap.unread, 3, "the first was read in the feed");
    let gone: bool = redis::cmd("EXISTS")
        .arg(format!("h:{{u:{USER}}}:ib"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!gone, "the old inbox hash is gone once moved");
    store
        .inbox_remove_many(&[(USER, ids(&snap.items))])
        .await
        .unwrap();
    assert_eq!(
        store.inbox_snapshot(USER, 10, false).await.unwrap().pending,
        0
    );
    // Delivered, all four stay in the feed, one entry each.
    let page = store.feed_page(USER, None, 10).await.unwrap();
    let listed: Vec<(String, bool)> = page
        .items
        .iter()
        .map(|(n, r)| (n.id.to_string(), *r))
        .collect();
    assert_eq!(
        listed,
        [
            ("n-new".to_string(), false),
            ("n-old3".to_string(), false),
            ("n-old2".to_string(), false),
            ("n-old1".to_string(), true),
        ]
    );
}

#[tokio::test]
async fn the_feed_pages_newest_first_with_cursors_and_read_state() {
    let redis = Redis::start();
    let store = redis.store(|_| {}).await;
    let now_us = herald_types::now_us();
    let notes: Vec<Notification> = (1..=5u64)
        .map(|i| note(&format!("n-f{i}"), now_us - (10 - i) * 1_000_000))
        .collect();
    let items: Vec<(UserId, &Notification)> = notes.iter().map(|n| (USER, n)).collect();
    store.feed_add(&items).await.unwrap();
    let first = store.feed_page(USER, None, 2).await.unwrap();
    let names = |p: &herald_store::FeedPage| -> Vec<String> {
        p.items.iter().map(|(n, _)| n.id.to_string()).collect()
    };
    assert_eq!(names(&first), ["n-f5", "n-f4"]);
    assert_eq!(first.unread, 5);
    let second = store.feed_page(USER, first.next, 2).await.unwrap();
    assert_eq!(names(&second), ["n-f3", "n-f2"]);
    let last = store.feed_page(USER, second.next, 2).await.unwrap();
    assert_eq!(names(&last), ["n-f1"]);
    assert!(last.next.is_none(), "no page after the last");
    // Reading two (and an unknown id) leaves three unread.
    let unread = store
        .feed_read(
            USER,
            &["n-f5".into(), "n-f1".into(), "n-nope".into()],
            false,
        )
        .await
        .unwrap();
    assert_eq!(unread, 3);
    let page = store.feed_page(USER, None, 5).await.unwrap();
    let read: Vec<bool> = page.items.iter().map(|(_, r)| *r).collect();
    assert_eq!(read, [true, false, false, false, true]);
    assert_eq!(store.feed_read(USER, &[], true).await.unwrap(), 0);
    assert_eq!(store.feed_unread(USER).await.unwrap(), 0);
}

#[tokio::test]
async fn feed_writes_keep_the_cap_and_a_lifetime_after_redis_forgets_their_script() {
    let redis = Redis::start();
    let store = redis
        .store(|c| {
            c.feed_cap = 10;
            c.inbox_idle_ttl = Some(Duration::from_secs(3600));
        })
        .await;
    let now_us = herald_types::now_us();
    let key = format!("h:{{u:{USER}}}:fd");
    for i in 1..=30u64 {
        if i % 7 == 1 {
            // As after a restart or failover of Redis.
            assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
        }
        let n = note(&format!("n-c{i}"), now_us - (40 - i) * 1_000_000);
        store.feed_add(&[(USER, &n)]).await.unwrap();
        let len: u64 = redis.cli(&["HLEN", &key]).parse().unwrap();
        assert!(
            len <= 11,
            "{len} entries after write {i}: past the cap by more than a tenth"
        );
    }
    let ttl: i64 = redis.cli(&["TTL", &key]).parse().unwrap();
    assert!(ttl > 0, "the hash has a lifetime (TTL {ttl})");
    let page = store.feed_page(USER, None, 20).await.unwrap();
    let listed = ids(&page
        .items
        .iter()
        .map(|(n, _)| n.clone())
        .collect::<Vec<_>>());
    assert!(listed.len() >= 10, "the newest ten are kept: {listed:?}");
    let newest: Vec<String> = (0..listed.len() as u64)
        .map(|k| format!("n-c{}", 30 - k))
        .collect();
    assert_eq!(listed, newest, "the oldest go first");
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_its_first_event_only() {
    let redis = Redis::start();
    let store = redis.store(|_| {}).await;
    let claim = |k: &str, e: &str| (k.to_string(), e.to_string());
    let first = store
        .claim_keys(&[claim("k1", "e-0-1"), claim("k2", "e-0-2")])
        .await
        .unwrap();
    assert_eq!(first, [true, true]);
    // Another event with k1 is a duplicate; the same event again (a
    // restart processing it twice) still owns its key.
    let again = store
        .claim_keys(&[
            claim("k1", "e-0-9"),
            claim("k2", "e-0-2"),
            claim("k3", "e-0-3"),
        ])
        .await
        .unwrap();
    assert_eq!(again, [false, true, true]);
}

#[tokio::test]
async fn leases_share_partitions_fairly_and_a_leaver_gives_them_back() {
    let redis = Redis::start();
    let a = redis.store(|c| c.node_id = "a".into()).await;
    let b = redis.store(|c| c.node_id = "b".into()).await;
    let ttl = Duration::from_secs(30);
    let round = |s: &Store, who: &'static str, role| {
        let s = s.clone();
        async move {
            s.lease_round(4, &format!("{who}#1"), &format!("{who}:80"), ttl, role)
                .await
                .unwrap()
        }
    };
    let held = |v: &herald_store::LeaseView, who: &str| {
        v.holders
            .iter()
            .filter(|h| h.as_deref() == Some(&format!("{who}#1")))
            .count()
    };
    // Alone, a takes every partition.
    let v = round(&a, "a", LeaseRole::Member).await;
    assert_eq!(held(&v, "a"), 4);
    // b joins: rounds move to two each, never a partition held twice.
    let mut v = round(&b, "b", LeaseRole::Member).await;
    for _ in 0..4 {
        round(&a, "a", LeaseRole::Member).await;
        v = round(&b, "b", LeaseRole::Member).await;
    }
    assert_eq!((held(&v, "a"), held(&v, "b")), (2, 2), "{v:?}");
    assert_eq!(v.members.len(), 2);
    // An observer holds nothing and sees the same.
    let o = round(&a, "edge", LeaseRole::Observer).await;
    assert_eq!(held(&o, "edge"), 0);
    assert_eq!(o.holders, v.holders);
    // a leaves: b takes everything on its next round.
    round(&a, "a", LeaseRole::Leave).await;
    let v = round(&b, "b", LeaseRole::Member).await;
    assert_eq!(held(&v, "b"), 4, "{v:?}");
    assert_eq!(v.members.len(), 1);
}
