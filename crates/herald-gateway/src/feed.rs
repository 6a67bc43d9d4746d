//! The notification feed: a user's list of what they were sent, newest
//! first, with read state and the unread count: the entries stored for
//! them, merged with the posts of the celebrities they follow and the hot
//! threads they subscribe to (kept once, in their outboxes).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use herald_store::FeedCursor;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::body::{encoding, parse, read_limited};
use crate::error::ApiError;
use crate::http::{authorize_for, path_user, respond, Scope};
use crate::Gateway;

/// Most entries in one page.
pub const MAX_FEED_LIMIT: usize = 200;
/// Most ids marked read in one request.
pub const MAX_READ_IDS: usize = 1000;
/// Largest mark-read body.
const MAX_READ_BODY: usize = 256 * 1024;

pub fn router() -> OpenApiRouter<Arc<Gateway>> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(mark_read))
}

fn unavailable(e: herald_store::StoreError) -> ApiError {
    ApiError::store("feed store", e)
}

/// A page of the user's feed, newest first, with read state.
#[utoipa::path(get, path = "/v1/users/{id}/notifications", tag = "feed",
    params(("id" = u64, Path, description = "User id (canonical decimal)"),
        ("limit" = Option<usize>, Query, description = "1 to 200 (default 50)"),
        ("before" = Option<String>, Query, description = "The previous page's `next`")),
    responses((status = 200, body = crate::schema::FeedPage), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn page(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = async {
        let user = path_user(&id)?;
        authorize_for(&gw, &headers, Scope::Read, user)?;
        let limit = match q.get("limit") {
            None => 50,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_FEED_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::field(
                        "invalid_field",
                        "limit",
                        format!("limit must be 1 to {MAX_FEED_LIMIT}"),
                    )
                })?,
        };
        let before = match q.get("before") {
            None => None,
            Some(s) => Some(FeedCursor::parse(s).ok_or_else(|| {
                ApiError::field(
                    "invalid_field",
                    "before",
                    "before must be a cursor from a previous page's \"next\"",
                )
            })?),
        };
        let p = merged_page(&gw, user, before, limit).await?;
        let mut out = format!(r#"{{"user":{user},"notifications":["#).into_bytes();
        for (i, (n, read)) in p.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // The frame, with `read` in front of its closing brace.
            let _ = n.write_to(herald_types::WireFormat::Json, &mut out);
            if out.last() == Some(&b'}') {
                out.pop();
                out.extend_from_slice(if *read {
                    b",\"read\":true}"
                } else {
                    b",\"read\":false}"
                });
            }
        }
        let next =
            serde_json::to_string(&p.next.map(|c| c.encode())).unwrap_or_else(|_| "null".into());
        out.extend_from_slice(format!(r#"],"unread":{},"next":{next}}}"#, p.unread).as_bytes());
        Ok(out)
    }
    .await;
    crate::http::respond_written(r)
}

/// Marks feed entries read; answers the unread count.
#[utoipa::path(post, path = "/v1/users/{id}/notifications/read", tag = "feed",
    params(("id" = u64, Path, description = "User id (canonical decimal)")),
    request_body(content = crate::schema::MarkRead),
    responses((status = 200, body = crate::schema::Unread), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn mark_read(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let r = async {
        let user = path_user(&id)?;
        authorize_for(&gw, &headers, Scope::Read, user)?;
        let enc = encoding(&headers)?;
        let bytes = read_limited(&headers, body, MAX_READ_BODY).await?;
        let (ids, all) = read_request(&parse(&bytes, enc)?)?;
        // Pulled posts (one id for all their readers) are marked apart.
        let pulled: Vec<String> = ids
            .iter()
            .filter(|id| id.ends_with("-all"))
            .cloned()
            .collect();
        if all || !pulled.is_empty() {
            let until = all.then(herald_types::now_us);
            gw.store
                .outbox_mark_read(user, &pulled, until)
                .await
                .map_err(unavailable)?;
        }
        let unread = gw
            .store
            .feed_read(user, &ids, all)
            .await
            .map_err(unavailable)?;
        let pulled_unread = pulled_unread(&gw, user).await?;
        Ok(json!({"unread": unread + pulled_unread}))
    }
    .await;
    respond(r)
}

/// The outboxes `user` reads, with what they marked read, and their
/// preferences; None when they read none.
async fn pulled_view(
    gw: &Gateway,
    user: u64,
) -> Result<Option<(herald_store::OutboxView, Arc<herald_prefs::Resolved>)>, ApiError> {
    if !gw.celebrities.has_owners() {
        return Ok(None);
    }
    let view = gw
        .store
        .outbox_cursors(user, &gw.celebrities, true)
        .await
        .map_err(unavailable)?;
    if view.cursors.is_empty() {
        return Ok(None);
    }
    let prefs = gw.prefs.get(user).await.map_err(unavailable)?;
    Ok(Some((view, prefs)))
}

/// How many posts of the outboxes `user` reads their feed shows unread.
async fn pulled_unread(gw: &Gateway, user: u64) -> Result<u64, ApiError> {
    let Some((view, prefs)) = pulled_view(gw, user).await? else {
        return Ok(0);
    };
    let now_ms = herald_types::now_ms();
    let keep = |n: &herald_types::Notification| prefs.in_feed(n, now_ms);
    gw.store
        .feed_pulled_unread(user, &view, &gw.outboxes, keep, prefs.in_feed_all())
        .await
        .map_err(unavailable)
}

/// The posts of the outboxes `user` reads that their feed lists, and how
/// many are unread.
async fn pulled_posts(
    gw: &Gateway,
    user: u64,
) -> Result<(Vec<(herald_types::Notification, bool)>, u64), ApiError> {
    let Some((view, prefs)) = pulled_view(gw, user).await? else {
        return Ok((Vec::new(), 0));
    };
    let now_ms = herald_types::now_ms();
    let keep = |n: &herald_types::Notification| prefs.in_feed(n, now_ms);
    let listed = gw
        .store
        .feed_pulled(user, &view, &gw.outboxes, keep)
        .await
        .map_err(unavailable)?;
    let unread = listed.iter().filter(|(_, read)| !read).count() as u64;
    Ok((listed, unread))
}

/// A page of the stored entries merged with the pulled posts, newest
/// first; the unread count of both.
async fn merged_page(
    gw: &Gateway,
    user: u64,
    before: Option<FeedCursor>,
    limit: usize,
) -> Result<herald_store::FeedPage, ApiError> {
    let mut p = gw
        .store
        .feed_page(user, before, limit)
        .await
        .map_err(unavailable)?;
    let (pulled, pulled_unread) = pulled_posts(gw, user).await?;
    if pulled.is_empty() {
        return Ok(p);
    }
    p.unread += pulled_unread;
    let stored_more = p.next.is_some();
    let have: std::collections::HashSet<std::sync::Arc<str>> =
        p.items.iter().map(|(n, _)| n.id.clone()).collect();
    // Newest first already: the page's share of them is at its front.
    let mut later = pulled
        .into_iter()
        .filter(|(n, _)| !have.contains(&n.id) && before.is_none_or(|b| precedes(n, b)));
    p.items.extend(later.by_ref().take(limit));
    let pulled_more = later.next().is_some();
    p.items
        .sort_by_cached_key(|(n, _)| std::cmp::Reverse(FeedCursor::of(n)));
    let more = stored_more || pulled_more || p.items.len() > limit;
    p.items.truncate(limit);
    p.next = match more {
        true => p.items.last().map(|(n, _)| FeedCursor::of(n)),
        false => None,
    };
    Ok(p)
}

/// Whether `n` comes strictly before cursor `b` (older), hashing its id
/// only on a tie of order.
fn precedes(n: &herald_types::Notification, b: FeedCursor) -> bool {
    n.order < b.order || (n.order == b.order && FeedCursor::of(n) < b)
}

/// `{"ids": [...]}` or `{"all": true}`, nothing else.
fn read_request(v: &Value) -> Result<(Vec<String>, bool), ApiError> {
    let bad = |field: &str, m: &str| ApiError::field("invalid_field", field, m.to_string());
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::malformed("body must be an object"))?;
    if let Some(k) = obj.keys().find(|k| *k != "ids" && *k != "all") {
        return Err(bad(k, "unknown field (expected \"ids\" or \"all\")"));
    }
    match (obj.get("ids"), obj.get("all")) {
        (Some(_), Some(_)) => Err(bad("all", "give \"ids\" or \"all\", not both")),
        (None, Some(Value::Bool(true))) => Ok((Vec::new(), true)),
        (None, Some(_)) => Err(bad("all", "all must be true")),
        (Some(Value::Array(a)), None) => {
            if a.is_empty() || a.len() > MAX_READ_IDS {
                return Err(bad(
                    "ids",
                    &format!("ids must hold 1 to {MAX_READ_IDS} ids"),
                ));
            }
            a.iter()
                .enumerate()
                .map(|(i, x)| match x.as_str() {
                    Some(s) if !s.is_empty() && s.len() <= 256 => Ok(s.to_string()),
                    _ => Err(bad(
                        &format!("ids.{i}"),
                        "an id is a non-empty string of at most 256 bytes",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|ids| (ids, false))
        }
        (Some(_), None) => Err(bad("ids", "ids must be an array of strings")),
        (None, None) => Err(bad("ids", "give \"ids\" or \"all\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_requests_are_ids_or_all() {
        assert_eq!(read_request(&json!({"all": true})).unwrap(), (vec![], true));
        assert_eq!(
            read_request(&json!({"ids": ["a", "b"]})).unwrap(),
            (vec!["a".to_string(), "b".to_string()], false)
        );
        for bad in [
            json!({}),
            json!([]),
            json!({"all": false}),
            json!({"ids": []}),
            json!({"ids": [1]}),
            json!({"ids": "a"}),
            json!({"ids": ["a"], "all": true}),
            json!({"ids": ["a"], "x": 1}),
        ] {
            assert!(read_request(&bad).is_err(), "{bad}");
        }
    }
}
