//! Index files: find messages by message id or key within a time range.
//!
//! An [`IndexStore`] owns one directory of index files. Each file is a hash table whose buckets
//! ("slots") are the heads of singly linked lists of fixed-size entries, one entry per key of a
//! record, appended in physical-offset order. A query hashes the key, walks the slot's chain
//! newest first in every file whose time range overlaps the query, and returns the physical
//! (commitlog) offsets of the entries whose full 64-bit hash matches. Callers read each message
//! and compare the key exactly, so hash collisions cost a read, never a wrong answer.
//!
//! # Layout
//! - `format`: the file format (header, slot table, entries, key hash).
//! - `file`: one open index file and the directory helpers.
//! - `recovery`: what open does with each file after any stop.
//! - this file: [`IndexStore`], the directory of files: open, write, query, truncate, delete.
//!
//! # Writing
//!
//! One dispatcher thread calls [`IndexStore::put_record`] in increasing physical-offset order.
//! A record's entries always go to one file (the store rolls to a new file when they do not
//! fit), are written to the unpublished region, published in one step, and only then are the
//! header words and slot heads updated, so a reader that sees a head can read its entry.
//! Before a new file is created the previous one is flushed and then sealed with its entry
//! count, and that seal is flushed too; a sealed file is never appended to again.
//!
//! # Truncation and retention
//!
//! [`IndexStore::truncate`] cannot rewrite published bytes while queries may read them, so it
//! lowers the file's count (queries skip entries at or above it), moves slot heads back below
//! the cut, and seals the file there; its leftovers are zeroed by the next recovery, which
//! honours the seal. [`IndexStore::delete_before`] deletes whole files, never the newest.

mod file;
mod format;
mod recovery;
#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

use crate::error::{Result, StoreError};
use crate::mapped_file::{MappedFile, Writer};
use file::*;
pub(crate) use format::IndexConfig;
use format::*;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use format::{Entry, decode_seal, entry_crc};
use recovery::*;

/// The file currently taking appends, with its single writer.
struct Active {
    file: Arc<IndexFile>,
    writer: Writer,
}

/// All index files of one directory.
///
/// Writes ([`IndexStore::put_record`], [`IndexStore::truncate`],
/// [`IndexStore::delete_before`]) serialize on an internal lock; [`IndexStore::query`] and
/// [`IndexStore::flush`] run concurrently with them and with each other.
pub(crate) struct IndexStore {
    dir: PathBuf,
    /// Geometry of files created from now on.
    geo: Geometry,
    /// Open files in name (= physical offset) order. Queries clone the list and read without
    /// the lock; deleted files stay mapped until the last clone drops.
    files: RwLock<Vec<Arc<IndexFile>>>,
    /// The file taking appends, if any; `None` when the newest file is sealed (or there is
    /// none), in which case the next record creates a file. Also the writers' lock.
    active: Mutex<Option<Active>>,
    /// See [`IndexStore::last_indexed`].
    last_indexed: AtomicI64,
    damaged_on_open: bool,
}

impl std::fmt::Debug for IndexStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexStore")
            .field("dir", &self.dir)
            .field("geo", &self.geo)
            .field("files", &self.files.read().len())
            .field("last_indexed", &self.last_indexed())
            .finish()
    }
}

