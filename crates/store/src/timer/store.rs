//! [`TimerStore`]: the runtime state machine over the timer log and wheel, and its recovery.
//! The module docs of [`crate::timer`] describe the model; comments here explain the steps.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use tracing::{debug, info, warn};

use super::log::{Lookup, SyncRange, TimerLog, has_segments};
use super::record::{FLAG_RELINKED, FLAG_ROLLED, NONE, Record};
use super::wheel::{Checkpoint, Slot, Wheel, WheelFile};
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

/// Derived wheel geometry, in periods.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    slot_ms: i64,
    slots: i64,
    /// Filing horizon `H`.
    horizon: i64,
    /// Grace `G = N - H`.
    grace: i64,
}

impl Geometry {
    fn new(cfg: &TimerConfig) -> Self {
        let slots = i64::from(cfg.wheel_slots);
        let horizon = slots / 2;
        Geometry {
            slot_ms: cfg.slot_ms as i64,
            slots,
            horizon,
            grace: slots - horizon,
        }
    }

    fn period(&self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.slot_ms)
    }

    fn start(&self, period: i64) -> i64 {
        period.saturating_mul(self.slot_ms)
    }

    fn index(&self, period: i64) -> usize {
        period.rem_euclid(self.slots) as usize
    }
}

/// A loaded timer in the heap, ordered by its delivery key `(due, id)`.
#[derive(Clone, Copy, Debug)]
struct Due {
    due: i64,
    /// The timer's identity (see [`Record::identity`]).
    id: i64,
    /// Position of the record it was loaded from (for retention).
    pos: i64,
    payload: TimerPayload,
}

impl Due {
    fn key(&self) -> (i64, i64) {
        (self.due, self.id)
    }
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.key().cmp(&other.key())
    }
}

/// What the durable checkpoint currently claims (true on disk once written and synced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Durable {
    flushed_pos: i64,
    loaded_period: i64,
    scan_low: i64,
    /// One past the largest cookie scheduled below `flushed_pos`; `None`: unknown (an older
    /// store).
    cookie_end: Option<u64>,
}

/// Everything a flush captures under the lock and then writes without it.
struct FlushPlan {
    ranges: Vec<SyncRange>,
    dirty: Vec<(usize, Slot)>,
    durable: Durable,
}

/// Why `State::poll` stopped.
enum PollStep {
    Done,
    /// Loading the next slot would move `L` too far past the last flushed `L`.
    NeedsFlush,
}

