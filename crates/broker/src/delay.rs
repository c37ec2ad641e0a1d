//! Delayed delivery: messages whose `delivery_timestamp` lies in the future wait in the
//! persisted timer wheel of `comet-store` and are appended to their real topic when due.
//!
//! ```text
//!  send(DELAY, t) ─► commitlog: rmq_sys_wheel_timer/0 @q  (the *schedule record*: keeps the
//!                │                                          real topic + queue)
//!                └─► TimerStore::schedule(t, {physical offset, size, cookie = q})
//!  timer task:  poll_due(now) ─► read schedule record ─► append_batch[ copies to their
//!               <topic>/<queue> (TIMER_ORIGIN = schedule record's offset), done record ]
//!                            ─► TimerStore::commit(last delivered entry)
//! ```
//!
//! # The log is the truth; the wheel is derived
//! Everything about a timer is in the commitlog, which replicas copy byte for byte: its
//! schedule record, and a *done record* in the same queue (`rmq_sys_wheel_timer/0`, system
//! property `TIMER_DONE`, one index key `timer-done:<origin>` per timer) once it is finished:
//! delivered, found delivered, or lost to retention. The done record is the one place where
//! "this timer is done" is written; it is appended in the same atomic batch as the copies it
//! covers, after them, so a log holding it holds the copies. A recall (cancel) of a pending
//! timer writes the same record, marked `TIMER_RECALLED` ([`Delays::recall`], under the same
//! lock as a delivery round, so a timer is either delivered or recalled, never both): the
//! timer stays in the wheel until it is due and is then committed without a copy. Replicas
//! and a promoted replica read the recall as any done record.
//!
//! The wheel in `<data>/timer` is local derived state, rebuilt from that queue:
//! - **Where to resume.** Each timer's cookie is its schedule record's queue offset, and the
//!   timer store keeps the end of the cookies it scheduled durably with the schedules
//!   ([`TimerStore::cookie_end`]). At every open, [`Delays::catch_up`] schedules the schedule
//!   records from there to the end of the queue (after a crash between a master's append and
//!   its schedule, or what a replica copied since it last caught up). A store that predates the
//!   mark starts at the queue's end, as before; a wheel whose log was cut (a replica cutting a
//!   divergent tail, or starting over) is deleted and rebuilt from the start of the queue.
//! - **Replicas** catch up continuously as they copy the log (the broker's replica task), and
//!   commit the due timers whose done record they have read ([`Delays::shadow_commit`]), in
//!   wheel order, so their wheel holds what the master's holds. Nothing is delivered by a
//!   replica.
//! - **A promoted replica** opens as master with that wheel: the timers still pending are
//!   delivered on time; lateness is bounded by the failover time plus the timer precision.
//!
//! # Exactly once
//! Due entries are delivered strictly in the order `poll_due` returns them, and an entry is
//! committed only after its copy (and every copy before it) is appended; commits are cumulative.
//! A timer this broker instance did not schedule from its own send (it was scheduled before the
//! open, by a catch-up, or on another member) may have been delivered already, here before a
//! crash or by a master since lost: it is delivered only if no done record exists for it (an
//! index lookup). Timers scheduled before done records existed are also looked up in their
//! real topic (message-id index, matching `TIMER_ORIGIN`) when they were due before the open.
//! Timers this master scheduled itself skip the lookups.
//!
//! What a new master's log lacks it cannot know: in ASYNC replication a delivery the replica
//! had not copied yet is delivered again (it is not in the new master's log), and a schedule
//! it had not copied is lost with the messages of that window. In SYNC replication every
//! acknowledged schedule is on the new master; a delivery is appended without waiting for the
//! replicas, so its copy may reach consumers of the old master and, if the replica had not
//! copied it when the master died, be delivered once more by the new one.
//!
//! # Durability
//! A schedule survives a process crash once `send` answered (the wheel is memory-mapped); for
//! power loss the wheel is flushed at the commitlog's flush interval (ASYNC) or before the send
//! is answered (SYNC), matching the commitlog's own contract.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use comet_store::timer::{TimerConfig, TimerEntry, TimerPayload, TimerStore};
use comet_store::{AppendResult, Message, MessageStore, Properties, StoreError};
use comet_vocab::system::TIMER_TOPIC;
use opentelemetry::metrics::BoundHistogram;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::meta::{Access, MetaIndex};
use crate::record::MessageKind;
use crate::sys::{
    SYS_DELIVERY_TIMESTAMP, SYS_MESSAGE_TYPE, SYS_TIMER_DONE, SYS_TIMER_ORIGIN,
    SYS_TIMER_REAL_QUEUE_ID, SYS_TIMER_REAL_TOPIC, SYS_TIMER_RECALLED, TIMER_DONE_KEY as DONE_KEY,
};