impl IndexStore {
    /// Opens the index in `dir` (creating the directory if needed) and recovers every file as
    /// described in `recovery`: valid prefixes are kept, slot heads and header words are
    /// rebuilt, torn tails are zeroed, and files after a damaged one are deleted.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an invalid `cfg`; I/O errors from the directory or files.
    /// Damaged data is repaired (and logged), not reported as an error.
    pub(crate) fn open(dir: &Path, cfg: IndexConfig) -> Result<Self> {
        let geo = Geometry::from_config(&cfg)?;
        fs::create_dir_all(dir).map_err(StoreError::io("create index directory", dir))?;
        let names = list_files(dir)?;
        let mut files: Vec<Arc<IndexFile>> = Vec::with_capacity(names.len());
        let mut drop_from = names.len();
        let mut damaged = false;
        let mut heads = Vec::new();
        for (i, (first_phys, path)) in names.iter().enumerate() {
            let prev_last_phys = files.last().map_or(-1, |f| f.last_phys());
            let is_last = i + 1 == names.len();
            match recover_file(path, *first_phys, geo, is_last, prev_last_phys, &mut heads)? {
                Recovered::Keep(file) => files.push(Arc::new(file)),
                Recovered::KeepAndDropLater(file) => {
                    files.push(Arc::new(file));
                    drop_from = i + 1;
                    damaged = true;
                    break;
                }
                Recovered::Drop => {
                    drop_from = i;
                    damaged = true;
                    break;
                }
            }
        }
        if drop_from < names.len() {
            for (_, path) in &names[drop_from..] {
                warn!(path = %path.display(), "deleting index file after the loss point");
                remove(path)?;
            }
            sync_dir(dir)?;
        }
        let active = match files.last() {
            Some(file) if file.sealed().is_none() => Some(Active {
                writer: file
                    .map
                    .writer()
                    .expect("a freshly opened file has no writer yet"),
                file: Arc::clone(file),
            }),
            _ => None,
        };
        let last_indexed = files.last().map_or(-1, |f| f.last_phys());
        info!(
            dir = %dir.display(),
            files = files.len(),
            dropped = names.len() - drop_from,
            last_indexed,
            "index recovered"
        );
        Ok(Self {
            dir: dir.to_path_buf(),
            geo,
            files: RwLock::new(files),
            active: Mutex::new(active),
            last_indexed: AtomicI64::new(last_indexed),
            damaged_on_open: damaged,
        })
    }

    /// Whether `open` found entries missing that had been flushed (a damaged or dropped
    /// file). Only then can the index be behind the store's checkpoint and need re-indexing.
    pub(crate) fn damaged_on_open(&self) -> bool {
        self.damaged_on_open
    }

