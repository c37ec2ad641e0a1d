//! Consume queues: one per (topic, queue id), mapping logical offsets to commitlog records.
//!
//! ```text
//! consumequeue/<topic>/<queue id>/<20-digit first logical offset>
//!
//! entry (20 bytes, little-endian):  commitlog offset i64 | size i32 | tag hash i64
//! ```
//!
//! Each file holds `entries_per_file` entries; entry `n` of the queue lives in the file whose
//! first offset is `n - n % entries_per_file`, at byte `(n % entries_per_file) * 20`. An entry
//! of size 0 is a hole (never written); readers skip holes but they still use up an offset.
//!
//! Invariants: only the dispatcher thread appends; entries are appended in increasing logical
//! and physical order; a published entry is never rewritten while the store is open; the
//! newest file is never deleted, so the queue's max offset survives retention.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::error::{Result, StoreError};
use crate::mapped_file::{MappedFile, Writer};

/// Size of one consume-queue entry in bytes.
pub const CQ_ENTRY_SIZE: usize = 20;

/// One consume-queue entry: where a message is and what its tag hashes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    /// Logical offset of the message in its queue.
    pub queue_offset: i64,
    /// Commitlog offset of the record.
    pub physical_offset: i64,
    /// Record size in bytes.
    pub size: i32,
    /// [`crate::tag_hash`] of the message tag.
    pub tag_hash: i64,
}

fn encode_entry(phys: i64, size: i32, tag_hash: i64) -> [u8; CQ_ENTRY_SIZE] {
    let mut b = [0u8; CQ_ENTRY_SIZE];
    b[0..8].copy_from_slice(&phys.to_le_bytes());
    b[8..12].copy_from_slice(&size.to_le_bytes());
    b[12..20].copy_from_slice(&tag_hash.to_le_bytes());
    b
}

fn decode_entry(b: &[u8]) -> (i64, i32, i64) {
    let mut p = [0u8; 8];
    p.copy_from_slice(&b[0..8]);
    let mut s = [0u8; 4];
    s.copy_from_slice(&b[8..12]);
    let mut t = [0u8; 8];
    t.copy_from_slice(&b[12..20]);
    (
        i64::from_le_bytes(p),
        i32::from_le_bytes(s),
        i64::from_le_bytes(t),
    )
}

struct CqFile {
    first: i64,
    file: Arc<MappedFile>,
}

/// The consume queue of one (topic, queue id).
pub(crate) struct ConsumeQueue {
    dir: PathBuf,
    per_file: i64,
    files: RwLock<VecDeque<CqFile>>,
    writer: Mutex<Option<(i64, Writer)>>,
    min: AtomicI64,
    max: AtomicI64,
    flushed: AtomicI64,
}

impl std::fmt::Debug for ConsumeQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumeQueue")
            .field("dir", &self.dir)
            .field("min", &self.min_offset())
            .field("max", &self.max_offset())
            .finish()
    }
}

fn file_name(first: i64) -> String {
    format!("{first:020}")
}

impl ConsumeQueue {
    /// Creates an empty queue directory.
    pub(crate) fn create(dir: &Path, per_file: usize) -> Result<Self> {
        fs::create_dir_all(dir).map_err(StoreError::io("create consume queue dir", dir))?;
        Ok(Self::from_files(dir, per_file, VecDeque::new(), 0))
    }

    fn from_files(dir: &Path, per_file: usize, files: VecDeque<CqFile>, min: i64) -> Self {
        let max = files
            .back()
            .map(|f| f.first + ((f.file.published() / CQ_ENTRY_SIZE) as i64))
            .unwrap_or(min);
        Self {
            dir: dir.to_path_buf(),
            per_file: per_file as i64,
            files: RwLock::new(files),
            writer: Mutex::new(None),
            min: AtomicI64::new(min.min(max)),
            max: AtomicI64::new(max),
            flushed: AtomicI64::new(max),
        }
    }