#[derive(Debug)]
struct State {
    geo: Geometry,
    log: TimerLog,
    wheel: Wheel,
    /// Loaded, not yet handed out.
    heap: BinaryHeap<Reverse<Due>>,
    /// Handed out, not yet committed: delivery key -> record position.
    in_flight: BTreeMap<(i64, i64), i64>,
    /// Commit key `K`.
    committed: (i64, i64),
    /// `L`: the last loaded period.
    loaded: i64,
    /// The largest `now_ms` seen.
    clock: i64,
    /// Records in the chains of unloaded slots.
    unloaded_count: u64,
    durable: Durable,
    /// A checkpoint was written since the last flush synced it.
    ck_dirty: bool,
    /// The durable claim was lowered; the caller writes the checkpoint before unlocking.
    ck_write_due: bool,
    /// The lowest period an edge record was filed under since the last flush plan.
    edge_floor: i64,
    /// The highest period any record was filed under (bounds `next_due_ms`'s search).
    max_filed_period: i64,
    ck_seq: u64,
    warned_blocked_at: i64,
    /// One past the largest cookie scheduled so far (see [`TimerStore::cookie_end`]).
    cookie_end: Option<u64>,
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

impl State {
    /// Rebuilds the runtime state from the checkpoint, the stable slots and the log tail.
    fn recover(
        geo: Geometry,
        wheel_file: &WheelFile,
        ck: Checkpoint,
        log: TimerLog,
        tail: Vec<(i64, Record)>,
        now_ms: i64,
    ) -> Result<Self> {
        let n = geo.slots as usize;
        let mut st = State {
            geo,
            log,
            wheel: Wheel::new(n),
            heap: BinaryHeap::new(),
            in_flight: BTreeMap::new(),
            committed: (ck.committed_due, ck.committed_id),
            loaded: i64::MIN,
            clock: ck.clock_ms.max(now_ms),
            unloaded_count: 0,
            durable: Durable {
                flushed_pos: ck.flushed_pos,
                loaded_period: ck.durable_loaded_period,
                scan_low: ck.scan_low,
                cookie_end: ck.cookie_end,
            },
            ck_dirty: false,
            ck_write_due: false,
            edge_floor: i64::MAX,
            max_filed_period: i64::MIN,
            ck_seq: ck.seq,
            warned_blocked_at: i64::MIN,
            cookie_end: ck.cookie_end,
        };

        // 1. Stable slots: trust those whose newest record is intact and of the slot's period.
        let mut max_period: Option<i64> = None;
        let mut broken = Vec::new();
        // The newest record each stable chain already holds, to tell linked tail records.
        let mut stable_last = vec![NONE; n];
        for (idx, stable_last) in stable_last.iter_mut().enumerate() {
            let Some(s) = wheel_file.read_slot(idx) else {
                continue;
            };
            match st.log.read(s.last) {
                Lookup::Gone => {} // Retention removed it: every record of the chain is done.
                Lookup::Found(rec) if rec.period == s.period && geo.index(rec.period) == idx => {
                    // A torn `first` (from a crash inside a flush) is replaced by a bound that
                    // is low enough for retention.
                    let first = if (0..=s.last).contains(&s.first) {
                        s.first
                    } else {
                        s.last.min(ck.scan_low)
                    };
                    st.wheel.restore(
                        idx,
                        Slot {
                            first,
                            count: s.count.max(1),
                            ..s
                        },
                    );
                    max_period = max_period.max(Some(s.period));
                    *stable_last = s.last;
                }
                other => {
                    warn!(slot = idx, last = s.last, period = s.period, found = ?other,
                        "timer wheel slot points at a bad record; rebuilding it from the log");
                    broken.push(idx);
                }
            }
        }

        // 2. Broken slots: one scan of the retained log finds their records. The slot held the
        //    newest period among them; older periods of the same slot are long done.
        let broken_set: HashSet<usize> = broken.iter().copied().collect();
        let mut rebuilt = Vec::new();
        if !broken.is_empty() {
            let mut by_slot: HashMap<usize, Vec<(i64, Record)>> = HashMap::new();
            st.log.for_each_valid(st.log.first_base(), |pos, rec| {
                let idx = geo.index(rec.period);
                if broken_set.contains(&idx) {
                    by_slot.entry(idx).or_default().push((pos, *rec));
                }
            });
            for idx in broken {
                let mut recs = by_slot.remove(&idx).unwrap_or_default();
                let newest = recs.iter().map(|(_, r)| r.period).max();
                recs.retain(|(_, r)| Some(r.period) == newest);
                max_period = max_period.max(newest);
                rebuilt.push((idx, recs));
            }
        }
        for (_, rec) in &tail {
            max_period = max_period.max(Some(rec.period));
            // A store that predates the mark holds only cookies of 0, which say nothing.
            let end = rec.payload.cookie.saturating_add(1);
            if st.cookie_end.is_some() || rec.payload.cookie > 0 {
                st.cookie_end = Some(st.cookie_end.map_or(end, |c| c.max(end)));
            }
        }

        // 3. Where processing resumes: early enough to reload every uncommitted period and
        //    every period whose rolls may be lost, late enough that no slot still holds a
        //    period beyond the new filing window.
        let mut loaded = (geo.period(ck.committed_due) - 1).min(ck.durable_loaded_period);
        if let Some(m) = max_period {
            loaded = loaded.max(m - geo.slots);
        }
        st.loaded = loaded;

        // 4. Rebuild broken slots as fresh chains of recovery copies (copies of one timer that
        //    end up in one chain are told apart by their identity when the slot loads).
        let mut copies = 0u64;
        for (idx, recs) in rebuilt {
            st.wheel.set(idx, Slot::EMPTY);
            for (pos, rec) in recs {
                if st.needs_copy(pos, &rec) {
                    st.relink(pos, rec)?;
                    copies += 1;
                }
            }
        }

        // 5. Link the unflushed tail into its slots.
        let mut linked = 0u64;
        for (pos, rec) in tail {
            let idx = geo.index(rec.period);
            if rec.period <= loaded || broken_set.contains(&idx) {
                continue;
            }
            if geo.period(rec.deliver_at_ms) > rec.period {
                // An unflushed edge record: the checkpoint that lowered the roll claim for it
                // may not have reached the disk (see `edge_filed`).
                st.edge_filed(rec.period);
            }
            let slot = st.wheel.get(idx);
            if slot.holds(rec.period) && stable_last[idx] >= pos {
                continue; // Already in the stable chain (a flush was cut short).
            }
            if !slot.is_empty() && slot.period > rec.period {
                // Impossible by the choice of `loaded`; the record's period is long done.
                warn!(
                    slot = idx,
                    pos,
                    period = rec.period,
                    slot_period = slot.period,
                    "timer tail record is older than its slot; ignoring it"
                );
                continue;
            }
            if rec.prev == slot.tail_for(rec.period) {
                st.wheel.set(idx, slot.linked(rec.period, pos));
                linked += 1;
            } else if st.needs_copy(pos, &rec) {
                st.relink(pos, rec)?;
                copies += 1;
            }
        }

        st.max_filed_period = max_period.unwrap_or(i64::MIN);
        st.unloaded_count = st
            .wheel
            .slots()
            .iter()
            .filter(|s| !s.is_empty() && s.period > loaded)
            .map(|s| s.count)
            .sum();
        info!(
            pending = st.unloaded_count,
            loaded_period = loaded,
            committed_due = st.committed.0,
            linked,
            copies,
            broken_slots = broken_set.len(),
            log_end = st.log.end(),
            "timer store recovered"
        );
        Ok(st)
    }

