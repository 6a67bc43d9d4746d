//! The webhook for notifications nobody saw, against a real HTTP receiver
//! on loopback: signed requests the reference Standard Webhooks package
//! verifies, retries under the same `webhook-id` while the receiver is
//! down, dead letters after the retry budget (replayable), what was
//! pending at a crash sent after the restart, and preferences that turn
//! the webhook off or hold it in quiet hours.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use support::receiver::{Answer, Receiver};
use support::{eventually_within, Client, Node, Redis};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn env(r: &Receiver) -> Vec<(String, String)> {
    vec![
        ("HERALD_WEBHOOK__URL".into(), r.url()),
        ("HERALD_WEBHOOK__SECRET".into(), SECRET.into()),
        ("HERALD_WEBHOOK__BACKOFF_MS".into(), "100".into()),
        ("HERALD_WEBHOOK__BACKOFF_MAX_MS".into(), "1000".into()),
        ("HERALD_WEBHOOK__TIMEOUT_MS".into(), "2000".into()),
    ]
}

fn start(redis: &Redis, env: &[(String, String)]) -> Node {
    Node::start(redis, &support::env_refs(env))
}

/// Every (user, notification id) delivered so far, with the webhook-ids
/// that carried it.
fn delivered(r: &Receiver) -> BTreeMap<(u64, String), BTreeSet<String>> {
    let mut out: BTreeMap<(u64, String), BTreeSet<String>> = BTreeMap::new();
    for req in r.delivered() {
        for item in req.items() {
            out.entry(item).or_default().insert(req.id.clone());
        }
    }
    out
}

/// Waits until the receiver has had 2xx requests holding `n` distinct
/// notifications for `users`.
async fn wait_delivered(r: &Receiver, users: &[u64], n: usize, wait: Duration) {
    eventually_within(
        &format!("{n} notifications at the webhook"),
        wait,
        || async {
            let got = delivered(r)
                .keys()
                .filter(|(u, _)| users.contains(u))
                .count();
            (got >= n).then_some(())
        },
    )
    .await;
}

