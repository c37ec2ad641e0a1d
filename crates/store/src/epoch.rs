//! The epoch file: which master epoch wrote which part of the commitlog.
//!
//! A broker set's master is elected with a *master epoch* that only grows. Every byte of the
//! commitlog was written by exactly one master in one epoch (a replica copies bytes verbatim,
//! so its log is made of the same (epoch, bytes) pairs). The epoch file lists, in order, the
//! epochs of the log with the physical offset where each starts; an entry ends where the next
//! one starts (the last one at the end of the log):
//!
//! ```text
//!  epochs: (3, 0) (5, 4096) (6, 9000)      log end 12000
//!          epoch 3 wrote [0, 4096), epoch 5 [4096, 9000), epoch 6 [9000, 12000)
//! ```
//!
//! Because one epoch has one writer, two logs that both hold data of epoch `e` agree on every
//! byte of `e` they both hold. [`consistent_point`] uses that to find how much of a returning
//! replica's (or old master's) log matches the current master's: the end of the newest shared
//! epoch on the shorter side. Everything after it is a divergent tail to cut.
//!
//! File format (replaced atomically: write a temporary file, fsync, rename, fsync the
//! directory), little-endian:
//!
//! ```text
//!  0  4  magic        EPOCH_MAGIC
//!  4  4  count        number of entries
//!  8  16*count        entries: epoch u64, start_offset i64
//!  .  4  crc32c       of everything before it
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::sync_dir;
use crate::error::{Result, StoreError};

const EPOCH_MAGIC: u32 = 0xC0E7_E90C;
const FILE: &str = "epochs";
const TMP: &str = "epochs.tmp";
/// More entries than any real history has; a file claiming more is corrupt.
const MAX_ENTRIES: u32 = 1 << 20;

/// One epoch of the log: the master epoch and the physical offset where its data starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EpochEntry {
    /// The master epoch (from the controller).
    pub epoch: u64,
    /// Physical offset of the first byte written in this epoch.
    pub start_offset: i64,
}

/// The epoch history of a store directory, kept in memory and on disk.
#[derive(Debug)]
pub(crate) struct EpochFile {
    dir: PathBuf,
    entries: Vec<EpochEntry>,
}

