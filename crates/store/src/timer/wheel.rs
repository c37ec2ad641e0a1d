//! The timer wheel: the live slot array (in memory) and the wheel file (header, checkpoint and
//! the stable copy of the slots, all atomic words of one mapped file).
//!
//! ```text
//!  byte 0        128            256            384      512
//!  ├─────────────┼──────────────┼──────────────┼────────┼──────────────────────────────────┤
//!  │ header      │ checkpoint A │ checkpoint B │ unused │ slot 0 │ slot 1 │ ... │ slot N-1 │
//!  │ magic, geo- │ 8 words +    │ 8 words +    │        │ 4 words each:                    │
//!  │ metry       │ crc word     │ crc word     │        │ last+1, first+1, count, period   │
//!  └─────────────┴──────────────┴──────────────┴────────┴──────────────────────────────────┘
//! ```
//!
//! A checkpoint copy written before the cookie mark existed has 7 data words and its crc in the
//! eighth word; it still reads, with the mark unknown (see [`Checkpoint::cookie_end`]).
//!
//! The stable slots are written only by `flush`, after the log records they point at have been
//! synced, so a stable slot never points at a record that can be lost. The live slots change
//! with every schedule; only the in-memory copy sees them until the next flush.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::TimerConfig;
use super::record::NONE;
use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;

const MAGIC: u64 = u64::from_le_bytes(*b"CMTWHEL1");
const HEADER_WORDS: usize = 4;
const CHECKPOINT_AT: [usize; 2] = [128, 256];
/// Data words of a checkpoint copy; the crc word follows them.
const CK_WORDS: usize = 8;
/// Data words of a checkpoint copy written before `cookie_end` existed.
const OLD_CK_WORDS: usize = 7;
/// `cookie_end` of a checkpoint that does not know it.
const COOKIE_UNKNOWN: u64 = u64::MAX;
const SLOTS_AT: usize = 512;
const SLOT_BYTES: usize = 32;
const PAGE: usize = 4096;

/// The persisted progress of the timer store. Two copies alternate in the wheel file; the valid
/// copy with the higher `seq` wins, so a torn checkpoint write falls back to the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Write sequence number, at least 1 in a valid copy.
    pub(crate) seq: u64,
    /// Commit key: every timer with `(deliver_at_ms, id) <= (committed_due, committed_id)`
    /// is done and is never delivered again.
    pub(crate) committed_due: i64,
    /// See `committed_due`.
    pub(crate) committed_id: i64,
    /// The largest `now_ms` the store has seen (the monotonic processing clock).
    pub(crate) clock_ms: i64,
    /// Every log record below this position was synced before the stable slots were written.
    pub(crate) flushed_pos: i64,
    /// The roll claim: every edge record filed under a period up to this one has been rolled,
    /// and its copy synced.
    pub(crate) durable_loaded_period: i64,
    /// No record a restart may need lies below this position (retention boundary).
    pub(crate) scan_low: i64,
    /// One past the largest payload cookie of any timer scheduled below `flushed_pos` (0 when
    /// none); `None` in a store whose checkpoint predates this mark.
    pub(crate) cookie_end: Option<u64>,
}

impl Checkpoint {
    fn words(&self) -> [u64; CK_WORDS] {
        [
            self.seq,
            self.committed_due as u64,
            self.committed_id as u64,
            self.clock_ms as u64,
            self.flushed_pos as u64,
            self.durable_loaded_period as u64,
            self.scan_low as u64,
            self.cookie_end.unwrap_or(COOKIE_UNKNOWN),
        ]
    }

    fn from_words(w: &[u64]) -> Self {
        Checkpoint {
            seq: w[0],
            committed_due: w[1] as i64,
            committed_id: w[2] as i64,
            clock_ms: w[3] as i64,
            flushed_pos: w[4] as i64,
            durable_loaded_period: w[5] as i64,
            scan_low: w[6] as i64,
            cookie_end: w.get(7).copied().filter(|c| *c != COOKIE_UNKNOWN),
        }
    }
}

fn checkpoint_crc(words: &[u64]) -> u64 {
    let crc = words
        .iter()
        .fold(0, |crc, w| crc32c::crc32c_append(crc, &w.to_le_bytes()));
    u64::from(crc)
}

/// One slot of the wheel: the chain of records filed under one period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The period (`deliver_at_ms / slot_ms`) the chain belongs to.
    pub(crate) period: i64,
    /// Position of the chain's first (oldest) record.
    pub(crate) first: i64,
    /// Position of the chain's last (newest) record, the head of the walk; `NONE` when empty.
    pub(crate) last: i64,
    /// Number of records in the chain.
    pub(crate) count: u64,
}

