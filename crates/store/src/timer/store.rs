//! [`TimerStore`]: the public API of the timer log and wheel. Each call takes the one state
//! mutex and runs a step of the internal state machine ([`super::state`], recovery included);
//! [`TimerStore::flush`] captures a flush plan under the lock and does its disk syncs and
//! segment deletions outside it, serialized by a flush lock. The module docs of
//! [`crate::timer`] describe the model; comments here explain the steps.

use std::cmp::Reverse;
use std::fs;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use tracing::{info, warn};

use super::log::{TimerLog, has_segments};
use super::record::NONE;
use super::state::{FlushPlan, Geometry, PollStep, State};
use super::wheel::{Checkpoint, WheelFile};
use super::{TimerConfig, TimerEntry, TimerPayload};
use crate::error::{Result, StoreError};

const WHEEL_FILE: &str = "wheel";
const LOG_DIR: &str = "log";

/// A persisted timer log and wheel. See the [module docs](crate::timer) for the model, the
/// on-disk format, durability and recovery.
///
/// All methods take `&self` and lock one internal mutex; the store is `Send + Sync` and is
/// meant to be shared in an `Arc`. [`TimerStore::flush`] does its disk syncs outside that lock.
pub struct TimerStore {
    dir: PathBuf,
    max_delay_ms: i64,
    wheel_file: WheelFile,
    state: Mutex<State>,
    /// Serializes flushes: they write the stable slots outside `state`.
    flush_lock: Mutex<()>,
    /// Called after every completed flush (tests snapshot the files there).
    #[cfg(test)]
    pub(super) on_flushed: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

impl std::fmt::Debug for TimerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerStore")
            .field("dir", &self.dir)
            .field("pending", &self.pending())
            .finish()
    }
}

impl TimerStore {
    /// Opens the timer store in `dir`, creating it if it does not exist, and recovers it (see the
    /// module docs). Ends with a [`flush`](TimerStore::flush), so the recovered state is durable.
    ///
    /// `now_ms` is the current wall clock; it seeds the processing clock of a new store.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an invalid config or one whose `slot_ms`, `wheel_slots` or
    /// `log_segment_size` differ from the store's; [`StoreError::Layout`] for unexpected files;
    /// [`StoreError::Corrupt`] if no checkpoint copy is intact; [`StoreError::Io`].
    pub fn open(dir: &Path, cfg: TimerConfig, now_ms: i64) -> Result<Self> {
        cfg.validate()?;
        fs::create_dir_all(dir).map_err(StoreError::io("create timer dir", dir))?;
        let geo = Geometry::new(&cfg);
        let wheel_path = dir.join(WHEEL_FILE);
        let log_dir = dir.join(LOG_DIR);
        crate::mapped_file::remove_temp_files(dir)?;
        if !wheel_path.exists() {
            if has_segments(&log_dir) {
                return Err(StoreError::Layout {
                    path: wheel_path,
                    reason: "timer wheel file is missing but timer log segments exist".into(),
                });
            }
            let initial = Checkpoint {
                seq: 1,
                committed_due: now_ms.saturating_sub(1),
                committed_id: i64::MAX,
                clock_ms: now_ms,
                flushed_pos: 0,
                durable_loaded_period: geo.period(now_ms) - 1,
                scan_low: 0,
                cookie_end: Some(0),
            };
            WheelFile::create(&wheel_path, &cfg, &initial)?;
            info!(dir = %dir.display(), slot_ms = cfg.slot_ms, wheel_slots = cfg.wheel_slots,
                "timer store created");
        }
        let wheel_file = WheelFile::open(&wheel_path, &cfg)?;
        let ck = wheel_file.read_checkpoint()?;
        let (log, tail) = TimerLog::open(&log_dir, cfg.log_segment_size, ck.flushed_pos)?;
        let state = State::recover(geo, &wheel_file, ck, log, tail, now_ms)?;
        let store = TimerStore {
            dir: dir.to_path_buf(),
            max_delay_ms: cfg.max_delay_ms,
            wheel_file,
            state: Mutex::new(state),
            flush_lock: Mutex::new(()),
            #[cfg(test)]
            on_flushed: Mutex::new(None),
        };
        store.flush()?;
        Ok(store)
    }

