//! The timer store's internal state machine: the loaded heap, the uncommitted entries, the
//! commit key `K`, the last loaded period `L`, the processing clock and the durable claims,
//! with the steps that move them (filing, polling, loading and rolling slots, checkpoints and
//! flush plans). [`TimerStore`](super::TimerStore) holds it behind one mutex and calls these
//! steps; recovery (rebuilding it at open) is in `recovery`.
//!
//! The module docs of [`crate::timer`] describe the model; comments here explain the steps.
//! Invariants kept here: every entry handed out has a smaller delivery key `(due, id)` than
//! every entry not yet handed out; all records of one period are in one slot; the durable
//! claim "every edge record of a period up to `loaded_period` has been rolled, with its copy
//! synced" stays true (see [`State::edge_filed`]).

mod recovery;

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashSet};

use tracing::{debug, warn};

use super::log::{Lookup, SyncRange, TimerLog};
use super::record::{FLAG_ROLLED, NONE, Record};
use super::wheel::{Checkpoint, Slot, Wheel, WheelFile};
use super::{TimerConfig, TimerEntry, TimerPayload};
use crate::error::{Result, StoreError};

/// Derived wheel geometry, in periods.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    slot_ms: i64,
    pub(super) slots: i64,
    /// Filing horizon `H`.
    horizon: i64,
    /// Grace `G = N - H`.
    grace: i64,
}

impl Geometry {
    pub(super) fn new(cfg: &TimerConfig) -> Self {
        let slots = i64::from(cfg.wheel_slots);
        let horizon = slots / 2;
        Geometry {
            slot_ms: cfg.slot_ms as i64,
            slots,
            horizon,
            grace: slots - horizon,
        }
    }

    pub(super) fn period(&self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.slot_ms)
    }

    pub(super) fn start(&self, period: i64) -> i64 {
        period.saturating_mul(self.slot_ms)
    }

    pub(super) fn index(&self, period: i64) -> usize {
        period.rem_euclid(self.slots) as usize
    }
}

/// A loaded timer in the heap, ordered by its delivery key `(due, id)`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Due {
    pub(super) due: i64,
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
pub(super) struct Durable {
    flushed_pos: i64,
    loaded_period: i64,
    pub(super) scan_low: i64,
    /// One past the largest cookie scheduled below `flushed_pos`; `None`: unknown (an older
    /// store).
    cookie_end: Option<u64>,
}

/// Everything a flush captures under the lock and then writes without it.
pub(super) struct FlushPlan {
    pub(super) ranges: Vec<SyncRange>,
    pub(super) dirty: Vec<(usize, Slot)>,
    pub(super) durable: Durable,
}

/// Why `State::poll` stopped.
pub(super) enum PollStep {
    Done,
    /// Loading the next slot would move `L` too far past the last flushed `L`.
    NeedsFlush,
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) geo: Geometry,
    pub(super) log: TimerLog,
    pub(super) wheel: Wheel,
    /// Loaded, not yet handed out.
    pub(super) heap: BinaryHeap<Reverse<Due>>,
    /// Handed out, not yet committed: delivery key -> record position.
    pub(super) in_flight: BTreeMap<(i64, i64), i64>,
    /// Commit key `K`.
    pub(super) committed: (i64, i64),
    /// `L`: the last loaded period.
    pub(super) loaded: i64,
    /// The largest `now_ms` seen.
    pub(super) clock: i64,
    /// Records in the chains of unloaded slots.
    pub(super) unloaded_count: u64,
    durable: Durable,
    /// A checkpoint was written since the last flush synced it.
    pub(super) ck_dirty: bool,
    /// The durable claim was lowered; the caller writes the checkpoint before unlocking.
    ck_write_due: bool,
    /// The lowest period an edge record was filed under since the last flush plan.
    edge_floor: i64,
    /// The highest period any record was filed under (bounds `next_due_ms`'s search).
    pub(super) max_filed_period: i64,
    ck_seq: u64,
    warned_blocked_at: i64,
    /// One past the largest cookie scheduled so far (see
    /// [`TimerStore::cookie_end`](super::TimerStore::cookie_end)).
    pub(super) cookie_end: Option<u64>,
}

impl State {
    /// Files a timer due at `due` relative to the current `L` (see the module docs).
    pub(super) fn file(
        &mut self,
        due: i64,
        payload: TimerPayload,
        flags: u32,
        origin: i64,
    ) -> Result<i64> {
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

    pub(super) fn write_checkpoint_if_due(&mut self, wheel_file: &WheelFile) {
        if self.ck_write_due {
            self.write_checkpoint(wheel_file);
        }
    }

    pub(super) fn poll(
        &mut self,
        now_ms: i64,
        max: usize,
        out: &mut Vec<TimerEntry>,
    ) -> Result<PollStep> {
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
    pub(super) fn requeue(&mut self, entries: &[TimerEntry]) {
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

    pub(super) fn write_checkpoint(&mut self, wheel_file: &WheelFile) {
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
    pub(super) fn plan_flush(&mut self) -> Option<FlushPlan> {
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

    pub(super) fn durable_reached(&mut self, mut durable: Durable, wheel_file: &WheelFile) {
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
