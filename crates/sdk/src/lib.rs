//! The Comet Rust SDK: a producer (single, batch and async sends, FIFO, delay, priority,
//! transactions, recall), a simple consumer and a push consumer, speaking only the public
//! `apache.rocketmq.v2` gRPC API, so it works against Comet and against Apache RocketMQ 5
//! proxies alike.
//!
//! # Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use comet_sdk::{ConsumeResult, FilterExpression, Message, Producer, PushConsumer};
//!
//! # async fn run() -> comet_sdk::Result<()> {
//! let producer = Producer::builder()
//!     .endpoints("127.0.0.1:8081")
//!     .topics(["orders"])
//!     .build()
//!     .await?;
//! let receipt = producer
//!     .send(Message::builder("orders").tag("created").body("order 42").build()?)
//!     .await?;
//! println!("sent {}", receipt.message_id());
//!
//! let consumer = PushConsumer::builder("billing")
//!     .endpoints("127.0.0.1:8081")
//!     .subscribe("orders", FilterExpression::tag("created"))
//!     .listener(|message: comet_sdk::MessageView| async move {
//!         println!("got {}", message.message_id());
//!         ConsumeResult::Success
//!     })
//!     .build()
//!     .await?;
//! # tokio::time::sleep(Duration::from_secs(1)).await;
//! consumer.shutdown().await;
//! producer.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Acknowledgements
//!
//! One `AckMessage` carries many entries, and the consumers use that: the push consumer
//! batches the acks of its concurrent mode per endpoint and topic (a batch goes out at 32
//! acks or 2 ms after it opened; shutdown flushes it at once), and
//! [`SimpleConsumer::ack_many`] acknowledges a whole receive in one call. Each message gets
//! its own result from the reply's entries; the push consumer retries the entries that failed
//! transiently and drops, with a log line, those whose receipt handle expired (the message is
//! delivered again). FIFO acks are sent one by one, each before its group's next message runs.
//!
//! # Layout
//!
//! - [`producer`]: [`Producer`], [`Transaction`], [`TransactionChecker`], [`SendReceipt`].
//! - [`simple_consumer`]: [`SimpleConsumer`] (receive, ack, batch ack, change invisibility).
//! - [`push_consumer`]: [`PushConsumer`] (listener, concurrency and cache bounds, batched
//!   acks, FIFO, retries, dead letters, graceful shutdown).
//! - [`message`]: [`Message`] and its builder (client-side validation), [`MessageView`],
//!   [`FilterExpression`].
//! - [`Error`]: the one error type; [`Error::is_retryable`] tells transient from permanent.
//! - [`wire`]: the gRPC framing of a unary call's message, public for tools that make
//!   `apache.rocketmq.v2` calls on HTTP/2 themselves (`comet-bench`'s raw client uses it).
//! - internal: `endpoints` (an endpoint's addresses and key), `route_table` (each topic's
//!   queues and round-robin position, cached by topic), `rpc` (the unary RPCs: name, path,
//!   request and response types), `headers` (the `x-mq-*` headers built once per client,
//!   the date and HMAC-SHA1 signature once per second), `gather` (the write-gathering socket
//!   wrapper), `transport` (unary calls on HTTP/2 connections the SDK drives itself, from the
//!   calling task; TLS through rustls), `session` (per endpoint a transport link for unary
//!   calls and a tonic channel for streaming ones, access point failover, heartbeats, the
//!   telemetry registry),
//!   `telemetry` (one stream per endpoint: settings sync, server commands, reconnect with
//!   backoff), `route` (fetching routes, with periodic and on-error refresh), `connect`
//!   (starting a session: first access point that answers, then the loops), `retry` (the
//!   server's retry policies), `consume` (receive, invisibility changes and dead-lettering
//!   for both consumers), `ack` (acknowledgements in batches: one AckMessage per endpoint and
//!   topic for many messages, per-entry results and retries, the push consumer's linger
//!   batcher).
//!
//! Modules name each other one way, bottom to top: `error`, `config`, `endpoints`,
//! `route_table`, `rpc`, `gather`, `wire` → `headers`, `transport` → `session` → `telemetry`
//! → `route` → `connect`, `retry`, `message` → `ack` → `consume` → `simple_consumer` →
//! `producer`, `push_consumer`. The session holds the route table and the telemetry registry
//! but never names the modules that fill them.
//!
//! # Invariants
//!
//! - Depends on the proto crate's generated client only; never on a server crate.
//! - Every handle is `Send + Sync` and cheap to clone; dropping the last clone stops the
//!   client's background tasks; `shutdown()` also tells the server and waits for them.
//! - Nothing blocks a runtime thread; no call panics on what the server sends.
//! - Message bodies, keys and secrets never appear in logs.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod ack;
mod config;
mod connect;
mod consume;
mod endpoints;
mod error;
mod gather;
mod headers;
pub mod message;
pub mod producer;
pub mod push_consumer;
mod retry;
mod route;
mod route_table;
mod rpc;
mod session;
pub mod simple_consumer;
mod telemetry;
mod transport;
pub mod wire;

use comet_proto::apache::rocketmq::v2 as pb;

pub use config::{ClientConfig, Credentials, DEFAULT_REQUEST_TIMEOUT, Tls};
pub use error::{Error, Invalid, Result, code_name};
pub use message::{FilterExpression, Message, MessageBuilder, MessageView};
pub use producer::{
    Producer, ProducerBuilder, SendHandle, SendReceipt, Transaction, TransactionChecker,
    TransactionResolution,
};
pub use push_consumer::{ConsumeResult, MessageListener, PushConsumer, PushConsumerBuilder};
pub use simple_consumer::{SimpleConsumer, SimpleConsumerBuilder};

/// The user agent every client reports in its settings.
fn user_agent() -> pb::Ua {
    pb::Ua {
        language: pb::Language::Rust as i32,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        platform: std::env::consts::OS.to_owned(),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
    }
}
