//! Counters, latency histograms and the final report.
//!
//! Each producer and consumer task keeps its own [`TaskStats`] (no locking on the hot path)
//! and hands it back when it ends; the run merges them into a [`BenchReport`]. The few
//! numbers needed while the run is going (progress bar, warmup check, drain) are shared
//! atomics in [`Live`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use comet_proto::apache::rocketmq::v2::Code;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::ClientKind;
use crate::servers::ServersReport;

/// Highest latency the histograms track exactly: one hour, in nanoseconds. Larger samples are
/// clamped to it (and would show up as a `max` of 3600000 ms).
const MAX_TRACKED_NS: u64 = 3_600_000_000_000;

/// Bytes in a megabyte for the `mb_per_s` figures (decimal: 10^6).
const MB: f64 = 1_000_000.0;

/// A new, empty latency histogram in nanoseconds (1 ns to one hour, 3 significant digits).
/// Tasks clone it so that every histogram of a run has the same bounds and merges exactly.
pub(crate) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3)
        .map_err(|e| anyhow::anyhow!("cannot create a latency histogram: {e}"))
}

/// The key under which an in-body status code is counted, e.g. `TOO_MANY_REQUESTS`, or
/// `CODE_12345` for a number the protocol does not define.
pub(crate) fn code_key(code: i32) -> String {
    match Code::try_from(code) {
        Ok(c) => c.as_str_name().to_owned(),
        Err(_) => format!("CODE_{code}"),
    }
}

/// The key under which a gRPC-level failure is counted, e.g. `grpc:UNAVAILABLE`.
pub(crate) fn grpc_key(status: &tonic::Status) -> String {
    let name = match status.code() {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    };
    format!("grpc:{name}")
}

/// Counters shared by every task while the run is going.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Messages whose send succeeded, warmup included.
    pub sent_ok: AtomicU64,
    /// Messages whose send succeeded and that were due inside the measurement window.
    pub sent_ok_measured: AtomicU64,
    /// Messages whose send failed (any code), warmup included.
    pub send_errors: AtomicU64,
    /// Messages of this run received, warmup included.
    pub received: AtomicU64,
    /// Messages of this run received that were sent inside the measurement window.
    pub received_measured: AtomicU64,
    /// Failed receive and ack calls (or ack entries).
    pub receive_errors: AtomicU64,
}

impl Live {
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What one producer or consumer task measured.
#[derive(Debug)]
pub(crate) struct TaskStats {
    /// Latency samples inside the window, nanoseconds (send latency for producers, end-to-end
    /// for consumers).
    pub latency: Histogram<u64>,
    /// Messages inside the window (sent OK, or received).
    pub measured: u64,
    /// Body bytes of those messages.
    pub measured_bytes: u64,
    /// All messages, warmup included.
    pub total: u64,
    /// Failures inside the window by key (see [`code_key`], [`grpc_key`]), in messages for
    /// sends and in calls or entries for receives and acks.
    pub errors: BTreeMap<String, u64>,
    /// Failures before the window (reported only when a run fails for lack of any success).
    pub warmup_errors: BTreeMap<String, u64>,
    /// Consumers: messages that did not come from this run (other runs, other producers).
    pub foreign: u64,
    /// Consumers: messages of this run delivered more than once (delivery_attempt > 1).
    pub redelivered: u64,
}

impl TaskStats {
    /// Empty stats whose histogram is a clone of `template` (see [`new_histogram`]).
    pub(crate) fn new(template: &Histogram<u64>) -> Self {
        TaskStats {
            latency: template.clone(),
            measured: 0,
            measured_bytes: 0,
            total: 0,
            errors: BTreeMap::new(),
            warmup_errors: BTreeMap::new(),
            foreign: 0,
            redelivered: 0,
        }
    }

    pub(crate) fn error(&mut self, key: String, n: u64) {
        *self.errors.entry(key).or_insert(0) += n;
    }

