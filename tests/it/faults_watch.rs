//! Faults that used to pass unseen, against the real binary: Redis out of
//! memory during a burst (waited out, never dead-lettered), a damaged or
//! missing fan-out checkpoint (no silent replay of the partition), an
//! unwritable checkpoint directory (shown, and the lag counts from what is
//! durable). Each is visible in `/readyz` while it lasts.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, eventually_within, Client, Node, Redis};

/// Long enough for a stall to be reported (10 s) on a busy machine.
const SLOW: Duration = Duration::from_secs(60);

async fn readyz(node: &Node) -> (u16, Value) {
    node.get("/readyz").await
}

/// Waits until `/readyz` fails with `check` saying `says`; returns the body.
async fn unready_because(node: &Node, check: &str, says: &str, wait: Duration) -> Value {
    let what = format!("/readyz to fail with {check} saying {says:?}");
    eventually_within(&what, wait, || async {
        let (s, v) = readyz(node).await;
        (s == 503 && v["checks"][check].to_string().contains(says)).then_some(v)
    })
    .await
}

async fn metrics(node: &Node) -> String {
    let (s, body) = node.request("GET", "/metrics", None, &[]).await;
    assert_eq!(s, 200);
    body.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string())
}

async fn inbox_len(node: &Node, user: u64) -> usize {
    support::inbox_ids(node, user).await.len()
}

async fn feed_len(node: &Node, user: u64) -> usize {
    let (s, v) = node
        .get(&format!("/v1/users/{user}/notifications?limit=100"))
        .await;
    assert_eq!(s, 200, "{v}");
    v["notifications"].as_array().map_or(0, |a| a.len())
}

/// Comments without an object never fold: each is its own notification.
fn comments(from: u64, n: u64, recipients: &[u64]) -> Value {
    let events: Vec<Value> = (from..from + n)
        .map(|i| {
            let r = recipients[(i as usize) % recipients.len()];
            json!({"kind": "comment", "actor": 500_000 + i, "recipient": r, "text": format!("c{i}")})
        })
        .collect();
    json!({ "events": events })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_is_waited_out_never_dead_lettered() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let users: Vec<u64> = (1..=10).collect();
    // Every write refused with OOM from now on.
    redis.cmd("CONFIG SET maxmemory-policy noeviction");
    redis.cmd("CONFIG SET maxmemory 1");
    let (s, v) = node.post("/v1/events", &comments(0, 60, &users)).await;
    assert_eq!(s, 202, "{v}");
    let v = unready_because(&node, "fanout", "out of memory", SLOW).await;
    assert_eq!(v["ready"], false);
    // Nothing was given up on.
    let (s, dl) = node.get("/v1/admin/dead-letters?limit=100").await;
    assert_eq!(s, 200, "{dl}");
    assert_eq!(
        dl["dead_letters"].as_array().map_or(0, |a| a.len()),
        0,
        "{dl}"
    );
    // Memory comes back: everything arrives, inbox and feed, no restart.
    redis.cmd("CONFIG SET maxmemory 0");
    for &u in &users {
        eventually_within("every notification in its inbox", SLOW, || async {
            (inbox_len(&node, u).await == 6).then_some(())
        })
        .await;
        eventually("every notification in the feed", || async {
            (feed_len(&node, u).await == 6).then_some(())
        })
        .await;
    }
    eventually("/readyz to recover", || async {
        (readyz(&node).await.0 == 200).then_some(())
    })
    .await;
    let (_, dl) = node.get("/v1/admin/dead-letters?limit=100").await;
    assert_eq!(
        dl["dead_letters"].as_array().map_or(0, |a| a.len()),
        0,
        "{dl}"
    );
}

/// The offset of an event id `e-P-O` (or `e-P-O@node`).
fn offset_of(event_id: &str) -> u64 {
    event_id
        .split('@')
        .next()
        .and_then(|e| e.rsplit('-').next())
        .and_then(|o| o.parse().ok())
        .expect("event id")
}

