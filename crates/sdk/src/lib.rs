//! The Comet Rust SDK: Producer and consumers speaking only `apache.rocketmq.v2`, so it works
//! against Comet and Apache RocketMQ proxies alike.
//!
//! It will own the producer (sync, async, batch, FIFO, delay, transactions), SimpleConsumer and
//! PushConsumer. It arrives after the standalone issue; today this crate has no code.
//!
//! Dependency rule: sdk → proto only; never a server crate.
#![forbid(unsafe_code)]
