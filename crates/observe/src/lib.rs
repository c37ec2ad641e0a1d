//! Observability for every Comet role, built on the OpenTelemetry crates.
//!
//! - [`metrics`]: the node's `MeterProvider` (Prometheus text, OTLP/gRPC push) and the
//!   [`Observer`] a role records with (meter, RocketMQ's `cluster`/`node_type`/`node_id`
//!   labels, readiness);
//! - [`sharded`] and [`family`]: hot-path counting. A request looks its label set up once (a
//!   [`Family`] caches the series per topic or group) and adds to [`ShardedCounter`]s, one
//!   cache line per thread; observable instruments sum them at collection time, so sending a
//!   message touches no lock and no contended atomic;
//! - [`ready`]: the readiness registry behind `/readyz`;
//! - [`rpc`]: the tower layer of every gRPC server (a span per RPC, `rocketmq_rpc_latency`);
//! - [`http`]: the metrics listener (`/metrics`, `/healthz`, `/readyz`);
//! - [`logging`]: the tracing subscriber (text/JSON, run-time level, OTLP span export with a
//!   sampling ratio; openraft's INFO state dumps held at WARN by default);
//! - [`trace_context`]: W3C trace context from gRPC metadata and the message's
//!   `trace_context` property, injected into internal requests.
//!
//! Invariants: no message body or secret is ever recorded or logged; this crate depends on no
//! workspace crate (roles hand it plain numbers), and metric names, units and labels follow
//! Apache RocketMQ 5's (`rocketmq_*`) where RocketMQ has one, `comet_*` otherwise.

#![forbid(unsafe_code)]

mod error;
pub mod family;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod ready;
pub mod rpc;
pub mod sharded;
pub mod trace_context;

pub use error::{Error, Result};
pub use family::Family;
pub use metrics::{HistogramSeries, Metrics, MetricsSetup, Observer};
pub use opentelemetry::KeyValue;
pub use opentelemetry::metrics::Meter;
pub use ready::{Component, Readiness};
pub use sharded::ShardedCounter;
