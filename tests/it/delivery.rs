//! Delivery as a user sees it: live pushes, the inbox, acks, redelivery,
//! the follow graph, de-duplication and bad frames.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::{eventually, inbox_ids, Client, Node, Redis};
use tokio_tungstenite::tungstenite::Message;

/// Sends a like to `user` and waits until it is the next notification: proves
/// nothing else was pending before it.
async fn sentinel(node: &Node, c: &mut Client, object: &str) {
    node.like(999_999, c.user, object).await;
    let n = c.notification().await;
    assert_eq!(n["object"], object, "expected the sentinel, got {n}");
    let id = n["id"].as_str().unwrap().to_string();
    c.ack(&[&id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_like_reaches_the_online_recipient_with_the_contract_fields() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let mut bob = Client::connect(&node, 2).await;
    assert_eq!(bob.hello["pending"], 0);
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"kind": "like", "actor": "1", "recipient": 2, "object": "post:7", "text": "Ana liked your post", "ts_ms": 5}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["accepted"], 1);
    let event_id = v["ids"][0].as_str().unwrap();
    let n = bob.notification().await;
    assert_eq!(n["type"], "notification");
    assert!(n["id"].as_str().unwrap().starts_with("n-"));
    assert_eq!(n["event_id"], event_id);
    assert_eq!(n["kind"], "like");
    assert_eq!(n["actor"], 1);
    assert_eq!(n["object"], "post:7");
    assert_eq!(n["text"], "Ana liked your post");
    assert_eq!(n["count"], 1);
    assert_eq!(n["actors"], json!([1]));
    assert!(n["ts_ms"].as_u64().unwrap() > 1_700_000_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_notifications_wait_in_order_and_leave_only_when_acked() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let user = 3;
    let mut sent = Vec::new();
    for i in 0..5 {
        let (s, v) = node
            .post("/v1/events", &json!({"kind": "comment", "actor": 10 + i, "recipient": user, "object": format!("post:{i}")}))
            .await;
        assert_eq!(s, 202, "{v}");
        sent.push(v["ids"][0].as_str().unwrap().to_string());
    }
    support::eventually("inbox filled", || async {
        (inbox_ids(&node, user).await.len() == 5).then_some(())
    })
    .await;

    // First connect: all five, oldest first; no ack.
    let mut c = Client::connect(&node, user).await;
    assert_eq!(c.hello["pending"], 5);
    let first = c.notifications(5).await;
    let events: Vec<&str> = first
        .iter()
        .map(|n| n["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(events, sent.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    c.close().await;

    // Second connect: the same five again, same ids; ack three.
    let mut c = Client::connect(&node, user).await;
    let again = c.notifications(5).await;
    let ids: Vec<String> = again
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    let first_ids: Vec<String> = first
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, first_ids);
    c.ack(&[&ids[0], &ids[1], &ids[2]]).await;
    support::eventually("acked entries removed", || async {
        (inbox_ids(&node, user).await == ids[3..].to_vec()).then_some(())
    })
    .await;
    c.close().await;

    // Third connect: only the two unacked.
    let mut c = Client::connect(&node, user).await;
    assert_eq!(c.hello["pending"], 2);
    let rest = c.notifications(2).await;
    assert_eq!(rest[0]["id"], ids[3].as_str());
    assert_eq!(rest[1]["id"], ids[4].as_str());
    c.ack(&[&ids[3], &ids[4]]).await;
    sentinel(&node, &mut c, "post:sentinel").await;
    assert!(inbox_ids(&node, user).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_notification_not_acked_comes_again_on_reconnect() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let mut c = Client::connect(&node, 4).await;
    node.like(1, 4, "post:1").await;
    let n = c.notification().await;
    c.close().await;
    let mut c = Client::connect(&node, 4).await;
    assert_eq!(c.hello["pending"], 1);
    let again = c.notification().await;
    assert_eq!(again["id"], n["id"]);
    c.ack(&[again["id"].as_str().unwrap()]).await;
    sentinel(&node, &mut c, "post:s").await;
    c.close().await;
    let c = Client::connect(&node, 4).await;
    assert_eq!(c.hello["pending"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_post_unfollow_and_nobody_hears_their_own_action() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let (fan, star) = (10u64, 20u64);
    let mut f = Client::connect(&node, fan).await;
    let mut s = Client::connect(&node, star).await;

    let (st, v) = node
        .post(
            "/v1/events",
            &json!({"kind": "follow", "actor": fan, "recipient": star}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let n = s.notification().await;
    assert_eq!(
        (n["kind"].as_str(), n["actor"].as_u64()),
        (Some("follow"), Some(fan))
    );

    let (st, _) = node
        .post(
            "/v1/events",
            &json!({"kind": "post", "actor": star, "object": "post:1", "text": "hello"}),
        )
        .await;
    assert_eq!(st, 202);
    let n = f.notification().await;
    assert_eq!(
        (n["kind"].as_str(), n["object"].as_str()),
        (Some("post"), Some("post:1"))
    );
    let (_, count) = node.get(&format!("/v1/users/{star}/followers/count")).await;
    assert_eq!(count["followers"], 1);

    // The poster is not told of their own post; self-likes are silent too.
    node.like(star, star, "post:1").await;
    sentinel(&node, &mut s, "post:after-own").await;

    let (st, _) = node
        .post(
            "/v1/events",
            &json!({"kind": "unfollow", "actor": fan, "recipient": star}),
        )
        .await;
    assert_eq!(st, 202);
    node.post(
        "/v1/events",
        &json!({"kind": "post", "actor": star, "object": "post:2"}),
    )
    .await;
    // Events of one actor are in order on one partition, but the sentinel
    // may sit elsewhere: wait for the follower count first.
    support::eventually("unfollow applied", || async {
        let (_, c) = node.get(&format!("/v1/users/{star}/followers/count")).await;
        (c["followers"] == 0).then_some(())
    })
    .await;
    // And the post after it fanned out (every record behind the durable
    // position), so the sentinel cannot overtake it. The durable position
    // moves with a checkpoint write (an fsync), which a disk busy with the
    // rest of the suite can hold up for seconds (CI once took over 10 s):
    // a longer deadline on the same condition.
    support::eventually_within(
        "every record processed",
        std::time::Duration::from_secs(60),
        || async {
            (support::metric(&node, "herald_fanout_lag_records").await == Some(0.0)).then_some(())
        },
    )
    .await;
    sentinel(&node, &mut f, "post:after-unfollow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_id_twice_yields_one_notification() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let mut c = Client::connect(&node, 5).await;
    let ev =
        json!({"id": "retry-me-1", "kind": "like", "actor": 1, "recipient": 5, "object": "post:9"});
    let (a, _) = node.post("/v1/events", &ev).await;
    let (b, _) = node.post("/v1/events", &ev).await;
    assert_eq!((a, b), (202, 202));
    let n = c.notification().await;
    assert_eq!(n["object"], "post:9");
    c.ack(&[n["id"].as_str().unwrap()]).await;
    sentinel(&node, &mut c, "post:sentinel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_and_comments_reach_everyone_named_once() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let mut a = Client::connect(&node, 31).await;
    let mut b = Client::connect(&node, 32).await;
    let (s, v) = node
        .post("/v1/events", &json!({"kind": "comment", "actor": 30, "recipient": 31, "mentions": [32, 31, 30], "object": "post:3"}))
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(a.notification().await["kind"], "comment");
    assert_eq!(b.notification().await["kind"], "comment");
    sentinel(&node, &mut a, "post:s1").await;
    let (s, _) = node
        .post(
            "/v1/events",
            &json!({"kind": "mention", "actor": 30, "mentions": ["32"]}),
        )
        .await;
    assert_eq!(s, 202);
    assert_eq!(b.notification().await["kind"], "mention");
    sentinel(&node, &mut b, "post:s2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_clients_and_bodies_work_like_json() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let mut c = Client::connect_with(&node, 6, Some("herald.msgpack")).await;
    let body = rmp_serde::to_vec_named(
        &json!({"events": [{"kind": "like", "actor": 1, "recipient": 6, "object": "post:mp"}]}),
    )
    .unwrap();
    let (s, v) = node
        .request(
            "POST",
            "/v1/events",
            Some(body),
            &[("content-type", "application/msgpack")],
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let n = c.notification().await;
    assert_eq!(n["object"], "post:mp");
    // Acks may come as MessagePack too.
    let ack = rmp_serde::to_vec_named(&json!({"type": "ack", "ids": [n["id"]]})).unwrap();
    c.send_raw(Message::Binary(ack.into())).await;
    support::eventually("ack applied", || async {
        let c2 = inbox_ids(&node, 6).await;
        c2.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_an_error_and_harm_nobody() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let mut bad = Client::connect(&node, 7).await;
    let mut good = Client::connect(&node, 8).await;
    for m in [
        Message::text("{not json"),
        Message::text(r#"{"type":"launch"}"#),
        Message::text(r#"{"type":"ack","ids":[1,2]}"#),
        Message::Binary(vec![0xc1, 0xff, 0x00].into()),
    ] {
        bad.send_raw(m).await;
        let e = bad.next().await.expect("an error frame");
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], "bad_frame");
    }
    // Both connections still work.
    sentinel(&node, &mut bad, "post:bad-still-ok").await;
    sentinel(&node, &mut good, "post:good-ok").await;
    // A frame over the size limit closes only that connection.
    bad.send_raw(Message::text("x".repeat(200_000))).await;
    assert!(
        bad.next().await.is_none(),
        "oversized frame should close the connection"
    );
    sentinel(&node, &mut good, "post:good-still-ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_auth_is_required_without_dev_mode() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_WEBSOCKET__DEV_MODE", "false"),
            ("HERALD_WEBSOCKET__JWT_SECRET", SECRET),
            (
                "HERALD_GATEWAY__API_KEYS",
                "[\"ingest-key-0123456789abcdef\"]",
            ),
        ],
    );
    // ?user= is refused outside dev mode.
    support::assert_ws_unauthorized(&node.ws_url(1)).await;
    let token = herald_edge_token(9, SECRET);
    let url = format!("ws://{}/v1/ws?token={token}", node.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("jwt connect");
    use futures_util::StreamExt;
    let hello = ws.next().await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert_eq!(v["user"], 9);
    let bad = format!(
        "ws://{}/v1/ws?token={}",
        node.addr,
        herald_edge_token(9, "wrong")
    );
    support::assert_ws_unauthorized(&bad).await;
}

const SECRET: &str = "a-test-secret-of-forty-characters-000000";

/// An HS256 JWT made independently of Herald's own code, valid an hour.
fn herald_edge_token(sub: u64, secret: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    let c = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":{sub},"exp":{exp}}}"#));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{h}.{c}").as_bytes());
    format!(
        "{h}.{c}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// Every record settles once its notifications are acked, folded ones
/// included (the aggregator's holds end when its window closes): the
/// checkpoint catches up and nothing is delivered again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_and_folded_notifications_settle_every_record() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_AGGREGATION__WINDOW_MS", "500")]);
    let mut c = Client::connect(&node, 9).await;
    // Eight likes of one post fold (threshold 3); four of other posts do not.
    for a in 0..8 {
        node.like(100 + a, 9, "post:hot").await;
    }
    for a in 0..4 {
        node.like(200 + a, 9, &format!("post:{a}")).await;
    }
    // The first two hot likes go out alone, the aggregate then counts all
    // eight; the four others come alone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut counted = std::collections::HashMap::new();
    let done = |c: &std::collections::HashMap<String, u64>| {
        let agg = c
            .iter()
            .filter(|(k, _)| k.starts_with("n-agg-"))
            .map(|(_, v)| *v)
            .max();
        let singles = c.keys().filter(|k| !k.starts_with("n-agg-")).count();
        agg == Some(8) && singles == 6
    };
    while !done(&counted) && std::time::Instant::now() < deadline {
        let n = c.notification().await;
        let id = n["id"].as_str().unwrap_or_default().to_string();
        counted.insert(id.clone(), n["count"].as_u64().unwrap_or(1));
        c.ack(&[&id]).await;
    }
    assert!(done(&counted), "{counted:?}");
    eventually("every record settled", || async {
        support::all_settled(&node).await.then_some(())
    })
    .await;
}

/// An inbox that overflowed its cap tells the client on the next hello how
/// many were dropped; the count starts again after it was told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_says_how_many_the_inbox_cap_dropped() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_REDIS__INBOX_CAP", "5")]);
    for a in 0..8u64 {
        let (s, v) = node
            .post(
                "/v1/events",
                &json!({"kind": "comment", "actor": 100 + a, "recipient": 3, "text": format!("c{a}")}),
            )
            .await;
        assert_eq!(s, 202, "{v}");
    }
    // All eight written (the inbox reaches its cap after five, so its
    // length alone does not say the last three were processed).
    eventually("all eight queued, the inbox at its cap", || async {
        let (_, m) = node.get("/metrics").await;
        let text = m.as_str().unwrap_or_default().to_string();
        let queued = text
            .lines()
            .any(|l| l.trim_end() == "herald_notifications_total{route=\"queued\"} 8");
        (queued && inbox_ids(&node, 3).await.len() == 5).then_some(())
    })
    .await;
    let c = Client::connect(&node, 3).await;
    assert_eq!(c.hello["pending"], 5, "{}", c.hello);
    assert_eq!(c.hello["dropped"], 3, "{}", c.hello);
    c.close().await;
    let c = Client::connect(&node, 3).await;
    assert!(c.hello.get("dropped").is_none(), "told twice: {}", c.hello);
}

/// Frames the server cannot take close the connection with the contract's
/// code, sent before the TCP close: 1009 for a frame over the size limit,
/// 1007 for a text frame that is not UTF-8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_invalid_frames_close_with_their_codes() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    async fn close_code(c: &mut Client) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, c.ws.next())
                .await
                .ok()??
            {
                Ok(Message::Close(Some(f))) => return Some(u16::from(f.code)),
                Ok(Message::Close(None)) => return None,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
    // 100,000 ids in one ack: far past the 64 KiB frame limit.
    let mut big = Client::connect(&node, 40).await;
    let ids: Vec<String> = (0..100_000).map(|i| format!("n-{i}")).collect();
    let ack = json!({"type": "ack", "ids": ids}).to_string();
    big.send_raw(Message::text(ack)).await;
    assert_eq!(close_code(&mut big).await, Some(1009));
    // A text frame of invalid UTF-8.
    let mut bad = Client::connect(&node, 41).await;
    let frame = Frame::message(vec![0xffu8, 0xfe, 0x80], OpCode::Data(Data::Text), true);
    bad.send_raw(Message::Frame(frame)).await;
    assert_eq!(close_code(&mut bad).await, Some(1007));
}

/// The handshake and the frame rules, spoken byte by byte over a plain TCP
/// socket (no WebSocket library on the client side): a request that is not
/// an upgrade gets 400; a client ping gets a pong with its payload; an
/// unmasked client frame closes the connection with 1002.
#[tokio::test]
async fn the_websocket_protocol_byte_by_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let redis = Redis::start();
    let node = Node::start(&redis, &[]);

    async fn read_some(s: &mut TcpStream, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while got.len() < want {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(_)) => break,
            }
        }
        got
    }
    /// Connects and upgrades; returns the socket after the 101's head.
    async fn upgraded(addr: &str, user: u32) -> (TcpStream, Vec<u8>) {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET /v1/ws?user={user} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("response in time")
                .expect("read");
            assert!(
                n > 0,
                "closed during the handshake: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.push(buf[0]);
        }
        (s, got)
    }
    /// Reads server frames until one with `opcode`; returns its payload.
    async fn frame_with(s: &mut TcpStream, opcode: u8) -> Option<Vec<u8>> {
        let mut pending = Vec::new();
        loop {
            // Parse what is buffered: final, unmasked, 7-bit or 16-bit length.
            while pending.len() >= 2 {
                let (op, len7) = (pending[0] & 0x0f, (pending[1] & 0x7f) as usize);
                assert_eq!(pending[1] & 0x80, 0, "server frames are unmasked");
                let (head, len) = match len7 {
                    126 if pending.len() >= 4 => {
                        (4, u16::from_be_bytes([pending[2], pending[3]]) as usize)
                    }
                    126 => break,
                    127 => panic!("no frame here is that long"),
                    n => (2, n),
                };
                if pending.len() < head + len {
                    break;
                }
                let payload = pending[head..head + len].to_vec();
                pending.drain(..head + len);
                if op == opcode {
                    return Some(payload);
                }
            }
            let more = read_some(s, pending.len() + 1).await;
            if more.is_empty() {
                return None;
            }
            pending.extend_from_slice(&more);
        }
    }

    // Not an upgrade: 400 in the API's error shape, not a hang.
    let mut s = TcpStream::connect(&node.addr).await.expect("connect");
    let req = format!(
        "GET /v1/ws?user=1 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        node.addr
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let head = String::from_utf8_lossy(&read_some(&mut s, 12).await).to_string();
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    // The RFC's sample key gets the RFC's accept value.
    let (mut s, head) = upgraded(&node.addr, 60).await;
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    // A masked ping with a payload: the pong carries it back.
    let payload = b"are you there";
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut ping = vec![0x89, 0x80 | payload.len() as u8];
    ping.extend_from_slice(&mask);
    ping.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&ping).await.expect("ping");
    assert_eq!(
        frame_with(&mut s, 0xA).await.as_deref(),
        Some(&payload[..]),
        "pong"
    );
    // An unmasked text frame breaks RFC 6455: closed with 1002.
    s.write_all(&[0x81, 0x02, b'h', b'i']).await.expect("frame");
    let close = frame_with(&mut s, 0x8).await.expect("a close frame");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1002);
}
