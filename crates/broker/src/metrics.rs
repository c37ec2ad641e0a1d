//! The broker's metrics: RocketMQ's storage and consumer-backlog series plus Comet's own
//! (disk watermark, timers, transactions, POP, a master's replication lag per replica), all
//! observed from one [`BrokerStats`] snapshot per collection (taken once and shared by every
//! callback of that collection). One table lists every gauge with the series it observes
//! (broker-wide, per group, per replica). The timer lateness histogram, the one instrument
//! recorded as it happens, belongs to the timer (`delay::lateness_histogram`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use comet_observe::{KeyValue, Observer};
use opentelemetry::metrics::AsyncInstrument;
use parking_lot::Mutex;

use crate::api::BrokerApi;
use crate::stats::{BrokerStats, GroupStats, ReplicaStats};

/// A snapshot younger than this is reused: one collection calls every callback in a row.
const SNAPSHOT_REUSE: Duration = Duration::from_millis(500);

struct Source {
    api: BrokerApi,
    last: Mutex<Option<(Instant, Arc<BrokerStats>)>>,
}

impl Source {
    fn stats(&self) -> Arc<BrokerStats> {
        let mut last = self.last.lock();
        if let Some((at, s)) = last.as_ref()
            && at.elapsed() < SNAPSHOT_REUSE
        {
            return Arc::clone(s);
        }
        let s = Arc::new(self.api.stats());
        *last = Some((Instant::now(), Arc::clone(&s)));
        s
    }
}

/// The broker's registered instruments; dropping it leaves them registered but idle.
pub struct BrokerMetrics {
    _instruments: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for BrokerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerMetrics")
            .field("instruments", &self._instruments.len())
            .finish()
    }
}

/// What a gauge observes in a snapshot, and for which series.
#[derive(Clone, Copy)]
enum Gauge {
    /// One broker-wide series.
    Broker(fn(&BrokerStats) -> f64),
    /// One series per (topic, consumer group).
    Group(fn(&GroupStats) -> f64),
    /// One series per replica of a master (broker set, replica id).
    Replica(fn(&ReplicaStats) -> f64),
}

impl Gauge {
    /// Observes this gauge's series of `stats`, each with the role's labels and its own.
    fn observe(self, stats: &BrokerStats, observer: &Observer, o: &dyn AsyncInstrument<f64>) {
        match self {
            Gauge::Broker(value) => o.observe(value(stats), &observer.labels(&[])),
            Gauge::Group(value) => {
                for g in &stats.groups {
                    let attrs = observer.labels(&[
                        KeyValue::new("topic", g.topic.clone()),
                        KeyValue::new("consumer_group", g.group.clone()),
                    ]);
                    o.observe(value(g), &attrs);
                }
            }
            Gauge::Replica(value) => {
                for r in &stats.replicas {
                    let attrs = observer.labels(&[
                        KeyValue::new("broker_set", r.broker_set.clone()),
                        KeyValue::new("replica_id", r.replica_id.to_string()),
                    ]);
                    o.observe(value(r), &attrs);
                }
            }
        }
    }
}