    /// Whether a record found at recovery may still be needed (not done, not before `L`).
    fn needs_copy(&self, pos: i64, rec: &Record) -> bool {
        rec.period > self.loaded && (rec.deliver_at_ms, rec.identity(pos)) > self.committed
    }

    /// Re-appends the record at `pos` at the end of its slot's chain, as a recovery copy.
    fn relink(&mut self, pos: i64, rec: Record) -> Result<()> {
        let copy = Record {
            flags: rec.flags | FLAG_RELINKED,
            origin: rec.identity(pos),
            ..rec
        };
        self.append_to_slot(rec.period, copy)?;
        Ok(())
    }

    /// Files a timer due at `due` relative to the current `L` (see the module docs).
    fn file(&mut self, due: i64, payload: TimerPayload, flags: u32, origin: i64) -> Result<i64> {
        let period = self.geo.period(due);
        let l = self.loaded;
        let target = if period <= l {
            l
        } else if period - l <= self.geo.horizon {
            period
        } else {
            l + self.geo.horizon
        };
        let rec = Record {
            flags,
            deliver_at_ms: due,
            period: target,
            prev: NONE,
            origin,
            payload,
        };
        let pos = self.append_to_slot(target, rec)?;
        if target <= l {
            let id = if origin == NONE { pos } else { origin };
            self.heap.push(Reverse(Due {
                due,
                id,
                pos,
                payload,
            }));
        } else {
            self.unloaded_count += 1;
        }
        Ok(pos)
    }

    /// Appends `rec` to the chain of `period`'s slot, starting a new chain if the slot holds
    /// an older (done) period.
    fn append_to_slot(&mut self, period: i64, mut rec: Record) -> Result<i64> {
        let idx = self.geo.index(period);
        let slot = self.wheel.get(idx);
        if !slot.holds(period)
            && !slot.is_empty()
            && (slot.period > period || slot.period > self.loaded)
        {
            return Err(StoreError::corrupt(
                slot.last,
                format!(
                    "timer wheel slot {idx} still holds period {} when filing period {period}",
                    slot.period
                ),
            ));
        }
        rec.period = period;
        rec.prev = slot.tail_for(period);
        if self.geo.period(rec.deliver_at_ms) > period {
            self.edge_filed(period);
        }
        let pos = self.log.append(&rec)?;
        self.wheel.set(idx, slot.linked(period, pos));
        self.max_filed_period = self.max_filed_period.max(period);
        Ok(pos)
    }

    /// Keeps the durable claim "every edge record of a period up to `loaded_period` has been
    /// rolled, with its copy synced" true when an edge record is filed under period `q`, which
    /// happens at or below the claim when `L` resumed below it after a restart.
    fn edge_filed(&mut self, q: i64) {
        self.edge_floor = self.edge_floor.min(q);
        if q <= self.durable.loaded_period {
            self.durable.loaded_period = q - 1;
            self.ck_write_due = true;
        }
    }

