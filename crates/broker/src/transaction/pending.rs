//! The in-memory table of transactions ([`Table`]): the half messages still pending, the
//! resolutions remembered, and how the half and op queues rebuild it (at recovery, and as a
//! replica's log grows). Every op names a half message stored before it, so a pass reads the
//! op queue first and the half queue after it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use comet_store::{Message, MessageStore, StoredMessage};
use comet_vocab::system;

use crate::sys;
use crate::transaction::record::{Op, Resolution};

/// Resolutions remembered for answering a repeated EndTransaction.
pub(crate) const RESOLVED_MEMORY: usize = 65_536;

/// An unresolved half message.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) physical_offset: i64,
    pub(crate) topic: String,
    pub(crate) message_id: String,
    pub(crate) checks: u32,
    pub(crate) next_check_ms: i64,
    /// A resolution or check is being written.
    pub(crate) busy: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub(crate) map: HashMap<i64, Resolution>,
    pub(crate) order: VecDeque<i64>,
}

impl Resolved {
    pub(crate) fn insert(&mut self, half: i64, r: Resolution) {
        if self.map.insert(half, r).is_none() {
            self.order.push_back(half);
            while self.order.len() > RESOLVED_MEMORY {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) pending: BTreeMap<i64, Pending>,
    pub(crate) resolved: Resolved,
    /// Half-message appends running (the checkpoint waits for none).
    pub(crate) appending: usize,
    /// Every half message below this queue offset is known: pending, or resolved by an op
    /// this table has applied (or below the checkpoint). The checkpoint never passes it.
    pub(crate) half_next: i64,
    /// Where a replica's next read of the op queue starts.
    pub(crate) op_next: i64,
}

/// Timing of checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckPolicy {
    pub timeout_ms: i64,
    pub interval_ms: i64,
    pub max_checks: u32,
}

/// Reads `topic`'s queue 0 from `from` to its end; returns the offset after the last entry
/// read (where the next read resumes).
pub(crate) fn read_all(
    store: &MessageStore,
    topic: &str,
    from: i64,
    mut f: impl FnMut(i64, StoredMessage),
) -> i64 {
    let mut next = from.max(store.min_offset(topic, 0));
    loop {
        let entries = store.read_queue(topic, 0, next, 4096);
        let Some(last) = entries.last() else {
            return next;
        };
        next = last.queue_offset + 1;
        for e in entries {
            match store.read(e.physical_offset) {
                Ok(m) => f(e.queue_offset, m),
                Err(err) => tracing::warn!(topic, queue_offset = e.queue_offset, error = %err,
                    "transaction record unreadable; skipped"),
            }
        }
    }
}

/// What the op records read in one pass say about the half messages they name.
#[derive(Default)]
pub(crate) struct OpsRead {
    pub(crate) finals: HashMap<i64, Resolution>,
    /// Highest check number and the store time of the latest check.
    pub(crate) checks: HashMap<i64, (u32, i64)>,
}

impl OpsRead {
    /// Reads the op queue from `from` to its end, keeping ops of half messages at or above
    /// `half_low`; returns them and where the next read resumes.
    pub(crate) fn read(store: &MessageStore, from: i64, half_low: i64) -> (OpsRead, i64) {
        let mut ops = OpsRead::default();
        let next = read_all(
            store,
            system::TRANS_OP_HALF_TOPIC,
            from,
            |_, m| match Op::decode(&m.message) {
                Some((half, _)) if half < half_low => {}
                Some((half, Op::Final(r))) => {
                    ops.finals.insert(half, r);
                }
                Some((half, Op::Check(n))) => {
                    let c = ops.checks.entry(half).or_insert((0, 0));
                    *c = (c.0.max(n), c.1.max(m.store_timestamp));
                }
                None => tracing::warn!(
                    physical_offset = m.physical_offset,
                    "unknown transaction op record; skipped"
                ),
            },
        );
        (ops, next)
    }
}

impl Table {
    /// Applies the half messages of the half queue from `half_from` to its end and the ops
    /// read before them (every op names a half message stored before it, so the half queue,
    /// read after the ops, holds every half message they name). Half messages at or above
    /// `half_from` without a final op become pending; finals of older ones resolve them.
    /// Returns where the next read of the half queue resumes.
    pub(crate) fn apply(
        &mut self,
        store: &MessageStore,
        half_from: i64,
        ops: &OpsRead,
        policy: &CheckPolicy,
        now_ms: i64,
    ) -> i64 {
        for (half, r) in &ops.finals {
            if *half < half_from {
                self.pending.remove(half);
                self.resolved.insert(*half, *r);
            }
        }
        for (half, (n, at)) in &ops.checks {
            if let Some(p) = self.pending.get_mut(half)
                && *n >= p.checks
            {
                p.checks = *n;
                p.next_check_ms = (at + policy.interval_ms).max(now_ms);
            }
        }
        read_all(store, system::TRANS_HALF_TOPIC, half_from, |offset, m| {
            if let Some(r) = ops.finals.get(&offset) {
                self.resolved.insert(offset, *r);
                return;
            }
            let Some(topic) = m.message.properties.system.get(sys::SYS_TRAN_REAL_TOPIC) else {
                tracing::warn!(
                    queue_offset = offset,
                    "half message without a real topic; skipped"
                );
                return;
            };
            let (n, last_check) = ops.checks.get(&offset).copied().unwrap_or((0, 0));
            let next_check_ms = if n == 0 {
                m.store_timestamp + first_delay(&m.message, policy)
            } else {
                last_check + policy.interval_ms
            };
            self.pending.insert(
                offset,
                Pending {
                    physical_offset: m.physical_offset,
                    topic: topic.clone(),
                    message_id: m.message.properties.message_id.clone(),
                    checks: n,
                    next_check_ms: next_check_ms.max(now_ms),
                    busy: false,
                },
            );
        })
    }
}

/// Delay before the first check of a half message.
pub(crate) fn first_delay(rec: &Message, policy: &CheckPolicy) -> i64 {
    let own = rec
        .properties
        .system
        .get(sys::SYS_RECOVERY_MS)
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0);
    policy.timeout_ms.max(own)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_resolved_memory_when_full_should_forget_the_oldest() {
        let mut r = Resolved::default();
        for i in 0..(RESOLVED_MEMORY as i64 + 3) {
            r.insert(i, Resolution::Commit);
        }
        assert_eq!(r.map.len(), RESOLVED_MEMORY);
        assert!(!r.map.contains_key(&0) && r.map.contains_key(&3));
    }
}
