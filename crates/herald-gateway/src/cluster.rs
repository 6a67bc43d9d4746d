//! `GET /v1/admin/cluster`: who leads each partition, in which term, with
//! which replicas in sync, and how far it is committed.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use herald_types::Owner;
use serde_json::{json, Value};

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
