//! Help text for every metric (Prometheus `# HELP`), and the process
//! metrics people expect beside them (CPU, memory, open files).

use herald_types::procfs;

/// Registers the description of every metric Herald records.
pub fn describe() {
    use metrics::{describe_counter as c, describe_gauge as g, describe_histogram as h, Unit};
    c!(
        "herald_webhook_parked_total",
        "Notifications parked for the webhook (they went to the inbox and the user's preferences allow it)."
    );
    c!(
        "herald_webhook_sent_total",
        "Notifications delivered to the webhook (their request answered 2xx)."
    );
    c!(
        "herald_webhook_retried_total",
        "Notifications whose request failed and will be sent again."
    );
    c!(
        "herald_webhook_requests_total",
        "Webhook requests, by outcome (ok: 2xx; failed: another status, no answer or a timeout)."
    );
    c!(
        "herald_webhook_dead_lettered_total",
        "Notifications given up after webhook.retry_for_s: dead letters (replayable)."
    );
    g!(
        "herald_webhook_backlog",
        "Notifications waiting for the webhook in the shards this node sends."
    );
    h!(
        "herald_webhook_request_seconds",
        Unit::Seconds,
        "Time for one webhook request to be answered (or to fail)."
    );
    h!(
        "herald_webhook_delivery_seconds",
        Unit::Seconds,
        "From a webhook request's first attempt to its 2xx."
    );
    c!(
        "herald_events_accepted_total",
        "Events answered 202 (durable in the log of their partition's owner)."
    );
    c!(
        "herald_gateway_rejected_total",
        "HTTP requests refused, by error code."
    );
    c!(
        "herald_http_refused_total",
        "Connections refused or limited at the front door, by reason (capacity, address_limit)."
    );
    g!(
        "herald_http_connections",
        "Open HTTP connections (WebSockets included)."
    );
    h!(
        "herald_log_append_seconds",
        Unit::Seconds,
        "Time for one log append request to become durable."
    );
    g!(
        "herald_log_quarantined_ranges",
        "Corrupt log ranges moved aside and not yet acknowledged by an operator."
    );
    c!(
        "herald_fanout_events_total",
        "Events processed by the fan-out workers."
    );
    c!(
        "herald_fanout_duplicates_total",
        "Events skipped because their idempotency key was already claimed."
    );
    c!(
        "herald_fanout_skipped_records_total",
        "Log records skipped by the fan-out workers."
    );
    c!(
        "herald_fanout_undecodable_total",
        "Log records that could not be decoded."
    );
    c!(
        "herald_fanout_read_errors_total",
        "Failed reads of the log by the fan-out workers."
    );
    c!(
        "herald_fanout_redis_errors_total",
        "Redis steps of the fan-out that failed (retried)."
    );
    c!(
        "herald_fanout_position_reset_total",
        "Consumer positions reset: found past the end of their partition, or set by --reset-position for an unreadable checkpoint."
    );
    g!(
        "herald_fanout_checkpoint_unusable",
        "1 while a partition's checkpoint was damaged or missing at start and no --reset-position says where it starts (its worker waits), by partition."
    );
    c!(
        "herald_fanout_checkpoint_errors_total",
        "Checkpoint writes that failed (retried every tick; /readyz fails meanwhile)."
    );
    c!(
        "herald_redis_reconnects_total",
        "Redis Cluster connections made anew after calls kept failing for 5 s."
    );
    g!(
        "herald_relay_nodes_alive",
        "Nodes this node sees alive (its own included), as of its last liveness read (cluster)."
    );
    c!(
        "herald_relay_liveness_lapsed_total",
        "Times this node found its own liveness had lapsed (frozen or cut off from Redis) and told every connection to drain (cluster)."
    );
    c!(
        "herald_fanout_reprocessed_total",
        "Records given up on (neither delivered nor stored) and processed again without a restart."
    );
    g!(
        "herald_fanout_in_flight_records",
        "Records handed on and not yet settled (acked or stored), by partition."
    );
    g!(
        "herald_fanout_lag_records",
        "Records between the durable (committed) consumer position and the end of the log, by partition."
    );
    c!(
        "herald_dead_letters_total",
        "Records kept as dead letters, by reason."
    );
    c!("herald_notifications_total", "Notifications by route: pushed live, queued to the inbox, moved on ack timeout or close, waiting in a bucket.");
    c!(
        "herald_notifications_delivered_total",
        "Notifications written to a WebSocket, by source (live, inbox)."
    );
    c!(
        "herald_notifications_dropped_total",
        "Notifications dropped, by reason (inbox_full)."
    );
    c!(
        "herald_notifications_rerouted_total",
        "Pushes sent to the inbox instead, by reason (slow_consumer)."
    );
    c!(
        "herald_notifications_folded_total",
        "Notifications folded into aggregates."
    );
    h!("herald_delivery_latency_seconds", Unit::Seconds, "From the event's acceptance by a gateway to its frame written to a WebSocket (live pushes and celebrity broadcasts).");
    c!(
        "herald_buckets_released_total",
        "Quiet-hour and digest buckets released, by bucket."
    );
    c!("herald_acks_total", "Ids acknowledged by clients.");
    g!("herald_connections", "Open WebSocket connections.");
    g!(
        "herald_celebrities",
        "Accounts on the celebrity (pull) path in this node's view (refreshed each second)."
    );
    c!("herald_feed_entries_total", "Feed entries by result: written, or failed (given up after repeated errors; the notification was still delivered).");
    c!("herald_ws_frames_sent_total", "WebSocket frames written.");
    c!(
        "herald_ws_closed_total",
        "WebSocket connections ended, by reason."
    );
    c!(
        "herald_ws_refused_total",
        "WebSocket upgrades refused, by reason."
    );
    c!(
        "herald_ws_bad_frames_total",
        "Client frames the server could not use."
    );
    c!(
        "herald_celebrity_posts_total",
        "Posts of celebrity accounts (pull path)."
    );
    c!(
        "herald_thread_posts_total",
        "Events on hot threads (more subscribers than celebrity.threshold: pull path)."
    );
    c!(
        "herald_celebrity_broadcasts_total",
        "Posts on the pull path (celebrities', hot threads') broadcast to this node's connected followers."
    );
    c!(
        "herald_celebrity_pushes_total",
        "Frames of posts on the pull path pushed to connected followers (or thread subscribers)."
    );
    h!(
        "herald_celebrity_broadcast_seconds",
        Unit::Seconds,
        "Time for one celebrity post to be written to every follower connected to this node."
    );
    c!(
        "herald_outbox_reads_total",
        "Celebrity outbox reads, by source (cache, redis)."
    );
    c!(
        "herald_inbox_acks_removed_total",
        "Inbox entries clients acked, taken out of the inbox by fan-out (marked delivered)."
    );
    c!(
        "herald_inbox_acks_dropped_total",
        "Ack frames of inbox entries fan-out's removal queue could not take (their entries are sent again)."
    );
    c!(
        "herald_ws_ack_removal_waits_timed_out_total",
        "Drains that stopped waiting for fan-out to remove the entries their client acked."
    );
    c!(
        "herald_later_writes_overflow_total",
        "Writes left by an edge that fan-out's writer could not take."
    );
    g!(
        "herald_partitions_owned",
        "Log partitions this node holds the lease of (cluster)."
    );
    c!(
        "herald_forwarded_events_total",
        "Events handed to the node that owns their partition (cluster)."
    );
    c!(
        "herald_proxied_requests_total",
        "HTTP requests an edge node passed to an ingest node (cluster)."
    );
    c!(
        "herald_relay_pushes_total",
        "Pushes handed to other nodes (cluster)."
    );
    c!(
        "herald_relay_answers_total",
        "Answers received from other nodes to this node's pushes, by outcome (cluster)."
    );
    c!(
        "herald_relay_unanswered_total",
        "Pushes to other nodes never answered (the node died, or listened again after its subscription broke), written to the inbox (cluster)."
    );
    c!(
        "herald_relay_answers_dropped_total",
        "Answers to other nodes that could not be queued (cluster)."
    );
    c!(
        "herald_relay_messages_skipped_total",
        "Messages from other nodes this version cannot read (a newer node's), skipped (cluster)."
    );
    c!(
        "herald_relay_broadcasts_dropped_total",
        "Broadcasts to other nodes that could not be queued (cluster)."
    );
    g!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of the process."
    );
    g!(
        "process_open_fds",
        "Open file descriptors (sockets included)."
    );
    g!("process_max_fds", "The open-file limit.");
    g!(
        "herald_build_info",
        "Always 1; its labels say which build runs (version)."
    );
    h!(
        "herald_http_request_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by route (the path template), method and status class (a WebSocket: until its upgrade)."
    );
    describe_cluster();
}

