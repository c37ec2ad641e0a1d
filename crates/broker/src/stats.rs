//! [`BrokerStats`]: a snapshot of one broker instance as plain numbers (storage, consumer
//! backlog per group and topic, dead letters, timers, transactions, long polls, a master's
//! replication lag per replica), what the `metrics` module reports. Taking it reads in-memory
//! state under short locks and a few records' store times (the oldest stored message, each
//! group's oldest unconsumed one).

use crate::clock::now_ms;
use crate::delay::TimerStats;
use crate::engine::{EngineRole, Inner};
use crate::transaction::table::TransactionStats;

/// Backlog of one consumer group on one topic (summed over its queues on this broker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStats {
    pub group: String,
    pub topic: String,
    /// Messages ready to be delivered: never handed out, plus ones visible again.
    pub ready: u64,
    /// Messages handed out and not yet acknowledged (invisible).
    pub inflight: u64,
    /// Age of the oldest message never handed out, in ms (0 without one).
    pub queueing_latency_ms: u64,
    /// Age of the oldest message not yet consumed (acknowledged), in ms (0 without one).
    pub lag_latency_ms: u64,
}

/// One replica of this broker's set as its master sees it (only a master reports these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStats {
    /// The broker set (`broker_set` label).
    pub broker_set: String,
    /// The replica's broker id (`replica_id` label).
    pub replica_id: u64,
    /// Bytes of the master's log the replica has not confirmed.
    pub lag_bytes: u64,
    /// How long the replica has not held the master's whole log, in ms (0 when it does).
    pub lag_ms: u64,
}

/// One broker instance, now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerStats {
    /// Bytes of commitlog stored.
    pub storage_bytes: u64,
    /// Bytes written but not yet flushed.
    pub flush_behind_bytes: u64,
    /// Bytes written but not yet dispatched to consume queues.
    pub dispatch_behind_bytes: u64,
    /// Age of the oldest stored message, in ms (0 when empty).
    pub reserve_time_ms: u64,
    /// Fraction of the data disk in use.
    pub disk_used_ratio: f64,
    /// Above this ratio old segments are deleted early (the clean watermark).
    pub disk_high_watermark: f64,
    /// Above this ratio appends are refused.
    pub disk_refuse_watermark: f64,
    /// Backlog per (group, topic), sorted.
    pub groups: Vec<GroupStats>,
    /// Messages dead-lettered since the instance opened, per (group, origin topic).
    pub dead_letters: Vec<(String, String, u64)>,
    /// In-flight messages visible again after their invisible time, since open.
    pub revived: u64,
    /// Long polls waiting for messages.
    pub long_polls_waiting: u64,
    /// Lite topics held (all parent topics).
    pub lite_topics: u64,
    /// (client, lite topic) subscriptions held.
    pub lite_subscriptions: u64,
    pub timer: TimerStats,
    pub transactions: TransactionStats,
    /// A master's replicas, by id (empty on a standalone broker and on a replica).
    pub replicas: Vec<ReplicaStats>,
}

impl BrokerStats {
    /// 0 below the high watermark, 1 above it, 2 above the refuse watermark.
    pub fn watermark_state(&self) -> u8 {
        if self.disk_used_ratio > self.disk_refuse_watermark {
            2
        } else if self.disk_used_ratio > self.disk_high_watermark {
            1
        } else {
            0
        }
    }
}

/// Disk use and commitlog extent of one broker instance, now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StorageStatus {
    /// Fraction of the data disk in use.
    pub disk_used_ratio: f64,
    /// The high (clean) watermark.
    pub disk_high_watermark: f64,
    /// The refuse watermark.
    pub disk_refuse_watermark: f64,
    /// Bytes of commitlog stored.
    pub storage_bytes: u64,
    /// The end of the commitlog (physical offset; 0 before the store opened).
    pub log_end_offset: i64,
}

impl Inner {
    /// Disk use and commitlog extent (atomics only).
    pub(crate) fn storage_status(&self) -> StorageStatus {
        let mut out = StorageStatus {
            disk_high_watermark: self.cfg.retention.disk_high_watermark,
            disk_refuse_watermark: self.cfg.retention.disk_refuse_watermark,
            ..StorageStatus::default()
        };
        if let Some(store) = self.store.read().clone() {
            let write = store.write_offset();
            out.disk_used_ratio = store.disk_used_ratio();
            out.storage_bytes = u64::try_from(write - store.min_physical_offset()).unwrap_or(0);
            out.log_end_offset = write;
        }
        out
    }

