//! In-memory consumer state: per (group, topic, queue) the pop position and the messages in
//! flight, plus the timers that make expired messages visible again.
//!
//! Model of one queue for one group:
//!
//! ```text
//!   offsets:   ... | completed | in flight / completed ... | never delivered ...
//!                  ^ack_offset = first in-flight offset    ^pop_offset
//! ```
//!
//! Every offset below `pop_offset` that is not in `inflight` is completed (acknowledged,
//! dead-lettered, or skipped by the group's tag filter). The ack offset is therefore the first
//! in-flight offset (or `pop_offset`), and acknowledged state needs no memory at all. `ready`
//! holds in-flight offsets whose deadline passed and that wait for redelivery.
//!
//! FIFO consumer groups: every entry carries the hash of its message group. A new message
//! whose message group already has an entry is *held*: it joins `inflight` without being
//! handed out (attempts 0, no deadline), so the ack offset cannot pass it. When a message group's
//! entry completes (ack or dead letter), the group's next held entry is *released* into
//! `ready` and delivered by the next pop. So at most one message per message group is out at a
//! time, in queue order, while other message groups proceed; a redelivered (un-acked) message
//! keeps its group blocked. Held entries are persisted like the others, so the order survives
//! restarts.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

/// Identifies one group's consumption of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct QueueKey {
    pub group: String,
    pub topic: String,
    pub queue_id: i32,
}

/// A message handed out and not yet completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InFlight {
    /// Changes with every delivery and invisible-time change; receipt handles carry it.
    pub generation: u64,
    /// End of the invisible time, ms since the epoch.
    pub deadline_ms: i64,
    /// When the message may be delivered again (deadline, plus backoff if so configured).
    pub visible_at_ms: i64,
    /// Deliveries so far (1 after the first).
    pub attempts: u32,
    /// Being moved to the dead-letter queue (not persisted: after a restart the move is
    /// retried).
    pub dlq_pending: bool,
    /// [`group_hash`] of the message group for FIFO groups, 0 otherwise.
    pub group: u64,
}

/// `pop_offset` of a removed (group, topic, queue) (a broadcast client whose position
/// expired): its record in the state log is a tombstone, and a pop that still holds the slot
/// takes nothing from it.
pub(crate) const REMOVED: i64 = i64::MIN;

/// `visible_at_ms` of a held FIFO entry: never visible until released.
pub(crate) const HELD: i64 = i64::MAX;

impl InFlight {
    /// A FIFO message waiting for the earlier message of its message group.
    pub fn held(group: u64) -> InFlight {
        InFlight {
            generation: 0,
            deadline_ms: 0,
            visible_at_ms: HELD,
            attempts: 0,
            dlq_pending: false,
            group,
        }
    }

    /// Held and not yet released.
    pub fn is_held(&self) -> bool {
        self.attempts == 0 && self.visible_at_ms == HELD
    }
}

