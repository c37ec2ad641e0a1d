//! `comet-bench`: the load generator of Comet, for any RocketMQ 5 gRPC proxy (Comet's or
//! Apache's). Producers and consumers run through one of three clients (`--client`):
//!
//! ```text
//!                      ┌ raw       the bench's own apache.rocketmq.v2 calls (h2 direct)
//!  producers ─┐        │
//!             ├─ Sender┼ sdk       comet-sdk Producer / PushConsumer (no-op listener)
//!  consumers ─┘        │
//!                      └ official  rocketmq 5.0.0 Producer / SimpleConsumer
//!         one schedule, one clock, one histogram per task ──► BenchReport (JSON)
//! ```
//!
//! `--compare` runs the three back to back against the same endpoint and prints one table
//! with their ratios. The binary (`src/main.rs`) parses [`BenchArgs`], sets up logging and
//! the runtime (`--threads`) and calls [`run()`]; this library exists for that binary and for
//! its tests, so it reports errors with `anyhow` like a binary does.
//!
//! # Layout
//! - `args`: [`BenchArgs`] and [`ClientKind`], with the checks that refuse a run it could
//!   not honour; `size`: [`ByteSize`] for `--message-size`.
//! - `run`: one run ([`run_with`]): start the clients, the clock, the producers and
//!   consumers, the drain, the report. Its module doc says what is counted and how latency
//!   avoids coordinated omission.
//! - `compare`: `--compare` ([`compare_with`], [`Comparison`]).
//! - `producer`: the producer loop every client shares, over a client's `Sender`;
//!   `schedule`: the rate-limited send timeline; `payload`: what every body and message
//!   carries (due time, run property).
//! - `consumer`: the accounting every client's consumers share.
//! - `raw`: the raw client (connections, sessions, the `h2` send path, the simple-consumer
//!   loop, and its own write-coalescing socket wrapper); `sdk`: the Comet SDK; `official`:
//!   the official `rocketmq` crate.
//! - `stats`: counters, histograms and the serializable report; `progress`: the progress bar.
//!
//! # Invariants
//! - Every client is measured by the same loop, clock and accounting: a request is timed from
//!   its due time, a message belongs to the window when its due time does, and a consumer
//!   counts only messages carrying this run's id.
//! - The bench is a client only: it depends on the proto crate's generated client, the SDK and
//!   the official crate, never on a server crate.
//! - Message bodies never appear in logs.
#![forbid(unsafe_code)]

mod args;
mod compare;
mod consumer;
mod official;
mod payload;
mod producer;
mod progress;
mod raw;
mod run;
mod schedule;
mod sdk;
mod size;
mod stats;

pub use args::{BenchArgs, ClientKind};
pub use compare::{Comparison, Ratios, compare_with};
pub use run::{run, run_with};
pub use size::ByteSize;
pub use stats::{BenchConfig, BenchReport, HostInfo, LatencyReport, ReceivedReport, SentReport};