/// Help text for the metrics of replicated partitions, fan-out leadership
/// and the relay between nodes (cluster).
fn describe_cluster() {
    use metrics::{describe_counter as c, describe_gauge as g, describe_histogram as h, Unit};
    h!(
        "herald_raft_commit_seconds",
        Unit::Seconds,
        "Time from a batch's proposal to its commit by a majority of the partition's replicas (replicated partitions)."
    );
    c!(
        "herald_raft_not_enough_replicas_total",
        "Appends answered 503 not_enough_replicas: no majority of the partition's replicas had them within the wait."
    );
    g!(
        "herald_raft_leader",
        "1 when this node leads the partition (label partition), else 0."
    );
    g!(
        "herald_raft_term",
        "The partition's current Raft term as this replica sees it (label partition): the fencing token of its leader's effects."
    );
    c!(
        "herald_raft_leader_changes_total",
        "Times the partition's leader changed, as this replica saw it (label partition)."
    );
    g!(
        "herald_raft_replication_lag_entries",
        "Entries a follower is behind the leader (labels partition, follower; on the leader)."
    );
    g!(
        "herald_raft_under_replicated_partitions",
        "Partitions led here with a replica out of sync."
    );
    c!(
        "herald_raft_leadership_handovers_total",
        "Leaderships handed back to a partition's preferred replica (leadership spread over the nodes)."
    );
    c!(
        "herald_raft_membership_changes_total",
        "Replica set changes this node made as a leader (label step: learner_added, voters_changed)."
    );
    c!(
        "herald_raft_replicas_opened_total",
        "Replicas of a partition opened here because the node set placed one here."
    );
    c!(
        "herald_raft_replicas_closed_total",
        "Replicas of a partition closed here because the node set no longer places one here."
    );
    c!(
        "herald_raft_snapshots_built_total",
        "Snapshots built (where a replica's log starts, after retention removed older entries)."
    );
    c!(
        "herald_raft_snapshots_installed_total",
        "Snapshots installed from a leader: this replica's log continues from the leader's start."
    );
    c!(
        "herald_raft_entries_gone_total",
        "Reads of entries retention had already removed (a follower further behind than the log keeps; it stays out of sync)."
    );
    c!(
        "herald_raft_votes_withheld_total",
        "Votes refused while this replica was empty and being refilled from its leader."
    );
    c!(
        "herald_fanout_lead_starts_total",
        "Times this node started a partition's fan-out as its leader."
    );
    c!(
        "herald_fanout_fenced_total",
        "Effects refused in Redis because a newer leader holds the partition (label effect); this node stops its fan-out of it."
    );
    c!(
        "herald_fanout_position_fenced_total",
        "Fan-out positions not saved because a newer leader of the partition saved one."
    );
    c!(
        "herald_fanout_parked_total",
        "Notifications an edge refused (the user no longer connected there, or no answer in time), parked through the sinks (inbox, then webhook)."
    );
    c!(
        "herald_fanout_undeclared_kind_total",
        "Events of a kind not declared on this node: kept as dead letters (replayable once the kind is declared), not fanned out."
    );
    c!(
        "herald_relay_pokes_broadcast_total",
        "Parked-user announcements sent to every node because presence could not be read."
    );
    c!(
        "herald_relay_pokes_missed_total",
        "Parked-user announcements dropped because the queue overflowed (those users drain on their next connection)."
    );
    c!(
        "herald_relay_redis_failovers_total",
        "Redis Cluster configuration changes (failovers) seen by the relay; every connection drains its inbox after one."
    );
    c!(
        "herald_relay_resubscribed_total",
        "Times the relay subscribed again (after a failover, or its subscription went silent)."
    );
}

