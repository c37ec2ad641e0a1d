//! The dispatcher: turns commitlog records into consume-queue entries (commitlog offset,
//! size, tag hash) and index entries (message id, keys), in log order, one walker at a time.
//!
//! Visibility: consumers read only dispatched records, and dispatch only goes as far as the
//! flush policy allows: in SYNC mode, up to the flushed offset (nothing a consumer sees can be
//! lost to a power failure); in ASYNC mode, up to the written offset. The dispatched offset
//! only grows; the checkpoint records it after queues and index are flushed, and recovery
//! re-dispatches from there.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use super::{Inner, MessageStore};
use crate::config::{Arrival, FlushPolicy};
use crate::consume_queue::ConsumeQueue;
use crate::error::Result;

/// The index key of `key` (a message id or a key) in `topic`.
pub(super) fn index_key(topic: &str, key: &str) -> String {
    let mut s = String::with_capacity(topic.len() + 1 + key.len());
    s.push_str(topic);
    s.push('#');
    s.push_str(key);
    s
}

/// The index keys of a record: `topic#message_id` and `topic#key` for each key.
fn index_keys(topic: &str, message_id: &str, keys: &[&str]) -> Vec<String> {
    let mut ks = Vec::with_capacity(keys.len() + 1);
    if !message_id.is_empty() {
        ks.push(index_key(topic, message_id));
    }
    ks.extend(keys.iter().map(|k| index_key(topic, k)));
    ks
}

/// What a dispatch pass fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Targets {
    /// Consume queues and the index: normal dispatch.
    QueuesAndIndex,
    /// The index only: catching up an index that lost entries the queues still hold.
    IndexOnly,
}

impl MessageStore {
    /// Blocks until every record below `offset` is dispatched, or `timeout` passes.
    /// Returns whether it was reached.
    pub fn wait_dispatched(&self, offset: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.inner.dispatched.load(Ordering::Acquire) >= offset {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.inner.shutdown.load(Ordering::Acquire) {
                return false;
            }
            self.inner.dispatch_signal.notify();
            self.inner
                .dispatched_signal
                .wait_unless((deadline - now).min(Duration::from_millis(50)), || {
                    self.inner.dispatched.load(Ordering::Acquire) >= offset
                });
        }
    }
}

impl Inner {
    fn dispatch_limit(&self) -> i64 {
        match self.cfg.flush {
            FlushPolicy::Async { .. } => self.log.write_pos(),
            FlushPolicy::Sync { .. } => self.flushed.load(Ordering::Acquire),
        }
    }

    /// Dispatches records from the current dispatch point up to `limit`. Returns the number of
    /// records dispatched.
    pub(super) fn dispatch_until(&self, limit: i64) -> Result<u64> {
        let _walker = self.dispatch_lock.lock();
        self.dispatch_until_locked(limit)
    }

    /// [`Inner::dispatch_until`] with `dispatch_lock` already held.
    fn dispatch_until_locked(&self, limit: i64) -> Result<u64> {
        let from = self.dispatched.load(Ordering::Acquire);
        let (end, count) = self.dispatch_range(from, limit, Targets::QueuesAndIndex)?;
        self.dispatched.fetch_max(end, Ordering::AcqRel);
        self.dispatched_signal.notify();
        Ok(count)
    }

    /// ASYNC: an appender makes its records visible itself instead of waking the dispatcher
    /// thread (a thread wake-up per send cost more CPU than the dispatch). If another thread is
    /// dispatching, that thread picks the new records up: every walker looks at the write
    /// position again after it lets go of the lock, and the fences order "append, then try the
    /// lock" against "release, then look again", so at least one of the two sees the other. The
    /// dispatcher thread stays the fallback (errors, its periodic check, and appenders that
    /// already walked a few passes for others: no sender waits long on other senders' records).
    pub(super) fn dispatch_inline(&self) {
        const MAX_PASSES: usize = 4;
        for _ in 0..MAX_PASSES {
            fence(Ordering::SeqCst);
            let Some(walker) = self.dispatch_lock.try_lock() else {
                return;
            };
            let limit = self.dispatch_limit();
            if self.dispatched.load(Ordering::Acquire) < limit
                && self.dispatch_until_locked(limit).is_err()
            {
                // The dispatcher thread reports the error and retries.
                drop(walker);
                self.dispatch_signal.notify();
                return;
            }
            drop(walker);
            fence(Ordering::SeqCst);
            if self.dispatched.load(Ordering::Acquire) >= self.dispatch_limit() {
                return;
            }
        }
        self.dispatch_signal.notify();
    }

    /// Re-indexes the records between the index's last indexed record and `to`; consume
    /// queues already hold them. Runs only when the index lost entries on open.
    pub(super) fn index_catch_up(&self, to: i64) -> Result<()> {
        let last = self.index.last_indexed();
        let from = if last < self.log.min_pos() {
            self.log.min_pos()
        } else {
            last + i64::from(
                self.log
                    .with_record(last, false, |v| v.total_len() as u32)?,
            )
        };
        let (_, count) = self.dispatch_range(from, to, Targets::IndexOnly)?;
        if count > 0 {
            tracing::warn!(
                records = count,
                "index was behind the checkpoint; re-indexed"
            );
        }
        Ok(())
    }