    /// Opens a queue and drops every entry that points at or beyond `keep_below_phys` (those
    /// are re-dispatched from the commitlog). Entries below it are trusted: they were flushed
    /// before the checkpoint that vouches for them was written.
    pub(crate) fn open(dir: &Path, per_file: usize, keep_below_phys: i64) -> Result<Self> {
        crate::mapped_file::remove_temp_files(dir)?;
        let mut names = Vec::new();
        for e in fs::read_dir(dir).map_err(StoreError::io("list consume queue", dir))? {
            let e = e.map_err(StoreError::io("list consume queue", dir))?;
            let name = e.file_name();
            let Some(first) = name.to_str().and_then(|n| n.parse::<i64>().ok()) else {
                // Leftovers such as editor or temp files are not ours to judge; skip them.
                tracing::warn!(file = %e.path().display(), "ignoring unexpected file in consume queue");
                continue;
            };
            if first < 0 || first % per_file as i64 != 0 {
                return Err(StoreError::Layout {
                    path: e.path(),
                    reason: format!("first offset {first} is not a multiple of {per_file}"),
                });
            }
            names.push(first);
        }
        names.sort_unstable();
        let len = per_file * CQ_ENTRY_SIZE;
        let mut files = VecDeque::new();
        for first in names {
            files.push_back((
                first,
                MappedFile::open(&dir.join(file_name(first)), len, 0)?,
            ));
        }
        // Walk back from the newest file to the last entry that is below the cut.
        let mut kept: Vec<(i64, MappedFile, usize)> = Vec::new();
        let mut found = false;
        while let Some((first, mut mf)) = files.pop_back() {
            let mut count = 0;
            if !found {
                let bytes = mf.recovery_bytes();
                // Skip the all-zero end of the file a page at a time: the last written entry
                // ends at or before the end of the last page that holds a non-zero byte.
                let mut limit = bytes.len();
                while limit > 0 {
                    let from = limit.saturating_sub(4096);
                    if !crate::mapped_file::all_zero(&bytes[from..limit]) {
                        break;
                    }
                    limit = from;
                }
                let n = limit
                    .div_ceil(CQ_ENTRY_SIZE)
                    .min(bytes.len() / CQ_ENTRY_SIZE);
                for i in (0..n).rev() {
                    let (phys, size, _) =
                        decode_entry(&bytes[i * CQ_ENTRY_SIZE..(i + 1) * CQ_ENTRY_SIZE]);
                    if size > 0 && phys >= 0 && phys < keep_below_phys {
                        count = i + 1;
                        found = true;
                        break;
                    }
                }
            } else {
                count = per_file;
            }
            kept.push((first, mf, count));
        }
        kept.reverse();
        // Files after the one holding the last kept entry are dropped, except that a queue
        // always keeps at least one file so its offsets do not restart from zero.
        let keep_until = kept
            .iter()
            .rposition(|(_, _, c)| *c > 0)
            .unwrap_or(0)
            .min(kept.len().saturating_sub(1));
        let mut out = VecDeque::new();
        for (i, (first, mut mf, count)) in kept.into_iter().enumerate() {
            if i > keep_until {
                let path = mf.path().to_path_buf();
                drop(mf);
                fs::remove_file(&path)
                    .map_err(StoreError::io("remove consume queue file", &path))?;
                continue;
            }
            let end = count * CQ_ENTRY_SIZE;
            if end < mf.len() && !crate::mapped_file::all_zero(&mf.recovery_bytes()[end..]) {
                mf.zero_tail(end)?;
            }
            mf.set_published(end);
            out.push_back(CqFile {
                first,
                file: Arc::new(mf),
            });
        }
        // The minimum is the first entry that is not a hole.
        let mut min = out.front().map(|f| f.first).unwrap_or(0);
        if let Some(f) = out.front() {
            let published = f.file.published() / CQ_ENTRY_SIZE;
            let mut i = 0;
            while i < published {
                let b = f
                    .file
                    .bytes(i * CQ_ENTRY_SIZE, CQ_ENTRY_SIZE)
                    .ok_or_else(|| StoreError::corrupt(i as i64, "consume queue entry"))?;
                if decode_entry(b).1 > 0 {
                    break;
                }
                i += 1;
            }
            min = f.first + i as i64;
        }
        Ok(Self::from_files(dir, per_file, out, min))
    }

    /// First logical offset still readable.
    pub(crate) fn min_offset(&self) -> i64 {
        self.min.load(Ordering::Acquire)
    }

    /// One past the last logical offset.
    pub(crate) fn max_offset(&self) -> i64 {
        self.max.load(Ordering::Acquire)
    }

