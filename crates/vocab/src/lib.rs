//! RocketMQ's vocabulary for Comet, defined once: the names, limits, formats and status rules
//! that the proxy, the broker, the controller and the CLI must agree on.
//!
//! Each rule is a constant or a pure function over strings, durations and the generated
//! `apache.rocketmq.v2` status types: no I/O, no async, no state.
//!
//! # Layout
//!
//! - [`names`]: topic, consumer-group, namespace and broker-set names: their limits, the one
//!   validation function per kind, and the stricter rules for qualified names the controller
//!   stores.
//! - [`system`]: RocketMQ's system topics and groups ([`system::is_system_topic`]), the
//!   per-group `%RETRY%`/`%DLQ%` topics (builders and parsers), and the topics brokers keep
//!   without metadata ([`system::is_implicit_topic`]).
//! - [`namespace`]: qualification `<ns>%<name>` and its inverse.
//! - [`handle`]: the `<broker_set>~<opaque>` prefix of receipt handles and transaction ids.
//! - [`status`]: building in-body statuses and the batch aggregation rule
//!   (OK / the shared code / MULTIPLE_RESULTS).
//! - [`limits`]: defaults and ranges both proxy and broker apply: invisible time, delivery
//!   delay, redeliveries and their default backoff, the PRIORITY message rule and its queue.
//! - [`duration`]: `google.protobuf.Duration` to and from [`std::time::Duration`].
//! - [`Error`]: why a name or a duration was refused; each caller maps a variant to its own
//!   status code (the proxy to `ILLEGAL_TOPIC`, `ILLEGAL_CONSUMER_GROUP`, ...; the controller
//!   to `INVALID_ARGUMENT`).
//!
//! # Invariants
//!
//! - Defined once here: no server crate or the CLI spells `%DLQ%`, `%RETRY%`, `rmq_sys_`, the
//!   system topic names, the name limits (127, 255, 64), the `~` handle separator or the `%`
//!   namespace separator; they use these items (tests pin the literal values). The SDK is the
//!   exception by design: it depends on the proto crate alone and keeps its own client-side
//!   checks, which must agree with these.
//! - Semantics are those of RocketMQ 5 (apache/rocketmq `TopicValidator`, `MixAll`,
//!   `NamespaceUtil`, the proxy's `GrpcValidator`) where Comet follows it; the docs say where
//!   Comet differs.
//! - Error messages are meant for a person and are part of the behaviour clients see: tests
//!   pin them, so a change here is a change of the public API.
//!
//! Depends on the proto crate only (plus `prost-types` and `thiserror`); it must not depend on
//! any server crate, so that every server crate and the CLI may depend on it.

#![forbid(unsafe_code)]

pub mod duration;
mod error;
pub mod handle;
pub mod limits;
pub mod names;
pub mod namespace;
pub mod status;
pub mod system;

pub use error::{Error, NameKind, Result};
