//! Chart series: throughput in (messages stored per second, all topics), throughput out
//! (consume offsets advanced per second, all known consumer groups) and total backlog, from
//! the brokers' offsets, and RPC latency percentiles (p50, p99) per RPC from the growth of the
//! proxies' `rocketmq_rpc_latency` histograms between two samples (each proxy reports its
//! cumulative histograms with its clients; the quantile is interpolated within its bucket, as
//! Prometheus' `histogram_quantile` does). A sample is taken when a page asks for the series
//! and the last one is older than `sample_interval`, so nothing runs while nobody watches.
//!
//! The (group, topic) pairs followed are those of the connected consumers' subscriptions, and
//! stay followed after their clients leave (bounded by [`MAX_PAIRS`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use comet_proto::comet::v1::{ClusterMetadata, GetConsumerProgressRequest, RpcLatency};
use comet_vocab::system;
use serde_json::{Value, json};

use super::Console;
use super::brokers::{broker_targets, check_status, internal};

/// Samples kept (at 2 s each: ten minutes).
const MAX_SAMPLES: usize = 300;
/// (group, topic) pairs followed at most.
const MAX_PAIRS: usize = 500;
/// Topics sampled at most.
const MAX_TOPICS: usize = 500;
/// The group name used to read a topic's offsets when no consumer group is known for it (the
/// read creates nothing on the broker).
const PROBE_GROUP: &str = "comet-console";

/// Latency of one RPC over one sample interval, all proxies together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Percentiles {
    /// Calls completed in the interval.
    pub calls: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One point of the charts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    /// Wall clock, ms since the epoch.
    pub t_ms: i64,
    /// Messages stored per second since the previous sample.
    pub in_rate: f64,
    /// Consume offsets advanced per second since the previous sample.
    pub out_rate: f64,
    /// Messages not yet consumed by the followed groups.
    pub backlog: i64,
    /// Per RPC that had calls in the interval.
    pub latency: BTreeMap<String, Percentiles>,
}

/// Totals read at one instant.
#[derive(Debug, Clone, Default)]
pub(super) struct Totals {
    /// Per topic: the sum of its queues' max offsets.
    pub stored: HashMap<String, i64>,
    /// Sum of the followed groups' consume offsets.
    pub consumed: i64,
    /// Sum of the followed groups' backlogs.
    pub backlog: i64,
}

/// The chart state of a console.
#[derive(Debug, Default)]
pub(super) struct Series {
    samples: VecDeque<Sample>,
    last: Option<(Instant, Totals)>,
    /// Per topic: messages stored per second at the last sample.
    rates: HashMap<String, f64>,
    pairs: BTreeSet<(String, String)>,
    sampling: bool,
    /// The proxies' cumulative histograms at the last sample.
    latency_seen: Readings,
}

/// (proxy id, RPC) to (bucket bounds, cumulative counts).
type Readings = HashMap<(String, String), (Vec<f64>, Vec<u64>)>;

/// The `q` quantile of a histogram given as cumulative counts (one more than `bounds`, the
/// last one the total), interpolated linearly within its bucket; a quantile in the open-ended
/// last bucket is the highest bound. `None` without observations.
pub(super) fn quantile(bounds: &[f64], cumulative: &[u64], q: f64) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut below, mut lower) = (0u64, 0.0f64);
    for (i, &count) in cumulative.iter().enumerate() {
        if count as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return Some(lower);
            };
            let in_bucket = count.saturating_sub(below) as f64;
            let frac = if in_bucket > 0.0 {
                ((rank - below as f64) / in_bucket).clamp(0.0, 1.0)
            } else {
                1.0
            };
            return Some(lower + (upper - lower) * frac);
        }
        below = count;
        lower = bounds.get(i).copied().unwrap_or(lower);
    }
    Some(lower)
}

