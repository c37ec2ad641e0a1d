//! Reads: a record by commitlog offset, consume-queue entries and messages by queue offset,
//! the queue offset of a time, and messages by key or id through the index.
//!
//! Every record served is CRC-verified by the commitlog; queue reads see only dispatched
//! entries. Index hits are hash matches, so the record itself decides whether it matches.

use std::sync::Arc;

use super::MessageStore;
use super::dispatch::index_key;
use crate::consume_queue::{ConsumeQueue, CqEntry};
use crate::error::{Result, StoreError};
use crate::record::{Message, StoredMessage};

/// Messages read from a consume queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    /// Messages that passed the filter, in queue order.
    pub messages: Vec<StoredMessage>,
    /// Where the next read should start.
    pub next_offset: i64,
    /// First offset of the queue still stored.
    pub min_offset: i64,
    /// One past the last offset of the queue.
    pub max_offset: i64,
}

impl MessageStore {
    /// Reads the record at a commitlog offset, verifying its CRC.
    ///
    /// # Errors
    /// [`StoreError::OffsetOutOfRange`]; [`StoreError::Corrupt`] (never served).
    pub fn read(&self, physical_offset: i64) -> Result<StoredMessage> {
        self.inner.log.read(physical_offset)
    }

    fn queue(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.inner
            .queues
            .read()
            .get(topic)
            .and_then(|q| q.get(&queue_id))
            .cloned()
    }

    /// The consume-queue entry at `queue_offset` of (topic, queue), if it is stored.
    pub fn queue_entry(&self, topic: &str, queue_id: i32, queue_offset: i64) -> Option<CqEntry> {
        self.queue(topic, queue_id)?.entry(queue_offset)
    }

    /// Up to `max` consume-queue entries of (topic, queue) from logical offset `from`.
    pub fn read_queue(&self, topic: &str, queue_id: i32, from: i64, max: usize) -> Vec<CqEntry> {
        self.queue(topic, queue_id)
            .map(|cq| cq.read(from, max))
            .unwrap_or_default()
    }

    /// Reads up to `max_count` messages of (topic, queue) from logical offset `from`, keeping
    /// those whose consume-queue entry passes `filter` (e.g. a tag-hash pre-filter). At most
    /// `max(4 * max_count, 256)` entries are examined per call, so a selective filter cannot make
    /// one call scan a whole queue; `next_offset` says where to continue.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if a record fails verification.
    pub fn get_messages(
        &self,
        topic: &str,
        queue_id: i32,
        from: i64,
        max_count: usize,
        filter: impl Fn(&CqEntry) -> bool,
    ) -> Result<GetResult> {
        let Some(cq) = self.queue(topic, queue_id) else {
            return Ok(GetResult {
                messages: Vec::new(),
                next_offset: 0,
                min_offset: 0,
                max_offset: 0,
            });
        };
        let (min, max) = (cq.min_offset(), cq.max_offset());
        let start = from.clamp(min, max);
        let budget = (max_count.saturating_mul(4)).max(256);
        let entries = cq.read(start, budget);
        let mut messages = Vec::with_capacity(max_count.min(entries.len()));
        // Past the last entry examined; with none (only holes or nothing left), the queue end.
        let mut next = entries.last().map_or(max, |last| last.queue_offset + 1);
        for e in &entries {
            if messages.len() >= max_count {
                next = e.queue_offset;
                break;
            }
            if !filter(e) {
                continue;
            }
            match self.inner.log.read(e.physical_offset) {
                Ok(m) => messages.push(m),
                // Retention removed the record after the entry was read: skip it.
                Err(StoreError::OffsetOutOfRange { .. }) => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(GetResult {
            messages,
            next_offset: next,
            min_offset: min,
            max_offset: max,
        })
    }

    /// First logical offset of (topic, queue) still stored (0 for an unknown queue).
    pub fn min_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.queue(topic, queue_id).map_or(0, |q| q.min_offset())
    }

    /// One past the last logical offset of (topic, queue) (0 for an unknown queue).
    pub fn max_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.queue(topic, queue_id).map_or(0, |q| q.max_offset())
    }

    /// The first logical offset of (topic, queue) whose message was stored at or after
    /// `timestamp_ms`; the max offset if none was (reset-by-time).
    pub fn offset_by_time(&self, topic: &str, queue_id: i32, timestamp_ms: i64) -> i64 {
        let Some(cq) = self.queue(topic, queue_id) else {
            return 0;
        };
        cq.offset_by_time(timestamp_ms, |phys| {
            self.inner
                .log
                .with_record(phys, false, |v| v.store_timestamp())
                .ok()
        })
    }

    /// Messages of `topic` that carry `key` among their keys, stored within
    /// `[begin_ms, end_ms]`, newest first, at most `max`.
    ///
    /// # Errors
    /// I/O errors of the index.
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<StoredMessage>> {
        self.query_index(topic, key, max, begin_ms, end_ms, |m| {
            m.properties.keys.iter().any(|k| k == key)
        })
    }

    /// Messages of `topic` whose message id is `message_id` (normally one; more if a producer
    /// retried), newest first.
    ///
    /// # Errors
    /// I/O errors of the index.
    pub fn query_by_id(&self, topic: &str, message_id: &str) -> Result<Vec<StoredMessage>> {
        self.query_index(topic, message_id, 32, 0, i64::MAX, |m| {
            m.properties.message_id == message_id
        })
    }

    fn query_index(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin_ms: i64,
        end_ms: i64,
        keep: impl Fn(&Message) -> bool,
    ) -> Result<Vec<StoredMessage>> {
        let offsets = self.inner.index.query(
            &index_key(topic, key),
            max.saturating_mul(4).max(max),
            begin_ms,
            end_ms,
        )?;
        let mut out = Vec::new();
        for phys in offsets {
            if out.len() >= max {
                break;
            }
            // Index entries are hash matches: the record decides.
            if let Ok(m) = self.inner.log.read(phys)
                && m.message.topic == topic
                && keep(&m.message)
                && (begin_ms..=end_ms).contains(&m.store_timestamp)
            {
                out.push(m);
            }
        }
        Ok(out)
    }
}