/// The first segment file of partition `p` of a node's log (a new log's
/// partitions start at an offset taken from the time).
fn first_segment(node: &Node, p: u32) -> PathBuf {
    let dir = node.node_dir.join(format!("log/p-{p:05}"));
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("partition dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.into_iter().next().expect("a segment")
}

/// The checkpoint file of the partition user 42's comments go to.
fn checkpoint_of(node: &Node, event_id: &str) -> (u32, PathBuf) {
    let rest = event_id.strip_prefix("e-").expect("event id");
    let p: u32 = rest
        .split('-')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("partition");
    (p, node.node_dir.join(format!("log/checkpoints/fanout.{p}")))
}

/// Delivers `n` comments to `user` and acks them all: the inbox is empty.
async fn deliver_and_ack(node: &Node, user: u64, from: u64, n: u64) -> String {
    let (s, v) = node.post("/v1/events", &comments(from, n, &[user])).await;
    assert_eq!(s, 202, "{v}");
    let first = v["ids"][0].as_str().expect("id").to_string();
    let mut c = Client::connect(node, user).await;
    let got = c.notifications(n as usize).await;
    let ids: Vec<&str> = got.iter().filter_map(|n| n["id"].as_str()).collect();
    c.ack(&ids).await;
    eventually("the acked notifications settled", || async {
        (inbox_len(node, user).await == 0).then_some(())
    })
    .await;
    c.close().await;
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_missing_checkpoint_never_replays_a_partition_silently() {
    let redis = Redis::start();
    let mut node = Node::start(&redis, &[]);
    let first = deliver_and_ack(&node, 42, 0, 20).await;
    let (p, file) = checkpoint_of(&node, &first);
    assert!(node.stop(), "clean stop");

    // Both slots damaged.
    let mut b = std::fs::read(&file).expect("checkpoint");
    for x in b.iter_mut() {
        *x ^= 0x5a;
    }
    std::fs::write(&file, &b).expect("damage");
    node.restart_unready();
    let v = unready_because(&node, "fanout", "checkpoint damaged", support::WAIT).await;
    let why = v["checks"]["fanout"].to_string();
    assert!(why.contains("checkpoint damaged"), "{v}");
    assert!(why.contains(&format!("--reset-position {p}=")), "{v}");
    let m = metrics(&node).await;
    let line = format!("herald_fanout_checkpoint_unusable{{partition=\"{p}\"}} 1");
    assert!(m.contains(&line), "{line} missing");
    // A later event of another partition is still delivered; none of the
    // 20 acked notifications comes back.
    let other = (1..200)
        .find(|u| herald_types::event::partition_for(*u, 4) != p)
        .expect("a user of another partition");
    let (s, _) = node.post("/v1/events", &comments(100, 1, &[other])).await;
    assert_eq!(s, 202);
    eventually("the other partition's event", || async {
        (inbox_len(&node, other).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        inbox_len(&node, 42).await,
        0,
        "acked notifications replayed"
    );

    // The file deleted: the same.
    assert!(node.stop());
    std::fs::remove_file(&file).expect("delete");
    node.restart_unready();
    unready_because(&node, "fanout", "checkpoint missing", support::WAIT).await;
    assert_eq!(
        inbox_len(&node, 42).await,
        0,
        "acked notifications replayed"
    );

    // The operator decides: skip what the partition holds.
    assert!(node.stop());
    node.set_env(
        "HERALD_FANOUT__RESET_POSITIONS",
        &format!("[\"{p}=latest\"]"),
    );
    node.restart();
    let (s, v) = node.post("/v1/events", &comments(200, 1, &[42])).await;
    assert_eq!(s, 202, "{v}");
    eventually("a new event delivered after the reset", || async {
        (inbox_len(&node, 42).await == 1).then_some(())
    })
    .await;
}

/// `chattr +i` makes a file or directory unwritable even for root (the
/// tests run as root, which ignores permission bits); undone on drop.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(dir: &Path) -> Immutable {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        paths.push(dir.to_path_buf());
        for p in &paths {
            let st = std::process::Command::new("chattr")
                .arg("+i")
                .arg(p)
                .status()
                .expect("chattr");
            assert!(st.success(), "chattr +i {}", p.display());
        }
        Immutable(paths)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(p)
                .status();
        }
    }
}

/// The offset a checkpoint file holds: of its two slots (sequence u64,
/// offset u64, CRC32C of both), the intact one with the higher sequence.
fn committed(file: &Path) -> Option<u64> {
    let b = std::fs::read(file).ok()?;
    let slot = |at: usize| -> Option<(u64, u64)> {
        let s = b.get(at..at + 20)?;
        let crc = u32::from_le_bytes(s[16..20].try_into().ok()?);
        (crc32c::crc32c(&s[..16]) == crc).then(|| {
            let seq = u64::from_le_bytes(s[..8].try_into().unwrap_or_default());
            let off = u64::from_le_bytes(s[8..16].try_into().unwrap_or_default());
            (seq, off)
        })
    };
    [slot(0), slot(512)]
        .into_iter()
        .flatten()
        .max()
        .map(|(_, o)| o)
}

fn lag(metrics: &str, p: u32) -> f64 {
    let key = format!("herald_fanout_lag_records{{partition=\"{p}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_checkpoint_directory_is_shown_and_counted_as_lag() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let first = deliver_and_ack(&node, 42, 0, 3).await;
    let (p, file) = checkpoint_of(&node, &first);
    let past = offset_of(&first) + 3;
    eventually("the first notifications' position durable", || async {
        (committed(&file) == Some(past)).then_some(())
    })
    .await;
    let guard = Immutable::set(&node.node_dir.join("log/checkpoints"));
    let (s, _) = node.post("/v1/events", &comments(10, 5, &[42])).await;
    assert_eq!(s, 202);
    eventually("the new notifications in the inbox", || async {
        (inbox_len(&node, 42).await == 5).then_some(())
    })
    .await;
    unready_because(
        &node,
        "fanout",
        "checkpoint cannot be written",
        support::WAIT,
    )
    .await;
    // The durable position stays where it was: five records behind.
    eventually("the lag to count from the durable position", || async {
        (lag(&metrics(&node).await, p) == 5.0).then_some(())
    })
    .await;
    drop(guard);
    eventually("/readyz to recover once it is writable", || async {
        (readyz(&node).await.0 == 200).then_some(())
    })
    .await;
    eventually("the lag to reach 0", || async {
        (lag(&metrics(&node).await, p) == 0.0).then_some(())
    })
    .await;
}

/// A journal record as the log writes it: `len | crc32c(body) | body`,
/// body `parts | (partition | segment base | position | length | bytes)*`.
fn journal_record(partition: u32, segment_base: u64, pos: u64, bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&partition.to_le_bytes());
    body.extend_from_slice(&segment_base.to_le_bytes());
    body.extend_from_slice(&pos.to_le_bytes());
    body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    body.extend_from_slice(bytes);
    let mut r = Vec::new();
    r.extend_from_slice(&(body.len() as u32).to_le_bytes());
    r.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    r.extend_from_slice(&body);
    r
}

/// A damaged journal record with intact ones after it is reported: the
/// node is unready (acknowledged events may be lost) until an operator
/// acknowledges it, and the damage is listed with the quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_record_keeps_the_node_unready_until_acknowledged() {
    let redis = Redis::start();
    let mut node = Node::start(&redis, &[]);
    let first = deliver_and_ack(&node, 42, 0, 3).await;
    let (p, _) = checkpoint_of(&node, &first);
    assert!(node.stop());
    let log = node.node_dir.join("log");
    let seg = first_segment(&node, p);
    let base = offset_of(&first);
    let bytes = std::fs::read(&seg).expect("segment");
    // Three records that rewrite what the segment already holds, the middle
    // one with a flipped byte: no data changes, only the damage is there.
    let good = journal_record(p, base, 0, &bytes);
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] ^= 0x01;
    let journal: Vec<u8> = [good.clone(), bad, good].concat();
    std::fs::write(log.join("journal"), journal).expect("journal");
    node.restart_unready();
    unready_because(&node, "quarantine", "journal bytes", support::WAIT).await;
    let (s, q) = node.get("/v1/admin/log/quarantine").await;
    assert_eq!(s, 200, "{q}");
    let (s, _) = node.post("/v1/admin/log/quarantine/ack", &json!({})).await;
    assert_eq!(s, 200);
    eventually("/readyz once acknowledged", || async {
        (readyz(&node).await.0 == 200).then_some(())
    })
    .await;
    // The partition goes on past every id handed out before.
    let (s, v) = node.post("/v1/events", &comments(50, 1, &[42])).await;
    assert_eq!(s, 202, "{v}");
    let off = offset_of(v["ids"][0].as_str().expect("id"));
    assert!(off >= base + 3, "offset {off} handed out again");
}