/// The calls of each RPC between two readings of the proxies' histograms, all proxies summed,
/// as percentiles; `seen` becomes the new readings. A proxy seen for the first time (or whose
/// counts went down: it restarted) only sets its baseline.
fn latency_growth(
    seen: &mut Readings,
    reports: &[(String, Vec<RpcLatency>)],
) -> BTreeMap<String, Percentiles> {
    let mut sums: BTreeMap<String, (Vec<f64>, Vec<u64>)> = BTreeMap::new();
    let mut next = HashMap::new();
    for (proxy, hists) in reports {
        for h in hists {
            if h.bucket_counts.len() != h.bounds_ms.len() + 1 {
                continue;
            }
            let key = (proxy.clone(), h.rpc.clone());
            if let Some((bounds, prev)) = seen.get(&key)
                && *bounds == h.bounds_ms
                && prev.iter().zip(&h.bucket_counts).all(|(p, c)| c >= p)
            {
                let delta: Vec<u64> = h
                    .bucket_counts
                    .iter()
                    .zip(prev)
                    .map(|(c, p)| c - p)
                    .collect();
                let sum = sums
                    .entry(h.rpc.clone())
                    .or_insert_with(|| (h.bounds_ms.clone(), vec![0; delta.len()]));
                if sum.0 == h.bounds_ms {
                    for (s, d) in sum.1.iter_mut().zip(&delta) {
                        *s += d;
                    }
                }
            }
            next.insert(key, (h.bounds_ms.clone(), h.bucket_counts.clone()));
        }
    }
    *seen = next;
    sums.into_iter()
        .filter_map(|(rpc, (bounds, counts))| {
            let calls = *counts.last()?;
            Some((
                rpc,
                Percentiles {
                    calls,
                    p50_ms: quantile(&bounds, &counts, 0.5)?,
                    p99_ms: quantile(&bounds, &counts, 0.99)?,
                },
            ))
        })
        .collect()
}

