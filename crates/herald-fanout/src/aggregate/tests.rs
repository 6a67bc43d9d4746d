//! Folding, event-time windows and the throttle, without Redis.
use super::*;

fn like(actor: UserId, order: u64) -> Notification {
    Notification {
        id: format!("n-{order}").into(),
        event_id: format!("e-0-{order}").into(),
        kind: EventKind::Like,
        actor,
        object: Some("post:1".into()),
        text: None,
        ts_ms: order,
        count: 1,
        actors: vec![actor].into(),
        order,
        digest: None,
        data: None,
        trace: None,
        supersedes: None,
    }
}

#[test]
fn bursts_fold_into_one_growing_aggregate() {
    let mut a = Aggregator::new(AggregationConfig {
        rate_per_recipient: 0,
        ..AggregationConfig::default()
    });
    let t0 = Instant::now();
    let mut alone = 0;
    for i in 0..100u64 {
        if a.offer(9, like(100 + i, i + 1), Settle::None, t0).is_some() {
            alone += 1;
        }
    }
    assert_eq!(alone, 2, "threshold 3: two go out alone");
    let out: Vec<Notification> = a.due(t0, false).into_iter().filter_map(|e| e.n).collect();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].count, 100);
    // The newest actors lead; the singles it replaces in the feed are named.
    assert_eq!(out[0].actors[..], [199, 198, 197]);
    assert_eq!(out[0].actor, 199);
    assert_eq!(out[0].supersedes.as_ref().map(|s| s.len()), Some(2));
    let id = out[0].id.clone();
    // More within the window: the same id, a higher count.
    a.offer(9, like(500, 200), Settle::None, t0);
    assert!(a.due(t0, false).is_empty(), "flush interval not passed");
    let later = t0 + Duration::from_millis(600);
    let out: Vec<Notification> = a
        .due(later, false)
        .into_iter()
        .filter_map(|e| e.n)
        .collect();
    assert_eq!((&*out[0].id, out[0].count), (&*id, 101));
}

#[test]
fn the_aggregator_holds_folded_records_until_its_window_closes() {
    let mut a = Aggregator::new(AggregationConfig {
        rate_per_recipient: 0,
        ..AggregationConfig::default()
    });
    let t0 = Instant::now();
    let r = |o: u64| RecordRef {
        partition: 0,
        offset: o,
        attempt: 1,
    };
    let mut folded = Vec::new();
    for i in 0..5u64 {
        if a.offer(9, like(100 + i, i + 1), Settle::One(r(i)), t0)
            .is_none()
        {
            folded.push(r(i));
        }
    }
    assert_eq!(folded.len(), 3);
    let e = a.due(t0, false);
    assert_eq!(
        e[0].settle.refs(),
        &folded[..],
        "the emission names every folded record"
    );
    assert!(e[0].release.is_empty(), "the window is still open");
    let e = a.due(t0 + Duration::from_secs(11), false);
    assert_eq!(e.len(), 1);
    assert!(e[0].n.is_none(), "nothing new to send");
    assert_eq!(e[0].release, folded, "closing ends the aggregator's holds");
}

/// 40 likes on one post, one per second of event time: on time they
/// fold window by window; released at once (a backlog after an outage)
/// they must fold exactly the same, not into one big aggregate.
#[test]
fn a_backlog_folds_as_it_would_have_on_time() {
    let cfg = AggregationConfig {
        rate_per_recipient: 0,
        ..AggregationConfig::default()
    };
    let sec = 1_000_000u64;
    let run = |on_time: bool| {
        let mut a = Aggregator::new(cfg.clone());
        let t0 = Instant::now();
        let mut alone = 0;
        let mut aggregates: HashMap<String, u64> = HashMap::new();
        for i in 0..40u64 {
            let now = if on_time {
                t0 + Duration::from_secs(i)
            } else {
                t0
            };
            if a.offer(9, like(100 + i, i * sec + 1), Settle::None, now)
                .is_some()
            {
                alone += 1;
            }
            for n in a.due(now, false).into_iter().filter_map(|e| e.n) {
                aggregates.insert(n.id.to_string(), n.count);
            }
        }
        for n in a
            .due(t0 + Duration::from_secs(100), true)
            .into_iter()
            .filter_map(|e| e.n)
        {
            aggregates.insert(n.id.to_string(), n.count);
        }
        let mut counts: Vec<u64> = aggregates.into_values().collect();
        counts.sort();
        (alone, counts)
    };
    let on_time = run(true);
    assert_eq!(
        on_time,
        (8, vec![10, 10, 10, 10]),
        "two alone per 10 s window, then folded"
    );
    assert_eq!(run(false), on_time);
}

#[test]
fn the_throttle_counts_event_time() {
    let mut t = Throttle::new(10);
    // Ten per second pass at any release speed; the eleventh in the same
    // second of event time does not; a second later it does.
    for i in 0..10 {
        assert!(!t.exceeded(1, i));
    }
    assert!(t.exceeded(1, 10));
    assert!(!t.exceeded(1, 1_000_000));
    assert!(!t.exceeded(2, 10), "recipients are limited apart");
}
