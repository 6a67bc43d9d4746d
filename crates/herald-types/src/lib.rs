//! Types shared along Herald's data path.
//!
//! This crate is deliberately small and has few dependencies: the event as
//! stored in the log ([`LogEvent`]), the notification a user receives
//! ([`Notification`]), how ids are formed ([`ids`]), and the seam between
//! fan-out and the edge, with settlement by log position ([`seam`]).

pub mod backoff;
pub mod compact;
pub mod data;
pub mod event;
pub mod ids;
pub mod kind;
pub mod notification;
pub mod placement;
pub mod procfs;
pub mod seam;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trace;

pub use backoff::Backoff;
pub use data::Data;
pub use event::{LogEvent, UserId};
pub use kind::{EventKind, Folding};
pub use notification::{DigestBody, DigestItem, Notification, WireFormat};
pub use placement::{Owner, Placement};
pub use seam::{
    Answers, Bucket, EdgeAnswer, EdgeCommand, EdgeHandle, Outbox, RecordRef, Refusal, RemoteRef,
    Settle,
};
pub use trace::TraceContext;

/// The one error body of Herald's HTTP API:
/// `{"error": {"code", "message", "index"?, "field"?}}`. Codes are stable
/// and never reused.
pub fn error_body(
    code: &str,
    message: &str,
    index: Option<usize>,
    field: Option<&str>,
) -> serde_json::Value {
    let mut e = serde_json::json!({"code": code, "message": message});
    if let Some(i) = index {
        e["index"] = i.into();
    }
    if let Some(f) = field {
        e["field"] = f.into();
    }
    serde_json::json!({ "error": e })
}

/// Current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// Current wall-clock time in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