impl Series {
    /// Whether a new sample is due (and no other is being taken); marks one as being taken.
    pub(super) fn begin(&mut self, interval: std::time::Duration) -> bool {
        let due = self
            .last
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= interval);
        if due && !self.sampling {
            self.sampling = true;
            true
        } else {
            false
        }
    }

    /// Follows these (group, topic) pairs from now on.
    pub(super) fn follow(&mut self, pairs: impl IntoIterator<Item = (String, String)>) {
        for p in pairs {
            if self.pairs.len() >= MAX_PAIRS {
                break;
            }
            self.pairs.insert(p);
        }
    }

    pub(super) fn pairs(&self) -> Vec<(String, String)> {
        self.pairs.iter().cloned().collect()
    }

    /// Records totals read at `now` and the proxies' latency histograms (by proxy id): a
    /// sample against the previous ones.
    pub(super) fn record(
        &mut self,
        now: Instant,
        t_ms: i64,
        totals: Option<Totals>,
        latency: &[(String, Vec<RpcLatency>)],
    ) {
        self.sampling = false;
        let latency = latency_growth(&mut self.latency_seen, latency);
        let Some(totals) = totals else {
            return;
        };
        if let Some((at, prev)) = &self.last {
            let secs = now.duration_since(*at).as_secs_f64().max(0.001);
            let mut rates = HashMap::new();
            let mut stored_delta = 0i64;
            for (topic, &n) in &totals.stored {
                let d = prev.stored.get(topic).map_or(0, |&p| (n - p).max(0));
                stored_delta += d;
                rates.insert(topic.clone(), d as f64 / secs);
            }
            let consumed_delta = (totals.consumed - prev.consumed).max(0);
            self.rates = rates;
            self.samples.push_back(Sample {
                t_ms,
                in_rate: stored_delta as f64 / secs,
                out_rate: consumed_delta as f64 / secs,
                backlog: totals.backlog,
                latency,
            });
            while self.samples.len() > MAX_SAMPLES {
                self.samples.pop_front();
            }
        }
        self.last = Some((now, totals));
    }

    /// Messages stored per second into `topic` at the last sample.
    pub(super) fn rate(&self, topic: &str) -> Option<f64> {
        self.rates.get(topic).copied()
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "samples": self.samples.iter().map(|s| json!({
                "t_ms": s.t_ms, "in_rate": s.in_rate, "out_rate": s.out_rate, "backlog": s.backlog,
                "latency": s.latency.iter().map(|(rpc, p)| (rpc.clone(), json!({
                    "calls": p.calls, "p50_ms": p.p50_ms, "p99_ms": p.p99_ms,
                }))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Reads the totals from the brokers; `None` when a broker did not answer (the sample is
/// skipped rather than drawn as a drop).
pub(super) async fn read_totals(
    console: &Console,
    meta: &ClusterMetadata,
    pairs: &[(String, String)],
) -> Option<Totals> {
    let mut totals = Totals::default();
    let topics = meta
        .topics
        .iter()
        .filter(|t| !system::is_system_topic(&t.name))
        .take(MAX_TOPICS);
    for topic in topics {
        let mut groups: Vec<&str> = pairs
            .iter()
            .filter(|(_, t)| *t == topic.name)
            .map(|(g, _)| g.as_str())
            .collect();
        let followed = !groups.is_empty();
        if !followed {
            groups.push(PROBE_GROUP);
        }
        let Ok(targets) = broker_targets(meta, &topic.name, None) else {
            continue;
        };
        let mut stored = 0i64;
        for (i, group) in groups.iter().enumerate() {
            for t in &targets {
                let mut c = console.inner.brokers.client(t).ok()?;
                let reply = c
                    .get_consumer_progress(GetConsumerProgressRequest {
                        group: Some(internal(group)),
                        topic: Some(internal(&topic.name)),
                    })
                    .await
                    .ok()?
                    .into_inner();
                check_status(t, "reading offsets", reply.status.as_ref()).ok()?;
                for q in &reply.queues {
                    if i == 0 {
                        stored += q.max_offset;
                    }
                    if followed {
                        totals.consumed += q.consume_offset.max(q.min_offset);
                        totals.backlog += q.backlog;
                    }
                }
            }
        }
        totals.stored.insert(topic.name.clone(), stored);
    }
    Some(totals)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn given_two_readings_when_recorded_should_draw_rates_per_second() {
        let mut s = Series::default();
        let t0 = Instant::now();
        assert!(s.begin(Duration::from_secs(2)));
        assert!(!s.begin(Duration::from_secs(2)), "one sample at a time");
        let first = Totals {
            stored: HashMap::from([("t".to_owned(), 100)]),
            consumed: 50,
            backlog: 50,
        };
        let hist = |counts: Vec<u64>| {
            vec![(
                "p1".to_owned(),
                vec![RpcLatency {
                    rpc: "send_message".into(),
                    bounds_ms: vec![1.0, 10.0],
                    bucket_counts: counts,
                    sum_ms: 0.0,
                }],
            )]
        };
        s.record(t0, 0, Some(first), &hist(vec![5, 5, 5]));
        assert_eq!(s.json()["samples"].as_array().unwrap().len(), 0);
        let second = Totals {
            stored: HashMap::from([("t".to_owned(), 120)]),
            consumed: 90,
            backlog: 30,
        };
        // 100 more calls: 50 within 1 ms, 50 within 10 ms.
        s.record(
            t0 + Duration::from_secs(2),
            2000,
            Some(second),
            &hist(vec![55, 105, 105]),
        );
        let samples = s.json()["samples"].as_array().unwrap().clone();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0]["in_rate"], 10.0);
        assert_eq!(samples[0]["out_rate"], 20.0);
        assert_eq!(samples[0]["backlog"], 30);
        assert_eq!(s.rate("t"), Some(10.0));
        let send = &samples[0]["latency"]["send_message"];
        assert_eq!(send["calls"], 100);
        assert_eq!(send["p50_ms"], 1.0);
        let p99 = send["p99_ms"].as_f64().unwrap();
        assert!((p99 - 9.82).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn given_histograms_when_quantiles_are_asked_should_interpolate_within_buckets() {
        let bounds = [1.0, 10.0, 100.0];
        assert_eq!(quantile(&bounds, &[0, 0, 0, 0], 0.5), None);
        assert_eq!(quantile(&bounds, &[10, 10, 10, 10], 0.5), Some(0.5));
        assert_eq!(quantile(&bounds, &[0, 10, 10, 10], 0.5), Some(5.5));
        // All in the open-ended bucket: the highest bound.
        assert_eq!(quantile(&bounds, &[0, 0, 0, 4], 0.99), Some(100.0));
    }
}
