//! Timer log and timer wheel: persisted timers for delayed delivery at arbitrary times.
//!
//! The broker stores a delayed message in the commitlog under a system topic and schedules a
//! timer holding only a reference to it ([`TimerPayload`]). When the timer is due, the broker
//! re-appends the message to its real topic and then [commits](TimerStore::commit) the timer.
//! The store is synchronous and has no threads: every call takes the wall clock `now_ms`
//! (milliseconds since the Unix epoch) from the caller, which keeps it deterministic.
//!
//! # Model
//!
//! Time is cut into *periods* of `slot_ms` (period `p` covers `[p * slot_ms, (p + 1) * slot_ms)`).
//! The wheel has `N = wheel_slots` slots; period `p` uses slot `p mod N`. `L` is the last period
//! whose slot has been *loaded* into the in-memory min-heap; `H = N / 2` is the filing horizon and
//! `G = N - H` the grace.
//!
//! ```text
//!                 grace G                       filing horizon H
//!   ◀────────────────────────────────▶◀──────────────────────────────────────▶
//!   ──────┬───────────────────────────┬─────┬─────┬───────────────────┬─────┬────▶ periods
//!   ...   │ delivered, maybe not yet  │  L  │ L+1 │  ...  unloaded    │ L+H │  beyond: filed
//!         │ committed (in flight)     │heap │     │  slots, on disk   │edge │  at L+H, rolled
//!   ──────┴───────────────────────────┴─────┴─────┴───────────────────┴─────┴────
//! ```
//!
//! - `schedule(t)`: the *effective* time is `max(t, clock)`, where `clock` is the largest `now_ms`
//!   seen so far (a past deadline fires at once; a backwards wall clock cannot reorder). A timer
//!   of period `p` is filed into slot `p` if `L < p <= L + H`; into slot `L` *and* the heap if
//!   `p <= L` (its period is already loaded); into the edge slot `L + H` if `p > L + H`.
//! - Each slot is a chain of log records linked by `prev`, newest first:
//!
//!   ```text
//!   slot[p mod N] { period p, first, last, count }
//!        │ last
//!        ▼
//!     rec @4160 ──prev──▶ rec @1216 ──prev──▶ rec @64 ──prev──▶ -1
//!   ```
//! - `poll_due(now)` pops heap entries with `deliver_at <= now` in `(deliver_at, id)` order,
//!   and loads slot `L + 1` once its period has started and every heap entry before it is gone.
//!   Loading walks the chain: records due in the period go into the heap; records due later
//!   (filed at the edge) are *rolled*: re-appended as new records filed relative to the new `L`,
//!   so a 40-day timer is rewritten once per horizon and the wheel stays bounded.
//! - A timer's *id* is the log position of the record `schedule` wrote. Roll and recovery copies
//!   carry it (`origin`), so every copy of a timer has the same delivery key `(deliver_at, id)`:
//!   a commit covers all of them. Where copies are made again after a restart (a roll redone,
//!   a record re-linked twice), they land in the same slot as the first copy (a roll's target
//!   depends only on the slot it comes from and the deliver time), and loading keeps one
//!   record per id.
//! - Ordering invariant: every entry handed out has a smaller key than every entry not yet
//!   handed out: new timers get `deliver_at >= clock` and a fresh (larger) id, and all records
//!   of one deliver time are in one slot, loaded together. That is what makes
//!   [`TimerStore::commit`] cumulative: committing an entry commits everything before it.
//! - Two back-pressure rules keep restarts correct (both only bite if the caller stalls for about
//!   `G` periods, a day by default): `poll_due` does not load slot `L + 1` while an entry of
//!   period `L + 1 - G` or older is still uncommitted (its slot could otherwise be reused while a
//!   restart still needs it), and it flushes by itself before `L` runs `G` periods past the
//!   checkpoint's roll claim (below), so that a restart never skips a period whose rolls are lost.
//!
//! # Files
//!
//! ```text
//!  <dir>/wheel                     header | checkpoint A | checkpoint B | N stable slots
//!  <dir>/log/00000000000000000000  timer log segments of `log_segment_size` bytes, named by the
//!  <dir>/log/00000000000067108864  20-digit position of their first byte; 64-byte records
//! ```
//!
//! A record holds the effective deliver time, the period it is filed under, `prev`, the timer's
//! id (`origin`, in copies only), the payload and a CRC32C (layout in `record.rs`). The
//! checkpoint (two alternating copies, each with a CRC; layout in `wheel.rs`) holds the commit
//! key `K`, the clock, the flushed log position `F`, the *roll claim* `R` ("every edge record
//! filed under a period `<= R` has been rolled, and its copy synced"), the retention boundary
//! and the *cookie end* (one past the largest payload cookie scheduled below `F`; recovery raises
//! it over the tail). A caller that keeps a sequence number in the cookie and schedules in its
//! order reads from [`TimerStore::cookie_end`] where to resume after any stop: the broker keeps
//! the timer queue offset of the delayed message there and rebuilds the wheel from its log.
//!
//! # Durability and recovery
//!
//! `schedule` and `commit` write to mapped memory: they survive a process crash at once, and a
//! power loss once [`TimerStore::flush`] has returned. The broker calls `flush` per its flush
//! policy (after each schedule for SYNC, periodically for ASYNC). `flush` syncs, in order:
//!
//! ```text
//!  1. log records [F, end)   2. changed slots -> stable slots, sync   3. checkpoint F = end,
//!                                                                        R = max(R, L), sync
//! ```
//!
//! so a stable slot only ever points at synced records, and the checkpoint only claims what is
//! on disk. Pages written between flushes reach disk in any order; [`TimerStore::open`] therefore
//! trusts only the stable slots and the log below `F`, and rebuilds the rest:
//!
//! 1. Scan the log from `F`: every intact record (CRC) is kept, invalid ones are skipped (the
//!    fixed size keeps the scan aligned past a hole); the append position becomes the end of the
//!    last intact record.
//! 2. Check every stable slot's newest record (CRC, period). A slot whose newest record is bad is
//!    *broken*: one scan of the retained log finds its records, which are re-appended as a fresh
//!    chain (recovery copies).
//! 3. Resume the processing at `L = max(min(period(K) - 1, R), max slot period - N)`: every
//!    period that may hold an uncommitted timer or an edge record whose roll may be lost is
//!    reloaded, and no slot holds a period beyond the new filing window.
//! 4. Link the tail records into their slots. A record whose `prev` is the slot's newest record
//!    is linked in place; one whose `prev` was lost is re-appended as a recovery copy.
//!
//! When `L` resumes below `R`, a far timer can be filed at an edge period `q <= R`; `R` is then
//! lowered to `q - 1` before the call returns (and again by recovery for such a record found in
//! the tail, in case the lowered checkpoint did not reach the disk).
//!
//! A chain that turns out broken when its slot is loaded (a record corrupted after it was
//! flushed) is replaced by a scan of the retained log for the period's records. No corrupt
//! record is ever returned: every record is CRC-checked on every read.
//!
//! Delivery is at-least-once across crashes: entries after the durable commit key come back
//! after a restart. It is exactly-once when the caller commits after each re-append and the
//! checkpoint survives (always for a process crash; after `flush` for a power loss).
//!
//! # Retention
//!
//! At each flush, segments that lie entirely below the lowest position a restart could need
//! (the oldest record of any unloaded slot and of any loaded but uncommitted entry) are
//! deleted. Everything older has been delivered and committed, or rolled: a committed timer
//! needs no record (its key is at or below `K`), and a rolled one lives on in its copy.
//!
//! # Limits
//!
//! Delays up to `max_delay_ms` (365 days by default) are accepted; longer ones are rejected with
//! [`StoreError::InvalidMessage`].
//!
//! # Modules
//!
//! `store` is [`TimerStore`], the public API (locking, flush orchestration, segment deletion);
//! `state` is the internal state machine it drives (heap, in-flight entries, filing, polling,
//! loading and rolling slots, checkpoints), with `state::recovery` rebuilding it at open;
//! `log`, `wheel` and `record` are the on-disk structures.

