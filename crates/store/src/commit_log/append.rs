//! Local appends: a batch of messages encoded into the active segment under the append lock,
//! with queue offsets and store timestamps assigned.
//!
//! Invariants: validation rejects the whole batch before a byte is written; the batch is
//! written contiguously within one segment (rolling first when it does not fit), its records
//! say how many follow (`batch_left`), and only once all are written do the queue offsets
//! move and the bytes become visible (`publish`, then `write_pos`). Store timestamps never go
//! backwards.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::CommitLog;
use crate::error::{Result, StoreError};
use crate::record::{self, Assigned, Message};

/// Where an appended message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Commitlog offset of the record.
    pub physical_offset: i64,
    /// Record size in bytes.
    pub size: u32,
    /// Logical offset in the message's (topic, queue).
    pub queue_offset: i64,
    /// Store timestamp assigned to the record (ms since the Unix epoch).
    pub store_timestamp: i64,
}

impl CommitLog {
    /// Appends `msgs` as one contiguous batch, stamped with `now_ms` (never earlier than the
    /// previous record's store time). Validation failures reject the whole batch before
    /// anything is written.
    pub(crate) fn append(
        &self,
        msgs: &[Message],
        max_record: usize,
        now_ms: i64,
    ) -> Result<Vec<AppendResult>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let mut sizes = Vec::with_capacity(msgs.len());
        let mut total = 0usize;
        for m in msgs {
            record::validate(m)?;
            let n = record::encoded_len(m);
            if n > max_record || m.topic.len() > u16::MAX as usize {
                return Err(StoreError::MessageTooLarge {
                    size: n,
                    max: max_record,
                });
            }
            total += n;
            sizes.push(n);
        }
        if total > max_record {
            return Err(StoreError::MessageTooLarge {
                size: total,
                max: max_record,
            });
        }
        let mut results = Vec::with_capacity(msgs.len());
        let mut st = self.append.lock();
        let mut pos = st.writer.position();
        if pos + total > self.segment_size {
            self.roll(&mut st, pos)?;
            pos = 0;
        }
        let store_ts = now_ms.max(st.last_store_ts);
        st.last_store_ts = store_ts;
        let active_start = st.active_start;
        let n = msgs.len();
        // Next offset of each queue the batch touches; a single append needs no map.
        let mut batch_next: HashMap<(&str, i32), i64> = HashMap::new();
        for (i, (m, size)) in msgs.iter().zip(&sizes).enumerate() {
            let stored = || {
                st.queue_offsets
                    .get(m.topic.as_str())
                    .and_then(|q| q.get(&m.queue_id))
                    .copied()
                    .unwrap_or(0)
            };
            let queue_offset = if n == 1 {
                stored()
            } else {
                let next = batch_next
                    .entry((m.topic.as_str(), m.queue_id))
                    .or_insert_with(stored);
                *next += 1;
                *next - 1
            };
            let a = Assigned {
                queue_offset,
                physical_offset: active_start + pos as i64,
                store_timestamp: store_ts,
                batch_left: (n - 1 - i) as u32,
            };
            let Some(buf) = st.writer.unpublished_mut(pos, *size) else {
                return Err(StoreError::corrupt(
                    a.physical_offset,
                    "segment has no room for record",
                ));
            };
            record::encode(buf, m, a, &self.store_host);
            results.push(AppendResult {
                physical_offset: a.physical_offset,
                size: *size as u32,
                queue_offset,
                store_timestamp: store_ts,
            });
            pos += size;
        }
        // All records are written: only now do the queue offsets move and the bytes appear.
        for (m, r) in msgs.iter().zip(&results) {
            let qmap = match st.queue_offsets.get_mut(m.topic.as_str()) {
                Some(q) => q,
                None => st.queue_offsets.entry(m.topic.clone()).or_default(),
            };
            qmap.insert(m.queue_id, r.queue_offset + 1);
        }
        st.writer.publish(pos);
        self.write_pos
            .store(active_start + pos as i64, Ordering::Release);
        Ok(results)
    }
}
