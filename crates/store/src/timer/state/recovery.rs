//! Recovery: rebuilding the [`State`] at open from the checkpoint, the stable slots and the
//! log tail, in the five steps the [module docs](crate::timer) list under "Durability and
//! recovery" (stable slots, broken slots, where processing resumes, rebuilt chains, the
//! unflushed tail). Records that may still be needed but cannot be linked in place are
//! re-appended as recovery copies carrying the timer's identity, so a copy and its original
//! share one delivery key.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use tracing::{info, warn};

use super::{Durable, Geometry, State};
use crate::error::Result;
use crate::timer::log::{Lookup, TimerLog};
use crate::timer::record::{FLAG_RELINKED, NONE, Record};
use crate::timer::wheel::{Checkpoint, Slot, Wheel, WheelFile};

impl State {
    /// Rebuilds the runtime state from the checkpoint, the stable slots and the log tail.
    pub(in crate::timer) fn recover(
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
}
