//! Appending accepted events: each to the log of the node that owns its
//! partition (this node's own log when it is alone, or owns it), and
//! `POST /v1/internal/append`, where another node's gateway hands over
//! the events of partitions this node owns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::future::join_all;
use herald_types::event::partition_for;
use herald_types::{ids, LogEvent, Owner};
use serde_json::json;

use crate::body::read_limited;
use crate::error::ApiError;
use crate::forward::{decode_parts, ForwardError, CLUSTER_KEY_HEADER};
use crate::http::reject;
use crate::Gateway;

/// Appends stamped events to their partitions; returns their event ids in
/// order, once durable (on this node, or on the owners they were handed
/// to). On one node this is one log request. A failure answered for a
/// batch spread over several owners may leave the parts that went through
/// accepted: resending with idempotency keys is safe.
pub(crate) async fn append(gw: &Gateway, events: &[LogEvent]) -> Result<Vec<String>, ApiError> {
    let partitions = gw.log.partitions();
    // Group by partition, remembering each event's place in its group.
    let mut groups: HashMap<u32, Vec<Bytes>> = HashMap::new();
    let mut place = Vec::with_capacity(events.len());
    // Every event's record in one buffer, each a slice of it: one
    // allocation per request instead of several per event. Nothing keeps
    // these slices past the request (the log copies them; a replicated
    // partition's in-memory tail keeps a copy of its own).
    let records = LogEvent::encode_all(events);
    for (e, r) in events.iter().zip(records) {
        let p = partition_for(e.partition_key(), partitions);
        let g = groups.entry(p).or_default();
        place.push((p, g.len()));
        g.push(r);
    }
    let mut pending: Vec<(u32, Vec<Bytes>)> = groups.into_iter().collect();
    let mut ids_of: HashMap<u32, Vec<String>> = HashMap::new();
    let deadline = Instant::now() + gw.cfg.owner_wait;
    loop {
        let mut local = Vec::new();
        let mut remote: HashMap<String, Vec<(u32, Vec<Bytes>)>> = HashMap::new();
        let mut later = Vec::new();
        for part in pending.drain(..) {
            match gw.placement.owner(part.0) {
                Owner::Local => local.push(part),
                Owner::Remote { addr, .. } if gw.forwarder.is_some() => {
                    remote.entry(addr).or_default().push(part)
                }
                _ => later.push(part),
            }
        }
        let local_done = async {
            if local.is_empty() {
                return Ok((Vec::new(), Vec::new()));
            }
            append_owned(gw, local).await
        };
        let remote_done = join_all(remote.into_iter().map(|(addr, parts)| async move {
            let r = match &gw.forwarder {
                Some(f) => f.append(&addr, &parts).await,
                None => Err(ForwardError::Retry("not in a cluster".into())),
            };
            (addr, parts, r)
        }));
        let (local_r, remote_r) = tokio::join!(local_done, remote_done);
        let (done, moved) = local_r?;
        for ((p, records), base) in done {
            let ids = (0..records.len() as u64)
                .map(|i| ids::event_id(&gw.cfg.id_scope, p, base + i))
                .collect();
            ids_of.insert(p, ids);
        }
        // Partitions whose leadership moved while they were proposed.
        later.extend(moved);
        for (addr, parts, r) in remote_r {
            match r {
                Ok(ids) => {
                    metrics::counter!("herald_forwarded_events_total").increment(ids.len() as u64);
                    let mut it = ids.into_iter();
                    for (p, records) in &parts {
                        ids_of.insert(*p, it.by_ref().take(records.len()).collect());
                    }
                }
                Err(ForwardError::Api(e)) => return Err(e),
                Err(ForwardError::Retry(why)) => {
                    tracing::debug!(node = %addr, why = %why, "forward to a partition owner failed; looking again");
                    later.extend(parts);
                }
            }
        }
        if later.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let ps: Vec<String> = later.iter().map(|(p, _)| p.to_string()).collect();
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "partition_unavailable",
                format!(
                    "no live node owns partition(s) {} right now; retry shortly",
                    ps.join(", ")
                ),
            );
            e.retry_after_s = Some(1);
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        pending = later;
    }
    Ok(place
        .into_iter()
        .map(|(p, i)| {
            ids_of
                .get(&p)
                .and_then(|v| v.get(i))
                .cloned()
                .unwrap_or_default()
        })
        .collect())
}

type Part = (u32, Vec<Bytes>);

/// Appends parts this node owns: to its log (one request), or through
/// their Raft groups when partitions are replicated (concurrently; a part
/// whose partition this node no longer leads comes back in the second
/// list, to be sent to the new leader). Each appended part with its
/// first offset.
async fn append_owned(
    gw: &Gateway,
    parts: Vec<Part>,
) -> Result<(Vec<(Part, u64)>, Vec<Part>), ApiError> {
    let Some(r) = &gw.replicas else {
        let bases = append_here(gw, &parts).await?;
        return Ok((parts.into_iter().zip(bases).collect(), Vec::new()));
    };
    let t = Instant::now();
    let results = join_all(parts.into_iter().map(|(p, records)| async move {
        let res = r.propose(p, records.clone()).await;
        ((p, records), res)
    }))
    .await;
    let mut done = Vec::new();
    let mut moved = Vec::new();
    let mut failure = None;
    for (part, res) in results {
        match res {
            Ok(base) => done.push((part, base)),
            Err(herald_raft::ReplicaError::NotLeader { .. }) => moved.push(part),
            Err(e) => {
                tracing::warn!(error = %e, "replicated append failed");
                failure.get_or_insert(e);
            }
        }
    }
    metrics::histogram!("herald_log_append_seconds").record(t.elapsed().as_secs_f64());
    if let Some(e) = failure {
        return Err(replica_error(&e));
    }
    Ok((done, moved))
}