/// Stable 64-bit FNV-1a of a message group, never 0 (0 means "no group").
pub(crate) fn group_hash(message_group: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in message_group.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// The state of one (group, topic, queue).
#[derive(Debug, Default)]
pub(crate) struct QueueState {
    /// False until the first pop decides the start position.
    pub initialized: bool,
    /// Next offset never examined by this group.
    pub pop_offset: i64,
    /// Use [`QueueState::insert`] and [`QueueState::remove`] to change it (they keep the
    /// message-group counts).
    pub inflight: BTreeMap<i64, InFlight>,
    /// In-flight offsets whose visibility time passed, waiting for redelivery.
    pub ready: BTreeSet<i64>,
    /// Entries per message group (FIFO), for the "is this group busy" check.
    groups: HashMap<u64, u32>,
    /// Held (not yet released) entries.
    held: usize,
}

impl QueueState {
    /// The state of a group that consumed everything below `offset` and has nothing in
    /// flight.
    pub fn starting_at(offset: i64) -> QueueState {
        QueueState {
            initialized: true,
            pop_offset: offset,
            ..Default::default()
        }
    }

    /// Adds (or replaces) the entry at `offset`.
    pub fn insert(&mut self, offset: i64, f: InFlight) {
        if let Some(old) = self.inflight.insert(offset, f) {
            self.forget(&old);
        }
        if f.group != 0 {
            *self.groups.entry(f.group).or_insert(0) += 1;
        }
        if f.is_held() {
            self.held += 1;
        }
    }

    /// Removes the entry at `offset` (and from `ready`).
    pub fn remove(&mut self, offset: i64) -> Option<InFlight> {
        self.ready.remove(&offset);
        let f = self.inflight.remove(&offset)?;
        self.forget(&f);
        Some(f)
    }

    fn forget(&mut self, f: &InFlight) {
        if f.group != 0
            && let std::collections::hash_map::Entry::Occupied(mut e) = self.groups.entry(f.group)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        if f.is_held() {
            self.held -= 1;
        }
    }

    /// Completes the entry at `offset` (acked, dead-lettered or gone) and releases the next
    /// held entry of its message group. `None` if there was no entry; else whether an entry
    /// was released (the caller wakes the topic's pollers).
    pub fn complete(&mut self, offset: i64, now_ms: i64) -> Option<bool> {
        let f = self.remove(offset)?;
        Some(self.release_next(f.group, offset, now_ms).is_some())
    }

    /// Whether message group `group` has an entry (delivered or held).
    pub fn group_busy(&self, group: u64) -> bool {
        group != 0 && self.groups.contains_key(&group)
    }

    /// Held entries not yet released.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Releases the first held entry of `group` after `after` (visible at `now_ms`, put in
    /// `ready`); returns its offset. Called when the group's previous entry completed.
    pub fn release_next(&mut self, group: u64, after: i64, now_ms: i64) -> Option<i64> {
        if group == 0 || !self.groups.contains_key(&group) {
            return None;
        }
        let off = self
            .inflight
            .range(after.saturating_add(1)..)
            .find(|(_, f)| f.group == group)
            .map(|(o, _)| *o)?;
        self.release(off, now_ms).then_some(off)
    }

    /// Releases every held entry (the group stopped being FIFO); returns how many.
    pub fn release_all(&mut self, now_ms: i64) -> usize {
        let held: Vec<i64> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.is_held())
            .map(|(o, _)| *o)
            .collect();
        held.iter().filter(|o| self.release(**o, now_ms)).count()
    }

    fn release(&mut self, offset: i64, now_ms: i64) -> bool {
        match self.inflight.get_mut(&offset) {
            Some(f) if f.is_held() => {
                f.visible_at_ms = now_ms;
                self.held -= 1;
                self.ready.insert(offset);
                true
            }
            _ => false,
        }
    }

    /// Everything below this offset is completed.
    pub fn ack_offset(&self) -> i64 {
        self.inflight
            .keys()
            .next()
            .copied()
            .unwrap_or(self.pop_offset)
    }
}

/// The persisted form of a [`QueueState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueRecord {
    pub key: QueueKey,
    pub pop_offset: i64,
    pub inflight: Vec<(i64, InFlight)>,
}

/// One (group, topic, queue) and its locks.
#[derive(Debug)]
pub(crate) struct QueueSlot {
    pub key: QueueKey,
    /// Serializes pops of this queue (held across the store read); acks and timers only
    /// take `state`.
    pub pop_lock: tokio::sync::Mutex<()>,
    pub state: Mutex<QueueState>,
    dirty: AtomicBool,
}

impl QueueSlot {
    fn new(key: QueueKey, state: QueueState) -> Self {
        Self {
            key,
            pop_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
            dirty: AtomicBool::new(false),
        }
    }

    /// The persisted form, or `None` while uninitialized.
    pub fn record(&self) -> Option<QueueRecord> {
        let st = self.state.lock();
        st.initialized.then(|| QueueRecord {
            key: self.key.clone(),
            pop_offset: st.pop_offset,
            inflight: st.inflight.iter().map(|(o, f)| (*o, *f)).collect(),
        })
    }
}