impl Slot {
    /// A slot with no chain.
    pub(crate) const EMPTY: Slot = Slot {
        period: 0,
        first: NONE,
        last: NONE,
        count: 0,
    };

    /// Whether the slot holds no chain.
    pub(crate) fn is_empty(&self) -> bool {
        self.last == NONE
    }

    /// Whether the slot holds a chain of `period` (so a record of that period extends it).
    pub(crate) fn holds(&self, period: i64) -> bool {
        !self.is_empty() && self.period == period
    }

    /// The `prev` a new record of `period` must carry: this chain's last record if it
    /// extends the chain, `NONE` if it starts a new one.
    pub(crate) fn tail_for(&self, period: i64) -> i64 {
        if self.holds(period) { self.last } else { NONE }
    }

    /// The slot after the record at `pos` of `period` is linked in: appended to this chain,
    /// or the first of a new chain replacing a done period's.
    pub(crate) fn linked(self, period: i64, pos: i64) -> Slot {
        if self.holds(period) {
            Slot {
                last: pos,
                count: self.count + 1,
                ..self
            }
        } else {
            Slot {
                period,
                first: pos,
                last: pos,
                count: 1,
            }
        }
    }
}

/// The live wheel: every slot in memory, plus the set of slots changed since the last flush.
#[derive(Debug)]
pub(crate) struct Wheel {
    slots: Vec<Slot>,
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
}

impl Wheel {
    /// A wheel of `n` empty slots.
    pub(crate) fn new(n: usize) -> Self {
        Wheel {
            slots: vec![Slot::EMPTY; n],
            dirty: Vec::new(),
            is_dirty: vec![false; n],
        }
    }

    /// The slot at `idx`.
    pub(crate) fn get(&self, idx: usize) -> Slot {
        self.slots[idx]
    }

    /// Sets a slot as recovered from the stable copy (not dirty).
    pub(crate) fn restore(&mut self, idx: usize, slot: Slot) {
        self.slots[idx] = slot;
    }

    /// Sets a slot and marks it for the next flush.
    pub(crate) fn set(&mut self, idx: usize, slot: Slot) {
        self.slots[idx] = slot;
        self.mark_dirty(idx);
    }

    /// Marks a slot for the next flush.
    pub(crate) fn mark_dirty(&mut self, idx: usize) {
        if !self.is_dirty[idx] {
            self.is_dirty[idx] = true;
            self.dirty.push(idx);
        }
    }

    /// Takes the slots changed since the last call, with their current values.
    pub(crate) fn take_dirty(&mut self) -> Vec<(usize, Slot)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|idx| {
                self.is_dirty[idx] = false;
                (idx, self.slots[idx])
            })
            .collect()
    }

    /// All slots.
    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots
    }
}

/// The wheel file. All access is through atomic words; see the module docs for who writes what.
#[derive(Debug)]
pub(crate) struct WheelFile {
    file: MappedFile,
    slots: usize,
}

/// A slot's position word as `write_slot` stores it: 0 for [`NONE`], else the position plus
/// one. The words carry no checksum, so a damaged one may hold what no position encodes (above
/// `i64::MAX + 1`): that decodes to `i64::MAX`, where no log reaches, so recovery finds no
/// record there and rebuilds the slot from the log.
fn decode_pos(word: u64) -> i64 {
    match word {
        0 => NONE,
        w => i64::try_from(w - 1).unwrap_or(i64::MAX),
    }
}

fn file_len(slots: usize) -> usize {
    (SLOTS_AT + slots * SLOT_BYTES).div_ceil(PAGE) * PAGE
}