/// Most due timers a replica holds while it waits for their done records.
const SHADOW_MAX: usize = 4096;

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
    /// Timers recalled since the broker opened (they count as pending until their time).
    pub recalled: u64,
}

/// What became of a recall of one timer ([`Delays::recall`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecallOutcome {
    /// Recalled by this call: its record ends the log below `end`.
    Recalled { end: i64 },
    /// Recalled before (a repeated recall).
    AlreadyRecalled,
    /// Delivered to its topic before the recall.
    Delivered,
    /// The index did not catch up with the log in time: nothing was written; retry.
    IndexLagging,
}

/// How a timer was finished, according to its done records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finished {
    Delivered,
    Recalled,
}

/// Longest a recall waits for the index to hold what the log holds.
const RECALL_INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The timer wheel and the bookkeeping of its delivery task.
pub(crate) struct Delays {
    pub timer: Arc<TimerStore>,
    /// Wall clock at open: timers of before done records existed that were due at or before
    /// it may have been delivered before a crash.
    opened_ms: i64,
    /// Timer queue offsets from here on were scheduled by this instance's own sends (set by
    /// the catch-up at open); older timers may have been delivered elsewhere.
    own_from: AtomicI64,
    /// The next timer queue offset [`Delays::catch_up`] reads; `None` until the first one.
    follow_next: Mutex<Option<i64>>,
    /// Polled entries not yet delivered (a failed append is retried with these first).
    backlog: Mutex<Vec<TimerEntry>>,
    /// When the delivery task plans to wake up next (ms since the epoch).
    next_wake: AtomicI64,
    /// Woken when a timer due before `next_wake` is scheduled.
    pub wake: Notify,
    /// Held by a delivery round (per batch) and by a recall: one timer is delivered or
    /// recalled, never both.
    settle: Mutex<()>,
    /// Timers recalled since the open whose wheel entry is not yet due: delivery skips them
    /// without an index lookup (own timers skip it; inherited ones find the recall record).
    recalled_pending: Mutex<HashSet<i64>>,
    recalled: AtomicU64,
    delivered: AtomicU64,
    deduplicated: AtomicU64,
    lost: AtomicU64,
    /// Lateness of each delivered copy: its append time minus its due time, in ms.
    lateness: Option<BoundHistogram<f64>>,
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
            own_from: AtomicI64::new(i64::MAX),
            follow_next: Mutex::new(None),
            backlog: Mutex::new(Vec::new()),
            next_wake: AtomicI64::new(i64::MIN),
            wake: Notify::new(),
            settle: Mutex::new(()),
            recalled_pending: Mutex::new(HashSet::new()),
            recalled: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            lateness: None,
        })
    }

    /// Records the lateness of every delivered copy into `histogram` (ms).
    pub fn with_lateness(mut self, histogram: BoundHistogram<f64>) -> Self {
        self.lateness = Some(histogram);
        self
    }

    pub fn stats(&self) -> TimerStats {
        TimerStats {
            pending: self.timer.pending(),
            delivered: self.delivered.load(Ordering::Relaxed),
            deduplicated: self.deduplicated.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            recalled: self.recalled.load(Ordering::Relaxed),
        }
    }

    /// Recalls the pending timer whose schedule record is at `origin` (blocking): appends its
    /// recall record unless it was delivered or recalled already. The caller has checked that
    /// `origin` holds a schedule record.
    ///
    /// # Errors
    /// Store errors of the index lookup or the append; nothing was recalled.
    pub fn recall(&self, store: &MessageStore, origin: i64) -> Result<RecallOutcome, StoreError> {
        let _settle = self.settle.lock();
        if self.recalled_pending.lock().contains(&origin) {
            return Ok(RecallOutcome::AlreadyRecalled);
        }
        // Every delivery round before this lock is in the log; the lookup needs it indexed.
        if !store.wait_dispatched(store.write_offset(), RECALL_INDEX_WAIT) {
            return Ok(RecallOutcome::IndexLagging);
        }
        match finished(store, origin)? {
            Some(Finished::Recalled) => Ok(RecallOutcome::AlreadyRecalled),
            Some(Finished::Delivered) => Ok(RecallOutcome::Delivered),
            None => {
                let a: AppendResult = store.append(&recall_record(origin))?;
                self.recalled_pending.lock().insert(origin);
                self.recalled.fetch_add(1, Ordering::Relaxed);
                Ok(RecallOutcome::Recalled {
                    end: a.physical_offset + i64::from(a.size),
                })
            }
        }
    }

    /// Schedules the stored timer record (blocking: may create a timer log segment). Wakes
    /// the delivery task if the new timer is due before its planned wake-up.
    /// `queue_offset` is the schedule record's offset in the timer queue (kept as the cookie).
    pub fn schedule(
        &self,
        deliver_at_ms: i64,
        physical_offset: i64,
        size: u32,
        queue_offset: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let payload = TimerPayload {
            commit_log_offset: physical_offset,
            size: i32::try_from(size).unwrap_or(i32::MAX),
            cookie: u64::try_from(queue_offset).unwrap_or(0),
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

    /// Schedules the schedule records of the timer queue that the wheel does not hold yet, up
    /// to the queue's end (blocking). Nothing else may append to the timer queue meanwhile: it
    /// runs at open, and on replicas, which append nothing themselves. Returns how many timers
    /// it scheduled.
    ///
    /// # Errors
    /// Store errors of the wheel; what was scheduled stays, and the next call resumes after it.
    pub fn catch_up(&self, store: &MessageStore, now_ms: i64) -> Result<usize, StoreError> {
        let mut next_guard = self.follow_next.lock();
        let low = store.min_offset(TIMER_TOPIC, 0);
        let mut next = next_guard
            .unwrap_or_else(|| {
                self.timer.cookie_end().map_or_else(
                    || store.max_offset(TIMER_TOPIC, 0),
                    |c| i64::try_from(c).unwrap_or(i64::MAX),
                )
            })
            .max(low);
        let mut scheduled = 0usize;
        let result = loop {
            let entries = store.read_queue(TIMER_TOPIC, 0, next, 1024);
            if entries.is_empty() {
                break Ok(());
            }
            let mut failed = None;
            for e in entries {
                let stored = match store.read(e.physical_offset) {
                    Ok(m) => m,
                    Err(StoreError::OffsetOutOfRange { .. }) => {
                        // Retention took it: nothing left to deliver.
                        next = e.queue_offset + 1;
                        continue;
                    }
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                };
                let sys = &stored.message.properties.system;
                if !sys.contains_key(SYS_TIMER_DONE) {
                    let at = delivery_ms(&stored.message).unwrap_or(stored.store_timestamp);
                    let size = u32::try_from(e.size).unwrap_or(0);
                    match self.schedule(at, e.physical_offset, size, e.queue_offset, now_ms) {
                        Ok(()) => scheduled += 1,
                        Err(StoreError::InvalidMessage(reason)) => {
                            self.lost.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(physical_offset = e.physical_offset, %reason,
                                "delayed message in the log cannot be scheduled; dropped");
                        }
                        Err(err) => {
                            failed = Some(err);
                            break;
                        }
                    }
                }
                next = e.queue_offset + 1;
            }
            if let Some(err) = failed {
                break Err(err);
            }
        };
        *next_guard = Some(next);
        if scheduled > 0 {
            tracing::info!(
                scheduled,
                next_queue_offset = next,
                "timers caught up from the log"
            );
        }
        result.map(|()| scheduled)
    }

    /// Marks the end of the catch-up at open: later timer queue offsets come from this
    /// instance's own sends.
    pub fn set_own_from(&self, queue_offset: i64) {
        self.own_from.store(queue_offset, Ordering::Release);
    }

    /// A replica's step (blocking): takes the due timers (at most [`SHADOW_MAX`] held) and
    /// commits, in wheel order, those whose delivery the master has recorded; the rest waits
    /// for the next step. Returns how many it committed.
    ///
    /// # Errors
    /// Store errors of the wheel or the index; nothing is committed past an unknown timer.
    pub fn shadow_commit(&self, store: &MessageStore, now_ms: i64) -> Result<usize, StoreError> {
        let mut held = self.backlog.lock();
        if held.len() < SHADOW_MAX {
            let more = self.timer.poll_due(now_ms, SHADOW_MAX - held.len())?;
            held.extend(more);
        }
        let mut done = 0usize;
        for e in held.iter() {
            if !self.finished_elsewhere(store, e)? {
                break;
            }
            done += 1;
        }
        if let Some(last) = done.checked_sub(1).map(|i| held[i]) {
            self.timer.commit(&last)?;
            held.drain(..done);
        }
        Ok(done)
    }

    /// Whether a replica holds due timers whose done record it has not read yet.
    pub fn shadow_waiting(&self) -> bool {
        !self.backlog.lock().is_empty()
    }

    /// Whether a timer is finished according to the log: its done record exists, or (a timer
    /// from before done records existed) its copy exists or its message is gone.
    fn finished_elsewhere(&self, store: &MessageStore, e: &TimerEntry) -> Result<bool, StoreError> {
        let origin = e.payload.commit_log_offset;
        if is_done(store, origin)? {
            return Ok(true);
        }
        match store.read(origin) {
            Ok(stored) => match from_timer_record(&stored.message, origin, &MetaIndex::default()) {
                Some(rec) => already_delivered(store, &rec, origin),
                None => Ok(true),
            },
            Err(StoreError::OffsetOutOfRange { .. }) => Ok(true),
            Err(err) => Err(err),
        }
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
            let settle = self.settle.lock();
            let mut records = Vec::with_capacity(chunk.len() + 1);
            let mut due = Vec::with_capacity(chunk.len());
            for e in chunk {
                match self.prepare(store, idx, e, retry) {
                    Ok(Some(rec)) => {
                        records.push(rec);
                        due.push(e.deliver_at_ms);
                    }
                    Ok(None) => {}
                    Err(err) => {
                        result = Err(err);
                        break 'outer;
                    }
                }
            }
            let copies = records.len() as u64;
            // Last in the batch: a log that holds it holds the copies before it.
            records.push(done_record(chunk));
            if let Err(err) = append_all(store, &records) {
                result = Err(err);
                break;
            }
            {
                // Their done record is written: the wheel entries are finished.
                let mut recalled = self.recalled_pending.lock();
                if !recalled.is_empty() {
                    for e in chunk {
                        recalled.remove(&e.payload.commit_log_offset);
                    }
                }
            }
            drop(settle);
            self.delivered.fetch_add(copies, Ordering::Relaxed);
            if let Some(h) = &self.lateness {
                let appended = now_ms();
                for at in due {
                    h.record(appended.saturating_sub(at).max(0) as f64);
                }
            }
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
        if self.recalled_pending.lock().contains(&offset) {
            tracing::debug!(
                physical_offset = offset,
                "recalled delay message not delivered"
            );
            return Ok(None);
        }
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
        let inherited = i64::try_from(e.payload.cookie)
            .map_or(true, |q| q < self.own_from.load(Ordering::Acquire));
        let done = if retry || inherited {
            finished(store, offset)?
        } else {
            None
        };
        if done == Some(Finished::Recalled) {
            tracing::debug!(
                physical_offset = offset,
                "recalled delay message not delivered"
            );
            return Ok(None);
        }
        if done.is_some()
            || ((retry || e.deliver_at_ms <= self.opened_ms)
                && already_delivered(store, &rec, offset)?)
        {
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

/// The done record of a delivered chunk: one index key per timer.
fn done_record(chunk: &[TimerEntry]) -> Message {
    let keys: Vec<String> = chunk
        .iter()
        .map(|e| format!("{DONE_KEY}{}", e.payload.commit_log_offset))
        .collect();
    let mut system = std::collections::BTreeMap::new();
    system.insert(SYS_TIMER_DONE.to_owned(), keys.len().to_string());
    Message {
        topic: TIMER_TOPIC.to_owned(),
        queue_id: 0,
        flags: 0,
        born_timestamp: now_ms(),
        born_host: comet_store::record::UNKNOWN_HOST,
        reconsume_times: 0,
        properties: Properties {
            message_id: format!(
                "{DONE_KEY}{}",
                chunk.first().map_or(0, |e| e.payload.commit_log_offset)
            ),
            keys,
            system,
            ..Default::default()
        },
        body: bytes::Bytes::new(),
    }
}

/// The recall record of the timer whose schedule record is at `origin`: a done record of that
/// one timer, marked recalled.
fn recall_record(origin: i64) -> Message {
    let mut system = std::collections::BTreeMap::new();
    system.insert(SYS_TIMER_DONE.to_owned(), "1".to_owned());
    system.insert(SYS_TIMER_RECALLED.to_owned(), "true".to_owned());
    Message {
        topic: TIMER_TOPIC.to_owned(),
        queue_id: 0,
        flags: 0,
        born_timestamp: now_ms(),
        born_host: comet_store::record::UNKNOWN_HOST,
        reconsume_times: 0,
        properties: Properties {
            message_id: format!("{DONE_KEY}{origin}"),
            keys: vec![format!("{DONE_KEY}{origin}")],
            system,
            ..Default::default()
        },
        body: bytes::Bytes::new(),
    }
}

/// Whether the log holds a done record for the timer whose schedule record is at `origin`.
fn is_done(store: &MessageStore, origin: i64) -> Result<bool, StoreError> {
    Ok(finished(store, origin)?.is_some())
}

/// How the timer whose schedule record is at `origin` was finished according to its done
/// records (a recall record wins: a later delivery round skipped it), if it was.
fn finished(store: &MessageStore, origin: i64) -> Result<Option<Finished>, StoreError> {
    let mut found = None;
    for m in store.query_by_key(TIMER_TOPIC, &format!("{DONE_KEY}{origin}"), 4, 0, i64::MAX)? {
        let sys = &m.message.properties.system;
        if sys.contains_key(SYS_TIMER_RECALLED) {
            return Ok(Some(Finished::Recalled));
        }
        if sys.contains_key(SYS_TIMER_DONE) {
            found = Some(Finished::Delivered);
        }
    }
    Ok(found)
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

/// The topic a schedule record delivers to; `None` when `m` is no schedule record.
pub(crate) fn scheduled_topic(m: &Message) -> Option<&str> {
    if m.topic != TIMER_TOPIC || m.properties.system.contains_key(SYS_TIMER_DONE) {
        return None;
    }
    m.properties
        .system
        .get(SYS_TIMER_REAL_TOPIC)
        .map(String::as_str)
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
        .is_some_and(|t| t == MessageKind::Transaction.name())
}

/// Bucket bounds of `comet_timer_lateness`, in ms: from on time to a failover's worth late.
const LATENESS_BUCKETS: [f64; 10] = [
    10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0, 60_000.0,
];

/// The `comet_timer_lateness` histogram of a broker (the time each delivered delay message
/// was appended to its topic minus its due time), with the role's labels.
pub(crate) fn lateness_histogram(observer: &comet_observe::Observer) -> BoundHistogram<f64> {
    observer
        .meter()
        .f64_histogram("comet_timer_lateness")
        .with_description("Delivery time minus due time of each delivered delay message")
        .with_unit("milliseconds")
        .with_boundaries(LATENESS_BUCKETS.to_vec())
        .build()
        .bind(&observer.labels(&[]))
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
        let now = now_ms();
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
            d.schedule(now - 10, a.physical_offset, a.size, a.queue_offset, now)
                .unwrap();
            d.schedule(now - 5, b.physical_offset, b.size, b.queue_offset, now)
                .unwrap();
            let (due, _) = d.take_due(now, 10).unwrap();
            assert_eq!(due.len(), 2);
            // The copy of the first entry is appended, then the process dies before commit.
            let copy = d.prepare(&store, &idx, &due[0], false).unwrap().unwrap();
            store.append(&copy).unwrap();
            store.abandon();
        }
        let store = MessageStore::open(store_cfg()).unwrap();
        let later = now_ms().max(now + 1);
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
