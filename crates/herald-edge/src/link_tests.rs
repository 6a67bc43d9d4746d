//! The link over real loopback sockets.
use super::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// A server-side link and a client reading it with tungstenite, over
/// real loopback sockets.
async fn pair() -> (
    Link,
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // A small receive window: unread frames back up soon.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let client = sock.connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        client,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    // The read half is not needed: the socket lives with the write half.
    let (_, write_half) = server.into_split();
    (Link::new(write_half, WireFormat::Json), ws)
}

/// Frames written while the reader does not read fill the socket, wait
/// in the backlog, and come out whole and in order once it reads;
/// nothing is written before the link opens.
#[tokio::test]
async fn frames_stay_whole_and_in_order_through_the_backlog() {
    let (link, mut ws) = pair().await;
    let m = EdgeMetrics::new();
    let frames: Vec<Bytes> = (0..20_000)
        .map(|i| {
            crate::wire::frame(
                crate::wire::OP_TEXT,
                format!("frame {i} {}", "x".repeat(i % 300)).as_bytes(),
            )
        })
        .collect();
    // Held until `open`: the first frame queued is not on the wire.
    link.send(&m, vec![frames[0].clone()]);
    assert!(!link.backlogged(), "held frames are not a backlog to write");
    {
        let mut o = link.lock();
        o.held = false;
        link.write_out(&mut o);
        link.after(&mut o);
    }
    for f in &frames[1..] {
        link.send(&m, vec![f.clone()]);
    }
    assert!(link.backlogged(), "20,000 frames unread must back up");
    let writer = async {
        loop {
            match link.flush() {
                Flushed::Done => return,
                Flushed::Broken => panic!("the link broke"),
                Flushed::Waiting => link.sock.writable().await.expect("writable"),
            }
        }
    };
    let reader = async {
        for i in 0..frames.len() {
            let want = format!("frame {i} {}", "x".repeat(i % 300));
            match ws.next().await {
                Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), want),
                other => panic!("frame {i}: {other:?}"),
            }
        }
    };
    tokio::join!(writer, reader);
    assert!(!link.backlogged());
}

/// Closing keeps the rest of a partly written frame, so that the close
/// frame after it is read as a close frame.
#[tokio::test]
async fn a_close_after_a_partial_write_is_still_a_close_frame() {
    let (link, mut ws) = pair().await;
    let m = EdgeMetrics::new();
    link.lock().held = false;
    let big = crate::wire::frame(crate::wire::OP_TEXT, "y".repeat(3 << 20).as_bytes());
    link.send(&m, vec![big]);
    let partial = link.lock().front_partial;
    assert!(partial, "a 3 MiB frame cannot be written at once");
    let _ = link.close();
    link.send(&m, vec![crate::wire::close(4000, "replaced")]);
    let writer = async {
        while link.flush() == Flushed::Waiting {
            link.sock.writable().await.expect("writable");
        }
    };
    let reader = async {
        let mut got = Vec::new();
        while let Some(Ok(msg)) = ws.next().await {
            let close = matches!(msg, Message::Close(_));
            got.push(msg);
            if close {
                break;
            }
        }
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    assert!(
        matches!(&got[0], Message::Text(t) if t.len() == 3 << 20),
        "the partly written frame completes"
    );
    assert!(
        matches!(&got[1], Message::Close(Some(f)) if u16::from(f.code) == 4000),
        "then the close frame: {:?}",
        got.get(1)
    );
}