    /// Indexes one record: one entry per distinct key (the caller passes namespaced strings,
    /// e.g. the message id and "topic#key"), all with `phys_offset` and `store_timestamp_ms`.
    ///
    /// Meant for one dispatcher thread calling in increasing `phys_offset` order. A record with
    /// `phys_offset <= last_indexed()` is ignored (so are negative offsets), which makes
    /// re-dispatch after a restart idempotent: records are indexed whole, so the record at
    /// `last_indexed()` itself needs no second pass. A record's entries never span files:
    /// when they do not fit the current file, that file is flushed and sealed (on this thread)
    /// and a new one is created. A record with more keys than a file holds keeps only its
    /// first `entries_per_file` keys (logged).
    ///
    /// Durability: entries reach the disk with [`IndexStore::flush`] (or when their file is
    /// sealed); a crash loses at most whole records from the tail, which recovery detects.
    ///
    /// # Errors
    /// I/O errors from sealing the previous file or creating a new one; the record is then
    /// not indexed and the call can be retried.
    pub(crate) fn put_record<'a>(
        &self,
        phys_offset: i64,
        store_timestamp_ms: i64,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        let mut guard = self.active.lock();
        if phys_offset <= self.last_indexed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut hashes: Vec<u64> = keys.into_iter().map(key_hash).collect();
        // Every record must fit a new file.
        let cap = self.geo.capacity as usize;
        if hashes.len() > cap {
            warn!(
                phys_offset,
                keys = hashes.len(),
                capacity = cap,
                "record has more keys than an index file holds; indexing only the first ones"
            );
            hashes.truncate(cap);
        }
        hashes.sort_unstable();
        hashes.dedup();
        if hashes.is_empty() {
            self.last_indexed.store(phys_offset, Ordering::Release);
            return Ok(());
        }
        let n = hashes.len() as u32;
        let active = match guard.take() {
            Some(a) if a.file.geo.capacity - a.file.count() >= n => guard.insert(a),
            old => {
                // The newest file is the active one, or one that `truncate` could not seal.
                let newest = self.files.read().last().cloned();
                if let Some(newest) = newest
                    && let Err(e) = newest.seal()
                {
                    *guard = old;
                    return Err(e);
                }
                drop(old);
                let new = self.create_file(phys_offset)?;
                guard.insert(new)
            }
        };
        self.append(active, phys_offset, store_timestamp_ms, &hashes)?;
        self.last_indexed.store(phys_offset, Ordering::Release);
        Ok(())
    }

    /// Writes one record's entries into the active file (which has room for them).
    fn append(&self, active: &mut Active, phys: i64, ts: i64, hashes: &[u64]) -> Result<()> {
        let file = &active.file;
        let geo = file.geo;
        let start = file.count();
        let n = hashes.len() as u32;
        // (slot, new head) for each entry; also answers "previous entry" for later keys of
        // the same record that share a slot, since heads must not move before publication.
        let mut staged: Vec<(usize, u32)> = Vec::with_capacity(hashes.len());
        for (j, &hash) in hashes.iter().enumerate() {
            let idx = start + j as u32;
            let slot = geo.slot_of(hash);
            let prev = staged
                .iter()
                .rev()
                .find(|(s, _)| *s == slot)
                .map_or_else(|| file.head(slot), |(_, head)| *head);
            let entry = Entry {
                hash,
                phys,
                ts,
                prev,
                last_of_record: idx + 1 == start + n,
            };
            if !active.writer.write(geo.entry_pos(idx), &entry.encode(idx)) {
                return Err(StoreError::Layout {
                    path: file.path().to_path_buf(),
                    reason: format!("index entry {idx} is not writable"),
                });
            }
            staged.push((slot, idx + 1));
        }
        active.writer.publish(geo.entry_pos(start + n));
        file.word(W_COUNT)
            .store(u64::from(start + n), Ordering::Release);
        if ts < file.min_ts() {
            file.word(W_MIN_TS).store(ts as u64, Ordering::Release);
        }
        if ts > file.max_ts() {
            file.word(W_MAX_TS).store(ts as u64, Ordering::Release);
        }
        file.word(W_LAST_PHYS).store(phys as u64, Ordering::Release);
        for (slot, head) in staged {
            file.head_word(slot)
                .store(u64::from(head), Ordering::Release);
        }
        file.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Creates, registers and returns a new active file whose first entry is at `phys`.
    ///
    /// The header is flushed and the directory synced before the file is used, so a file that
    /// holds flushed entries always has a readable geometry and survives a power loss.
    fn create_file(&self, phys: i64) -> Result<Active> {
        let geo = self.geo;
        let path = self.dir.join(file_name(phys));
        if path.exists() {
            // Every listed file starts at or below `last_indexed`, below `phys`: this one is a
            // leftover of a deletion that failed.
            warn!(path = %path.display(), "removing a stale index file in the way");
            remove(&path)?;
        }
        let len = geo.file_len().unwrap_or(0);
        let map = Arc::new(MappedFile::create(&path, len, geo.atomic_prefix())?);
        // Slots and entries are written a few bytes at a time at scattered places: a fault
        // must not read around (see `MappedFile::advise_random`).
        map.advise_random();
        let file = IndexFile {
            first_phys: phys,
            geo,
            map,
            dirty: AtomicBool::new(false),
        };
        let words = [
            (W_MAGIC, MAGIC),
            (W_SLOTS, u64::from(geo.slots)),
            (W_CAPACITY, u64::from(geo.capacity)),
            (W_SEAL, 0),
            (W_COUNT, 0),
            (W_MIN_TS, i64::MAX as u64),
            (W_MAX_TS, i64::MIN as u64),
            (W_LAST_PHYS, -1i64 as u64),
        ];
        for (pos, value) in words {
            file.word(pos).store(value, Ordering::Release);
        }
        let created = file
            .map
            .flush_range(0, HEADER_BYTES)
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = created {
            drop(file);
            // Best effort: a leftover empty file would be dropped by the next recovery anyway.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let writer = file
            .map
            .writer()
            .expect("a file that was just created has no writer yet");
        let file = Arc::new(file);
        self.files.write().push(Arc::clone(&file));
        info!(
            path = %path.display(),
            slots = geo.slots,
            capacity = geo.capacity,
            "index file created"
        );
        Ok(Active { file, writer })
    }

    /// Physical offset of the last record indexed, -1 if none.
    ///
    /// Every record at or below it is fully indexed (or had no keys); a dispatcher resuming
    /// after a restart must re-dispatch every record above it. After a crash this may be lower
    /// than before (lost tail, damaged file), never higher. Records without keys leave no
    /// entry, so after a restart it falls back to the last record that had keys.
    pub(crate) fn last_indexed(&self) -> i64 {
        self.last_indexed.load(Ordering::Acquire)
    }

    /// Physical offsets of the entries whose key hash matches `key` and whose store timestamp
    /// is in `[begin_ms, end_ms]`: newest (highest offset) first, without duplicates, at most
    /// `max`.
    ///
    /// Only the 64-bit hash is compared: the caller must read each message and check its keys.
    /// Files whose time range does not overlap the query are skipped whole. Runs concurrently
    /// with writes and sees each record either whole or not at all.
    ///
    /// # Errors
    /// None today; a chain that leads to an unreadable entry is cut there and logged.
    pub(crate) fn query(
        &self,
        key: &str,
        max: usize,
        begin_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<i64>> {
        let mut out: Vec<i64> = Vec::new();
        if max == 0 || begin_ms > end_ms {
            return Ok(out);
        }
        let hash = key_hash(key);
        let files: Vec<Arc<IndexFile>> = self.files.read().clone();
        for file in files.iter().rev() {
            let count = file.count();
            if count == 0 || file.max_ts() < begin_ms || file.min_ts() > end_ms {
                continue;
            }
            let mut link = file.head(file.geo.slot_of(hash));
            while link != 0 {
                let idx = link - 1;
                let Some(e) = file.entry(idx) else {
                    warn!(
                        path = %file.path().display(),
                        idx,
                        "index chain leads to an unreadable entry"
                    );
                    break;
                };
                if e.prev > idx {
                    warn!(path = %file.path().display(), idx, "index chain does not go backwards");
                    break;
                }
                // Entries at or above `count` were dropped by `truncate` (or are being added):
                // they are only walked through.
                if idx < count
                    && e.hash == hash
                    && (begin_ms..=end_ms).contains(&e.ts)
                    // Offsets never increase along the walk, so duplicates are adjacent.
                    && out.last() != Some(&e.phys)
                {
                    out.push(e.phys);
                    if out.len() >= max {
                        return Ok(out);
                    }
                }
                link = e.prev;
            }
        }
        Ok(out)
    }

    /// Drops every entry with a physical offset at or above `phys_end` (the commitlog was
    /// truncated there). Files that start at or above it are deleted; the file holding the
    /// cut gets a lower entry count, slot heads that pointed at dropped entries are moved back
    /// along their chains, and the file is sealed at the cut so that later records go to a new
    /// file and can never be chained behind a dropped entry. The dropped entries' bytes are
    /// zeroed by the next recovery, and the file's time range (header) stays as wide as before
    /// until then, which only makes queries look at it needlessly. [`IndexStore::last_indexed`]
    /// becomes the last surviving record (-1 if none).
    ///
    /// Idempotent; the store should call it with the commitlog's end after every recovery.
    /// Concurrent queries may still return dropped offsets until this returns.
    ///
    /// # Errors
    /// I/O errors from deleting files or sealing the cut file; calling again finishes the job.
    pub(crate) fn truncate(&self, phys_end: i64) -> Result<()> {
        let mut guard = self.active.lock();
        let (doomed, cut) = {
            let mut files = self.files.write();
            let keep = files
                .iter()
                .position(|f| f.first_phys >= phys_end)
                .unwrap_or(files.len());
            let doomed: Vec<Arc<IndexFile>> = files.drain(keep..).collect();
            let cut = files.last().filter(|f| f.last_phys() >= phys_end).cloned();
            // Exact once the cut is done; until then (and if it fails) a value that claims
            // nothing at or above `phys_end`.
            let last = files.last().map_or(-1, |f| f.last_phys().min(phys_end - 1));
            self.last_indexed.store(last, Ordering::Release);
            (doomed, cut)
        };
        if !doomed.is_empty() || cut.is_some() {
            // The active file is the newest one, so it is doomed or cut: no more appends to it.
            *guard = None;
        }
        let mut first_err = None;
        for file in &doomed {
            info!(
                path = %file.path().display(),
                phys_end,
                "deleting index file beyond the truncation point"
            );
            if let Err(e) = remove(file.path()) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if !doomed.is_empty() {
            // Deletions are durable before the seal below, so a recovery that sees the seal
            // cannot also see the deleted files.
            sync_dir(&self.dir)?;
        }
        let Some(file) = cut else {
            return Ok(());
        };
        let old_count = file.count();
        let keep = file.first_at_or_after(phys_end)?;
        if keep == 0 {
            // Entry 0 carries the file's first offset, which is below `phys_end`.
            return Err(StoreError::corrupt(
                file.first_phys,
                format!("index file {} starts above its name", file.path().display()),
            ));
        }
        if keep < old_count {
            let last = file.entry_or_corrupt(keep - 1)?;
            // Queries stop returning the dropped entries here, and only walk through them.
            file.word(W_COUNT).store(u64::from(keep), Ordering::Release);
            file.word(W_LAST_PHYS)
                .store(last.phys as u64, Ordering::Release);
            file.dirty.store(true, Ordering::Release);
            // Walking the dropped entries newest first moves each head back along its chain
            // until it points below the cut.
            for idx in (keep..old_count).rev() {
                let e = file.entry_or_corrupt(idx)?;
                let head = file.head_word(file.geo.slot_of(e.hash));
                if head.load(Ordering::Acquire) == u64::from(idx + 1) {
                    head.store(u64::from(e.prev), Ordering::Release);
                }
            }
            info!(
                path = %file.path().display(),
                phys_end,
                kept = keep,
                dropped = old_count - keep,
                "index file truncated"
            );
        }
        self.last_indexed.store(file.last_phys(), Ordering::Release);
        // A crash before the seal is durable leaves the dropped entries on disk; the store's
        // next recovery truncates again.
        file.seal()
    }

    /// Retention: deletes whole files whose every entry is below `min_phys_offset`, oldest
    /// first, and returns how many were deleted. The newest file is always kept, so that
    /// [`IndexStore::last_indexed`] survives a restart.
    ///
    /// # Errors
    /// I/O errors from deleting files. Files that could not be deleted are no longer queried;
    /// the next open finds them again and a later call retries.
    pub(crate) fn delete_before(&self, min_phys_offset: i64) -> Result<usize> {
        let _guard = self.active.lock();
        let doomed: Vec<Arc<IndexFile>> = {
            let mut files = self.files.write();
            let n = files
                .iter()
                .take(files.len().saturating_sub(1))
                .take_while(|f| f.last_phys() < min_phys_offset)
                .count();
            files.drain(..n).collect()
        };
        let mut first_err = None;
        for file in &doomed {
            info!(
                path = %file.path().display(),
                last_phys = file.last_phys(),
                min_phys_offset,
                "deleting expired index file"
            );
            if let Err(e) = remove(file.path()) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(doomed.len()), Err)
    }

    /// Writes every file with unflushed changes to disk (msync) and waits. Every record put
    /// before the call is durable when it returns; the store calls it before writing its
    /// checkpoint.
    ///
    /// # Errors
    /// The first msync failure; the file stays dirty and is retried by the next call.
    pub(crate) fn flush(&self) -> Result<()> {
        let files: Vec<Arc<IndexFile>> = self.files.read().clone();
        for file in files {
            if file.dirty.swap(false, Ordering::AcqRel)
                && let Err(e) = file.map.flush()
            {
                file.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }
}
