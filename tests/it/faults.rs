//! Faults against the real binary: a full disk (a real size-limited tmpfs),
//! a corrupt batch in the middle of a segment, a fan-out position past the
//! end of its partition, Redis stopped while clients connect and
//! disconnect, a record that fails every time (dead letter and replay), and
//! idempotency keys of two producers.
//!
//! Each asserts what a user sees: every event answered 202 is delivered,
//! none twice under different ids, offsets (event ids) are never reused.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use support::{eventually, Client, Node, Redis, Tmpfs};

/// (partition, offset) of an event id `e-P-O`.
fn parse_id(id: &str) -> (u32, u64) {
    let rest = id.strip_prefix("e-").expect("event id");
    let (p, o) = rest.split_once('-').expect("event id");
    (p.parse().expect("partition"), o.parse().expect("offset"))
}

/// Every notification waiting in `user`'s inbox (oldest first).
async fn inbox(node: &Node, user: u64) -> Vec<Value> {
    let (s, v) = node
        .get(&format!("/v1/users/{user}/inbox?limit=1000"))
        .await;
    assert_eq!(s, 200, "{v}");
    v["notifications"].as_array().cloned().unwrap_or_default()
}

/// event id -> notification ids, over the inboxes of `users`.
async fn delivered(node: &Node, users: impl Iterator<Item = u64>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for u in users {
        for n in inbox(node, u).await {
            let e = n["event_id"].as_str().unwrap_or_default().to_string();
            out.entry(e)
                .or_default()
                .push(n["id"].as_str().unwrap_or_default().to_string());
        }
    }
    out
}

