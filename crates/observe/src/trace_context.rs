//! W3C trace context (`traceparent`, `tracestate`): taken from gRPC metadata or from the
//! message's `trace_context` system property (what the official clients set), and put on the
//! metadata of internal requests so that the broker's span joins the proxy's trace.
//!
//! Spans are `tracing` spans; with span export on ([`crate::logging`]) the OpenTelemetry layer
//! gives them the parent set here. Without it these calls change nothing.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http::HeaderMap;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header carrying the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Parent<'a>(&'a str);

impl Extractor for Parent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

struct Metadata<'a>(&'a mut MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Whether spans are exported in this process (OTLP configured): callers skip building
/// spans that exist only for export.
pub fn exporting() -> bool {
    crate::logging::handle().is_some_and(crate::logging::LogHandle::exports_traces)
}

/// The remote context in `extractor`, when it carries a valid trace parent.
fn remote(extractor: &dyn Extractor) -> Option<Context> {
    let cx = TraceContextPropagator::new().extract(extractor);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The trace context of HTTP/2 request headers (gRPC metadata), if valid.
pub fn from_headers(headers: &HeaderMap) -> Option<Context> {
    remote(&Headers(headers))
}

/// The trace context of a `traceparent` string (the message's `trace_context`), if valid.
pub fn from_traceparent(value: &str) -> Option<Context> {
    remote(&Parent(value.trim()))
}

/// Makes `span` a child of `parent`.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    if let Err(e) = span.set_parent(parent) {
        tracing::debug!(error = %e, "span parent not set");
    }
}

/// Puts `span`'s trace context on `metadata` (nothing when the span is not exported).
pub fn inject(span: &tracing::Span, metadata: &mut MetadataMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut Metadata(metadata));
    }
}

/// The span for one served RPC (`rpc` = the gRPC path), a child of the caller's trace when the
/// request headers carry one.
pub fn server_span(role: &'static str, path: &str, headers: &HeaderMap) -> tracing::Span {
    let rpc = path.rsplit('/').next().unwrap_or(path);
    let span = tracing::info_span!(
        "rpc",
        otel.name = %rpc,
        otel.kind = "server",
        role,
        rpc = %rpc,
        topic = tracing::field::Empty,
        group = tracing::field::Empty,
        queue = tracing::field::Empty,
        code = tracing::field::Empty,
    );
    if let Some(parent) = from_headers(headers) {
        set_parent(&span, parent);
    }
    span
}

/// The trace id of `span` as 32 hex digits, when it is exported.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn given_a_valid_traceparent_should_extract_its_trace_id() {
        let cx = from_traceparent(PARENT).expect("valid");
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, PARENT.parse().expect("header"));
        assert!(from_headers(&headers).is_some());
    }

    #[test]
    fn given_garbage_should_extract_nothing() {
        assert!(from_traceparent("00-zz-00-01").is_none());
        assert!(from_traceparent("").is_none());
        assert!(from_headers(&HeaderMap::new()).is_none());
    }
}
