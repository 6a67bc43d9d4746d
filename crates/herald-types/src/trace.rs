//! Distributed tracing across the data path: the W3C trace context a
//! request to `POST /v1/events` carries (`traceparent`) is kept in each
//! event's log record, so the spans Herald reports (accepting the events,
//! fanning each out, pushing each notification to a connection) join the
//! caller's trace, on whichever nodes they run.
//!
//! Off unless the binary installs an exporter and calls [`enable`]: then
//! no header is read, nothing is stored in the log and no span is made;
//! what is left on the hot path is one atomic load per request and an
//! empty `Option` per notification.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue, Value};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

static ON: AtomicBool = AtomicBool::new(false);
/// The share of requests without a `traceparent` that start a trace, as
/// `f64` bits.
static RATIO: AtomicU64 = AtomicU64::new(0);
static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// Turns tracing on for this process, once a tracer provider is installed
/// as OpenTelemetry's global one. `sample_ratio` (0 to 1) is the share of
/// requests that carry no `traceparent` and still start a trace.
pub fn enable(sample_ratio: f64) {
    RATIO.store(sample_ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    let _ = TRACER.get_or_init(|| opentelemetry::global::tracer("herald"));
    ON.store(true, Ordering::Release);
}

/// Whether spans are made at all.
#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A W3C trace context (`traceparent`): which trace, which span is the
/// parent, and whether the trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` header: `00-<32 hex>-<16 hex>-<2 hex>`. A
    /// later version is read by its first four fields, as the W3C
    /// recommendation asks; all-zero ids and version `ff` are refused.
    pub fn parse(header: &str) -> Option<TraceContext> {
        let h = header.trim();
        let b = h.as_bytes();
        if b.len() < 55 || (b.len() > 55 && (b.starts_with(b"00") || b[55] != b'-')) {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex::<1>(&b[0..2])?;
        if version[0] == 0xff {
            return None;
        }
        let trace_id = hex::<16>(&b[3..35])?;
        let span_id = hex::<8>(&b[36..52])?;
        let flags = hex::<1>(&b[53..55])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The `traceparent` form (version `00`).
    pub fn header(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        s.push('-');
        push_hex(&mut s, &[self.flags]);
        s
    }

    /// Whether the caller records this trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id in hex, as trace back ends show it.
    pub fn trace_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        push_hex(&mut s, &self.trace_id);
        s
    }

    fn parent(&self) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        ))
    }
}

fn hex<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    if b.len() != 2 * N {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = nib(b[2 * i])? << 4 | nib(b[2 * i + 1])?;
    }
    Some(out)
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const D: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
}

// Stored (in the log, between nodes) as its header: readable in a dump.
impl Serialize for TraceContext {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.header())
    }
}

impl<'de> Deserialize<'de> for TraceContext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TraceContext::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not a traceparent: {s:?}")))
    }
}

/// A span Herald reports; it ends when dropped.
pub struct Span(BoxedSpan);

/// Starts span `name` as a child of `parent` (or as a new trace's root
/// when there is none); `None` while tracing is off.
pub fn start(name: &'static str, kind: SpanKind, parent: Option<&TraceContext>) -> Option<Span> {
    let tracer = TRACER.get().filter(|_| enabled())?;
    let cx = parent.map(TraceContext::parent).unwrap_or_default();
    Some(Span(
        tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(tracer, &cx),
    ))
}

/// The span for a request that may carry `traceparent`: a child of a
/// sampled caller's span; none for a caller that does not sample; for a
/// request without one, a new trace for `sample_ratio` of them.
pub fn start_request(name: &'static str, traceparent: Option<&str>) -> Option<Span> {
    if !enabled() {
        return None;
    }
    match traceparent.map(TraceContext::parse) {
        Some(Some(tc)) if tc.sampled() => start(name, SpanKind::Server, Some(&tc)),
        Some(Some(_)) => None,
        // Absent, or malformed (which the recommendation says to ignore).
        _ => {
            let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
            (ratio > 0.0 && fastrand::f64() < ratio)
                .then(|| start(name, SpanKind::Server, None))
                .flatten()
        }
    }
}

impl Span {
    /// This span as the parent of the next.
    pub fn context(&self) -> TraceContext {
        let sc = self.0.span_context();
        TraceContext {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        }
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.0.set_attribute(KeyValue::new(key, value));
    }

    /// Marks the span failed, with why.
    pub fn fail(&mut self, why: impl Into<String>) {
        self.0.set_status(Status::error(why.into()));
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Span({})", self.context().header())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips_and_junk_is_refused() {
        let tc = TraceContext::parse(TP).expect("valid");
        assert!(tc.sampled());
        assert_eq!(tc.header(), TP);
        assert_eq!(tc.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let unsampled = TP.replace("-01", "-00");
        assert!(!TraceContext::parse(&unsampled).expect("valid").sampled());
        // A later version may append fields after a dash.
        assert!(TraceContext::parse(&TP.replace("00-4b", "cc-4b")).is_some());
        assert!(TraceContext::parse(&format!("{}-what", TP.replace("00-4b", "cc-4b"))).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stored_as_its_header() {
        let tc = TraceContext::parse(TP).expect("valid");
        let bytes = rmp_serde::to_vec_named(&Some(tc)).expect("encode");
        let back: Option<TraceContext> = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, Some(tc));
        assert!(rmp_serde::from_slice::<TraceContext>(
            &rmp_serde::to_vec_named("00-zz").expect("encode")
        )
        .is_err());
    }

    #[test]
    fn off_makes_no_span() {
        assert!(!enabled());
        assert!(start_request("x", Some(TP)).is_none());
        assert!(start("x", SpanKind::Internal, None).is_none());
    }
}