async fn comment(node: &Node, actor: u64, recipient: u64, object: &str) {
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"kind": "comment", "actor": actor, "recipient": recipient, "object": object, "text": "hi"}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_users_notifications_reach_the_webhook_signed_and_batched() {
    let redis = Redis::start();
    let receiver = Receiver::start(Answer::Ok).await;
    // One request open at a time, so what is parked while one is open
    // goes out together in the next.
    let mut env = env(&receiver);
    env.push(("HERALD_WEBHOOK__MAX_IN_FLIGHT".into(), "1".into()));
    let node = start(&redis, &env);
    // A connected user who acks: never sent to the webhook.
    let mut online = Client::connect(&node, 3).await;
    comment(&node, 9, 3, "post:seen").await;
    let seen = online.notification().await;
    online.ack(&[seen["id"].as_str().unwrap()]).await;
    online.close().await;
    // The first request is held open while the rest is parked.
    receiver.answer(Answer::Slow(Duration::from_secs(2)));
    comment(&node, 9, 10, "post:10").await;
    eventually_within("a first request", support::WAIT, || async {
        (receiver.arrived() > 0).then_some(())
    })
    .await;
    receiver.answer(Answer::Ok);
    // Offline users: every notification reaches the webhook.
    let events: Vec<_> = (11..60u64)
        .map(|u| json!({"kind": "comment", "actor": 9, "recipient": u, "object": format!("post:{u}"), "text": "hi", "data": {"url": format!("app://post/{u}")}}))
        .chain([json!({"kind": "comment", "actor": 9, "recipient": 3, "object": "post:unseen", "text": "hi"})])
        .collect();
    let (s, v) = node.post("/v1/events", &json!({ "events": events })).await;
    assert_eq!(s, 202, "{v}");
    let users: Vec<u64> = (10..60).chain([3]).collect();
    wait_delivered(&receiver, &users, 51, support::WAIT).await;
    let all = delivered(&receiver);
    assert!(
        !all.contains_key(&(3, seen["id"].as_str().unwrap().to_string())),
        "an acked notification went to the webhook"
    );
    for req in receiver.delivered() {
        assert_eq!(req.content_type, "application/json");
        assert!(req.id.starts_with("msg_"), "{}", req.id);
        assert!(
            req.verifies(SECRET, None),
            "the reference package refused request {}",
            req.id
        );
        // A tampered body does not verify.
        let mut tampered = req.body.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 0x01;
        assert!(!req.verifies(SECRET, Some(&tampered)));
        let v = req.json();
        assert_eq!(v["type"], "notifications");
        for item in v["items"].as_array().unwrap() {
            let n = &item["notification"];
            // The same object as the WebSocket frame.
            assert_eq!(n["type"], "notification", "{n}");
            assert_eq!(n["kind"], "comment");
            assert_eq!(n["actor"], 9);
            assert_eq!(n["text"], "hi");
            let object = n["object"].as_str().unwrap();
            assert!(object.starts_with("post:"));
            // The event's data, when it had some (the batch's, to 11..60).
            if object[5..].parse::<u64>().is_ok_and(|u| u >= 11) {
                assert_eq!(
                    n["data"]["url"],
                    format!("app://{}", object.replace(':', "/")),
                    "{n}"
                );
            }
        }
    }
    // Several notifications per request.
    assert!(
        receiver.delivered().len() < 51,
        "{} requests for 51 notifications",
        receiver.delivered().len()
    );
    // And they are in the inbox as before.
    let mut c = Client::connect(&node, 10).await;
    assert_eq!(c.notification().await["object"], "post:10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_30_s_gets_everything_after_with_duplicates_only_under_one_id() {
    let redis = Redis::start();
    let mut receiver = Receiver::start(Answer::Ok).await;
    let node = start(&redis, &env(&receiver));
    receiver.down();
    let users: Vec<u64> = (100..300).collect();
    for u in &users {
        comment(&node, 7, *u, "post:down").await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(receiver.requests().is_empty());
    receiver.up().await;
    wait_delivered(&receiver, &users, users.len(), Duration::from_secs(30)).await;
    for ((u, id), carriers) in delivered(&receiver) {
        assert_eq!(
            carriers.len(),
            1,
            "user {u}'s {id} came in requests {carriers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_forever_leaves_dead_letters_that_replay() {
    let redis = Redis::start();
    let receiver = Receiver::start(Answer::Status(500)).await;
    let mut e = env(&receiver);
    e.push(("HERALD_WEBHOOK__RETRY_FOR_S".into(), "2".into()));
    let node = start(&redis, &e);
    for u in [400, 401, 402] {
        comment(&node, 8, u, "post:dead").await;
    }
    let letters = eventually_within(
        "3 webhook dead letters",
        Duration::from_secs(20),
        || async {
            let (s, v) = node.get("/v1/admin/dead-letters?limit=100").await;
            assert_eq!(s, 200, "{v}");
            let hooks: Vec<serde_json::Value> = v["dead_letters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["webhook"].is_object())
                .cloned()
                .collect();
            (hooks.len() == 3).then_some(hooks)
        },
    )
    .await;
    for d in &letters {
        assert!(d["reason"].as_str().unwrap().contains("500"), "{d}");
        assert_eq!(d["webhook"]["notification"]["object"], "post:dead");
    }
    let attempts = receiver.requests().len();
    assert!(attempts >= 2, "given up after {attempts} attempt(s)");
    // Fixed, then replayed: they arrive.
    receiver.answer(Answer::Ok);
    let ids: Vec<&str> = letters.iter().map(|d| d["id"].as_str().unwrap()).collect();
    let (s, v) = node
        .post("/v1/admin/dead-letters/replay", &json!({ "ids": ids }))
        .await;
    assert_eq!((s, v["replayed"].as_u64()), (200, Some(3)), "{v}");
    wait_delivered(&receiver, &[400, 401, 402], 3, support::WAIT).await;
    let (_, v) = node.get("/v1/admin/dead-letters?limit=100").await;
    assert_eq!(v["total"], 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_pending_when_herald_is_killed_arrive_after_the_restart() {
    let redis = Redis::start();
    let receiver = Receiver::start(Answer::Status(503)).await;
    let mut node = start(&redis, &env(&receiver));
    let users: Vec<u64> = (500..540).collect();
    for u in &users {
        comment(&node, 6, *u, "post:crash").await;
    }
    // Every one was tried (so parked) and refused.
    eventually_within("the webhook tried", Duration::from_secs(20), || async {
        let tried: BTreeSet<u64> = receiver
            .requests()
            .iter()
            .flat_map(|r| r.items())
            .map(|(u, _)| u)
            .collect();
        (tried.len() == users.len()).then_some(())
    })
    .await;
    node.kill9();
    receiver.answer(Answer::Ok);
    node.restart();
    wait_delivered(&receiver, &users, users.len(), Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_turn_the_webhook_off_per_user_and_kind_and_quiet_hours_hold_it() {
    let redis = Redis::start();
    let receiver = Receiver::start(Answer::Ok).await;
    let node = start(&redis, &env(&receiver));
    support::put_prefs(&node, 600, &json!({"webhook": {"enabled": false}})).await;
    support::put_prefs(
        &node,
        601,
        &json!({"webhook": {"kinds": {"comment": false}}}),
    )
    .await;
    // Quiet from this minute to the next (UTC); leave at least 15 s of it.
    let now_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    while now_s() % 60 > 45 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let min = (now_s() / 60) % (24 * 60);
    let hhmm = |m: u64| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
    support::put_prefs(
        &node,
        602,
        &json!({"quiet_hours": {"start": hhmm(min), "end": hhmm(min + 1), "timezone": "UTC"}}),
    )
    .await;
    let quiet_ends = (now_s() / 60 + 1) * 60;
    for u in [600, 601, 602] {
        comment(&node, 5, u, "post:prefs").await;
    }
    // User 601 still gets likes by webhook; 603 (no preferences) gets all.
    node.like(5, 601, "post:liked").await;
    comment(&node, 5, 603, "post:prefs").await;
    wait_delivered(&receiver, &[601, 603], 2, support::WAIT).await;
    let users_now: BTreeSet<u64> = delivered(&receiver).keys().map(|(u, _)| *u).collect();
    assert!(
        now_s() < quiet_ends,
        "the machine was too slow to check inside the quiet minute"
    );
    assert!(!users_now.contains(&602), "sent during quiet hours");
    // After the quiet minute: 602's arrives; 600's and 601's comment never.
    wait_delivered(&receiver, &[602], 1, Duration::from_secs(90)).await;
    let all = delivered(&receiver);
    assert!(all.keys().all(|(u, _)| *u != 600), "{all:?}");
    let of_601: Vec<_> = receiver
        .delivered()
        .iter()
        .flat_map(|r| {
            r.json()["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["user"] == 601)
                .map(|i| i["notification"]["kind"].clone())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(of_601, vec![json!("like")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_can_go_out_by_webhook_instead_of_in_app() {
    const WINDOW_MS: u64 = 4000;
    let redis = Redis::start();
    let receiver = Receiver::start(Answer::Ok).await;
    let mut e = env(&receiver);
    e.push((
        "HERALD_DIGEST__WINDOW_OVERRIDE_MS".into(),
        WINDOW_MS.to_string(),
    ));
    let node = start(&redis, &e);
    support::put_prefs(
        &node,
        700,
        &json!({"kinds": {"like": "digest"}, "digest": {"channel": "webhook"}}),
    )
    .await;
    for a in 1..4 {
        node.like(a, 700, "post:digest").await;
    }
    let digest = eventually_within(
        "a digest at the webhook",
        Duration::from_secs(20),
        || async {
            receiver.delivered().iter().find_map(|r| {
                r.json()["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|i| i["user"] == 700)
                    .map(|i| i["notification"].clone())
            })
        },
    )
    .await;
    assert_eq!(digest["type"], "digest", "{digest}");
    assert_eq!(digest["items"][0]["count"], 3, "{digest}");
    // Not in-app: the inbox stays empty.
    assert!(support::inbox_ids(&node, 700).await.is_empty());
}