/// Every gauge: name, description, unit, what it observes.
const GAUGES: &[(&str, &str, &str, Gauge)] = &[
    (
        "rocketmq_storage_size",
        "Bytes of commitlog stored",
        "bytes",
        Gauge::Broker(|s| s.storage_bytes as f64),
    ),
    (
        "rocketmq_storage_flush_behind_bytes",
        "Bytes written but not yet flushed",
        "bytes",
        Gauge::Broker(|s| s.flush_behind_bytes as f64),
    ),
    (
        "rocketmq_storage_dispatch_behind_bytes",
        "Bytes written but not yet dispatched to consume queues",
        "bytes",
        Gauge::Broker(|s| s.dispatch_behind_bytes as f64),
    ),
    (
        "rocketmq_storage_message_reserve_time",
        "Age of the oldest stored message",
        "milliseconds",
        Gauge::Broker(|s| s.reserve_time_ms as f64),
    ),
    (
        "comet_disk_used_ratio",
        "Fraction of the data disk in use",
        "1",
        Gauge::Broker(|s| s.disk_used_ratio),
    ),
    (
        "comet_disk_watermark_state",
        "0 below the high (clean) watermark, 1 above it, 2 above the refuse watermark",
        "1",
        Gauge::Broker(|s| f64::from(s.watermark_state())),
    ),
    (
        "comet_disk_high_watermark_ratio",
        "The high (clean) watermark",
        "1",
        Gauge::Broker(|s| s.disk_high_watermark),
    ),
    (
        "comet_timer_pending_messages",
        "Delay messages scheduled and not yet delivered",
        "1",
        Gauge::Broker(|s| s.timer.pending as f64),
    ),
    (
        "comet_transaction_half_messages",
        "Half messages waiting for a resolution",
        "1",
        Gauge::Broker(|s| s.transactions.pending as f64),
    ),
    (
        "comet_pop_long_polls_waiting",
        "Long polls waiting for messages",
        "1",
        Gauge::Broker(|s| s.long_polls_waiting as f64),
    ),
    (
        "rocketmq_consumer_ready_messages",
        "Messages ready to be consumed",
        "1",
        Gauge::Group(|g| g.ready as f64),
    ),
    (
        "rocketmq_consumer_inflight_messages",
        "Messages delivered and not yet acknowledged",
        "1",
        Gauge::Group(|g| g.inflight as f64),
    ),
    (
        "rocketmq_consumer_queueing_latency",
        "Age of the oldest message not yet delivered",
        "milliseconds",
        Gauge::Group(|g| g.queueing_latency_ms as f64),
    ),
    (
        "rocketmq_consumer_lag_latency",
        "Age of the oldest message not yet consumed",
        "milliseconds",
        Gauge::Group(|g| g.lag_latency_ms as f64),
    ),
    (
        "comet_replication_lag_bytes",
        "Bytes of the master's log a replica has not confirmed (reported by the master)",
        "bytes",
        Gauge::Replica(|r| r.lag_bytes as f64),
    ),
    (
        "comet_replication_lag_time",
        "How long a replica has not held the master's whole log (reported by the master)",
        "milliseconds",
        Gauge::Replica(|r| r.lag_ms as f64),
    ),
];

type Count = fn(&BrokerStats) -> u64;

/// Broker-wide counters since the broker opened: name, description, value.
const SCALAR_COUNTERS: &[(&str, &str, Count)] = &[
    (
        "comet_timer_delivered_messages_total",
        "Delay messages delivered",
        |s| s.timer.delivered,
    ),
    (
        "comet_transaction_checks_total",
        "Transaction checks sent to producers",
        |s| s.transactions.checks,
    ),
    (
        "comet_transaction_discarded_total",
        "Half messages discarded after the most checks",
        |s| s.transactions.discarded,
    ),
    (
        "comet_transaction_committed_total",
        "Transactions committed",
        |s| s.transactions.committed,
    ),
    (
        "comet_transaction_rolled_back_total",
        "Transactions rolled back",
        |s| s.transactions.rolled_back,
    ),
    (
        "comet_pop_revived_messages_total",
        "In-flight messages visible again after their invisible time",
        |s| s.revived,
    ),
];

impl BrokerMetrics {
    /// Registers the broker's instruments with `observer`, reading `api` at collection time.
    pub fn register(observer: &Observer, api: BrokerApi) -> BrokerMetrics {
        let meter = observer.meter();
        let source = Arc::new(Source {
            api,
            last: Mutex::new(None),
        });
        let base = observer.labels(&[]);
        let mut kept: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
        for &(name, description, unit, gauge) in GAUGES {
            let (source, observer) = (Arc::clone(&source), observer.clone());
            kept.push(Box::new(
                meter
                    .f64_observable_gauge(name)
                    .with_description(description)
                    .with_unit(unit)
                    .with_callback(move |o| gauge.observe(&source.stats(), &observer, o))
                    .build(),
            ));
        }
        for &(name, description, value) in SCALAR_COUNTERS {
            let (source, attrs) = (Arc::clone(&source), base.clone());
            kept.push(Box::new(
                meter
                    .u64_observable_counter(name)
                    .with_description(description)
                    .with_callback(move |o| o.observe(value(&source.stats()), &attrs))
                    .build(),
            ));
        }
        let (dlq_source, dlq_observer) = (Arc::clone(&source), observer.clone());
        kept.push(Box::new(
            meter
                .u64_observable_counter("rocketmq_send_to_dlq_messages_total")
                .with_description("Messages moved to the dead-letter queue")
                .with_callback(move |o| {
                    for (group, topic, n) in &dlq_source.stats().dead_letters {
                        let attrs = dlq_observer.labels(&[
                            KeyValue::new("topic", topic.clone()),
                            KeyValue::new("consumer_group", group.clone()),
                        ]);
                        o.observe(*n, &attrs);
                    }
                })
                .build(),
        ));
        BrokerMetrics { _instruments: kept }
    }
}