/// A visibility timer; the heap keeps the earliest on top.
#[derive(Debug)]
pub(crate) struct Timer {
    pub at_ms: i64,
    seq: u64,
    pub slot: Arc<QueueSlot>,
    pub offset: i64,
    pub generation: u64,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

/// All consumer state of the broker.
pub(crate) struct Consumers {
    slots: RwLock<HashMap<QueueKey, Arc<QueueSlot>>>,
    dirty: Mutex<Vec<Arc<QueueSlot>>>,
    timers: Mutex<BinaryHeap<Timer>>,
    timer_seq: AtomicU64,
    /// Woken whenever a timer is added (the revive task re-computes its sleep).
    pub timer_added: Notify,
    /// Number of state changes so far; a change counts once its slot is in `dirty`.
    change_seq: AtomicU64,
    /// Woken on every change (the persister writes it out).
    pub changed: Notify,
    incarnation: u32,
    generation: AtomicU32,
    /// Heap size above which stale timers are purged (see [`Consumers::purge_stale_timers`]).
    purge_at: AtomicUsize,
}

/// Smallest heap size that triggers a purge of stale timers.
const MIN_PURGE_AT: usize = 65_536;

impl Consumers {
    /// State restored from `records`; generations issued from now on carry `incarnation` in
    /// their high 32 bits, so they never equal one issued before a crash. Records adopted from
    /// another member (a promoted replica's) may carry that member's higher incarnation: the
    /// one used is above every incarnation in `records` too.
    pub fn new(incarnation: u32, records: Vec<QueueRecord>) -> Self {
        let adopted = records
            .iter()
            .flat_map(|r| r.inflight.iter())
            .map(|(_, f)| (f.generation >> 32) as u32)
            .max()
            .map_or(0, |i| i.saturating_add(1));
        let incarnation = incarnation.max(adopted);
        let c = Consumers {
            slots: RwLock::new(HashMap::new()),
            dirty: Mutex::new(Vec::new()),
            timers: Mutex::new(BinaryHeap::new()),
            timer_seq: AtomicU64::new(0),
            timer_added: Notify::new(),
            change_seq: AtomicU64::new(0),
            changed: Notify::new(),
            incarnation,
            generation: AtomicU32::new(0),
            purge_at: AtomicUsize::new(MIN_PURGE_AT),
        };
        for r in records.into_iter().filter(|r| r.pop_offset != REMOVED) {
            let mut st = QueueState {
                initialized: true,
                pop_offset: r.pop_offset,
                ..Default::default()
            };
            for (off, mut f) in r.inflight {
                f.dlq_pending = false;
                st.insert(off, f);
            }
            let slot = Arc::new(QueueSlot::new(r.key.clone(), st));
            {
                let st = slot.state.lock();
                for (off, f) in st.inflight.iter().filter(|(_, f)| !f.is_held()) {
                    c.schedule(&slot, *off, f.generation, f.visible_at_ms);
                }
            }
            c.slots.write().insert(r.key, slot);
        }
        c
    }

    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// A generation never issued before (by this or an earlier incarnation).
    pub fn next_generation(&self) -> u64 {
        let low = self.generation.fetch_add(1, Ordering::Relaxed);
        (u64::from(self.incarnation) << 32) | u64::from(low)
    }

    /// The slot of `key`, if it exists.
    pub fn get(&self, key: &QueueKey) -> Option<Arc<QueueSlot>> {
        self.slots.read().get(key).cloned()
    }

    /// The slot of `key`, created uninitialized if missing.
    pub fn get_or_create(&self, key: &QueueKey) -> Arc<QueueSlot> {
        if let Some(s) = self.get(key) {
            return s;
        }
        Arc::clone(
            self.slots
                .write()
                .entry(key.clone())
                .or_insert_with(|| Arc::new(QueueSlot::new(key.clone(), QueueState::default()))),
        )
    }

    pub fn all(&self) -> Vec<Arc<QueueSlot>> {
        self.slots.read().values().cloned().collect()
    }