    /// Walks the log from `from` (a record boundary) to `limit`, dispatching each record into
    /// `targets`. Returns where the walk ended and how many records it dispatched. Normal
    /// dispatch publishes its progress every 1024 records so readers need not wait for the end.
    fn dispatch_range(&self, from: i64, limit: i64, targets: Targets) -> Result<(i64, u64)> {
        let mut pos = from;
        let mut count = 0u64;
        let mut arrivals: HashMap<(String, i32), Arrival> = HashMap::new();
        while pos < limit {
            let Some(p) = self.log.next_record_pos(pos) else {
                // Only blank segment ends remain below the written end.
                pos = limit;
                break;
            };
            if p >= limit {
                pos = p;
                break;
            }
            pos = self.dispatch_record(p, targets, &mut arrivals)?;
            count += 1;
            if targets == Targets::QueuesAndIndex && count.is_multiple_of(1024) {
                self.dispatched.fetch_max(pos, Ordering::AcqRel);
                self.publish_arrivals(&mut arrivals);
            }
        }
        self.publish_arrivals(&mut arrivals);
        Ok((pos, count))
    }

    fn publish_arrivals(&self, arrivals: &mut HashMap<(String, i32), Arrival>) {
        if let Some(listener) = &self.cfg.arrival_listener {
            for (_, a) in arrivals.drain() {
                listener(&a);
            }
        } else {
            arrivals.clear();
        }
    }

    /// Dispatches the record at `phys`; returns the position after it.
    fn dispatch_record(
        &self,
        phys: i64,
        targets: Targets,
        arrivals: &mut HashMap<(String, i32), Arrival>,
    ) -> Result<i64> {
        let (topic, qid, qoff, size, tag_hash, ts, keys) =
            self.log.with_record(phys, false, |v| {
                let (tag, id, keys) = v.index_fields();
                (
                    v.topic().to_owned(),
                    v.queue_id(),
                    v.queue_offset(),
                    v.total_len() as i32,
                    crate::record::tag_hash(tag),
                    v.store_timestamp(),
                    index_keys(v.topic(), id, &keys),
                )
            })?;
        self.index
            .put_record(phys, ts, keys.iter().map(String::as_str))?;
        if targets == Targets::IndexOnly {
            return Ok(phys + i64::from(size));
        }
        let cq = self.queue_or_create(&topic, qid)?;
        cq.put(qoff, phys, size, tag_hash)?;
        if self.cfg.arrival_listener.is_some() {
            let max_offset = cq.max_offset();
            arrivals
                .entry((topic.clone(), qid))
                .and_modify(|a| {
                    a.max_offset = max_offset;
                    a.tag_hash = tag_hash;
                })
                .or_insert(Arrival {
                    topic,
                    queue_id: qid,
                    max_offset,
                    tag_hash,
                });
        }
        Ok(phys + i64::from(size))
    }

    fn queue_or_create(&self, topic: &str, qid: i32) -> Result<Arc<ConsumeQueue>> {
        if let Some(q) = self.queues.read().get(topic).and_then(|m| m.get(&qid)) {
            return Ok(Arc::clone(q));
        }
        let mut w = self.queues.write();
        if let Some(q) = w.get(topic).and_then(|m| m.get(&qid)) {
            return Ok(Arc::clone(q));
        }
        let dir = self
            .cfg
            .data_dir
            .join("consumequeue")
            .join(topic)
            .join(qid.to_string());
        let cq = Arc::new(ConsumeQueue::create(&dir, self.cfg.cq_entries_per_file)?);
        w.entry(topic.to_owned())
            .or_default()
            .insert(qid, Arc::clone(&cq));
        Ok(cq)
    }

    pub(super) fn run_dispatcher(&self) {
        while !self.shutdown.load(Ordering::Acquire) {
            let limit = self.dispatch_limit();
            if self.dispatched.load(Ordering::Acquire) < limit {
                if let Err(e) = self.dispatch_until(limit) {
                    // A record the dispatcher cannot read stops dispatch (consumers would
                    // otherwise skip it silently); the error is kept for operators.
                    let msg = e.to_string();
                    let mut last = self.dispatch_error.lock();
                    if last.as_deref() != Some(msg.as_str()) {
                        tracing::error!(error = %msg, "dispatch failed");
                        *last = Some(msg);
                    }
                    self.dispatch_signal
                        .wait_unless(Duration::from_secs(1), || {
                            self.shutdown.load(Ordering::Acquire)
                        });
                }
                continue;
            }
            // ASYNC appenders dispatch their own records and call on this thread only when
            // they need help, so records pending right now are normally being walked by one of
            // them: wait for a call (or the periodic check) rather than contend for the walk.
            let inline = matches!(self.cfg.flush, FlushPolicy::Async { .. });
            self.dispatch_signal
                .wait_unless(Duration::from_millis(100), || {
                    self.shutdown.load(Ordering::Acquire)
                        || (!inline
                            && self.dispatched.load(Ordering::Acquire) < self.dispatch_limit())
                });
        }
    }
}