mod log;
pub(crate) mod record;
mod state;
mod store;
mod wheel;

#[cfg(test)]
mod tests;

pub use store::TimerStore;

use crate::error::{Result, StoreError};

/// Milliseconds in a day.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Configuration of a [`TimerStore`].
///
/// `slot_ms`, `wheel_slots` and `log_segment_size` are fixed when the store is created; opening
/// it with other values fails. `max_delay_ms` may change between opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    /// Length of one wheel slot (one period) in milliseconds. Timers are delivered at millisecond
    /// precision regardless; this only sets the granularity of the on-disk index.
    pub slot_ms: u64,
    /// Number of wheel slots. Half of them (`wheel_slots / 2` periods) form the filing horizon:
    /// timers further out are rolled forward once per horizon. The other half is the grace
    /// allowed to an uncommitted entry before the wheel stops advancing.
    pub wheel_slots: u32,
    /// Size of one timer log segment file in bytes; a multiple of 4096.
    pub log_segment_size: usize,
    /// Longest accepted delay (`deliver_at_ms - now_ms`) in milliseconds.
    pub max_delay_ms: i64,
}

impl Default for TimerConfig {
    /// One-second slots over two days (a one-day horizon), 64 MiB segments, a 365-day maximum.
    fn default() -> Self {
        TimerConfig {
            slot_ms: 1000,
            wheel_slots: 2 * 24 * 60 * 60,
            log_segment_size: 64 << 20,
            max_delay_ms: 365 * DAY_MS,
        }
    }
}