    /// Appends the entry for `queue_offset`. Offsets already present are ignored; a gap
    /// (offsets whose records are gone) is left as holes.
    pub(crate) fn put(&self, queue_offset: i64, phys: i64, size: i32, tag_hash: i64) -> Result<()> {
        let max = self.max_offset();
        if queue_offset < max {
            tracing::debug!(dir = %self.dir.display(), queue_offset, max, "entry already dispatched");
            return Ok(());
        }
        let mut writer = self.writer.lock();
        let file_first = queue_offset - queue_offset % self.per_file;
        if writer.as_ref().map(|(first, _)| *first) != Some(file_first) {
            *writer = None;
            let existing = self
                .files
                .read()
                .back()
                .filter(|f| f.first == file_first)
                .map(|f| Arc::clone(&f.file));
            let file = match existing {
                Some(f) => f,
                None => {
                    let path = self.dir.join(file_name(file_first));
                    let f = Arc::new(MappedFile::create(
                        &path,
                        self.per_file as usize * CQ_ENTRY_SIZE,
                        0,
                    )?);
                    // Entries are written 20 bytes at a time on the append path: a fault
                    // must not read around (see `MappedFile::advise_random`).
                    f.advise_random();
                    let mut files = self.files.write();
                    if files.is_empty() {
                        self.min.store(queue_offset, Ordering::Release);
                    }
                    files.push_back(CqFile {
                        first: file_first,
                        file: Arc::clone(&f),
                    });
                    f
                }
            };
            let w = file.writer().ok_or_else(|| StoreError::Layout {
                path: file.path().to_path_buf(),
                reason: "consume queue file already has a writer".into(),
            })?;
            *writer = Some((file_first, w));
        }
        let Some((_, w)) = writer.as_mut() else {
            return Err(StoreError::Closed);
        };
        let pos = ((queue_offset - file_first) as usize) * CQ_ENTRY_SIZE;
        if !w.write(pos, &encode_entry(phys, size, tag_hash)) {
            return Err(StoreError::corrupt(
                queue_offset,
                format!("consume queue {} cannot take entry", self.dir.display()),
            ));
        }
        w.publish(pos + CQ_ENTRY_SIZE);
        self.max.store(queue_offset + 1, Ordering::Release);
        Ok(())
    }

    /// The entry at `queue_offset`, or `None` for holes and offsets outside the queue.
    pub(crate) fn entry(&self, queue_offset: i64) -> Option<CqEntry> {
        if queue_offset < self.min_offset() || queue_offset >= self.max_offset() {
            return None;
        }
        let files = self.files.read();
        let idx = files
            .partition_point(|f| f.first <= queue_offset)
            .checked_sub(1)?;
        let f = &files[idx];
        let pos = ((queue_offset - f.first) as usize) * CQ_ENTRY_SIZE;
        let (phys, size, tag_hash) = decode_entry(f.file.bytes(pos, CQ_ENTRY_SIZE)?);
        (size > 0).then_some(CqEntry {
            queue_offset,
            physical_offset: phys,
            size,
            tag_hash,
        })
    }

    /// Up to `max` entries starting at `from` (clamped to the readable range), skipping holes.
    pub(crate) fn read(&self, from: i64, max: usize) -> Vec<CqEntry> {
        let mut out = Vec::with_capacity(max.min(1024));
        let end = self.max_offset();
        let mut q = from.max(self.min_offset());
        let files = self.files.read();
        while q < end && out.len() < max {
            let Some(idx) = files.partition_point(|f| f.first <= q).checked_sub(1) else {
                break;
            };
            let f = &files[idx];
            let readable_end = (f.first + (f.file.published() / CQ_ENTRY_SIZE) as i64).min(end);
            if q >= readable_end {
                // The rest of this file is a gap: continue with the next file, if any.
                match files.get(idx + 1) {
                    Some(next) => {
                        q = next.first;
                        continue;
                    }
                    None => break,
                }
            }
            let file_end = readable_end;
            let n = (file_end - q) as usize;
            let pos = ((q - f.first) as usize) * CQ_ENTRY_SIZE;
            let Some(bytes) = f.file.bytes(pos, n * CQ_ENTRY_SIZE) else {
                break;
            };
            for (i, chunk) in bytes.chunks_exact(CQ_ENTRY_SIZE).enumerate() {
                if out.len() >= max {
                    break;
                }
                let (phys, size, tag_hash) = decode_entry(chunk);
                if size > 0 {
                    out.push(CqEntry {
                        queue_offset: q + i as i64,
                        physical_offset: phys,
                        size,
                        tag_hash,
                    });
                }
            }
            q = file_end;
        }
        out
    }

