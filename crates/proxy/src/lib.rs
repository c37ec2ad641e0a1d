//! The Comet proxy: the stateless front door speaking the public `apache.rocketmq.v2`
//! MessagingService to the official RocketMQ 5 clients (Rust, Python, Node, Java, ...) and
//! forwarding to brokers over the internal `comet.v1.BrokerService`.
//!
//! ```text
//!  client ──MessagingService──► Proxy ──(routes from the metadata watch)──► BrokerDirectory
//!                                 │                                           ├ LocalBrokers  (in process)
//!                                 │ sessions, telemetry echo, validation      └ RemoteBrokers (gRPC)
//!                                 └ reflection v1/v1alpha, grpc.health.v1
//! ```
//!
//! # Layout
//!
//! - [`config`]: [`ProxyConfig`], limits and clamps, validation.
//! - `context`: headers (client id, namespace, language, `grpc-timeout`, the sender).
//! - [`access`]: [`ProxySecurity`]; request signatures and ACL decisions (UNAUTHORIZED,
//!   FORBIDDEN) over the users and ACLs of the metadata watch; TLS of the client port.
//! - `names`: RocketMQ name rules and namespace qualification (`"<ns>%<name>"`).
//! - `routes`: metadata index, queue layout, send/receive/receipt-handle targets.
//! - `validate`: message checks; `settings`: the telemetry settings echo.
//! - `session`: client sessions keyed by `x-mq-client-id`.
//! - `metrics`: RocketMQ's proxy metrics (messages/bytes in and out, message size,
//!   connections), counted on sharded cells and summed at collection.
//! - `status`: the single mapping of failures to in-body `Code`s.
//! - [`brokers`]: [`BrokerDirectory`], [`LocalBrokers`], [`RemoteBrokers`].
//! - [`link`]: the internal link to a broker that [`RemoteBroker`] calls over: [`link::connect`]
//!   (the one place a broker connection's transport is built), per-thread HTTP/2 connections
//!   over write-gathering sockets with HTTP/2 keepalive, gRPC calls on `h2` directly, and
//!   combining of SendMessage calls and of ack / invisible-time change calls with bounded
//!   in-flight calls (a full queue answers TOO_MANY_REQUESTS).
//! - `creator`: [`TopicCreator`] (auto-create seam).
//! - `service`: the MessagingService handlers, one file per RPC group.
//! - `server`: [`Proxy`] (routes, serve, shutdown) and [`serve`] (config, listener, metadata,
//!   brokers, creator, shutdown token: the entry point the `comet` binary uses).
//!
//! # Invariants
//!
//! - Business errors are in-body statuses with gRPC OK, with upstream's code for each cause;
//!   every outgoing status passes `status::for_client` once, so only codes the Rust 5.0.0
//!   client knows are ever sent to Rust clients. gRPC errors only for telemetry settings
//!   upstream refuses (INVALID_ARGUMENT, which ends the stream).
//! - Lite topics: SyncLiteSubscription goes to every broker set of the LITE parent topic
//!   (`lite_subscription_quota` and `max_lite_topic_size` are checked here and echoed to lite
//!   consumers); a lite message is placed by its lite topic like a message group; lite topics
//!   a broker dropped come back with a pop and go to the client as
//!   NotifyUnsubscribeLiteCommand.
//! - Transaction checks: every served proxy watches every broker set with a live master
//!   (`WatchTransactionChecks`) and hands each check to one live telemetry stream of a producer
//!   that publishes the topic; EndTransaction goes to the broker set named by the transaction
//!   id's `"<broker_set>~"` prefix, so any proxy can resolve any transaction; RecallMessage
//!   goes to the set named by the recall handle's prefix the same way.
//! - Every unary response has a status; ack and send answers have one entry per request
//!   entry; a ReceiveMessage stream is `[status, message..., delivery_timestamp]` and a
//!   PullMessage stream `[status, message..., next_offset]` on every path; every frame sets
//!   exactly one oneof field; no outbound frame exceeds 4 MiB.
//! - Routes name exactly one endpoint: the advertised one, broker id 0, queue ids from 0.
//! - Internal requests carry qualified names with an empty namespace; responses are split
//!   back for the requesting namespace.
//! - Message bodies never appear in logs.
//!
//! # Lifecycle
//!
//! One idiom, shared by every Comet server crate: a `CancellationToken` says "stop" and a
//! `TaskTracker` holds every spawned task; draining is cancel, close the tracker, wait. The
//! caller's token stops accepting; health turns NOT_SERVING; the proxy's own token ends long
//! polls and telemetry streams; the connection threads drain their calls and the tracker's
//! tasks within `shutdown_grace` (else [`ProxyError::DrainTimedOut`]).
//!
//! Dependency rule: proxy → proto only; never store or broker internals.
#![forbid(unsafe_code)]

pub mod access;
pub mod brokers;
pub mod config;
mod context;
mod creator;
mod error;
pub mod link;
mod metrics;
mod names;
mod routes;
mod server;
mod service;
mod session;
mod settings;
mod status;
mod validate;

pub use access::ProxySecurity;
pub use brokers::{
    BrokerDirectory, BrokerService, DynBroker, LocalBrokers, RemoteBroker, RemoteBrokers,
    TransactionCheckStream,
};
pub use config::ProxyConfig;
pub use creator::TopicCreator;
pub use error::{ProxyError, Result};
pub use server::{MESSAGING_SERVICE_NAME, Proxy, serve};
pub use session::{ClientInfo, ClientsView};