    /// Schedules a timer to be delivered at `deliver_at_ms` (ms since the Unix epoch).
    ///
    /// A time at or before the processing clock (the largest `now_ms` seen) is delivered at
    /// once, with that clock as its effective time. The timer survives a process crash as soon
    /// as this returns, and a power loss after the next [`flush`](TimerStore::flush).
    ///
    /// # Errors
    /// [`StoreError::InvalidMessage`] if `deliver_at_ms - now_ms` exceeds `max_delay_ms`;
    /// [`StoreError::Io`] if a new log segment cannot be created.
    pub fn schedule(&self, deliver_at_ms: i64, payload: TimerPayload, now_ms: i64) -> Result<()> {
        let delay = deliver_at_ms.saturating_sub(now_ms);
        if delay > self.max_delay_ms {
            return Err(StoreError::InvalidMessage(format!(
                "timer delay of {delay} ms exceeds the maximum of {} ms",
                self.max_delay_ms
            )));
        }
        let mut st = self.state.lock();
        st.clock = st.clock.max(now_ms);
        let due = deliver_at_ms.max(st.clock);
        let filed = st.file(due, payload, 0, NONE);
        if filed.is_ok() {
            let end = payload.cookie.saturating_add(1);
            st.cookie_end = Some(st.cookie_end.map_or(end, |c| c.max(end)));
        }
        st.write_checkpoint_if_due(&self.wheel_file);
        filed.map(|_| ())
    }

    /// One past the largest [`TimerPayload::cookie`] of any timer scheduled so far (0 when
    /// none was), as durable as the schedules themselves: after a restart it covers every
    /// timer the store recovered. A caller that schedules in the order of a sequence number
    /// it keeps in the cookie learns from it where to resume.
    ///
    /// `None` for a store written by a version that did not keep this mark, until the first
    /// schedule after the upgrade.
    pub fn cookie_end(&self) -> Option<u64> {
        self.state.lock().cookie_end
    }