/// A node that lost its whole disk starts its log again past every offset
/// its old log could have handed out: event ids, and so notification ids,
/// never repeat, and what the old ids left in Redis is not overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_disk_never_hands_out_an_event_id_again() {
    let redis = Redis::start();
    let mut node = Node::start(&redis, &[]);
    let (s, v) = node.post("/v1/events", &comments(0, 1, &[42])).await;
    assert_eq!(s, 202, "{v}");
    let before = v["ids"][0].as_str().expect("id").to_string();
    eventually("the first notification in the inbox", || async {
        (inbox_len(&node, 42).await == 1).then_some(())
    })
    .await;
    node.kill9();
    std::fs::remove_dir_all(&node.node_dir).expect("wipe");
    node.restart();
    let (s, v) = node.post("/v1/events", &comments(0, 1, &[42])).await;
    assert_eq!(s, 202, "{v}");
    let after = v["ids"][0].as_str().expect("id").to_string();
    assert_ne!(before, after, "event id handed out again after a wipe");
    eventually("both notifications in the inbox", || async {
        (inbox_len(&node, 42).await == 2).then_some(())
    })
    .await;
}

/// Notifications parked in an inbox (counted once every sink confirmed).
fn queued(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("herald_notifications_total{route=\"queued\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sum of `herald_fanout_in_flight_records` over partitions.
fn in_flight(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("herald_fanout_in_flight_records{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `redis.wait_replicas = 1`: a record whose notification went to an inbox
/// settles only once a replica has the write. With the replica frozen the
/// record stays unsettled (and `/readyz` says why after 10 s); once it
/// answers, the record settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_writes_settle_only_once_a_replica_has_them() {
    let redis = Redis::start();
    let port = redis
        .url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &port]);
    eventually("the replica in sync", || async {
        redis
            .cmd("INFO replication")
            .filter(|i| i.contains("connected_slaves:1") && i.contains("state=online"))
            .map(|_| ())
    })
    .await;
    let node = Node::start(&redis, &[("HERALD_REDIS__WAIT_REPLICAS", "1")]);
    // Confirmed: the record settles.
    let (s, _) = node.post("/v1/events", &comments(0, 1, &[42])).await;
    assert_eq!(s, 202);
    // Settled: counted as queued (only once the replica confirmed; the
    // entry alone is on the master before that, and the in-flight gauge
    // may not count the record yet) and nothing in flight. On a loaded
    // host the replica may take seconds to confirm.
    eventually_within("the first record settled", SLOW, || async {
        let m = metrics(&node).await;
        (queued(&m) >= 1.0 && in_flight(&m) == 0.0).then_some(())
    })
    .await;
    replica.pause();
    let (s, _) = node.post("/v1/events", &comments(1, 1, &[42])).await;
    assert_eq!(s, 202);
    // The write reaches the master at once; only its confirmation waits.
    let until = std::time::Instant::now() + SLOW;
    while inbox_len(&node, 42).await != 2 {
        assert!(
            std::time::Instant::now() < until,
            "the write never reached the master (HLEN there: {:?}; the API: {:?}):\n{}",
            redis.cmd("HLEN h:{u:42}:ib"),
            support::inbox_ids(&node, 42).await,
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unready_because(&node, "fanout", "replicas did not confirm", SLOW).await;
    assert!(
        in_flight(&metrics(&node).await) >= 1.0,
        "settled without a replica"
    );
    replica.resume();
    eventually_within(
        "the record settled once the replica has it",
        SLOW,
        || async {
            (in_flight(&metrics(&node).await) == 0.0 && readyz(&node).await.0 == 200).then_some(())
        },
    )
    .await;
}
