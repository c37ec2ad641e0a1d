//! What the consumers of every client share: the receive settings of the simple-consumer
//! loops, and the accounting of each delivered message and each failure.
//!
//! A delivered message is this run's when its [`RUN_PROPERTY`] is the run id and its body
//! carries a due time; anything else is `foreign` (acknowledged, not measured). End-to-end
//! latency is the arrival time minus the embedded due time.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::payload::{RUN_PROPERTY, due_ns};
use crate::plan::Plan;
use crate::stats::{Live, TaskStats};

/// Messages asked for per ReceiveMessage.
pub(crate) const RECEIVE_BATCH: i32 = 32;
/// How long received messages stay invisible to other consumers before redelivery.
pub(crate) const INVISIBLE: Duration = Duration::from_secs(30);
/// How long the server may hold a ReceiveMessage open waiting for messages.
pub(crate) const LONG_POLLING: Duration = Duration::from_secs(5);
/// Pause after a failed receive or ack before trying again.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Records one delivered message: its user property `run` (the value of [`RUN_PROPERTY`]),
/// its body and its delivery attempt (1 for a first delivery).
pub(crate) fn record(
    plan: &Plan,
    stats: &mut TaskStats,
    run: Option<&str>,
    body: &[u8],
    delivery_attempt: u32,
) {
    let arrived = Instant::now();
    let ours = run == Some(plan.run_hex.as_str());
    let Some(due) = ours.then(|| due_ns(body)).flatten() else {
        stats.foreign += 1;
        return;
    };
    stats.total += 1;
    Live::add(&plan.live.received, 1);
    if delivery_attempt > 1 {
        stats.redelivered += 1;
    }
    if plan.clock.measured_ns(due) {
        stats.measured += 1;
        stats.measured_bytes += body.len() as u64;
        Live::add(&plan.live.received_measured, 1);
        let latency = plan.clock.ns(arrived).saturating_sub(due);
        stats.latency.saturating_record(latency);
    }
}

/// The user property the producers mark their messages with, among `properties`.
pub(crate) fn run_property(properties: &std::collections::HashMap<String, String>) -> Option<&str> {
    properties.get(RUN_PROPERTY).map(String::as_str)
}

/// Counts a failure (in the report only once the window has started).
pub(crate) fn failed(plan: &Plan, stats: &mut TaskStats, key: String, n: u64) {
    Live::add(&plan.live.receive_errors, n);
    if Instant::now() >= plan.clock.warm_end {
        stats.error(key, n);
    } else {
        *stats.warmup_errors.entry(key).or_insert(0) += n;
    }
}

/// Waits [`ERROR_BACKOFF`], or less if the run stops meanwhile.
pub(crate) async fn backoff(stop: &mut watch::Receiver<bool>) {
    let _ = tokio::time::timeout(ERROR_BACKOFF, stop.wait_for(|stopped| *stopped)).await;
}