fn comments(from: u64, n: u64, recipients: u64) -> Value {
    // Comments without an object never fold, so each is its own notification.
    let events: Vec<Value> = (from..from + n)
        .map(|i| json!({"kind": "comment", "actor": 1_000_000 + i, "recipient": 1 + i % recipients, "text": format!("c{i}")}))
        .collect();
    json!({ "events": events })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_with_storage_full_and_heals_without_a_restart() {
    let redis = Redis::start();
    let disk = Tmpfs::mount("2m");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start_in(&redis, &[], dir, disk.path.join("node"));
    const USERS: u64 = 200;
    let mut accepted: Vec<String> = Vec::new();
    let mut sent = 0u64;
    // Fill the disk: 202s until the first 503, which carries Retry-After.
    // (A checkpoint that empties the journal frees some space now and
    // then, so the refusal is checked on the very answer that refused.)
    let full = loop {
        let (head, body) = node.post_raw("/v1/events", &comments(sent, 100, USERS));
        sent += 100;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if head.starts_with("http/1.1 202") {
            accepted.extend(
                v["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|i| i.as_str().unwrap_or_default().to_string()),
            );
        } else if head.starts_with("http/1.1 503") {
            assert!(head.contains("retry-after:"), "no Retry-After: {head}");
            break v;
        } else {
            panic!("unexpected {head}: {body}");
        }
        assert!(sent < 200_000, "a 2 MiB disk never filled");
    };
    assert_eq!(full["error"]["code"], "storage_full", "{full}");
    let (s, v) = node.get("/readyz").await;
    assert_eq!(s, 503, "{v}");
    let log_check = v["checks"]["log"].as_str().unwrap_or_default();
    assert!(log_check.starts_with("full"), "{v}");
    // Space returns: appends succeed again by themselves.
    disk.resize("64m");
    let freed = std::time::Instant::now();
    let more = eventually("appends after space returned", || async {
        let (s, v) = node
            .post("/v1/events", &comments(500_000, 100, USERS))
            .await;
        (s == 202).then_some(v)
    })
    .await;
    accepted.extend(
        more["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_string()),
    );
    eprintln!(
        "first 202 {} ms after space returned",
        freed.elapsed().as_millis()
    );
    eventually("ready again", || async {
        let (s, _) = node.get("/readyz").await;
        (s == 200).then_some(())
    })
    .await;
    eprintln!(
        "/readyz 200 {} ms after space returned",
        freed.elapsed().as_millis()
    );
    // Every event answered 202 is delivered, once, under one id.
    let want: BTreeSet<String> = accepted.iter().cloned().collect();
    assert_eq!(
        want.len(),
        accepted.len(),
        "an event id was handed out twice"
    );
    let got = eventually("every accepted event in an inbox", || async {
        let d = delivered(&node, 1..=USERS).await;
        want.iter().all(|e| d.contains_key(e)).then_some(d)
    })
    .await;
    for (e, ids) in &got {
        assert_eq!(ids.len(), 1, "event {e} delivered as {ids:?}");
        assert!(want.contains(e), "delivered {e}, which was never accepted");
    }
    // After a crash, no offset is handed out again.
    node.kill9();
    node.restart();
    let top: BTreeMap<u32, u64> =
        accepted
            .iter()
            .map(|i| parse_id(i))
            .fold(BTreeMap::new(), |mut m, (p, o)| {
                let e = m.entry(p).or_insert(o);
                *e = (*e).max(o);
                m
            });
    let (s, v) = node.post("/v1/events", &comments(900_000, 50, USERS)).await;
    assert_eq!(s, 202, "{v}");
    for id in v["ids"].as_array().expect("ids") {
        let (p, o) = parse_id(id.as_str().unwrap_or_default());
        if let Some(&t) = top.get(&p) {
            assert!(o > t, "offset {p}/{o} reused (accepted up to {t})");
        }
    }
}

/// (start, end) of each batch in a segment file.
fn batches(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize + 4;
        out.push((pos, pos + len));
        pos += len;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_batch_mid_segment_is_quarantined_and_the_rest_delivered() {
    let redis = Redis::start();
    let mut node = Node::start(&redis, &[("HERALD_REDIS__TIMEOUT_MS", "500")]);
    const USER: u64 = 77;
    // Fan-out cannot reach Redis while the events are written, so nothing
    // is consumed before the corruption.
    redis.pause();
    let mut accepted = Vec::new();
    for b in 0..30u64 {
        let events: Vec<Value> = (0..20)
            .map(|i| json!({"kind": "comment", "actor": 10_000 + b * 20 + i, "recipient": USER}))
            .collect();
        let (s, v) = node.post("/v1/events", &json!({"events": events})).await;
        assert_eq!(s, 202, "{v}");
        let ids: Vec<String> = v["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_string())
            .collect();
        accepted.push(ids);
    }
    node.kill9();
    let (p, base) = parse_id(&accepted[0][0]);
    let seg = node.node_dir.join(format!("log/p-{p:05}/{base:020}.log"));
    let mut bytes = std::fs::read(&seg).expect("segment");
    let layout = batches(&bytes);
    assert_eq!(layout.len(), 30, "one batch per request");
    let (from, to) = layout[12];
    bytes[(from + to) / 2] ^= 0x40;
    std::fs::write(&seg, &bytes).expect("corrupt");
    redis.resume();
    node.restart();
    // Everything but the corrupt batch is delivered.
    let lost: BTreeSet<String> = accepted[12].iter().cloned().collect();
    let want: BTreeSet<String> = accepted
        .iter()
        .flatten()
        .filter(|i| !lost.contains(*i))
        .cloned()
        .collect();
    eventually("every valid event delivered", || async {
        let d = delivered(&node, [USER].into_iter()).await;
        want.iter().all(|e| d.contains_key(e)).then_some(())
    })
    .await;
    // The quarantine names the file, the byte range and the offsets.
    let (s, v) = node.get("/v1/admin/log/quarantine").await;
    assert_eq!(s, 200, "{v}");
    let q = v["quarantine"].as_array().expect("quarantine");
    assert_eq!(q.len(), 1, "{v}");
    assert_eq!(q[0]["byte_from"], from as u64, "{v}");
    assert_eq!(q[0]["byte_to"], to as u64, "{v}");
    let (_, first) = parse_id(&accepted[12][0]);
    assert_eq!(q[0]["offset_from"], first, "{v}");
    assert_eq!(q[0]["offset_to"], first + 20, "{v}");
    assert!(q[0]["segment"]
        .as_str()
        .unwrap_or_default()
        .ends_with(".log"));
    // Shown in /readyz until an operator acknowledges it.
    let (s, v) = node.get("/readyz").await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["checks"]["quarantine"], "ok", "{v}");
    let (s, v) = node.post("/v1/admin/log/quarantine/ack", &json!({})).await;
    assert_eq!((s, &v["acknowledged"]), (200, &json!(1)), "{v}");
    let (_, v) = node.get("/readyz").await;
    assert_eq!(v["checks"]["quarantine"], "ok", "{v}");
    // New events never reuse an offset.
    let (_, last) = parse_id(&accepted[29][19]);
    let id = node.like(5, USER, "post:1").await;
    let (np, no) = parse_id(&id);
    assert_eq!(np, p);
    assert!(no > last, "offset {no} reused (the log held up to {last})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_position_past_the_end_is_reconciled() {
    let redis = Redis::start();
    let mut node = Node::start(&redis, &[]);
    let id = node.like(1, 42, "post:a").await;
    let (p, _) = parse_id(&id);
    eventually("first event delivered", || async {
        (!inbox(&node, 42).await.is_empty()).then_some(())
    })
    .await;
    assert!(node.stop(), "clean stop");
    // A checkpoint far past the end (say the log was restored from an
    // older copy): offset and CRC32C, as the log writes them.
    let mut b = Vec::new();
    b.extend_from_slice(&1_000_000u64.to_le_bytes());
    b.extend_from_slice(&crc32c::crc32c(&1_000_000u64.to_le_bytes()).to_le_bytes());
    std::fs::write(node.node_dir.join(format!("log/checkpoints/fanout.{p}")), b)
        .expect("checkpoint");
    node.restart();
    let id2 = node.like(2, 42, "post:b").await;
    assert_eq!(parse_id(&id2).0, p);
    eventually("the next event delivered", || async {
        let d = delivered(&node, [42].into_iter()).await;
        d.contains_key(&id2).then_some(())
    })
    .await;
    let (s, v) = node.get("/readyz").await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_while_clients_connect_and_disconnect_heals_without_reconnects() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_REDIS__TIMEOUT_MS", "500")]);
    // A waits offline with three notifications in its inbox.
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(node.like(100 + i, 1, &format!("post:{i}")).await);
    }
    eventually("inbox filled", || async {
        (inbox(&node, 1).await.len() == 3).then_some(())
    })
    .await;
    // B is online and has two live notifications it has not acked.
    let mut b = Client::connect(&node, 2).await;
    node.like(200, 2, "post:x").await;
    node.like(201, 2, "post:y").await;
    let live = b.notifications(2).await;
    redis.pause();
    // A connects during the outage: hello says 0, nothing drained yet.
    let mut a = Client::connect(&node, 1).await;
    assert_eq!(a.hello["pending"], 0, "{}", a.hello);
    // B leaves during the outage, its two notifications unacked.
    b.close().await;
    support::eventually("the node saw B leave", || async {
        (support::metric(&node, "herald_connections").await == Some(1.0)).then_some(())
    })
    .await;
    redis.resume();
    let resumed = std::time::Instant::now();
    // A gets its inbox without reconnecting.
    let got = a.notifications(3).await;
    eprintln!(
        "inbox drained {} ms after Redis returned",
        resumed.elapsed().as_millis()
    );
    let got: BTreeSet<String> = got
        .iter()
        .map(|n| n["event_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(got, waiting.iter().cloned().collect::<BTreeSet<_>>());
    // B's unacked notifications reach its inbox, and their records settle.
    let want: BTreeSet<String> = live
        .iter()
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .collect();
    eventually("B's notifications in its inbox", || async {
        let ids: BTreeSet<String> = inbox(&node, 2)
            .await
            .iter()
            .map(|n| n["id"].as_str().unwrap_or_default().to_string())
            .collect();
        (ids == want).then_some(())
    })
    .await;
    eprintln!(
        "closed connection's unacked notifications in the inbox {} ms after Redis returned",
        resumed.elapsed().as_millis()
    );
    eventually("every record settled", || async {
        let (_, m) = node.get("/metrics").await;
        let text = m.as_str().unwrap_or_default().to_string();
        let busy = text
            .lines()
            .filter(|l| l.starts_with("herald_fanout_in_flight_records"))
            .any(|l| !l.trim_end().ends_with(" 0"));
        (text.contains("herald_fanout_in_flight_records") && !busy).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_fails_every_time_becomes_a_dead_letter_and_replays() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_FANOUT__RETRY_BACKOFF_MS", "10")]);
    const CELEB: u64 = 4242;
    // The follower set of CELEB is not a set: every read of it fails.
    let r = redis
        .cmd(&format!("SET h:{{u:{CELEB}}}:followers oops"))
        .unwrap_or_default();
    assert!(r.starts_with("+OK"), "{r}");
    // A comment to someone in the same partition, in the same request.
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"kind": "post", "actor": CELEB, "text": "hi"}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let post_id = v["ids"][0].as_str().unwrap_or_default().to_string();
    let (pp, _) = parse_id(&post_id);
    let mut mate = 0;
    for u in 1..200u64 {
        let id = node.like(9, u, "probe").await;
        if parse_id(&id).0 == pp {
            mate = u;
            break;
        }
    }
    assert!(mate > 0, "no user in partition {pp}");
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"events": [
                {"kind": "post", "actor": CELEB, "text": "again"},
                {"kind": "comment", "actor": 8, "recipient": mate, "text": "fine"}
            ]}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let second_post = v["ids"][0].as_str().unwrap_or_default().to_string();
    let comment = v["ids"][1].as_str().unwrap_or_default().to_string();
    // The good record of the batch is delivered despite the bad one.
    eventually("the comment delivered", || async {
        delivered(&node, [mate].into_iter())
            .await
            .contains_key(&comment)
            .then_some(())
    })
    .await;
    // Both posts are dead letters, with the reason and the event.
    let list = eventually("two dead letters", || async {
        let (s, v) = node.get("/v1/admin/dead-letters?limit=10").await;
        assert_eq!(s, 200, "{v}");
        let l = v["dead_letters"].as_array().cloned().unwrap_or_default();
        (l.len() == 2).then_some(l)
    })
    .await;
    for (d, id) in list.iter().zip([&post_id, &second_post]) {
        let (p, o) = parse_id(id);
        assert_eq!(
            (d["partition"].as_u64(), d["offset"].as_u64()),
            (Some(p as u64), Some(o)),
            "{d}"
        );
        assert!(
            d["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("WRONGTYPE"),
            "{d}"
        );
        assert_eq!(d["event"]["kind"], "post", "{d}");
    }
    let (_, m) = node.get("/metrics").await;
    assert!(
        m.as_str()
            .unwrap_or_default()
            .contains("herald_dead_letters_total"),
        "metric missing"
    );
    // The operator fixes the data and replays: the followers hear the post,
    // under its first id.
    redis.cmd(&format!("DEL h:{{u:{CELEB}}}:followers"));
    redis.cmd(&format!("SADD h:{{u:{CELEB}}}:followers 31"));
    // The command line an operator uses: list, then replay.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("--config")
            .arg(support::config_path())
            .args(["dead-letters"])
            .args(args)
            .args(["--url", &format!("http://{}", node.addr)])
            .output()
            .expect("herald dead-letters");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let listed = cli(&["list"]);
    let (p, o) = parse_id(&post_id);
    assert!(listed.contains(&format!("dl-{p}-{o}")), "{listed}");
    assert!(listed.contains("WRONGTYPE"), "{listed}");
    let replayed = cli(&["replay", "--all"]);
    assert_eq!(replayed.trim(), "replayed 2");
    eventually("replayed posts delivered under their first ids", || async {
        let d = delivered(&node, [31].into_iter()).await;
        (d.contains_key(&post_id) && d.contains_key(&second_post)).then_some(())
    })
    .await;
    let (_, v) = node.get("/v1/admin/dead-letters").await;
    assert_eq!(v["dead_letters"].as_array().map(Vec::len), Some(0), "{v}");
    // Ids that are not found, or not ids at all, fail instead of
    // "replayed 0".
    let refused = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["dead-letters", "replay"])
            .args(args)
            .args(["--url", &format!("http://{}", node.addr)])
            .arg("--config")
            .arg(support::config_path())
            .output()
            .expect("herald dead-letters");
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = refused(&[&format!("dl-{p}-{o}")]);
    assert!(err.contains("not found"), "{err}");
    let err = refused(&["order-7"]);
    assert!(err.contains("not dead-letter ids"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_scoped_to_the_producer() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[("HERALD_GATEWAY__API_KEYS", r#"["key-one", "key-two"]"#)],
    );
    let post = |key: &'static str, id: &'static str, text: &'static str| {
        let body = json!({"id": id, "kind": "comment", "actor": 3, "recipient": 50, "text": text})
            .to_string()
            .into_bytes();
        let node = &node;
        async move {
            let auth = format!("Bearer {key}");
            let (s, v) = node
                .request(
                    "POST",
                    "/v1/events",
                    Some(body),
                    &[
                        ("content-type", "application/json"),
                        ("authorization", &auth),
                    ],
                )
                .await;
            assert_eq!(s, 202, "{v}");
        }
    };
    post("key-one", "order-7", "first").await;
    post("key-two", "order-7", "other producer, same id").await;
    post("key-one", "order-7", "retry of the first").await;
    // After the retry in the same partition's log: once it is in the
    // inbox, the retry has been decided.
    post("key-one", "order-8", "sentinel").await;
    let read = || async {
        let (s, v) = node
            .request(
                "GET",
                "/v1/users/50/inbox?limit=100",
                None,
                &[("authorization", "Bearer key-one")],
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let mut texts: Vec<String> = v["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|n| n["text"].as_str().unwrap_or_default().to_string())
            .collect();
        texts.sort();
        texts
    };
    eventually("the sentinel in the inbox", || async {
        read().await.contains(&"sentinel".to_string()).then_some(())
    })
    .await;
    assert_eq!(
        read().await,
        vec!["first", "other producer, same id", "sentinel"]
    );
}