    pub(crate) fn merge(&mut self, other: TaskStats) {
        // Both histograms have the same bounds, so `add` cannot fail on range; if it ever
        // did, the samples would be missing from the percentiles, not from the counts.
        if let Err(e) = self.latency.add(&other.latency) {
            tracing::warn!(error = %e, "latency histograms could not be merged");
        }
        self.measured += other.measured;
        self.measured_bytes += other.measured_bytes;
        self.total += other.total;
        for (k, n) in other.errors {
            self.error(k, n);
        }
        for (k, n) in other.warmup_errors {
            *self.warmup_errors.entry(k).or_insert(0) += n;
        }
        self.foreign += other.foreign;
        self.redelivered += other.redelivered;
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyReport {
    /// Number of samples.
    pub samples: u64,
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencyReport {
    /// The percentiles of `h` (nanoseconds), or `None` when it holds no sample.
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |ns: u64| ns as f64 / 1_000_000.0;
        Some(LatencyReport {
            samples: h.len(),
            mean: h.mean() / 1_000_000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }
}

/// Producer side of the report. Counts are messages whose due time fell inside the
/// measurement window (warmup excluded).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SentReport {
    /// Messages sent successfully inside the window.
    pub count: u64,
    /// `count` per second of window.
    pub msgs_per_s: f64,
    /// Body megabytes (10^6 bytes) per second of window.
    pub mb_per_s: f64,
    /// Messages that failed inside the window, by status code (`TOO_MANY_REQUESTS`, ...) or
    /// gRPC code (`grpc:UNAVAILABLE`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Messages sent successfully over the whole run, warmup included.
    pub total: u64,
}

/// Consumer side of the report. Counts are messages of this run that were *sent* inside the
/// measurement window, whenever they arrived (the drain period included).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReceivedReport {
    /// Messages received (redeliveries included) that were sent inside the window.
    pub count: u64,
    /// `count` per second of window (with `--backlog`: per second of `drain_s`).
    pub msgs_per_s: f64,
    /// Body megabytes (10^6 bytes) per second, over the same time.
    pub mb_per_s: f64,
    /// Failed calls or entries by `receive/<code>` and `ack/<code>`.
    pub errors: BTreeMap<String, u64>,
    /// Messages of this run received over the whole run, warmup included.
    pub total: u64,
    /// Messages received that this run did not send (left over from earlier runs or sent by
    /// someone else); acknowledged but not measured.
    pub foreign: u64,
    /// Messages of this run delivered more than once.
    pub redelivered: u64,
}

/// The machine the benchmark ran on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostInfo {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    /// `std::thread::available_parallelism`.
    pub cores: usize,
}

/// The resolved configuration of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchConfig {
    /// The client library the producers and consumers went through.
    pub client: ClientKind,
    pub endpoint: String,
    pub topic: String,
    pub group: String,
    pub producers: usize,
    pub consumers: usize,
    /// The consumers started when the producers' window ended (`--backlog`).
    pub backlog: bool,
    pub message_size: u64,
    /// Target messages per second over all producers; 0 = unlimited.
    pub rate: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub batch: u32,
    pub inflight: usize,
    /// Queues of the topic the producers write to and the consumers read from.
    pub write_queues: usize,
    pub read_queues: usize,
    /// HTTP/2 connections the bench opened itself: every connection of the raw client; with
    /// the sdk and official clients only the route check's (those clients open their own).
    pub connections: usize,
}

/// Everything a run measured; printed as one JSON object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub host: HostInfo,
    /// Length of the measurement window (warmup excluded), seconds.
    pub duration_s: f64,
    /// Time the consumers spent draining after the producers stopped, seconds (with
    /// `--backlog`: the whole time the consumers ran).
    pub drain_s: f64,
    pub sent: SentReport,
    pub received: ReceivedReport,
    /// SendMessage call latency (one sample per request, `--batch` messages each), from the
    /// request's due time to its response. `null` when no send succeeded in the window.
    pub send_latency_ms: Option<LatencyReport>,
    /// End-to-end latency (one sample per received message), from the message's due time to
    /// its arrival at a consumer. `null` without consumers or received messages.
    pub e2e_latency_ms: Option<LatencyReport>,
    /// With `--spawn`: the servers the run started and their CPU time per message in the
    /// window (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<ServersReport>,
}

/// Messages and megabytes per second for `count` messages of `bytes` over `seconds`.
pub(crate) fn rates(count: u64, bytes: u64, seconds: f64) -> (f64, f64) {
    if seconds <= 0.0 {
        return (0.0, 0.0);
    }
    (count as f64 / seconds, bytes as f64 / MB / seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_known_and_unknown_codes_when_keyed_should_name_them() {
        assert_eq!(code_key(Code::TooManyRequests as i32), "TOO_MANY_REQUESTS");
        assert_eq!(code_key(40402), "TOPIC_NOT_FOUND");
        assert_eq!(code_key(12345), "CODE_12345");
        assert_eq!(
            grpc_key(&tonic::Status::unavailable("down")),
            "grpc:UNAVAILABLE"
        );
    }

    #[test]
    fn given_samples_when_summarised_should_give_ordered_percentiles_in_ms() {
        let mut h = new_histogram().expect("histogram");
        for ms in 1..=1000u64 {
            h.record(ms * 1_000_000).expect("in range");
        }
        let r = LatencyReport::from_histogram(&h).expect("samples");
        assert_eq!(r.samples, 1000);
        assert!((r.p50 - 500.0).abs() < 1.0, "{r:?}");
        assert!((r.p99 - 990.0).abs() < 1.0, "{r:?}");
        assert!((r.max - 1000.0).abs() < 1.0, "{r:?}");
        assert!(r.p50 <= r.p99 && r.p99 <= r.p999 && r.p999 <= r.max);
        assert!(LatencyReport::from_histogram(&new_histogram().expect("histogram")).is_none());
    }

    #[test]
    fn given_two_task_stats_when_merged_should_add_everything() {
        let mut a = TaskStats::new(&new_histogram().expect("histogram"));
        a.latency.record(1_000).expect("in range");
        a.measured = 2;
        a.total = 3;
        a.error("X".into(), 1);
        let mut b = TaskStats::new(&new_histogram().expect("histogram"));
        b.latency.record(2_000).expect("in range");
        b.measured = 5;
        b.total = 7;
        b.error("X".into(), 2);
        b.error("Y".into(), 1);
        b.redelivered = 1;
        a.merge(b);
        assert_eq!(a.latency.len(), 2);
        assert_eq!((a.measured, a.total, a.redelivered), (7, 10, 1));
        assert_eq!(a.errors.get("X"), Some(&3));
        assert_eq!(a.errors.get("Y"), Some(&1));
    }

    #[test]
    fn given_a_window_when_computing_rates_should_divide_by_it() {
        assert_eq!(rates(1000, 2_000_000, 2.0), (500.0, 1.0));
        assert_eq!(rates(10, 10, 0.0), (0.0, 0.0));
    }
}
