//! Chart series: throughput in (messages stored per second, all topics), throughput out
//! (consume offsets advanced per second, all known consumer groups) and total backlog, from
//! the brokers' offsets. A sample is taken when a page asks for the series and the last one is
//! older than `sample_interval`, so nothing runs while nobody watches. RPC latency percentiles
//! are not here: the controller sees no request timings.
//!
//! The (group, topic) pairs followed are those of the connected consumers' subscriptions, and
//! stay followed after their clients leave (bounded by [`MAX_PAIRS`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use comet_proto::comet::v1::{ClusterMetadata, GetConsumerProgressRequest};
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

/// One point of the charts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Sample {
    /// Wall clock, ms since the epoch.
    pub t_ms: i64,
    /// Messages stored per second since the previous sample.
    pub in_rate: f64,
    /// Consume offsets advanced per second since the previous sample.
    pub out_rate: f64,
    /// Messages not yet consumed by the followed groups.
    pub backlog: i64,
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

    /// Records totals read at `now`: a sample against the previous totals.
    pub(super) fn record(&mut self, now: Instant, t_ms: i64, totals: Option<Totals>) {
        self.sampling = false;
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
        s.record(t0, 0, Some(first));
        assert_eq!(s.json()["samples"].as_array().unwrap().len(), 0);
        let second = Totals {
            stored: HashMap::from([("t".to_owned(), 120)]),
            consumed: 90,
            backlog: 30,
        };
        s.record(t0 + Duration::from_secs(2), 2000, Some(second));
        let samples = s.json()["samples"].as_array().unwrap().clone();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0]["in_rate"], 10.0);
        assert_eq!(samples[0]["out_rate"], 20.0);
        assert_eq!(samples[0]["backlog"], 30);
        assert_eq!(s.rate("t"), Some(10.0));
    }
}