/// What a producer hears when a replicated partition cannot take events.
fn replica_error(e: &herald_raft::ReplicaError) -> ApiError {
    use herald_raft::ReplicaError;
    let (code, retry) = match e {
        ReplicaError::NotEnoughReplicas { .. } => ("not_enough_replicas", 1),
        _ => ("storage_failed", 5),
    };
    let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string());
    err.retry_after_s = Some(retry);
    err
}

/// One request to this node's log; each part's first offset.
async fn append_here(gw: &Gateway, parts: &[(u32, Vec<Bytes>)]) -> Result<Vec<u64>, ApiError> {
    let t = Instant::now();
    let bases = gw.log.append_many(parts.to_vec()).await.map_err(|e| {
        if e.is_full() {
            tracing::debug!(error = %e, "log append refused: disk full");
        } else {
            tracing::error!(error = %e, "log append failed");
        }
        ApiError::from_log(&e)
    })?;
    metrics::histogram!("herald_log_append_seconds").record(t.elapsed().as_secs_f64());
    Ok(bases)
}

/// `POST /v1/internal/append`: events another node validated and stamped,
/// for partitions this node owns.
#[utoipa::path(post, path = "/v1/internal/append", tag = "cluster",
    description = "Between the nodes of a cluster only (binary framing, `x-herald-cluster-key`); refused otherwise.",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Appended: `{\"ids\": [...]}`, the event ids"),
        (status = 409, description = "`not_owner`: this node does not own a partition now", body = crate::schema::ErrorBody),
        (status = 401, description = "Missing or wrong cluster key", body = crate::schema::ErrorBody),
        (status = 404, description = "Not a cluster node", body = crate::schema::ErrorBody),
        (status = 503, description = "The log cannot take it", body = crate::schema::ErrorBody)),
    security(("cluster_key" = [])))]
pub(crate) async fn internal_append(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let Some(f) = &gw.forwarder else {
            return Err(ApiError::not_found("this node is not part of a cluster"));
        };
        if !f.key_matches(headers.get(CLUSTER_KEY_HEADER)) {
            return Err(ApiError::unauthorized());
        }
        // Validated events of one batch, plus framing.
        let limit = gw.cfg.max_body_bytes.saturating_mul(2);
        let bytes = read_limited(&headers, body, limit).await?;
        let parts = decode_parts(bytes).ok_or_else(|| ApiError::malformed("bad framing"))?;
        for (p, _) in &parts {
            if *p >= gw.log.partitions() || gw.placement.owner(*p) != Owner::Local {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_owner",
                    format!("this node does not own partition {p} now"),
                ));
            }
        }
        let (done, moved) = append_owned(&gw, parts).await?;
        if let Some((p, _)) = moved.first() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_owner",
                format!("this node does not lead partition {p} now"),
            ));
        }
        let ids: Vec<String> = done
            .iter()
            .flat_map(|((p, records), base)| (0..records.len() as u64).map(move |i| (*p, base + i)))
            .map(|(p, o)| ids::event_id(&gw.cfg.id_scope, p, o))
            .collect();
        Ok(ids)
    }
    .await;
    match r {
        Ok(ids) => (StatusCode::OK, Json(json!({ "ids": ids }))).into_response(),
        Err(e) => reject(e),
    }
}

/// `POST /v1/internal/raft/{partition}/{op}`: a Raft message of a
/// replicated partition from another replica (`append`, `vote`,
/// `snapshot`; MessagePack).
#[utoipa::path(post, path = "/v1/internal/raft/{partition}/{op}", tag = "cluster",
    description = "Between the replicas of a replicated partition only (MessagePack, `x-herald-cluster-key`); refused otherwise.",
    params(("partition" = u32, Path), ("op" = String, Path, description = "append, vote or snapshot")),
    request_body(content = Vec<u8>, content_type = "application/msgpack"),
    responses(
        (status = 200, description = "The Raft answer (MessagePack)"),
        (status = 400, description = "Not a Raft message of a partition this node replicates", body = crate::schema::ErrorBody),
        (status = 401, description = "Missing or wrong cluster key", body = crate::schema::ErrorBody),
        (status = 404, description = "This node replicates no partition", body = crate::schema::ErrorBody)),
    security(("cluster_key" = [])))]
pub(crate) async fn internal_raft(
    State(gw): State<Arc<Gateway>>,
    axum::extract::Path((partition, op)): axum::extract::Path<(u32, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let (Some(f), Some(replicas)) = (&gw.forwarder, &gw.replicas) else {
            return Err(ApiError::not_found("this node replicates no partition"));
        };
        if !f.key_matches(headers.get(CLUSTER_KEY_HEADER)) {
            return Err(ApiError::unauthorized());
        }
        // Entries of up to a few MB each, a replication step at a time.
        let bytes = read_limited(&headers, body, 64 << 20).await?;
        replicas
            .serve(partition, &op, &bytes)
            .await
            .map_err(ApiError::malformed)
    }
    .await;
    match r {
        Ok(answer) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/msgpack")],
            answer,
        )
            .into_response(),
        Err(e) => reject(e),
    }
}
