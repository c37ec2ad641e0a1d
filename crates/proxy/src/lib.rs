//! The Comet proxy: the stateless front door speaking the public `apache.rocketmq.v2`
//! MessagingService to official RocketMQ 5 clients.
//!
//! It will own sessions and telemetry streams, validation, route resolution, forwarding to
//! brokers over the internal API, the one error → status-code mapping, gRPC reflection and
//! health. It arrives with the standalone issue; today this crate has no code.
//!
//! Dependency rule: proxy → proto only; never store or broker internals.
#![forbid(unsafe_code)]