    /// The first offset whose message was stored at or after `timestamp_ms`, using
    /// `store_time` to read a record's store timestamp. Returns the max offset if none is.
    pub(crate) fn offset_by_time(
        &self,
        timestamp_ms: i64,
        store_time: impl Fn(i64) -> Option<i64>,
    ) -> i64 {
        let (mut lo, mut hi) = (self.min_offset(), self.max_offset());
        // Invariant: every offset below `lo` is earlier; `hi` is the answer if nothing in
        // [lo, hi) is at or after the timestamp. Store timestamps never decrease along the log.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ts = self.read(mid, 1).first().and_then(|e| {
                if e.queue_offset >= hi {
                    None
                } else {
                    store_time(e.physical_offset)
                }
            });
            match ts {
                Some(ts) if ts >= timestamp_ms => hi = mid,
                Some(_) => lo = mid + 1,
                // Unreadable (deleted) records are older than anything readable.
                None => lo = mid + 1,
            }
        }
        lo
    }

    /// Advances the minimum past every entry that points below `min_phys` and deletes files
    /// that hold only such entries (never the newest file). Returns files deleted.
    pub(crate) fn retain_from_phys(&self, min_phys: i64) -> Result<usize> {
        let mut q = self.min_offset();
        let end = self.max_offset();
        while q < end {
            let batch = self.read(q, 4096);
            match batch.iter().find(|e| e.physical_offset >= min_phys) {
                Some(e) => {
                    q = e.queue_offset;
                    break;
                }
                None => match batch.last() {
                    Some(last) => q = last.queue_offset + 1,
                    None => q = end,
                },
            }
        }
        if q > self.min_offset() {
            self.min.store(q, Ordering::Release);
        }
        let mut deleted = 0;
        let mut files = self.files.write();
        while files.len() > 1 && files[1].first <= q {
            if let Some(f) = files.pop_front() {
                let path = f.file.path().to_path_buf();
                drop(f);
                fs::remove_file(&path)
                    .map_err(StoreError::io("remove consume queue file", &path))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Flushes entries written since the last flush.
    pub(crate) fn flush(&self) -> Result<()> {
        let max = self.max_offset();
        let from = self.flushed.load(Ordering::Acquire);
        if from >= max {
            return Ok(());
        }
        let files: Vec<(i64, Arc<MappedFile>)> = self
            .files
            .read()
            .iter()
            .filter(|f| f.first + self.per_file > from)
            .map(|f| (f.first, Arc::clone(&f.file)))
            .collect();
        for (first, file) in files {
            let start = ((from.max(first) - first) as usize) * CQ_ENTRY_SIZE;
            file.flush_range(start, file.published().saturating_sub(start))?;
        }
        self.flushed.store(max, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(dir: &Path, n: i64) -> ConsumeQueue {
        let cq = ConsumeQueue::create(dir, 16).expect("create");
        for q in 0..n {
            cq.put(q, q * 100, 100, q % 3).expect("put");
        }
        cq
    }

    #[test]
    fn given_entries_when_read_should_span_files_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cq = filled(dir.path(), 40);
        assert_eq!((cq.min_offset(), cq.max_offset()), (0, 40));
        let got = cq.read(10, 25);
        assert_eq!(got.len(), 25);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, e)| e.queue_offset == 10 + i as i64
                    && e.physical_offset == (10 + i as i64) * 100)
        );
        assert_eq!(cq.entry(39).map(|e| e.tag_hash), Some(0));
        assert_eq!(cq.entry(40), None);
        cq.put(5, 1, 1, 1).expect("duplicate put is ignored");
        assert_eq!(cq.entry(5).map(|e| e.physical_offset), Some(500));
    }

    #[test]
    fn given_reopen_when_cut_below_phys_should_drop_later_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        filled(dir.path(), 40).flush().expect("flush");
        let cq = ConsumeQueue::open(dir.path(), 16, 2050).expect("open");
        assert_eq!(cq.max_offset(), 21, "entries at phys >= 2050 dropped");
        assert_eq!(
            fs::read_dir(dir.path()).expect("ls").count(),
            2,
            "third file removed"
        );
        cq.put(21, 2100, 100, 0).expect("put after cut");
        assert_eq!(cq.read(19, 10).len(), 3);
        drop(cq);
        let cq = ConsumeQueue::open(dir.path(), 16, 0).expect("open");
        assert_eq!(
            (cq.min_offset(), cq.max_offset()),
            (0, 0),
            "first file is kept"
        );
    }

    #[test]
    fn given_gap_when_put_should_leave_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cq = ConsumeQueue::create(dir.path(), 16).expect("create");
        cq.put(3, 0, 10, 0).expect("put");
        cq.put(20, 10, 10, 0).expect("put");
        assert_eq!(cq.min_offset(), 3);
        let got: Vec<i64> = cq.read(0, 10).iter().map(|e| e.queue_offset).collect();
        assert_eq!(got, vec![3, 20]);
    }

    #[test]
    fn given_retention_when_min_phys_moves_should_drop_old_files_but_keep_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cq = filled(dir.path(), 40);
        assert_eq!(cq.retain_from_phys(3300).expect("retain"), 2);
        assert_eq!(cq.min_offset(), 33);
        assert_eq!(cq.read(0, 1)[0].queue_offset, 33);
        cq.retain_from_phys(1_000_000).expect("retain all");
        assert_eq!((cq.min_offset(), cq.max_offset()), (40, 40));
        cq.put(40, 4000, 1, 0).expect("offsets continue");
    }

    #[test]
    fn given_timestamps_when_searched_should_find_first_at_or_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cq = filled(dir.path(), 40);
        let ts = |phys: i64| Some(1000 + phys / 100 * 10);
        assert_eq!(cq.offset_by_time(0, ts), 0);
        assert_eq!(cq.offset_by_time(1105, ts), 11);
        assert_eq!(cq.offset_by_time(1110, ts), 11);
        assert_eq!(cq.offset_by_time(99_999, ts), 40);
    }
}
