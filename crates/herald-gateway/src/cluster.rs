//! `GET /v1/admin/cluster`: who leads each partition, in which term, with
//! which replicas in sync, and how far it is committed; and changes to the
//! node set of a replicated cluster (`POST /v1/admin/cluster/nodes`,
//! `DELETE /v1/admin/cluster/nodes/{name}`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use herald_store::NodeChange;
use herald_types::Owner;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::respond;
use crate::Gateway;

/// The cluster as this node sees it (replicated partitions: as each
/// partition's leader reports it).
#[utoipa::path(get, path = "/v1/admin/cluster", tag = "admin",
    responses((status = 200, description = "`{\"node\", \"nodes\": [{\"id\", \"addr\", \"role\", \"alive\"}], \"partitions\": [{\"partition\", \"leader\", \"term\", \"replicas\", \"in_sync\", \"committed\"}]}`"),
        (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody),
        (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn cluster(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let r = async {
        crate::http::authorize(&gw, &headers, crate::http::Scope::Admin)?;
        if let Some(r) = &gw.replicas {
            return Ok(serde_json::to_value(r.cluster_view().await).unwrap_or(Value::Null));
        }
        // One log per node: a partition's "leader" is the node that owns
        // it now; it has no copy (no term, one replica).
        let me = gw.store.node_id().to_string();
        let partitions: Vec<Value> = (0..gw.log.partitions())
            .map(|p| {
                let leader = match gw.placement.owner(p) {
                    Owner::Local => Some(me.clone()),
                    Owner::Remote { node, .. } => Some(node),
                    Owner::Unknown => None,
                };
                let committed = match gw.placement.owner(p) {
                    Owner::Local => gw.log.bounds(p).map(|b| b.1).unwrap_or(0),
                    _ => 0,
                };
                let replicas: Vec<String> = leader.iter().cloned().collect();
                json!({"partition": p, "leader": leader, "term": 0,
                       "replicas": replicas, "in_sync": replicas, "committed": committed})
            })
            .collect();
        Ok(json!({
            "node": me,
            "nodes": [{"id": me, "addr": "", "role": "ingest", "alive": true}],
            "partitions": partitions,
        }))
    }
    .await;
    respond(r)
}

/// Longest node name.
pub const MAX_NODE_NAME: usize = 64;

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NODE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(ApiError::field(
            "invalid_field",
            "name",
            format!("name must be 1 to {MAX_NODE_NAME} of A-Z a-z 0-9 . _ - (the node's server.node_id)"),
        )),
    }
}

fn check_addr(addr: &str) -> Result<(), ApiError> {
    let ok = addr.len() <= 255
        && addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    match ok {
        true => Ok(()),
        false => Err(ApiError::field(
            "invalid_field",
            "addr",
            "addr must be host:port (the node's HTTP listener, as the other nodes reach it)",
        )),
    }
}

fn store_down(e: herald_store::StoreError) -> ApiError {
    ApiError::store("cluster node set", e)
}

fn not_replicated() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_replicated",
        "this cluster does not replicate its partitions (log.replication_factor = 1): its nodes are not a node set",
    )
}

/// The node set after a change, applied to this node's replicas at once
/// (the other nodes read it within 2 s).
async fn answer(gw: &Gateway, changed: bool) -> Result<Value, ApiError> {
    let set = gw
        .store
        .node_set()
        .await
        .map_err(store_down)?
        .ok_or_else(not_replicated)?;
    if let Some(r) = &gw.replicas {
        let peers = set
            .nodes
            .iter()
            .map(|(name, addr)| herald_raft::PeerAddr {
                name: name.clone(),
                addr: addr.clone(),
            })
            .collect();
        if let Err(e) = r.set_nodes(set.epoch, peers) {
            tracing::warn!(error = %e, "the node set is not usable here");
        }
    }
    let nodes: Vec<Value> = set
        .nodes
        .iter()
        .map(|(id, addr)| json!({"id": id, "addr": addr}))
        .collect();
    Ok(json!({"epoch": set.epoch, "nodes": nodes, "changed": changed}))
}

/// Adds an ingest node to the cluster's node set: partitions' replicas
/// move onto it (each partition's leader adds it and fills it from its
/// log) while appends go on. Start the node first.
#[utoipa::path(post, path = "/v1/admin/cluster/nodes", tag = "admin",
    request_body(content = crate::schema::NodeBody),
    responses((status = 200, description = "The node set", body = crate::schema::NodeSetView),
        (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody),
        (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody),
        (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody),
        (status = 409, description = "`node_exists`: the name is taken at another address; `not_replicated`: no node set", body = crate::schema::ErrorBody),
        (status = 503, description = "Redis cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn add_node(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let r = async {
        crate::http::authorize(&gw, &headers, crate::http::Scope::Admin)?;
        if gw.replicas.is_none() {
            return Err(not_replicated());
        }
        let enc = crate::body::encoding(&headers)?;
        let bytes = crate::body::read_limited(&headers, body, 4096).await?;
        let v = crate::body::parse(&bytes, enc)?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::trim);
        let (Some(name), Some(addr)) = (field("name"), field("addr")) else {
            return Err(ApiError::malformed(
                "body must be {\"name\": \"node-4\", \"addr\": \"host:port\"}",
            ));
        };
        check_name(name)?;
        check_addr(addr)?;
        match gw.store.add_node(name, addr).await.map_err(store_down)? {
            NodeChange::Changed(epoch) => {
                tracing::info!(
                    node = name,
                    addr,
                    epoch,
                    "node added to the cluster's node set"
                );
                answer(&gw, true).await
            }
            NodeChange::Unchanged(_) => answer(&gw, false).await,
            NodeChange::NameTaken(at) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "node_exists",
                format!(
                    "{name} is in the node set at {at}; remove it first to give it another address"
                ),
            )),
            _ => Err(not_replicated()),
        }
    }
    .await;
    respond(r)
}

/// Removes an ingest node from the cluster's node set: its replicas move
/// to the others (each partition's leader adds the replacement, fills
/// it, then drops the node). Stop the node once it holds no replica
/// (`GET /v1/admin/cluster`).
#[utoipa::path(delete, path = "/v1/admin/cluster/nodes/{name}", tag = "admin",
    params(("name" = String, Path, description = "The node's server.node_id")),
    responses((status = 200, description = "The node set", body = crate::schema::NodeSetView),
        (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody),
        (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody),
        (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody),
        (status = 404, description = "`not_found`: no node of that name", body = crate::schema::ErrorBody),
        (status = 409, description = "`too_few_nodes`: fewer nodes than the replication factor would be left; `not_replicated`: no node set", body = crate::schema::ErrorBody),
        (status = 503, description = "Redis cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn remove_node(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let r = async {
        crate::http::authorize(&gw, &headers, crate::http::Scope::Admin)?;
        let Some(replicas) = &gw.replicas else {
            return Err(not_replicated());
        };
        check_name(&name)?;
        let factor = replicas.factor();
        match gw
            .store
            .remove_node(&name, factor)
            .await
            .map_err(store_down)?
        {
            NodeChange::Changed(epoch) => {
                tracing::info!(node = %name, epoch, "node removed from the cluster's node set");
                answer(&gw, true).await
            }
            NodeChange::Missing => Err(ApiError::not_found(format!(
                "no node named {name} in the node set"
            ))),
            NodeChange::TooFew(n) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_few_nodes",
                format!("the node set has {n} nodes; removing one would leave fewer than log.replication_factor = {factor}: add a node first"),
            )),
            _ => Err(not_replicated()),
        }
    }
    .await;
    respond(r)
}
