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