/// Counters present (at 0) from the start, so an alert on them works
/// before their first increment.
pub fn register_zeroes() {
    for name in [
        "herald_webhook_parked_total",
        "herald_webhook_sent_total",
        "herald_webhook_retried_total",
        "herald_webhook_dead_lettered_total",
        "herald_dead_letters_total",
        "herald_fanout_redis_errors_total",
        "herald_fanout_read_errors_total",
        "herald_fanout_position_reset_total",
        "herald_fanout_checkpoint_errors_total",
        "herald_fanout_reprocessed_total",
        "herald_fanout_skipped_records_total",
        "herald_inbox_acks_removed_total",
        "herald_inbox_acks_dropped_total",
        "herald_ws_ack_removal_waits_timed_out_total",
        "herald_later_writes_overflow_total",
        "herald_redis_reconnects_total",
        "herald_events_accepted_total",
        "herald_acks_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!("herald_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// The process's CPU time (user and system) in seconds, from `/proc`.
/// Rendered as a Prometheus counter by the `/metrics` handler (the metrics
/// crate's counters are integers).
pub fn cpu_seconds() -> Option<f64> {
    let ticks = procfs::cpu_ticks(procfs::Pid::This)?;
    Some(ticks as f64 / procfs::ticks_per_second())
}

/// Reads this process's memory and descriptors from `/proc`.
pub fn sample_process() {
    if let Some(kib) = procfs::rss_kib(procfs::Pid::This) {
        metrics::gauge!("process_resident_memory_bytes").set(kib as f64 * 1024.0);
    }
    if let Some(n) = procfs::open_fds(procfs::Pid::This) {
        metrics::gauge!("process_open_fds").set(n as f64);
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        metrics::gauge!("process_max_fds").set(lim.rlim_cur as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

    /// Collects the names given a description.
    #[derive(Default)]
    struct Described(Arc<Mutex<BTreeSet<String>>>);

    impl Described {
        fn add(&self, k: KeyName) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(k.as_str().to_string());
        }
    }

    impl metrics::Recorder for Described {
        fn describe_counter(&self, k: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(k)
        }
        fn describe_gauge(&self, k: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(k)
        }
        fn describe_histogram(&self, k: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(k)
        }
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// Names recorded with `counter!`, `gauge!` or `histogram!` and a
    /// literal name in the sources under `dir`.
    fn recorded(dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                recorded(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for mac in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(mac) {
                        let rest = text[at + mac.len()..].trim_start();
                        if let Some(name) = rest.strip_prefix('"') {
                            let name: String = name.chars().take_while(|c| *c != '"').collect();
                            if name.starts_with("herald_") {
                                out.insert(name);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_metric_herald_records_has_help_text() {
        let rec = Described::default();
        let names = rec.0.clone();
        metrics::with_local_recorder(&rec, super::describe);
        let described = names.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut used = BTreeSet::new();
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        recorded(&crates, &mut used);
        assert!(used.len() > 50, "the scan found too few metrics: {used:?}");
        let missing: Vec<&String> = used.difference(&described).collect();
        assert!(missing.is_empty(), "metrics without help text: {missing:?}");
    }
}
