//! A tower layer for every role's gRPC server: one span per RPC (a child of the caller's W3C
//! trace context) and `rocketmq_rpc_latency` by `protocol_type`, `request_code` (the RPC) and
//! `response_code`.
//!
//! The response code is the one the handler put in the response's extensions as a
//! [`ResponseCode`] (the proxy's in-body RocketMQ code), else the gRPC status of a
//! trailers-only answer, else `ok`. Each (RPC, code) pair's histogram handle is bound once
//! and cached, so a call costs two read-locked lookups (the RPC, then its few codes) and one
//! record, with no allocation.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundHistogram, Histogram};
use parking_lot::RwLock;
use tonic::codegen::http;
use tracing::Instrument as _;

use crate::family::Family;
use crate::metrics::Observer;
use crate::trace_context;

/// RocketMQ's `rocketmq_rpc_latency` buckets, in milliseconds.
pub const RPC_LATENCY_BUCKETS_MS: [f64; 9] =
    [1.0, 3.0, 5.0, 7.0, 10.0, 100.0, 1000.0, 2000.0, 3000.0];

/// The code a handler answered with (e.g. `OK`, `MESSAGE_NOT_FOUND`), put in the response's
/// extensions for the latency histogram.
#[derive(Debug, Clone, Copy)]
pub struct ResponseCode(pub &'static str);

/// The bound histograms of one RPC, one per response code seen.
#[derive(Default)]
struct RpcSeries {
    codes: RwLock<Vec<(&'static str, BoundHistogram<f64>)>>,
}

struct Shared {
    observer: Observer,
    role: &'static str,
    latency: Histogram<f64>,
    bound: Family<String, RpcSeries>,
    /// Spans at INFO when they are exported, else at DEBUG (free under the default filter).
    info_spans: bool,
}

/// The layer; clone it onto each server.
#[derive(Clone)]
pub struct RpcLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RpcLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcLayer")
            .field("role", &self.shared.role)
            .finish()
    }
}

impl RpcLayer {
    /// The layer of `role` (`proxy`, `broker`, `controller`) recording with `observer`.
    pub fn new(observer: &Observer, role: &'static str) -> Self {
        let latency = observer
            .meter()
            .f64_histogram("rocketmq_rpc_latency")
            .with_description("RPC latency")
            .with_unit("milliseconds")
            .with_boundaries(RPC_LATENCY_BUCKETS_MS.to_vec())
            .build();
        RpcLayer {
            shared: Arc::new(Shared {
                observer: observer.clone(),
                role,
                latency,
                bound: Family::default(),
                info_spans: trace_context::exporting(),
            }),
        }
    }
}

impl Shared {
    fn record(&self, rpc: &str, code: &'static str, millis: f64) {
        let series = self
            .bound
            .get_or_insert_with(rpc, || (rpc.to_owned(), RpcSeries::default()));
        if let Some((_, h)) = series.codes.read().iter().find(|(c, _)| *c == code) {
            h.record(millis);
            return;
        }
        let mut codes = series.codes.write();
        if !codes.iter().any(|(c, _)| *c == code) {
            let attrs = self.observer.labels(&[
                KeyValue::new("protocol_type", "grpc"),
                KeyValue::new("request_code", rpc_label(rpc)),
                KeyValue::new("response_code", code.to_ascii_lowercase()),
            ]);
            codes.push((code, self.latency.bind(&attrs)));
        }
        if let Some((_, h)) = codes.iter().find(|(c, _)| *c == code) {
            h.record(millis);
        }
    }

    fn span(&self, path: &str, headers: &http::HeaderMap) -> tracing::Span {
        if self.info_spans {
            trace_context::server_span(self.role, path, headers)
        } else {
            let rpc = path.rsplit('/').next().unwrap_or(path);
            tracing::debug_span!("rpc", role = self.role, rpc = %rpc)
        }
    }
}

/// `SendMessage` → `send_message`: RocketMQ's request codes are snake case.
fn rpc_label(rpc: &str) -> String {
    let mut out = String::with_capacity(rpc.len() + 4);
    for (i, c) in rpc.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// gRPC status numbers as names, for trailers-only answers.
fn grpc_code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "OK",
        b"1" => "CANCELLED",
        b"2" => "UNKNOWN",
        b"3" => "INVALID_ARGUMENT",
        b"4" => "DEADLINE_EXCEEDED",
        b"5" => "NOT_FOUND",
        b"6" => "ALREADY_EXISTS",
        b"7" => "PERMISSION_DENIED",
        b"8" => "RESOURCE_EXHAUSTED",
        b"9" => "FAILED_PRECONDITION",
        b"10" => "ABORTED",
        b"11" => "OUT_OF_RANGE",
        b"12" => "UNIMPLEMENTED",
        b"13" => "INTERNAL",
        b"14" => "UNAVAILABLE",
        b"15" => "DATA_LOSS",
        b"16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

impl<S> tower_layer::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service the layer wraps around a server.
#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for RpcService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        // A clone of the URI shares its bytes (no copy of the path per call).
        let uri = request.uri().clone();
        let span = self.shared.span(uri.path(), request.headers());
        let shared = Arc::clone(&self.shared);
        let call = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let result = call.await;
                let code = match &result {
                    Ok(response) => response
                        .extensions()
                        .get::<ResponseCode>()
                        .map(|c| c.0)
                        .or_else(|| {
                            response
                                .headers()
                                .get("grpc-status")
                                .map(|v| grpc_code_name(v.as_bytes()))
                        })
                        .unwrap_or("OK"),
                    Err(_) => "INTERNAL",
                };
                let path = uri.path();
                let rpc = path.rsplit('/').next().unwrap_or(path);
                tracing::Span::current().record("code", code);
                shared.record(rpc, code, started.elapsed().as_secs_f64() * 1000.0);
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_rpc_names_should_label_them_in_snake_case() {
        assert_eq!(rpc_label("SendMessage"), "send_message");
        assert_eq!(rpc_label("Check"), "check");
        assert_eq!(grpc_code_name(b"14"), "UNAVAILABLE");
    }
}
