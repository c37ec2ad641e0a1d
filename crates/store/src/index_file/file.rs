//! One open index file ([`IndexFile`]) over its [`MappedFile`], and the directory helpers
//! (listing, naming, deleting, syncing) the store uses.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::{debug, warn};

use super::format::*;
use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;

/// One open index file.
pub(super) struct IndexFile {
    /// Physical offset of entry 0; the file's name.
    pub(super) first_phys: i64,
    pub(super) geo: Geometry,
    pub(super) map: Arc<MappedFile>,
    /// Set after appends or in-place updates, cleared by a flush.
    pub(super) dirty: AtomicBool,
}

impl std::fmt::Debug for IndexFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexFile")
            .field("path", &self.map.path())
            .field("geo", &self.geo)
            .field("count", &self.count())
            .finish()
    }
}

impl IndexFile {
    pub(super) fn word(&self, pos: usize) -> &AtomicU64 {
        self.map.atomic_u64(pos)
    }

    pub(super) fn path(&self) -> &Path {
        self.map.path()
    }

    pub(super) fn count(&self) -> u32 {
        let c = self.word(W_COUNT).load(Ordering::Acquire);
        u32::try_from(c).map_or(0, |c| c.min(self.geo.capacity))
    }

    pub(super) fn sealed(&self) -> Option<u32> {
        decode_seal(self.word(W_SEAL).load(Ordering::Acquire), self.geo.capacity)
    }

    pub(super) fn min_ts(&self) -> i64 {
        self.word(W_MIN_TS).load(Ordering::Acquire) as i64
    }

    pub(super) fn max_ts(&self) -> i64 {
        self.word(W_MAX_TS).load(Ordering::Acquire) as i64
    }

    pub(super) fn last_phys(&self) -> i64 {
        self.word(W_LAST_PHYS).load(Ordering::Acquire) as i64
    }

    pub(super) fn head_word(&self, slot: usize) -> &AtomicU64 {
        self.word(self.geo.slot_pos(slot))
    }

    /// The slot's head link ((index + 1) of its newest entry, 0 = none).
    pub(super) fn head(&self, slot: usize) -> u32 {
        u32::try_from(self.head_word(slot).load(Ordering::Acquire)).unwrap_or(0)
    }

    /// The published entry at `idx`, if it is readable and passes its CRC.
    pub(super) fn entry(&self, idx: u32) -> Option<Entry> {
        let bytes = self.map.bytes(self.geo.entry_pos(idx), ENTRY_SIZE)?;
        Entry::decode(bytes, idx)
    }

    pub(super) fn entry_or_corrupt(&self, idx: u32) -> Result<Entry> {
        self.entry(idx).ok_or_else(|| {
            StoreError::corrupt(
                self.geo.entry_pos(idx) as i64,
                format!("unreadable index entry {idx} in {}", self.path().display()),
            )
        })
    }

    /// Index of the first entry with a physical offset at or above `phys`, or `count()`.
    pub(super) fn first_at_or_after(&self, phys: i64) -> Result<u32> {
        let (mut lo, mut hi) = (0u32, self.count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry_or_corrupt(mid)?.phys < phys {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Flushes the whole file, then writes and flushes the seal at the current count. Once
    /// this returns, entries below the count are durable and the file takes no more appends.
    pub(super) fn seal(&self) -> Result<()> {
        let count = self.count();
        if self.sealed() == Some(count) {
            return Ok(());
        }
        self.map.flush()?;
        self.word(W_SEAL).store(seal_word(count), Ordering::Release);
        self.map.flush_range(0, HEADER_BYTES)?;
        self.dirty.store(false, Ordering::Release);
        debug!(path = %self.path().display(), count, "index file sealed");
        Ok(())
    }
}

/// Index files in `dir`, sorted by name, as (first physical offset, path).
pub(super) fn list_files(dir: &Path) -> Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(StoreError::io("list index directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(StoreError::io("list index directory", dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let phys = name
            .to_str()
            .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<i64>().ok());
        match phys {
            Some(phys) if path.is_file() => out.push((phys, path)),
            _ => warn!(path = %path.display(), "ignoring unexpected entry in the index directory"),
        }
    }
    out.sort_unstable_by_key(|(phys, _)| *phys);
    Ok(out)
}

pub(super) fn file_name(phys: i64) -> String {
    format!("{phys:020}")
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("sync index directory", dir))
}

pub(super) fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("delete index file", path)(e)),
    }
}