    /// Removes every slot whose group is `owner` (a broadcast client's whole position): each
    /// becomes a tombstone (see [`REMOVED`]) written to the state log like any change, and
    /// its messages in flight are forgotten (their timers find nothing). Returns how many.
    pub fn remove_owner(&self, owner: &str) -> usize {
        let removed: Vec<Arc<QueueSlot>> = {
            let mut slots = self.slots.write();
            let keys: Vec<QueueKey> = slots.keys().filter(|k| k.group == owner).cloned().collect();
            keys.iter().filter_map(|k| slots.remove(k)).collect()
        };
        for slot in &removed {
            *slot.state.lock() = QueueState {
                initialized: true,
                pop_offset: REMOVED,
                ..Default::default()
            };
            self.mark_dirty(slot);
        }
        removed.len()
    }

    /// Removes every slot whose topic is in `topics` (the consumer state of expired lite
    /// topics), as tombstones written to the state log like [`Consumers::remove_owner`].
    /// Returns how many.
    pub fn remove_topics(&self, topics: &std::collections::HashSet<String>) -> usize {
        let removed: Vec<Arc<QueueSlot>> = {
            let mut slots = self.slots.write();
            let keys: Vec<QueueKey> = slots
                .keys()
                .filter(|k| topics.contains(&k.topic))
                .cloned()
                .collect();
            keys.iter().filter_map(|k| slots.remove(k)).collect()
        };
        for slot in &removed {
            *slot.state.lock() = QueueState {
                initialized: true,
                pop_offset: REMOVED,
                ..Default::default()
            };
            self.mark_dirty(slot);
        }
        removed.len()
    }