impl EpochFile {
    /// Loads the history of `dir` (empty when there is no file yet).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a file that fails verification (it is never guessed at:
    /// a wrong history could keep a divergent tail); I/O errors.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let _ = fs::remove_file(dir.join(TMP));
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(EpochFile {
                    dir: dir.to_path_buf(),
                    entries: Vec::new(),
                });
            }
            Err(e) => return Err(StoreError::io("open epoch file", &path)(e)),
        };
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(StoreError::io("read epoch file", &path))?;
        let entries = decode(&buf).ok_or_else(|| {
            StoreError::corrupt(
                0,
                format!(
                    "epoch file {} fails verification; restore it or wipe the store and let \
                     the broker copy the log from its master",
                    path.display()
                ),
            )
        })?;
        Ok(EpochFile {
            dir: dir.to_path_buf(),
            entries,
        })
    }

    /// The history, oldest first.
    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch, if any.
    pub(crate) fn last(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`. A repeat of the newest epoch changes
    /// nothing; an older epoch, or a start before the newest entry's start, is refused.
    ///
    /// # Errors
    /// [`StoreError::InvalidState`] for an epoch or offset that goes backwards; I/O errors.
    pub(crate) fn record(&mut self, epoch: u64, start_offset: i64) -> Result<bool> {
        if let Some(last) = self.last() {
            if epoch == last.epoch {
                return Ok(false);
            }
            if epoch < last.epoch || start_offset < last.start_offset {
                return Err(StoreError::InvalidState(format!(
                    "epoch {epoch} at offset {start_offset} cannot follow epoch {} at offset {}",
                    last.epoch, last.start_offset
                )));
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.persist()?;
        tracing::info!(epoch, start_offset, "epoch recorded");
        Ok(true)
    }

    /// Drops the entries that start after `end` (the log was cut there). An entry starting
    /// exactly at `end` stays: it holds no data, and its epoch is still this log's newest.
    pub(crate) fn truncate(&mut self, end: i64) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset <= end);
        if self.entries.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// Forgets the whole history (the log was wiped).
    pub(crate) fn clear(&mut self) -> Result<()> {
        if !self.entries.is_empty() {
            self.entries.clear();
            self.persist()?;
        }
        Ok(())
    }

    fn persist(&self) -> Result<()> {
        let tmp = self.dir.join(TMP);
        let path = self.dir.join(FILE);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(StoreError::io("create epoch file", &tmp))?;
        f.write_all(&encode(&self.entries))
            .map_err(StoreError::io("write epoch file", &tmp))?;
        f.sync_all()
            .map_err(StoreError::io("sync epoch file", &tmp))?;
        fs::rename(&tmp, &path).map_err(StoreError::io("rename epoch file", &path))?;
        sync_dir(&self.dir)
    }
}

pub(crate) fn encode(entries: &[EpochEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + entries.len() * 16);
    b.extend_from_slice(&EPOCH_MAGIC.to_le_bytes());
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        b.extend_from_slice(&e.epoch.to_le_bytes());
        b.extend_from_slice(&e.start_offset.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

pub(crate) fn decode(b: &[u8]) -> Option<Vec<EpochEntry>> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
    };
    if u32_at(0)? != EPOCH_MAGIC {
        return None;
    }
    let count = u32_at(4)?;
    if count > MAX_ENTRIES {
        return None;
    }
    let body_end = 8 + count as usize * 16;
    if b.len() != body_end + 4 || u32_at(body_end)? != crc32c::crc32c(&b[..body_end]) {
        return None;
    }
    let mut entries = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let at = 8 + i * 16;
        entries.push(EpochEntry {
            epoch: u64_at(at)?,
            start_offset: u64_at(at + 8)? as i64,
        });
    }
    // A history is ordered by epoch and by offset; anything else is not one this store wrote.
    let ordered = entries
        .windows(2)
        .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset <= w[1].start_offset);
    ordered.then_some(entries)
}

/// Where entry `i` of `entries` ends, given the log end.
fn entry_end(entries: &[EpochEntry], i: usize, log_end: i64) -> i64 {
    entries
        .get(i + 1)
        .map_or(log_end, |next| next.start_offset)
        .min(log_end)
}

/// The end of the longest prefix of the local log that the remote log holds too: the end of
/// the newest epoch both histories contain, on whichever side it ends first. `None` when the
/// histories share no epoch (no byte of the local log can be trusted).
///
/// Both logs hold each shared epoch's bytes from one writer, so they agree on them; after
/// that epoch at least one side holds bytes the other lacks (another epoch, or nothing).
pub fn consistent_point(
    local: &[EpochEntry],
    local_end: i64,
    remote: &[EpochEntry],
    remote_end: i64,
) -> Option<i64> {
    for (i, l) in local.iter().enumerate().rev() {
        if let Some(j) = remote.iter().position(|r| r.epoch == l.epoch) {
            return Some(entry_end(local, i, local_end).min(entry_end(remote, j, remote_end)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[(u64, i64)]) -> Vec<EpochEntry> {
        v.iter()
            .map(|&(epoch, start_offset)| EpochEntry {
                epoch,
                start_offset,
            })
            .collect()
    }

    #[test]
    fn given_history_when_persisted_should_load_back_and_refuse_going_backwards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = EpochFile::open(dir.path()).expect("open");
        assert!(f.entries().is_empty());
        assert!(f.record(1, 0).expect("record"));
        assert!(!f.record(1, 500).expect("repeat"), "same epoch is a no-op");
        assert!(f.record(3, 1000).expect("record"));
        assert!(f.record(2, 2000).is_err(), "older epoch");
        assert!(f.record(4, 900).is_err(), "offset going backwards");
        let g = EpochFile::open(dir.path()).expect("reopen");
        assert_eq!(g.entries(), h(&[(1, 0), (3, 1000)]).as_slice());
        let mut g = g;
        g.truncate(1000).expect("truncate");
        assert_eq!(g.entries().len(), 2, "an epoch starting at the cut stays");
        g.truncate(999).expect("truncate");
        assert_eq!(
            EpochFile::open(dir.path()).expect("reopen").entries(),
            h(&[(1, 0)]).as_slice()
        );
        g.clear().expect("clear");
        assert!(
            EpochFile::open(dir.path())
                .expect("reopen")
                .entries()
                .is_empty()
        );
    }

    #[test]
    fn given_corrupt_file_when_opened_should_refuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = EpochFile::open(dir.path()).expect("open");
        f.record(1, 0).expect("record");
        let path = dir.path().join(FILE);
        let mut bytes = fs::read(&path).expect("read");
        bytes[10] ^= 1;
        fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            EpochFile::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// (local history, local end, remote history, remote end) → consistent point.
    #[test]
    fn consistent_point_table() {
        type Case = (
            &'static [(u64, i64)],
            i64,
            &'static [(u64, i64)],
            i64,
            Option<i64>,
        );
        let cases: &[Case] = &[
            // Same history, replica behind: nothing to cut.
            (&[(1, 0)], 500, &[(1, 0)], 900, Some(500)),
            // Same history, replica ahead (the master lost an unflushed tail): cut to master.
            (&[(1, 0)], 900, &[(1, 0)], 500, Some(500)),
            // Old master wrote on in epoch 1 after the new master took over at 600 in epoch 2.
            (&[(1, 0)], 800, &[(1, 0), (2, 600)], 1000, Some(600)),
            // Old master had its own epoch 3 tail; the master went 2 → 4.
            (
                &[(1, 0), (2, 600), (3, 700)],
                900,
                &[(1, 0), (2, 600), (4, 650)],
                2000,
                Some(650),
            ),
            // Replica is empty.
            (&[], 0, &[(1, 0), (2, 600)], 1000, None),
            // No shared epoch at all: nothing can be trusted.
            (&[(5, 0)], 300, &[(6, 0)], 400, None),
            // Remote history starts later (retention): the shared epoch still counts.
            (
                &[(1, 0), (2, 100)],
                400,
                &[(2, 200), (3, 350)],
                900,
                Some(350),
            ),
            // Both identical and equal length.
            (&[(1, 0), (2, 10)], 50, &[(1, 0), (2, 10)], 50, Some(50)),
        ];
        for (i, (l, le, r, re, want)) in cases.iter().enumerate() {
            assert_eq!(
                consistent_point(&h(l), *le, &h(r), *re),
                *want,
                "case {i}: local {l:?}..{le} remote {r:?}..{re}"
            );
        }
    }
}