    /// Returns up to `max` due entries (`deliver_at_ms <= now_ms`), in `(deliver_at_ms,
    /// log_position)` order, and advances the wheel as far as `now_ms`.
    ///
    /// An entry is returned at most once per process lifetime; it stays pending until
    /// [`commit`](TimerStore::commit)ted, and entries not committed durably come back after a
    /// restart. The wheel does not advance while an entry has stayed uncommitted for about the
    /// grace (half the wheel); then only entries already loaded are returned. If the caller has
    /// not flushed for that long, this call flushes first (see the module docs).
    ///
    /// # Errors
    /// [`StoreError::Io`] if rolling a far timer forward needs a new segment that cannot be
    /// created, or if the automatic flush fails. Entries collected so far stay pending.
    pub fn poll_due(&self, now_ms: i64, max: usize) -> Result<Vec<TimerEntry>> {
        let mut out = Vec::new();
        loop {
            let step = {
                let mut st = self.state.lock();
                let polled = st.poll(now_ms, max, &mut out);
                st.write_checkpoint_if_due(&self.wheel_file);
                match polled {
                    Ok(step) => step,
                    Err(e) => {
                        st.requeue(&out);
                        return Err(e);
                    }
                }
            };
            match step {
                PollStep::Done => return Ok(out),
                PollStep::NeedsFlush => {
                    if let Err(e) = self.flush() {
                        self.state.lock().requeue(&out);
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Marks `entry` and every entry before it in delivery order as done: none of them is
    /// delivered again, in this process or after a restart. Committing an entry that is already
    /// covered does nothing.
    ///
    /// The progress is written to the checkpoint at once (it survives a process crash) and is
    /// durable against power loss after the next [`flush`](TimerStore::flush).
    ///
    /// # Errors
    /// None at present; the `Result` leaves room for a sync policy.
    pub fn commit(&self, entry: &TimerEntry) -> Result<()> {
        let key = entry.key();
        let mut st = self.state.lock();
        if key <= st.committed {
            return Ok(());
        }
        st.committed = key;
        let mut later = st.in_flight.split_off(&key);
        later.remove(&key);
        st.in_flight = later;
        st.write_checkpoint(&self.wheel_file);
        Ok(())
    }

    /// The earliest time at which [`poll_due`](TimerStore::poll_due) may return an entry, if no
    /// more timers are scheduled: the earliest loaded entry, or the start of the next slot that
    /// holds records (which may turn out to hold only timers that are rolled further). A time
    /// at or before now means "poll now". `None` when nothing is pending.
    pub fn next_due_ms(&self) -> Option<i64> {
        let st = self.state.lock();
        let mut best = st.heap.peek().map(|Reverse(d)| d.due);
        let last = (st.loaded + st.geo.slots).min(st.max_filed_period);
        for p in st.loaded + 1..=last {
            let start = st.geo.start(p);
            if best.is_some_and(|b| b <= start) {
                break;
            }
            let slot = st.wheel.get(st.geo.index(p));
            if !slot.is_empty() && slot.period == p {
                best = Some(start);
                break;
            }
        }
        best
    }

    /// Timers scheduled and not yet committed (delivered ones included until committed).
    ///
    /// Right after a restart, this also counts entries of not yet reloaded periods that were
    /// committed before the crash; the first [`poll_due`](TimerStore::poll_due) that reloads
    /// them corrects the count.
    pub fn pending(&self) -> u64 {
        let st = self.state.lock();
        st.unloaded_count + st.heap.len() as u64 + st.in_flight.len() as u64
    }

    /// Makes every schedule and commit so far durable against power loss, then deletes log
    /// segments nothing needs any more.
    ///
    /// Order: sync the new log records, write and sync the changed slots, write and sync the
    /// checkpoint (see the module docs). Other calls proceed while the disk syncs run.
    ///
    /// # Errors
    /// [`StoreError::Io`] if a sync or a deletion fails; a failed flush is retried in full by
    /// the next one.
    pub fn flush(&self) -> Result<()> {
        let _serial = self.flush_lock.lock();
        let Some(plan) = self.state.lock().plan_flush() else {
            return Ok(()); // Nothing written since the last flush.
        };
        if let Err(e) = self.write_plan(&plan) {
            let mut st = self.state.lock();
            for (idx, _) in &plan.dirty {
                st.wheel.mark_dirty(*idx);
            }
            return Err(e);
        }
        self.state
            .lock()
            .durable_reached(plan.durable, &self.wheel_file);
        if let Err(e) = self.wheel_file.flush_checkpoint() {
            self.state.lock().ck_dirty = true;
            return Err(e);
        }

        let detached = self.state.lock().log.detach_below(plan.durable.scan_low);
        let mut failed = None;
        for file in detached {
            let path = file.path().to_path_buf();
            drop(file);
            match fs::remove_file(&path) {
                Ok(()) => info!(segment = %path.display(), scan_low = plan.durable.scan_low,
                    "deleted processed timer log segment"),
                // Left behind, the file is only an older segment for the next open to keep.
                Err(e) => {
                    warn!(segment = %path.display(), error = %e, "cannot delete timer segment");
                    failed.get_or_insert(StoreError::io("delete timer segment", &path)(e));
                }
            }
        }
        #[cfg(test)]
        if let Some(hook) = self.on_flushed.lock().as_mut() {
            hook();
        }
        failed.map_or(Ok(()), Err)
    }

    fn write_plan(&self, plan: &FlushPlan) -> Result<()> {
        for (file, off, len) in &plan.ranges {
            file.flush_range(*off, *len)?;
        }
        if !plan.dirty.is_empty() {
            for (idx, slot) in &plan.dirty {
                self.wheel_file.write_slot(*idx, slot);
            }
            self.wheel_file.flush()?;
        }
        Ok(())
    }
}