impl TimerConfig {
    /// Checks every value against its allowed range.
    ///
    /// # Errors
    /// [`StoreError::Config`] naming the key and its range.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &'static str, reason: String| Err(StoreError::Config { key, reason });
        if !(1..=3_600_000).contains(&self.slot_ms) {
            return bad(
                "timer.slot_ms",
                format!("{} is outside [1, 3600000]", self.slot_ms),
            );
        }
        if !(4..=(1 << 22)).contains(&self.wheel_slots) {
            return bad(
                "timer.wheel_slots",
                format!("{} is outside [4, 4194304]", self.wheel_slots),
            );
        }
        if !self.log_segment_size.is_multiple_of(4096)
            || !(4096..=1 << 30).contains(&self.log_segment_size)
        {
            return bad(
                "timer.log_segment_size",
                format!(
                    "{} is not a multiple of 4096 in [4096, 1GiB]",
                    self.log_segment_size
                ),
            );
        }
        if !(1..=100 * 365 * DAY_MS).contains(&self.max_delay_ms) {
            return bad(
                "timer.max_delay_ms",
                format!("{} is outside [1, 100 years]", self.max_delay_ms),
            );
        }
        Ok(())
    }
}

/// What a timer carries: a reference to the delayed message in the commitlog, opaque to the
/// timer store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerPayload {
    /// Physical commitlog offset of the stored delayed message.
    pub commit_log_offset: i64,
    /// Size of that message in bytes.
    pub size: i32,
    /// Any value the caller wants back (e.g. a tag hash or a queue offset).
    pub cookie: u64,
}

/// A due timer handed out by [`TimerStore::poll_due`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerEntry {
    /// The effective delivery time: the requested time, or the time of scheduling if that was
    /// later (a deadline in the past fires at once).
    pub deliver_at_ms: i64,
    /// The payload given to [`TimerStore::schedule`].
    pub payload: TimerPayload,
    id: i64,
    pos: i64,
}

impl TimerEntry {
    /// The timer's id: the timer log position of the record `schedule` wrote. It stays the same
    /// when the timer is rolled forward or copied by recovery, and across restarts. With
    /// `deliver_at_ms` it forms the delivery order key; ids grow with scheduling order.
    pub fn id(&self) -> i64 {
        self.id
    }

    fn key(&self) -> (i64, i64) {
        (self.deliver_at_ms, self.id)
    }
}