    /// The distinct groups (consumer-state owners) that have state, in no order.
    pub fn owners(&self) -> Vec<String> {
        let slots = self.slots.read();
        let mut v: Vec<String> = slots.keys().map(|k| k.group.clone()).collect();
        drop(slots);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Records that `slot` changed and wakes the persist task; returns the change's sequence
    /// number, which the persister reports as written once this change is in the state log.
    pub fn mark_dirty(&self, slot: &Arc<QueueSlot>) -> u64 {
        let seq = self.mark_changed(slot);
        self.changed.notify_one();
        seq
    }

    /// Records that `slot` changed without waking the persist task: for callers that write
    /// the state themselves next (the broker's inline persist), which is cheaper than a
    /// hand-off to another thread. Unwritten changes still go out at the next periodic
    /// persist.
    pub fn mark_changed(&self, slot: &Arc<QueueSlot>) -> u64 {
        if !slot.dirty.swap(true, Ordering::AcqRel) {
            self.dirty.lock().push(Arc::clone(slot));
        }
        // After the push: a persister that reads this sequence number also finds the slot.
        self.change_seq.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Puts slots whose write failed back into the dirty set without announcing a change
    /// (the periodic persist retries them, so a failing disk is not retried in a hot loop).
    pub fn requeue_dirty(&self, slot: &Arc<QueueSlot>) {
        if !slot.dirty.swap(true, Ordering::AcqRel) {
            self.dirty.lock().push(Arc::clone(slot));
        }
    }

    /// The sequence number of the latest change (see [`Consumers::mark_dirty`]).
    pub fn change_seq(&self) -> u64 {
        self.change_seq.load(Ordering::Acquire)
    }

    /// Takes the changed slots; each is marked clean *before* its state is read by the caller,
    /// so a change made meanwhile marks it dirty again.
    pub fn take_dirty(&self) -> Vec<Arc<QueueSlot>> {
        let v = std::mem::take(&mut *self.dirty.lock());
        for s in &v {
            s.dirty.store(false, Ordering::Release);
        }
        v
    }

    /// Arms a timer: at `at_ms` the entry (offset, generation) of `slot` is checked. The
    /// revive task is woken only when the new timer is the earliest: otherwise it already
    /// sleeps until an earlier one, and most timers (one per delivery, an invisible time
    /// ahead) come after those armed before them.
    pub fn schedule(&self, slot: &Arc<QueueSlot>, offset: i64, generation: u64, at_ms: i64) {
        let seq = self.timer_seq.fetch_add(1, Ordering::Relaxed);
        let mut heap = self.timers.lock();
        let earliest = heap.peek().is_none_or(|t| at_ms < t.at_ms);
        heap.push(Timer {
            at_ms,
            seq,
            slot: Arc::clone(slot),
            offset,
            generation,
        });
        drop(heap);
        if earliest {
            self.timer_added.notify_one();
        }
    }

    /// When the earliest timer fires.
    pub fn next_due(&self) -> Option<i64> {
        self.timers.lock().peek().map(|t| t.at_ms)
    }

    /// Timers of acknowledged or re-armed entries stay in the heap until they fire. When the
    /// heap outgrows twice its live size (at least [`MIN_PURGE_AT`]), this drops the stale
    /// ones, so memory follows the number of messages in flight, not the delivery rate times
    /// the invisible time. Must not be called with a slot's state lock held.
    pub fn purge_stale_timers(&self) -> usize {
        if self.timers.lock().len() < self.purge_at.load(Ordering::Relaxed) {
            return 0;
        }
        // Take the heap out so no slot lock is taken under the heap lock (pops schedule
        // timers while holding their slot's state lock).
        let old = std::mem::take(&mut *self.timers.lock());
        let before = old.len();
        let live: Vec<Timer> = old
            .into_iter()
            .filter(|t| {
                t.slot
                    .state
                    .lock()
                    .inflight
                    .get(&t.offset)
                    .is_some_and(|f| f.generation == t.generation)
            })
            .collect();
        let kept = live.len();
        let mut heap = self.timers.lock();
        heap.extend(live);
        self.purge_at
            .store((heap.len() * 2).max(MIN_PURGE_AT), Ordering::Relaxed);
        before - kept
    }

    /// Removes and returns the timers due at `now_ms` (at most `max`).
    pub fn take_due(&self, now_ms: i64, max: usize) -> Vec<Timer> {
        let mut heap = self.timers.lock();
        let mut out = Vec::new();
        while out.len() < max && heap.peek().is_some_and(|t| t.at_ms <= now_ms) {
            if let Some(t) = heap.pop() {
                out.push(t);
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> QueueKey {
        QueueKey {
            group: "g".into(),
            topic: "t".into(),
            queue_id: 0,
        }
    }

    #[test]
    fn given_inflight_when_ack_offset_should_be_first_inflight_or_pop_offset() {
        let mut st = QueueState {
            initialized: true,
            pop_offset: 10,
            ..Default::default()
        };
        assert_eq!(st.ack_offset(), 10);
        let f = InFlight {
            generation: 1,
            deadline_ms: 0,
            visible_at_ms: 0,
            attempts: 1,
            dlq_pending: false,
            group: 0,
        };
        st.insert(7, f);
        st.insert(4, f);
        assert_eq!(st.ack_offset(), 4);
    }

    #[test]
    fn given_timers_when_taken_should_come_earliest_first() {
        let c = Consumers::new(3, Vec::new());
        let s = c.get_or_create(&key());
        c.schedule(&s, 1, 1, 300);
        c.schedule(&s, 2, 1, 100);
        c.schedule(&s, 3, 1, 200);
        assert_eq!(c.next_due(), Some(100));
        let due: Vec<i64> = c.take_due(250, 10).iter().map(|t| t.offset).collect();
        assert_eq!(due, vec![2, 3]);
        assert_eq!(c.next_due(), Some(300));
    }

    #[test]
    fn given_many_stale_timers_when_purged_should_keep_only_live_ones() {
        let c = Consumers::new(1, Vec::new());
        let s = c.get_or_create(&key());
        let live = InFlight {
            generation: 5,
            deadline_ms: 0,
            visible_at_ms: 0,
            attempts: 1,
            dlq_pending: false,
            group: 0,
        };
        s.state.lock().insert(0, live);
        c.schedule(&s, 0, 5, i64::MAX);
        for i in 1..(MIN_PURGE_AT as i64 + 10) {
            c.schedule(&s, i, 1, i64::MAX);
        }
        assert_eq!(c.purge_stale_timers(), MIN_PURGE_AT + 9);
        assert_eq!(c.timers.lock().len(), 1);
        assert_eq!(c.purge_stale_timers(), 0, "below the threshold now");
    }

    #[test]
    fn given_records_adopted_from_a_later_incarnation_when_restored_should_issue_above_it() {
        let adopted = InFlight {
            generation: (9u64 << 32) | 5,
            deadline_ms: 1,
            visible_at_ms: 1,
            attempts: 1,
            dlq_pending: false,
            group: 0,
        };
        let records = vec![QueueRecord {
            key: QueueKey {
                group: "g".into(),
                topic: "t".into(),
                queue_id: 0,
            },
            pop_offset: 3,
            inflight: vec![(1, adopted)],
        }];
        let c = Consumers::new(2, records);
        assert_eq!(c.incarnation(), 10);
        assert!(c.next_generation() > adopted.generation);
        assert_eq!(Consumers::new(12, Vec::new()).incarnation(), 12);
    }

    #[test]
    fn given_incarnation_when_generations_issued_should_carry_it_and_differ() {
        let c = Consumers::new(7, Vec::new());
        let a = c.next_generation();
        let b = c.next_generation();
        assert_ne!(a, b);
        assert_eq!(a >> 32, 7);
    }

    #[test]
    fn given_fifo_entries_when_completed_should_release_the_next_of_the_same_group_only() {
        let (a, b) = (group_hash("a"), group_hash("b"));
        assert_ne!(a, b);
        assert_ne!(group_hash(""), 0);
        let delivered = |group| InFlight {
            generation: 1,
            deadline_ms: 10,
            visible_at_ms: 10,
            attempts: 1,
            dlq_pending: false,
            group,
        };
        let mut st = QueueState::default();
        st.insert(0, delivered(a));
        st.insert(1, InFlight::held(a));
        st.insert(2, delivered(b));
        st.insert(3, InFlight::held(a));
        st.insert(4, InFlight::held(b));
        assert!(st.group_busy(a) && st.group_busy(b) && !st.group_busy(group_hash("c")));
        assert_eq!(st.held(), 3);
        st.remove(0);
        assert_eq!(st.release_next(a, 0, 99), Some(1));
        assert_eq!(st.ready.iter().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(st.inflight[&1].visible_at_ms, 99);
        assert!(!st.inflight[&1].is_held());
        assert_eq!(st.held(), 2);
        // Offset 1 is released, not delivered: it still keeps 3 held.
        assert_eq!(st.release_next(a, 0, 99), None);
        st.remove(2);
        assert_eq!(st.release_next(b, 2, 100), Some(4));
        st.remove(1);
        st.remove(4);
        assert_eq!(st.release_next(a, 1, 101), Some(3));
        st.remove(3);
        assert!(!st.group_busy(a) && !st.group_busy(b));
        assert_eq!((st.held(), st.inflight.len()), (0, 0));
        st.insert(5, InFlight::held(a));
        st.insert(6, InFlight::held(b));
        assert_eq!(st.release_all(7), 2);
        assert_eq!(st.held(), 0);
    }

    #[test]
    fn given_timers_when_scheduled_should_wake_the_revive_task_only_for_a_new_earliest() {
        use futures::FutureExt as _;
        let c = Consumers::new(1, Vec::new());
        let s = c.get_or_create(&key());
        let woken = |c: &Consumers| c.timer_added.notified().now_or_never().is_some();
        c.schedule(&s, 0, 1, 1_000);
        assert!(woken(&c), "the first timer is the earliest");
        c.schedule(&s, 1, 2, 2_000);
        c.schedule(&s, 2, 3, 1_000);
        assert!(!woken(&c), "timers after the earliest need no wake-up");
        c.schedule(&s, 3, 4, 500);
        assert!(woken(&c), "a new earliest timer wakes the task");
        assert_eq!(c.next_due(), Some(500));
    }

    #[test]
    fn given_dirty_slot_when_taken_twice_should_be_reported_once() {
        let c = Consumers::new(1, Vec::new());
        let s = c.get_or_create(&key());
        c.mark_dirty(&s);
        c.mark_dirty(&s);
        assert_eq!(c.take_dirty().len(), 1);
        assert!(c.take_dirty().is_empty());
        c.mark_dirty(&s);
        assert_eq!(c.take_dirty().len(), 1);
    }
}
