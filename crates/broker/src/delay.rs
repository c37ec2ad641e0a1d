//! Delayed delivery: messages whose `delivery_timestamp` lies in the future wait in the
//! persisted timer wheel of `comet-store` and are appended to their real topic when due.
//!
//! ```text
//!  send(DELAY, t) ─► commitlog: rmq_sys_wheel_timer/0  (record keeps the real topic + queue)
//!                └─► TimerStore::schedule(t, {physical offset, size})
//!  timer task:  poll_due(now) ─► read timer record ─► append copy to <topic>/<queue>
//!                               (system property TIMER_ORIGIN = timer record's offset)
//!                            ─► TimerStore::commit(last delivered entry)
//! ```
//!
//! # Exactly once
//! Due entries are delivered strictly in the order `poll_due` returns them, and an entry is
//! committed only after its copy (and every copy before it) is appended; commits are cumulative.
//! A crash between the append and the commit brings the entry back after the restart; every
//! entry that was due before the restart is therefore looked up first (message-id index of the
//! real topic, matching `TIMER_ORIGIN`), and delivered only if no copy exists. Entries that come
//! due later cannot have been delivered before and skip the lookup.
//!
//! # Durability
//! A schedule survives a process crash once `send` answered (the wheel is memory-mapped); for
//! power loss the wheel is flushed at the commitlog's flush interval (ASYNC) or before the send
//! is answered (SYNC), matching the commitlog's own contract.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use comet_store::timer::{TimerConfig, TimerEntry, TimerPayload, TimerStore};
use comet_store::{Message, MessageStore, StoreError};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::convert::{SYS_DELIVERY_TIMESTAMP, SYS_MESSAGE_TYPE};
use crate::meta::{Access, MetaIndex};

/// The system topic holding delayed messages until they are due (RocketMQ's name).
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
/// On a timer record: the topic the message is delivered to.
pub(crate) const SYS_TIMER_REAL_TOPIC: &str = "TIMER_REAL_TOPIC";
/// On a timer record: the queue id the message is delivered to.
pub(crate) const SYS_TIMER_REAL_QUEUE_ID: &str = "TIMER_REAL_QUEUE_ID";
/// On a delivered copy: commitlog offset of the timer record it came from.
pub const SYS_TIMER_ORIGIN: &str = "TIMER_ORIGIN";

/// Largest number of due messages appended as one batch.
const DELIVER_BATCH: usize = 64;

/// Counters of delayed delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerStats {
    /// Timers scheduled and not yet delivered (committed).
    pub pending: u64,
    /// Delayed messages delivered to their topic since the broker opened.
    pub delivered: u64,
    /// Due timers whose delivered copy already existed (a crash between delivery and commit).
    pub deduplicated: u64,
    /// Due timers whose stored message was gone (retention) or unreadable.
    pub lost: u64,
}

/// The timer wheel and the bookkeeping of its delivery task.
pub(crate) struct Delays {
    pub timer: Arc<TimerStore>,
    /// Wall clock at open: entries due at or before it may have been delivered before a crash.
    opened_ms: i64,
    /// Polled entries not yet delivered (a failed append is retried with these first).
    backlog: Mutex<Vec<TimerEntry>>,
    /// When the delivery task plans to wake up next (ms since the epoch).
    next_wake: AtomicI64,
    /// Woken when a timer due before `next_wake` is scheduled.
    pub wake: Notify,
    delivered: AtomicU64,
    deduplicated: AtomicU64,
    lost: AtomicU64,
}