impl WheelFile {
    /// Creates a wheel file with `cfg`'s geometry and an initial checkpoint. The file appears
    /// under `path` only complete and synced: it is initialized as `wheel.tmp`, then renamed.
    pub(crate) fn create(path: &Path, cfg: &TimerConfig, initial: &Checkpoint) -> Result<()> {
        let tmp = path.with_extension("tmp");
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(StoreError::io("remove stale wheel file", &tmp))?;
        }
        let len = file_len(cfg.wheel_slots as usize);
        let wheel = WheelFile {
            file: MappedFile::create(&tmp, len, len)?,
            slots: cfg.wheel_slots as usize,
        };
        let header = [
            MAGIC,
            cfg.slot_ms,
            u64::from(cfg.wheel_slots),
            cfg.log_segment_size as u64,
        ];
        debug_assert!(header.len() == HEADER_WORDS && HEADER_WORDS * 8 <= CHECKPOINT_AT[0]);
        for (i, w) in header.iter().enumerate() {
            wheel.word(i * 8).store(*w, Ordering::Relaxed);
        }
        wheel.write_checkpoint(initial);
        wheel.flush()?;
        drop(wheel);
        fs::rename(&tmp, path).map_err(StoreError::io("rename wheel file", path))?;
        if let Some(dir) = path.parent() {
            super::log::sync_dir(dir)?;
        }
        Ok(())
    }

    /// Opens the wheel file and checks that it was created with `cfg`'s geometry.
    ///
    /// # Errors
    /// [`StoreError::Config`] if `slot_ms`, `wheel_slots` or `log_segment_size` differ from the
    /// values the store was created with; [`StoreError::Layout`] for a file that is not a wheel.
    pub(crate) fn open(path: &Path, cfg: &TimerConfig) -> Result<Self> {
        let actual = fs::metadata(path)
            .map_err(StoreError::io("stat wheel file", path))?
            .len() as usize;
        if actual < SLOTS_AT || !actual.is_multiple_of(PAGE) {
            return Err(StoreError::Layout {
                path: path.to_path_buf(),
                reason: format!("wheel file is {actual} bytes, not a whole number of pages"),
            });
        }
        let file = MappedFile::open(path, actual, actual)?;
        let word = |i: usize| file.atomic_u64(i * 8).load(Ordering::Acquire);
        if word(0) != MAGIC {
            return Err(StoreError::Layout {
                path: path.to_path_buf(),
                reason: "bad magic: not a Comet timer wheel file".into(),
            });
        }
        let stored = [
            ("timer.slot_ms", word(1), cfg.slot_ms),
            ("timer.wheel_slots", word(2), u64::from(cfg.wheel_slots)),
            (
                "timer.log_segment_size",
                word(3),
                cfg.log_segment_size as u64,
            ),
        ];
        for (key, was, now) in stored {
            if was != now {
                return Err(StoreError::Config {
                    key,
                    reason: format!(
                        "the timer store in {} was created with {was}, the config says {now}; it \
                         cannot change while timers are stored",
                        path.display()
                    ),
                });
            }
        }
        if actual != file_len(cfg.wheel_slots as usize) {
            return Err(StoreError::Layout {
                path: path.to_path_buf(),
                reason: format!("wheel file is {actual} bytes for {} slots", cfg.wheel_slots),
            });
        }
        Ok(WheelFile {
            file,
            slots: cfg.wheel_slots as usize,
        })
    }

    fn word(&self, pos: usize) -> &AtomicU64 {
        self.file.atomic_u64(pos)
    }

    /// The newest valid checkpoint.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if neither copy is intact.
    pub(crate) fn read_checkpoint(&self) -> Result<Checkpoint> {
        let mut best: Option<Checkpoint> = None;
        for at in CHECKPOINT_AT {
            let mut words = [0u64; CK_WORDS + 1];
            for (i, w) in words.iter_mut().enumerate() {
                *w = self.word(at + i * 8).load(Ordering::Acquire);
            }
            // The current layout, else the one without `cookie_end`.
            let Some(n) = [CK_WORDS, OLD_CK_WORDS]
                .into_iter()
                .find(|&n| words[0] != 0 && words[n] == checkpoint_crc(&words[..n]))
            else {
                continue;
            };
            let ck = Checkpoint::from_words(&words[..n]);
            if best.is_none_or(|b| ck.seq > b.seq) {
                best = Some(ck);
            }
        }
        best.ok_or_else(|| {
            StoreError::corrupt(
                CHECKPOINT_AT[0] as i64,
                format!("no intact checkpoint in {}", self.file.path().display()),
            )
        })
    }

    /// Writes `ck` over the copy its `seq` selects (the one not holding the newest checkpoint,
    /// when `seq` is one past it). Callers serialize checkpoint writes.
    pub(crate) fn write_checkpoint(&self, ck: &Checkpoint) {
        let at = CHECKPOINT_AT[(ck.seq % 2) as usize];
        let words = ck.words();
        // The crc word is invalidated first and written last, so a torn write never passes.
        let crc_word = self.word(at + CK_WORDS * 8);
        crc_word.store(u64::MAX, Ordering::Release);
        // Where the old layout keeps its crc: invalid too until the copy is whole (a crc is
        // 32 bits, so no data word of the old layout can match this value).
        self.word(at + OLD_CK_WORDS * 8)
            .store(u64::MAX, Ordering::Release);
        for (i, w) in words.iter().enumerate() {
            self.word(at + i * 8).store(*w, Ordering::Release);
        }
        crc_word.store(checkpoint_crc(&words), Ordering::Release);
    }

    /// The stable copy of slot `idx`; `None` if it is empty.
    pub(crate) fn read_slot(&self, idx: usize) -> Option<Slot> {
        let at = SLOTS_AT + idx * SLOT_BYTES;
        let last = self.word(at).load(Ordering::Acquire);
        if last == 0 {
            return None;
        }
        Some(Slot {
            last: decode_pos(last),
            first: decode_pos(self.word(at + 8).load(Ordering::Acquire)),
            count: self.word(at + 16).load(Ordering::Acquire),
            period: self.word(at + 24).load(Ordering::Acquire) as i64,
        })
    }

    /// Writes the stable copy of slot `idx`. Only `flush` calls this, after syncing the log.
    pub(crate) fn write_slot(&self, idx: usize, slot: &Slot) {
        debug_assert!(idx < self.slots);
        let at = SLOTS_AT + idx * SLOT_BYTES;
        let enc = |p: i64| if p == NONE { 0 } else { p as u64 + 1 };
        self.word(at).store(enc(slot.last), Ordering::Release);
        self.word(at + 8).store(enc(slot.first), Ordering::Release);
        self.word(at + 16).store(slot.count, Ordering::Release);
        self.word(at + 24)
            .store(slot.period as u64, Ordering::Release);
    }

    /// Syncs the whole file.
    pub(crate) fn flush(&self) -> Result<()> {
        self.file.flush()
    }

    /// Syncs the checkpoint copies only.
    pub(crate) fn flush_checkpoint(&self) -> Result<()> {
        self.file.flush_range(0, SLOTS_AT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ck(seq: u64) -> Checkpoint {
        Checkpoint {
            seq,
            committed_due: 10,
            committed_id: i64::MAX,
            clock_ms: 11,
            flushed_pos: 640,
            durable_loaded_period: -1,
            scan_low: 64,
            cookie_end: Some(7),
        }
    }

    fn cfg() -> TimerConfig {
        TimerConfig {
            wheel_slots: 16,
            ..TimerConfig::default()
        }
    }

    #[test]
    fn given_two_checkpoints_when_newest_is_torn_should_fall_back_to_previous() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wheel");
        WheelFile::create(&path, &cfg(), &ck(1)).expect("create");
        let wheel = WheelFile::open(&path, &cfg()).expect("open");
        assert_eq!(wheel.read_checkpoint().expect("ck"), ck(1));
        wheel.write_checkpoint(&ck(2));
        assert_eq!(wheel.read_checkpoint().expect("ck").seq, 2);
        // Tear checkpoint 3 (copy of seq 1): one word differs from what its crc covers.
        wheel.write_checkpoint(&ck(3));
        wheel
            .word(CHECKPOINT_AT[1] + 8)
            .store(99, Ordering::Release);
        assert_eq!(wheel.read_checkpoint().expect("ck"), ck(2));
    }

    #[test]
    fn given_a_checkpoint_of_the_old_layout_when_read_should_load_with_the_cookie_mark_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wheel");
        WheelFile::create(&path, &cfg(), &ck(1)).expect("create");
        let wheel = WheelFile::open(&path, &cfg()).expect("open");
        // What an older version wrote: 7 data words, the crc in the eighth, over copy A.
        let old = ck(4);
        let words = old.words();
        let at = CHECKPOINT_AT[0];
        for (i, w) in words[..OLD_CK_WORDS].iter().enumerate() {
            wheel.word(at + i * 8).store(*w, Ordering::Release);
        }
        let crc = checkpoint_crc(&words[..OLD_CK_WORDS]);
        wheel
            .word(at + OLD_CK_WORDS * 8)
            .store(crc, Ordering::Release);
        wheel.word(at + CK_WORDS * 8).store(0, Ordering::Release);
        let read = wheel.read_checkpoint().expect("ck");
        assert_eq!(
            read,
            Checkpoint {
                cookie_end: None,
                ..old
            }
        );
        // The next write uses the current layout and knows the mark again.
        wheel.write_checkpoint(&ck(5));
        assert_eq!(wheel.read_checkpoint().expect("ck"), ck(5));
    }

    #[test]
    fn given_slot_when_written_should_read_back_and_empty_reads_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wheel");
        WheelFile::create(&path, &cfg(), &ck(1)).expect("create");
        let wheel = WheelFile::open(&path, &cfg()).expect("open");
        assert_eq!(wheel.read_slot(3), None);
        let slot = Slot {
            period: 12345,
            first: 0,
            last: 128,
            count: 3,
        };
        wheel.write_slot(3, &slot);
        assert_eq!(wheel.read_slot(3), Some(slot));
        wheel.write_slot(3, &Slot::EMPTY);
        assert_eq!(wheel.read_slot(3), None);
    }

    #[test]
    fn given_other_geometry_when_opened_should_fail_with_config_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wheel");
        WheelFile::create(&path, &cfg(), &ck(1)).expect("create");
        let other = TimerConfig {
            slot_ms: 10,
            ..cfg()
        };
        let err = WheelFile::open(&path, &other).expect_err("slot_ms differs");
        assert!(matches!(
            err,
            StoreError::Config {
                key: "timer.slot_ms",
                ..
            }
        ));
    }
}
