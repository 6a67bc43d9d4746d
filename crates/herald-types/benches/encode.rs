//! What a 1,000-event batch costs to turn into log records and into the
//! copy a replicated partition keeps in memory:
//!
//! - per event: each event encoded into a `Vec` of its own (grown as it
//!   is written), made `Bytes`, then each record cloned (the Raft tail's
//!   copy, which promotes every record to a shared allocation);
//! - one buffer: every event encoded into one buffer and sliced, then the
//!   entry's records copied into one buffer of the tail's own.
//!
//! `cargo bench -p herald-types --bench encode` (prints ns per event, best
//! of 5 rounds of 200 batches each).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use herald_types::LogEvent;

const BATCH: usize = 1000;
const ROUNDS: usize = 200;

fn per_event(events: &[LogEvent]) -> usize {
    let records: Vec<Bytes> = events
        .iter()
        .map(|e| Bytes::from(rmp_serde::to_vec_named(e).unwrap_or_default()))
        .collect();
    let kept: Vec<Bytes> = records.to_vec();
    kept.len() + records.len()
}

fn one_buffer(events: &[LogEvent]) -> usize {
    let records = LogEvent::encode_all(events);
    let mut own = BytesMut::with_capacity(records.iter().map(|r| r.len()).sum());
    for r in &records {
        own.extend_from_slice(r);
    }
    let mut own = own.freeze();
    let kept: Vec<Bytes> = records.iter().map(|r| own.split_to(r.len())).collect();
    kept.len() + records.len()
}

fn best_ns_per_event(f: fn(&[LogEvent]) -> usize, events: &[LogEvent]) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0;
        for _ in 0..ROUNDS {
            n += std::hint::black_box(f(std::hint::black_box(events)));
        }
        assert_eq!(n, ROUNDS * BATCH * 2);
        best = best.min(t.elapsed().as_nanos() as f64 / (ROUNDS * BATCH) as f64);
    }
    best
}

fn main() {
    let events: Vec<LogEvent> = (0..BATCH as u64)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "kind": "like", "actor": 1000 + i, "recipient": 900_000 + i,
                "object": format!("post:{i}"), "accepted_us": 1_764_000_000_000_000i64
            }))
            .unwrap_or_else(|e| panic!("a sample event: {e}"))
        })
        .collect();
    println!(
        "per event:  {:.0} ns/event",
        best_ns_per_event(per_event, &events)
    );
    println!(
        "one buffer: {:.0} ns/event",
        best_ns_per_event(one_buffer, &events)
    );
}