    /// The snapshot (see the module docs).
    pub(crate) fn stats(&self) -> BrokerStats {
        let now = now_ms();
        let age = |ts: i64| u64::try_from(now.saturating_sub(ts)).unwrap_or(0);
        let mut out = BrokerStats {
            disk_high_watermark: self.cfg.retention.disk_high_watermark,
            disk_refuse_watermark: self.cfg.retention.disk_refuse_watermark,
            timer: self.delays.stats(),
            transactions: self.transactions.stats(),
            revived: self.counters.revived_total(),
            long_polls_waiting: self.hub.waiting() as u64,
            lite_topics: self.lite.len() as u64,
            lite_subscriptions: self.lite_subs.count() as u64,
            dead_letters: self
                .counters
                .dead_letters()
                .into_iter()
                .map(|((g, t), n)| (g, t, n))
                .collect(),
            ..BrokerStats::default()
        };
        let Some(store) = self.store.read().clone() else {
            return out;
        };
        let write = store.write_offset();
        let min = store.min_physical_offset();
        let positive = |n: i64| u64::try_from(n).unwrap_or(0);
        out.storage_bytes = positive(write - min);
        out.flush_behind_bytes = positive(write - store.flushed_offset());
        out.dispatch_behind_bytes = positive(write - store.dispatched_offset());
        out.disk_used_ratio = store.disk_used_ratio();
        if let EngineRole::Master { tracker, .. } = &self.role {
            out.replicas = tracker
                .lags(write, tokio::time::Instant::now())
                .into_iter()
                .map(|l| ReplicaStats {
                    broker_set: self.cfg.broker_set.clone(),
                    replica_id: l.replica_id,
                    lag_bytes: l.bytes,
                    lag_ms: u64::try_from(l.time.as_millis()).unwrap_or(u64::MAX),
                })
                .collect();
        }
        if write > min
            && let Ok(m) = store.read(min)
        {
            out.reserve_time_ms = age(m.store_timestamp);
        }
        let stored_at = |topic: &str, queue_id: i32, offset: i64| {
            store
                .queue_entry(topic, queue_id, offset)
                .and_then(|e| store.read(e.physical_offset).ok())
                .map(|m| m.store_timestamp)
        };
        let mut groups: std::collections::BTreeMap<(String, String), GroupStats> =
            std::collections::BTreeMap::new();
        for slot in self.consumers.all() {
            let key = &slot.key;
            if crate::lite::index::split_key(&key.topic).is_some() {
                // Lite topics are counted as a whole (`lite_topics`), not per (group, lite).
                continue;
            }
            let (pop, ack, redeliver, held, inflight) = {
                let st = slot.state.lock();
                if !st.initialized {
                    continue;
                }
                (
                    st.pop_offset,
                    st.ack_offset(),
                    st.ready.len() as u64,
                    st.held() as u64,
                    st.inflight.len() as u64,
                )
            };
            let max = store.max_offset(&key.topic, key.queue_id);
            let g = groups
                .entry((key.group.clone(), key.topic.clone()))
                .or_insert_with(|| GroupStats {
                    group: key.group.clone(),
                    topic: key.topic.clone(),
                    ready: 0,
                    inflight: 0,
                    queueing_latency_ms: 0,
                    lag_latency_ms: 0,
                });
            g.ready += positive(max - pop) + redeliver + held;
            g.inflight += inflight.saturating_sub(redeliver + held);
            if pop < max
                && let Some(ts) = stored_at(&key.topic, key.queue_id, pop)
            {
                g.queueing_latency_ms = g.queueing_latency_ms.max(age(ts));
            }
            if ack < max
                && let Some(ts) = stored_at(&key.topic, key.queue_id, ack)
            {
                g.lag_latency_ms = g.lag_latency_ms.max(age(ts));
            }
        }
        out.groups = groups.into_values().collect();
        out
    }
}