impl Delays {
    /// Opens (recovers) the timer store in `dir`.
    pub fn open(
        dir: &std::path::Path,
        slot: std::time::Duration,
        max_delay: std::time::Duration,
        now_ms: i64,
    ) -> Result<Delays, StoreError> {
        let cfg = TimerConfig {
            slot_ms: u64::try_from(slot.as_millis()).unwrap_or(1000).max(1),
            wheel_slots: wheel_slots(slot),
            // The store's own limit leaves a day of slack over the broker's, which the broker
            // enforces itself with a client-facing error.
            max_delay_ms: i64::try_from(max_delay.as_millis())
                .unwrap_or(i64::MAX / 2)
                .saturating_add(86_400_000),
            ..TimerConfig::default()
        };
        let timer = TimerStore::open(dir, cfg, now_ms)?;
        Ok(Delays {
            timer: Arc::new(timer),
            opened_ms: now_ms,
            backlog: Mutex::new(Vec::new()),
            next_wake: AtomicI64::new(i64::MIN),
            wake: Notify::new(),
            delivered: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> TimerStats {
        TimerStats {
            pending: self.timer.pending(),
            delivered: self.delivered.load(Ordering::Relaxed),
            deduplicated: self.deduplicated.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }

    /// Schedules the stored timer record (blocking: may create a timer log segment). Wakes
    /// the delivery task if the new timer is due before its planned wake-up.
    pub fn schedule(
        &self,
        deliver_at_ms: i64,
        physical_offset: i64,
        size: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let payload = TimerPayload {
            commit_log_offset: physical_offset,
            size: i32::try_from(size).unwrap_or(i32::MAX),
            cookie: 0,
        };
        self.timer.schedule(deliver_at_ms, payload, now_ms)?;
        if deliver_at_ms < self.next_wake.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Records when the delivery task will look again.
    pub fn set_next_wake(&self, at_ms: i64) {
        self.next_wake.store(at_ms, Ordering::Release);
    }

    /// Takes the entries to deliver now: the backlog of a failed round first (then `true`:
    /// some of them may have been appended before the failure), else newly due ones
    /// (blocking: loading a wheel slot reads the timer log).
    pub fn take_due(&self, now_ms: i64, max: usize) -> Result<(Vec<TimerEntry>, bool), StoreError> {
        let backlog = std::mem::take(&mut *self.backlog.lock());
        if !backlog.is_empty() {
            return Ok((backlog, true));
        }
        Ok((self.timer.poll_due(now_ms, max)?, false))
    }

    /// Delivers `entries` in order (blocking). Returns how many were completed (delivered,
    /// found already delivered, or lost); those are committed. The rest is kept for the next
    /// round and the error returned. With `retry`, every entry is first looked up in its topic
    /// (a failed round may have appended some).
    pub fn deliver(
        &self,
        store: &MessageStore,
        idx: &MetaIndex,
        entries: Vec<TimerEntry>,
        retry: bool,
    ) -> Result<usize, StoreError> {
        let mut done = 0usize;
        let mut result = Ok(());
        'outer: for chunk in entries.chunks(DELIVER_BATCH) {
            let mut records = Vec::with_capacity(chunk.len());
            for e in chunk {
                match self.prepare(store, idx, e, retry) {
                    Ok(Some(rec)) => records.push(rec),
                    Ok(None) => {}
                    Err(err) => {
                        result = Err(err);
                        break 'outer;
                    }
                }
            }
            if let Err(err) = append_all(store, &records) {
                result = Err(err);
                break;
            }
            self.delivered
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            done += chunk.len();
            // Cumulative: covers every entry before it. Should it fail, the chunk is delivered
            // all the same; after a restart its entries are found in their topic.
            if let Some(last) = chunk.last()
                && let Err(err) = self.timer.commit(last)
            {
                result = Err(err);
                break;
            }
        }
        if let Err(e) = result {
            let rest = entries[done..].to_vec();
            tracing::warn!(error = %e, undelivered = rest.len(), "delayed delivery failed; will retry");
            *self.backlog.lock() = rest;
            return Err(e);
        }
        Ok(done)
    }

    /// The copy of one due entry to append, or `None` when nothing must be appended (already
    /// delivered before a restart, or the stored message is gone).
    fn prepare(
        &self,
        store: &MessageStore,
        idx: &MetaIndex,
        e: &TimerEntry,
        retry: bool,
    ) -> Result<Option<Message>, StoreError> {
        let offset = e.payload.commit_log_offset;
        let stored = match store.read(offset) {
            Ok(m) => m,
            Err(StoreError::OffsetOutOfRange { .. }) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    physical_offset = offset,
                    "delayed message was deleted by retention before it was due; dropped"
                );
                return Ok(None);
            }
            Err(StoreError::Corrupt { offset, reason }) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(physical_offset = offset, %reason, "delayed message is corrupt; dropped");
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        let Some(rec) = from_timer_record(&stored.message, offset, idx) else {
            self.lost.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                physical_offset = offset,
                topic = %stored.message.topic,
                "timer entry does not point at a delayed message; dropped"
            );
            return Ok(None);
        };
        if (retry || e.deliver_at_ms <= self.opened_ms) && already_delivered(store, &rec, offset)? {
            self.deduplicated.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                topic = %rec.topic,
                physical_offset = offset,
                "delayed message was delivered before the restart; not delivered again"
            );
            return Ok(None);
        }
        Ok(Some(rec))
    }
}

/// Wheel slots for a slot length: two days of slots (a one-day filing horizon), at least 64 and
/// at most the store's limit.
fn wheel_slots(slot: std::time::Duration) -> u32 {
    let ms = slot.as_millis().max(1);
    u32::try_from((2 * 86_400_000 / ms).clamp(64, 1 << 22)).unwrap_or(1 << 22)
}

/// Appends records as batches, falling back to one by one when a batch is too large.
fn append_all(store: &MessageStore, records: &[Message]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    match store.append_batch(records) {
        Ok(_) => Ok(()),
        Err(StoreError::MessageTooLarge { .. }) if records.len() > 1 => {
            for r in records {
                store.append(r)?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether the real topic already holds the copy of the timer record at `origin`.
fn already_delivered(store: &MessageStore, rec: &Message, origin: i64) -> Result<bool, StoreError> {
    let origin = origin.to_string();
    Ok(store
        .query_by_id(&rec.topic, &rec.properties.message_id)?
        .iter()
        .any(|m| m.message.properties.system.get(SYS_TIMER_ORIGIN) == Some(&origin)))
}

/// The timer-topic record of a delayed message `rec` (real topic and queue kept as properties).
pub(crate) fn to_timer_record(mut rec: Message) -> Message {
    let sys = &mut rec.properties.system;
    sys.insert(SYS_TIMER_REAL_TOPIC.to_owned(), rec.topic.clone());
    sys.insert(SYS_TIMER_REAL_QUEUE_ID.to_owned(), rec.queue_id.to_string());
    rec.topic = TIMER_TOPIC.to_owned();
    rec.queue_id = 0;
    rec
}

/// The copy of a timer record to deliver: real topic and queue (the queue id wraps if the
/// topic now has fewer queues here), `TIMER_ORIGIN` = the timer record's offset.
pub(crate) fn from_timer_record(m: &Message, origin: i64, idx: &MetaIndex) -> Option<Message> {
    if m.topic != TIMER_TOPIC {
        return None;
    }
    let mut rec = m.clone();
    let sys = &mut rec.properties.system;
    let topic = sys.remove(SYS_TIMER_REAL_TOPIC)?;
    let queue_id: i32 = sys.remove(SYS_TIMER_REAL_QUEUE_ID)?.parse().ok()?;
    sys.insert(SYS_TIMER_ORIGIN.to_owned(), origin.to_string());
    // Metadata may lag (or the topic was deleted): the message is delivered regardless, as
    // accepted; only a shrunk queue count moves it to an existing queue.
    let queue_id = match idx.queues(&topic, Access::Write) {
        Ok(n) if n > 0 && queue_id as u32 >= n => (queue_id as u32 % n) as i32,
        _ => queue_id,
    };
    rec.topic = topic;
    rec.queue_id = queue_id;
    Some(rec)
}

/// The delivery time of a converted record, if it carries one.
pub(crate) fn delivery_ms(rec: &Message) -> Option<i64> {
    rec.properties
        .system
        .get(SYS_DELIVERY_TIMESTAMP)
        .and_then(|s| s.parse().ok())
}

/// Whether a converted record is transactional.
pub(crate) fn is_transaction(rec: &Message) -> bool {
    rec.properties
        .system
        .get(SYS_MESSAGE_TYPE)
        .is_some_and(|t| t == "TRANSACTION")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use comet_store::{DiskStats, DiskUsage, Properties, StoreConfig};

    /// A mostly empty disk, so the test never depends on the host's free space.
    struct RoomyDisk;

    impl DiskUsage for RoomyDisk {
        fn stats(&self, _: &std::path::Path) -> std::io::Result<DiskStats> {
            Ok(DiskStats {
                total: 1 << 40,
                available: 1 << 39,
            })
        }
    }

    fn rec(topic: &str, queue_id: i32, id: &str) -> Message {
        Message {
            topic: topic.into(),
            queue_id,
            flags: 0,
            born_timestamp: 1,
            born_host: comet_store::record::UNKNOWN_HOST,
            reconsume_times: 0,
            properties: Properties {
                message_id: id.into(),
                ..Default::default()
            },
            body: bytes::Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn given_timer_record_when_restored_should_get_real_topic_queue_and_origin() {
        let t = to_timer_record(rec("t", 3, "m"));
        assert_eq!((t.topic.as_str(), t.queue_id), (TIMER_TOPIC, 0));
        let idx = MetaIndex::default();
        let back = from_timer_record(&t, 77, &idx).unwrap();
        assert_eq!((back.topic.as_str(), back.queue_id), ("t", 3));
        assert_eq!(back.properties.system.get(SYS_TIMER_ORIGIN).unwrap(), "77");
        assert!(!back.properties.system.contains_key(SYS_TIMER_REAL_TOPIC));
        assert!(from_timer_record(&rec("t", 0, "m"), 1, &idx).is_none());
    }

    #[test]
    fn given_slot_lengths_when_sized_should_cover_two_days_within_limits() {
        assert_eq!(wheel_slots(std::time::Duration::from_secs(1)), 172_800);
        assert_eq!(wheel_slots(std::time::Duration::from_secs(3600)), 64);
        assert_eq!(wheel_slots(std::time::Duration::from_millis(1)), 1 << 22);
    }

    /// A crash after the copy was appended but before the timer commit must not deliver twice.
    #[test]
    fn given_copy_appended_but_not_committed_when_reopened_should_not_deliver_again() {
        let dir = tempfile::tempdir().unwrap();
        let store_cfg = || {
            let mut c = StoreConfig::new(dir.path().join("store"));
            c.segment_size = 1 << 20;
            c.max_record_size = 1 << 20;
            c.retention.disk_usage = Arc::new(RoomyDisk);
            c
        };
        let timer_dir = dir.path().join("timer");
        let now = crate::convert::now_ms();
        let idx = MetaIndex::default();
        {
            let store = MessageStore::open(store_cfg()).unwrap();
            let d = Delays::open(
                &timer_dir,
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(3600),
                now,
            )
            .unwrap();
            let a = store.append(&to_timer_record(rec("t", 0, "m1"))).unwrap();
            let b = store.append(&to_timer_record(rec("t", 0, "m2"))).unwrap();
            d.schedule(now - 10, a.physical_offset, a.size, now)
                .unwrap();
            d.schedule(now - 5, b.physical_offset, b.size, now).unwrap();
            let (due, _) = d.take_due(now, 10).unwrap();
            assert_eq!(due.len(), 2);
            // The copy of the first entry is appended, then the process dies before commit.
            let copy = d.prepare(&store, &idx, &due[0], false).unwrap().unwrap();
            store.append(&copy).unwrap();
            store.abandon();
        }
        let store = MessageStore::open(store_cfg()).unwrap();
        let later = crate::convert::now_ms().max(now + 1);
        let d = Delays::open(
            &timer_dir,
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(3600),
            later,
        )
        .unwrap();
        let (due, _) = d.take_due(later, 10).unwrap();
        assert_eq!(due.len(), 2, "uncommitted entries come back");
        assert_eq!(d.deliver(&store, &idx, due, false).unwrap(), 2);
        let s = d.stats();
        assert_eq!((s.delivered, s.deduplicated, s.pending), (1, 1, 0));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut entries = store.read_queue("t", 0, 0, 10);
        while entries.len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
            entries = store.read_queue("t", 0, 0, 10);
        }
        assert_eq!(entries.len(), 2, "one copy of each message");
        let ids: Vec<String> = entries
            .iter()
            .map(|e| {
                store
                    .read(e.physical_offset)
                    .unwrap()
                    .message
                    .properties
                    .message_id
            })
            .collect();
        assert_eq!(ids, vec!["m1".to_owned(), "m2".to_owned()]);
        store.close().unwrap();
    }
}
