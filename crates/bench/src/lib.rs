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
//! with their ratios; `--metrics-overhead` runs the same load against two spawned deployments,
//! metrics on and off, and prints their rates, CPU per message and ratios.
//!
//! The binary (`src/main.rs`) parses [`BenchArgs`], sets up logging and the runtime
//! (`--threads`) and calls [`run()`]; this library exists for that binary and for its tests,
//! so it reports errors with `anyhow` like a binary does.
//!
//! # Layout
//! Modules name each other one way, in three layers (a module names only modules of its own
//! layer listed before it, or of a layer below):
//! - **Bottom**, what every client and the runner share: `servers` (`--spawn`: the
//!   `comet standalone` process, or the Cluster-mode trio of controller, broker and proxy
//!   processes, that a run starts for itself, and the CPU time each spends: [`SpawnMode`],
//!   [`ServersReport`]); `size` ([`ByteSize`] for
//!   `--message-size`); `payload` (what every body and message carries: due time, run
//!   property); `args` ([`BenchArgs`] and [`ClientKind`], with the checks that refuse a run
//!   it could not honour); `stats` (counters, histograms and the serializable report);
//!   `schedule` (the rate-limited send timeline); `target` (the `--endpoint` every client
//!   connects to); `plan` (what every task of a run shares: settings, run id, live counters
//!   and the clock); `producer` (the producer loop every client shares, over a client's
//!   `Sender`); `consumer` (the accounting every client's consumers share); `progress` (the
//!   progress bar).
//! - **Middle**, the clients: `raw` (connections, sessions, the `h2` send path, the
//!   simple-consumer loop, and its own write-coalescing socket wrapper); `sdk` (the Comet
//!   SDK); `official` (the official `rocketmq` crate). No client names another.
//! - **Top**: `lite` (`--lite-topics N`: lite topics at scale on a spawned node:
//!   [`lite_with`], [`LiteReport`]); `run` (one run, [`run_with`]: start the servers with `--spawn`, the clients, the clock, the producers and
//!   consumers, the drain, the report; its module doc says what is counted and how latency
//!   avoids coordinated omission); `compare` (`--compare`: [`compare_with`],
//!   [`Comparison`]); `overhead` (`--metrics-overhead`: [`overhead_with`], the same send load
//!   against servers recording metrics and servers that do not, [`OverheadReport`]);
//!   `auth_compare` (`--auth-compare`: [`auth_compare_with`], auth off against auth on in
//!   alternating rounds, [`AuthComparison`]); and this crate root's [`run()`], which picks
//!   between them.
//!
//! # Invariants
//! - Every client is measured by the same loop, clock and accounting: a request is timed from
//!   its due time, a message belongs to the window when its due time does, and a consumer
//!   counts only messages carrying this run's id.
//! - The bench is a client only: it depends on the proto crate's generated client, the SDK and
//!   the official crate, never on a server crate (`--spawn` runs the `comet` binary as child
//!   processes).
//! - Message bodies never appear in logs.
#![forbid(unsafe_code)]

mod args;
mod auth_compare;
mod compare;
mod consumer;
mod lite;
mod official;
mod overhead;
mod payload;
mod plan;
mod producer;
mod progress;
mod raw;
mod run;
mod schedule;
mod sdk;
mod servers;
mod size;
mod stats;
mod target;

pub use args::{BenchArgs, ClientKind};
pub use auth_compare::{AuthComparison, AuthRun, auth_compare_with};
pub use compare::{Comparison, Ratios, compare_with};
pub use lite::{LiteReport, lite_with};
pub use overhead::{OverheadReport, OverheadRun, OverheadSide, overhead_with};
pub use run::run_with;
pub use servers::{RoleCpu, ServersReport, SpawnMode};
pub use size::ByteSize;
pub use stats::{BenchConfig, BenchReport, HostInfo, LatencyReport, ReceivedReport, SentReport};

/// Runs the benchmark (or, with `--compare`, the comparison) and prints the result on stdout
/// (and to `--json`).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(n) = args.lite_topics {
        lite_with(args, n, std::io::stdout()).await.map(|_| ())
    } else if args.auth_compare {
        auth_compare_with(args, std::io::stdout()).await.map(|_| ())
    } else if args.compare {
        compare_with(args, std::io::stdout()).await.map(|_| ())
    } else if args.metrics_overhead.is_some() {
        overhead_with(args, std::io::stdout()).await.map(|_| ())
    } else {
        run_with(args, std::io::stdout()).await.map(|_| ())
    }
}