    fn write_checkpoint_if_due(&mut self, wheel_file: &WheelFile) {
        if self.ck_write_due {
            self.write_checkpoint(wheel_file);
        }
    }

    fn poll(&mut self, now_ms: i64, max: usize, out: &mut Vec<TimerEntry>) -> Result<PollStep> {
        self.clock = self.clock.max(now_ms);
        while out.len() < max {
            // Heap entries all belong to loaded periods, so they precede every unloaded record.
            if let Some(Reverse(top)) = self.heap.peek()
                && top.due <= self.clock
            {
                let top = *top;
                self.heap.pop();
                self.in_flight.insert(top.key(), top.pos);
                out.push(TimerEntry {
                    deliver_at_ms: top.due,
                    payload: top.payload,
                    id: top.id,
                    pos: top.pos,
                });
                continue;
            }
            let next = self.loaded + 1;
            if self.geo.start(next) > self.clock {
                break;
            }
            if next >= self.durable.loaded_period + self.geo.grace {
                return Ok(PollStep::NeedsFlush);
            }
            let oldest_live = self.oldest_live_period().unwrap_or(next);
            if next >= oldest_live + self.geo.grace {
                if self.warned_blocked_at != next {
                    self.warned_blocked_at = next;
                    warn!(
                        oldest_uncommitted_period = oldest_live,
                        next_period = next,
                        "timer wheel stalled: an entry has stayed uncommitted for the whole grace"
                    );
                }
                break;
            }
            self.load_slot(next)?;
        }
        Ok(PollStep::Done)
    }

    /// The period of the oldest loaded entry that is not committed.
    fn oldest_live_period(&self) -> Option<i64> {
        let heap = self.heap.peek().map(|Reverse(d)| self.geo.period(d.due));
        let flight = self
            .in_flight
            .first_key_value()
            .map(|((due, _), _)| self.geo.period(*due));
        match (heap, flight) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Puts entries handed out by a failed `poll_due` back into the heap.
    fn requeue(&mut self, entries: &[TimerEntry]) {
        for e in entries {
            if self.in_flight.remove(&e.key()).is_some() {
                self.heap.push(Reverse(Due {
                    due: e.deliver_at_ms,
                    id: e.id,
                    pos: e.pos,
                    payload: e.payload,
                }));
            }
        }
    }

    /// Loads period `p` (which must be `L + 1`): due records into the heap, edge records rolled.
    fn load_slot(&mut self, p: i64) -> Result<()> {
        debug_assert_eq!(p, self.loaded + 1);
        let idx = self.geo.index(p);
        let slot = self.wheel.get(idx);
        if slot.is_empty() || slot.period != p {
            self.loaded = p;
            return Ok(());
        }
        let records = match self.walk(p, slot.last) {
            Some(records) => records,
            None => {
                warn!(
                    period = p,
                    slot = idx,
                    last = slot.last,
                    "timer chain is broken (a record is corrupt or lost); scanning the log"
                );
                self.scan_period(p)
            }
        };
        let before = self.loaded;
        self.loaded = p;
        let mut due = Vec::new();
        let mut rolled = 0usize;
        for (pos, rec) in first_of_each_timer(records) {
            let id = rec.identity(pos);
            if (rec.deliver_at_ms, id) <= self.committed {
                continue;
            }
            if self.geo.period(rec.deliver_at_ms) > p {
                // The target depends only on `p` and the deliver time, so rolling this record
                // again after a restart puts the second copy next to the first one.
                if let Err(e) = self.file(rec.deliver_at_ms, rec.payload, FLAG_ROLLED, id) {
                    // The next poll retries the slot; copies already made are deduplicated.
                    self.loaded = before;
                    return Err(e);
                }
                rolled += 1;
            } else {
                due.push(Reverse(Due {
                    due: rec.deliver_at_ms,
                    id,
                    pos,
                    payload: rec.payload,
                }));
            }
        }
        if rolled > 0 {
            debug!(period = p, rolled, "rolled far timers past the horizon");
        }
        self.unloaded_count = self.unloaded_count.saturating_sub(slot.count);
        self.heap.extend(due);
        Ok(())
    }

    /// The records of `p`'s chain, oldest first; `None` if the chain is broken.
    fn walk(&self, p: i64, last: i64) -> Option<Vec<(i64, Record)>> {
        let mut out = Vec::new();
        let mut pos = last;
        while pos != NONE {
            match self.log.read(pos) {
                // Retention only removes records below every live one: the rest is done.
                Lookup::Gone => break,
                Lookup::Found(rec)
                    if rec.period == p && (rec.prev == NONE || (0..pos).contains(&rec.prev)) =>
                {
                    out.push((pos, rec));
                    pos = rec.prev;
                }
                _ => return None,
            }
        }
        // Oldest first: rolls then keep the schedule order of equal deliver times.
        out.reverse();
        Some(out)
    }

    /// Every intact record filed under `p` in the retained log, in log order.
    fn scan_period(&self, p: i64) -> Vec<(i64, Record)> {
        let mut found = Vec::new();
        self.log.for_each_valid(self.log.first_base(), |pos, rec| {
            if rec.period == p {
                found.push((pos, *rec));
            }
        });
        found
    }

    fn write_checkpoint(&mut self, wheel_file: &WheelFile) {
        self.ck_seq += 1;
        self.ck_dirty = true;
        self.ck_write_due = false;
        wheel_file.write_checkpoint(&Checkpoint {
            seq: self.ck_seq,
            committed_due: self.committed.0,
            committed_id: self.committed.1,
            clock_ms: self.clock,
            flushed_pos: self.durable.flushed_pos,
            durable_loaded_period: self.durable.loaded_period,
            scan_low: self.durable.scan_low,
            cookie_end: self.durable.cookie_end,
        });
    }

    /// Captures what a flush makes durable; `None` if nothing changed since the last one.
    fn plan_flush(&mut self) -> Option<FlushPlan> {
        let end = self.log.end();
        let durable = Durable {
            flushed_pos: end,
            // Monotonic: after a restart `L` may resume below it, and what it claims (the
            // rolls of every period up to it are on disk) stays true.
            loaded_period: self.durable.loaded_period.max(self.loaded),
            scan_low: self.live_low(end),
            cookie_end: self.cookie_end,
        };
        let ranges = self.log.sync_ranges(self.durable.flushed_pos, end);
        let dirty = self.wheel.take_dirty();
        self.edge_floor = i64::MAX;
        if ranges.is_empty() && dirty.is_empty() && durable == self.durable && !self.ck_dirty {
            return None;
        }
        Some(FlushPlan {
            ranges,
            dirty,
            durable,
        })
    }

    /// The lowest position a restart could need: the oldest record of every unloaded chain and
    /// of every loaded, uncommitted entry.
    fn live_low(&self, end: i64) -> i64 {
        let slots = self
            .wheel
            .slots()
            .iter()
            .filter(|s| !s.is_empty() && s.period > self.loaded)
            .map(|s| s.first);
        let heap = self.heap.iter().map(|Reverse(d)| d.pos);
        let flight = self.in_flight.values().copied();
        slots.chain(heap).chain(flight).fold(end, i64::min)
    }

    fn durable_reached(&mut self, mut durable: Durable, wheel_file: &WheelFile) {
        // An edge record filed after the plan may sit at or below the planned claim.
        durable.loaded_period = durable.loaded_period.min(self.edge_floor.saturating_sub(1));
        self.durable = durable;
        self.write_checkpoint(wheel_file);
        // Cleared before the sync that follows: a commit racing with it sets it again.
        self.ck_dirty = false;
        debug!(
            flushed_pos = durable.flushed_pos,
            loaded_period = durable.loaded_period,
            scan_low = durable.scan_low,
            "timer store flushed"
        );
    }
}

/// Keeps the first (lowest-position) record of every timer identity; `records` are in log
/// order. Copies of one timer (a roll redone after a restart, a recovery copy) meet in the same
/// slot, so this is where duplicates disappear; all copies carry the same deliver time,
/// payload and delivery key.
fn first_of_each_timer(records: Vec<(i64, Record)>) -> Vec<(i64, Record)> {
    let mut seen = HashSet::with_capacity(records.len());
    records
        .into_iter()
        .filter(|(pos, rec)| seen.insert(rec.identity(*pos)))
        .collect()
}
