//! Fixed-size memory-mapped files: the only place in Comet that uses `unsafe`.
//!
//! A [`MappedFile`] is one file of a fixed length mapped shared and read-write with memmap2. Its
//! bytes are split into two regions, and every access goes through an API that keeps the two
//! apart, so that concurrent readers and the single writer never race on the same bytes:
//!
//! ```text
//!  0             atomic_prefix                 published                      len
//!  ├─────────────┼─────────────────────────────┼──────────────────────────────┤
//!  │ atomic words│ published bytes: immutable, │ unpublished: only the one    │
//!  │ (AtomicU64) │ readable by anyone (&[u8])  │ Writer may touch (&mut [u8]) │
//!  └─────────────┴─────────────────────────────┴──────────────────────────────┘
//! ```
//!
//! - The *atomic prefix* holds in-place-updated words (index hash slots, timer wheel slots,
//!   headers). It is only ever accessed through `&AtomicU64`, never as bytes.
//! - The *append region* grows by publication: the [`Writer`] (at most one per file) fills bytes
//!   at or beyond `published`, then moves `published` forward with a release store. Readers load
//!   `published` with acquire and read only below it. Published bytes are never written again
//!   while the file is shared.
//! - Rewinding `published` (truncating a torn tail in recovery) needs `&mut MappedFile`, which
//!   only exists before the file is wrapped in an `Arc` and shared.
//!
//! The hazards that no type can rule out, and that the store rules out by convention: no other
//! process writes or truncates these files while they are mapped (the data directory is locked
//! by the store), and files are never shrunk (a read past the end of a shrunk file would raise
//! SIGBUS). Deleting a file is safe: the mapping stays valid until the last `Arc` drops.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Result, StoreError};

const PAGE: usize = 4096;

/// Largest range one [`MappedFile::populate`] syscall asks for (see there).
const POPULATE_STEP: usize = 256 << 10;

/// Makes `[offset, offset + len)` of `file` allocated on disk (and the file at least that long).
/// Filesystems without `fallocate` get a plain (sparse) size change instead.
fn reserve(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOSPC => Err(e.into()),
        Err(_) => {
            let end = offset + len;
            if file.metadata()?.len() < end {
                file.set_len(end)?;
            }
            Ok(())
        }
    }
}

/// Whether every byte of `bytes` is zero (folded in 64-byte blocks so it vectorizes).
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(64);
    let blocks = chunks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |acc, b| acc | b) == 0);
    blocks && chunks.remainder().iter().all(|b| *b == 0)
}

/// Deletes temporary files (`.<name>.tmp`) that a crash during [`MappedFile::create`] left in
/// `dir`. Returns how many were removed.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io("list directory", dir)(e)),
    };
    for e in entries {
        let e = e.map_err(StoreError::io("list directory", dir))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            std::fs::remove_file(e.path()).map_err(StoreError::io("remove temp file", e.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// One fixed-size memory-mapped file. See the module docs for the access rules.
pub(crate) struct MappedFile {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    len: usize,
    atomic_prefix: usize,
    published: AtomicUsize,
    writer_taken: AtomicBool,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("published", &self.published())
            .finish()
    }
}

impl MappedFile {
    /// Creates a new file of `len` bytes (reads as zeros) and maps it.
    ///
    /// The file is built under a temporary name (`.<name>.tmp`), its blocks are reserved with
    /// `fallocate` (so a full disk fails here, cleanly, and never as SIGBUS on a later write
    /// through the mapping), then it is renamed into place and the directory is synced. A
    /// crash at any point leaves either no file or a complete one; callers delete leftover
    /// temporary files with [`remove_temp_files`]. Fails if the file exists.
    pub(crate) fn create(path: &Path, len: usize, atomic_prefix: usize) -> Result<Self> {
        if path.exists() {
            return Err(StoreError::Layout {
                path: path.to_path_buf(),
                reason: "file already exists".into(),
            });
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| StoreError::Layout {
                path: path.to_path_buf(),
                reason: "file name is not UTF-8".into(),
            })?;
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(StoreError::io("create mapped file", &tmp))?;
        reserve(&file, 0, len as u64).map_err(StoreError::io("reserve mapped file", &tmp))?;
        std::fs::rename(&tmp, path).map_err(StoreError::io("rename mapped file", path))?;
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(StoreError::io("sync directory", dir))?;
        }
        Self::map(path, file, len, atomic_prefix)
    }

    /// Opens an existing file that must be exactly `len` bytes long, and maps it.
    ///
    /// The append region starts out fully unpublished: recovery decides how much of it is valid
    /// (through [`MappedFile::recovery_bytes`]) and then calls [`MappedFile::set_published`].
    pub(crate) fn open(path: &Path, len: usize, atomic_prefix: usize) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(StoreError::io("open mapped file", path))?;
        let actual = file
            .metadata()
            .map_err(StoreError::io("stat mapped file", path))?
            .len();
        if actual != len as u64 {
            return Err(StoreError::Layout {
                path: path.to_path_buf(),
                reason: format!("file is {actual} bytes, expected exactly {len}"),
            });
        }
        Self::map(path, file, len, atomic_prefix)
    }

    fn map(path: &Path, file: File, len: usize, atomic_prefix: usize) -> Result<Self> {
        if !atomic_prefix.is_multiple_of(8) || atomic_prefix > len || len == 0 {
            return Err(StoreError::Layout {
                path: path.to_path_buf(),
                reason: format!("bad mapping geometry: len {len}, atomic prefix {atomic_prefix}"),
            });
        }
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(StoreError::io("mmap", path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map,
            len,
            atomic_prefix,
            published: AtomicUsize::new(atomic_prefix),
            writer_taken: AtomicBool::new(false),
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Total mapped length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// End of the published (readable) region, as a file position.
    pub(crate) fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Sets the published end. Only possible while the file is not shared.
    pub(crate) fn set_published(&mut self, pos: usize) {
        let pos = pos.clamp(self.atomic_prefix, self.len);
        *self.published.get_mut() = pos;
    }

    /// Published bytes `[pos, pos + len)`, or `None` if any of them is not published.
    pub(crate) fn bytes(&self, pos: usize, len: usize) -> Option<&[u8]> {
        let end = pos.checked_add(len)?;
        if pos < self.atomic_prefix || end > self.published() {
            return None;
        }
        // SAFETY: `[pos, end)` lies inside the mapping (end <= published <= len) and inside the
        // append region (pos >= atomic_prefix). Bytes below `published` are never written while
        // the file is shared (only a `Writer` writes, and only at or beyond `published`; rewinds
        // need `&mut self`), and the acquire load of `published` orders the writer's byte stores
        // before this read. The returned slice borrows `self`, which keeps the mapping alive.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(pos), len) })
    }

    /// The whole append region `[atomic_prefix, len)`, for recovery to scan before sharing.
    pub(crate) fn recovery_bytes(&mut self) -> &[u8] {
        let start = self.atomic_prefix;
        // SAFETY: the range is inside the mapping; `&mut self` proves no `Writer` exists (a
        // writer holds an `Arc`, and an `Arc`-shared file yields no `&mut`) and no other
        // reference into the mapping is alive for the lifetime of the returned slice.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), self.len - start) }
    }

    /// Zeros the append region from `pos` to the end, and rewinds `published` to `pos` if it
    /// was beyond. Whole pages are released with `fallocate(PUNCH_HOLE)` (cheap, no I/O for
    /// never-written pages); the partial first page is zeroed in place. The change is synced.
    pub(crate) fn zero_tail(&mut self, pos: usize) -> Result<()> {
        let pos = pos.clamp(self.atomic_prefix, self.len);
        let first_full_page = pos.div_ceil(PAGE) * PAGE;
        let partial_end = first_full_page.min(self.len);
        if partial_end > pos {
            // SAFETY: `[pos, partial_end)` is inside the mapping and the append region, and
            // `&mut self` proves nothing else reads or writes it right now.
            unsafe {
                std::ptr::write_bytes(self.map.as_mut_ptr().add(pos), 0, partial_end - pos);
            }
        }
        if first_full_page < self.len {
            let punched = rustix::fs::fallocate(
                &self.file,
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                first_full_page as u64,
                (self.len - first_full_page) as u64,
            );
            if punched.is_ok() {
                // Punching released the blocks; take them back so later writes through the
                // mapping cannot hit a full disk. Failing that, the range stays sparse.
                let _ = reserve(
                    &self.file,
                    first_full_page as u64,
                    (self.len - first_full_page) as u64,
                );
            } else {
                // Filesystems without hole punching get explicit zeros; only the pages that
                // hold data need them, but finding those costs a scan, so write them all.
                // SAFETY: as above: inside the mapping, exclusive through `&mut self`.
                unsafe {
                    std::ptr::write_bytes(
                        self.map.as_mut_ptr().add(first_full_page),
                        0,
                        self.len - first_full_page,
                    );
                }
            }
        }
        if *self.published.get_mut() > pos {
            *self.published.get_mut() = pos;
        }
        self.flush_range(pos, self.len - pos)?;
        self.file
            .sync_data()
            .map_err(StoreError::io("sync mapped file", &self.path))
    }

    /// The atomic word at byte position `pos` of the atomic prefix.
    ///
    /// # Panics
    /// If `pos` is not 8-aligned or the word is outside the atomic prefix: both are layout bugs
    /// in the caller, not conditions of the data.
    pub(crate) fn atomic_u64(&self, pos: usize) -> &AtomicU64 {
        assert!(
            pos.is_multiple_of(8) && pos + 8 <= self.atomic_prefix,
            "atomic word {pos} outside the atomic prefix of {}",
            self.path.display()
        );
        // SAFETY: the mapping starts page-aligned, so `base + pos` is 8-aligned; the word lies
        // inside the mapping, which lives as long as `&self`; and the atomic prefix is only ever
        // accessed through this function, so every access to these bytes is atomic.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(pos).cast::<u64>()) }
    }

    /// Takes the file's single writer. Returns `None` if a writer already exists.
    pub(crate) fn writer(self: &Arc<Self>) -> Option<Writer> {
        if self.writer_taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(Writer {
            file: Arc::clone(self),
        })
    }

    /// Writes `[pos, pos + len)` of the mapping to disk and waits (msync `MS_SYNC`, which on
    /// Linux is a ranged fdatasync).
    pub(crate) fn flush_range(&self, pos: usize, len: usize) -> Result<()> {
        let pos = pos.min(self.len);
        let len = len.min(self.len - pos);
        if len == 0 {
            return Ok(());
        }
        self.map
            .flush_range(pos, len)
            .map_err(StoreError::io("msync", &self.path))
    }

    /// Writes every dirty page of the file (written through the mapping or not) to disk and
    /// waits (fdatasync). Cheaper than a ranged msync when only the file's tail is dirty: no
    /// walk of the mapping is needed.
    pub(crate) fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(StoreError::io("fdatasync", &self.path))
    }

    /// Flushes the whole mapping.
    pub(crate) fn flush(&self) -> Result<()> {
        self.flush_range(0, self.len)
    }

    /// Brings `[pos, pos + len)` into the page cache ahead of the writer, so a later write
    /// there finds its page cached and does not read or zero it while the writer holds its
    /// lock. Only a hint: failure changes nothing but speed.
    ///
    /// The pages are requested with `posix_fadvise(WILLNEED)` in steps of [`POPULATE_STEP`],
    /// not by faulting them in (`MADV_POPULATE_READ`): a fault in a fresh region of a mapping
    /// with default advice reads around it by the device's whole readahead window, and on
    /// machines whose window is large (8 MiB on some cloud VMs) one such fault zero-fills
    /// megabytes of large folios in a single non-preemptible stretch of 20-30 ms, which stalls
    /// every thread queued on that CPU. A WILLNEED step fills only the pages asked for, each
    /// syscall ends within about a millisecond, and the thread can be preempted between
    /// steps; it also costs less CPU per byte. The writer then takes only minor faults.
    pub(crate) fn populate(&self, pos: usize, len: usize) {
        let start = pos / PAGE * PAGE;
        let end = pos.saturating_add(len).min(self.len);
        let mut at = start;
        while at < end {
            let step = (end - at).min(POPULATE_STEP);
            let Some(step_len) = std::num::NonZeroU64::new(step as u64) else {
                break;
            };
            if rustix::fs::fadvise(
                &self.file,
                at as u64,
                Some(step_len),
                rustix::fs::Advice::WillNeed,
            )
            .is_err()
            {
                break;
            }
            at += step;
        }
    }

    /// Hints that the file is accessed in small scattered pieces: a page fault brings in only
    /// its own page, with no read-around. For files written a few bytes at a time through
    /// the mapping (consume queue entries, index slots), where a fault in a fresh region
    /// would otherwise zero-fill a whole readahead window (see [`MappedFile::populate`]) on
    /// the writer's path.
    pub(crate) fn advise_random(&self) {
        // Advice is only a hint: failure changes nothing but speed.
        let _ = self.map.advise(memmap2::Advice::Random);
    }

    /// Returns the file to the default read-around after a recovery scan, so faults past the
    /// recovered end do not keep the scan's doubled window.
    pub(crate) fn advise_normal(&self) {
        // Advice is only a hint: failure changes nothing but speed.
        let _ = self.map.advise(memmap2::Advice::Normal);
    }

    /// Hints that the file will be read sequentially soon (recovery scans).
    pub(crate) fn advise_sequential(&self) {
        // Advice is only a hint: failure changes nothing but speed.
        let _ = self.map.advise(memmap2::Advice::Sequential);
    }
}

/// The one writer of a [`MappedFile`]'s append region. Dropping it frees the slot.
pub(crate) struct Writer {
    file: Arc<MappedFile>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("file", &self.file).finish()
    }
}

impl Writer {
    /// The file this writer writes.
    pub(crate) fn file(&self) -> &Arc<MappedFile> {
        &self.file
    }

    /// The current published end, which is where the next write may start.
    pub(crate) fn position(&self) -> usize {
        self.file.published()
    }

    /// Bytes still writable after the published end.
    pub(crate) fn remaining(&self) -> usize {
        self.file.len - self.position()
    }

    /// The unpublished bytes `[pos, pos + len)` for writing, or `None` if the range is not
    /// entirely unpublished and inside the file.
    pub(crate) fn unpublished_mut(&mut self, pos: usize, len: usize) -> Option<&mut [u8]> {
        let end = pos.checked_add(len)?;
        if pos < self.file.published() || end > self.file.len {
            return None;
        }
        // SAFETY: `[pos, end)` is inside the mapping and at or beyond `published`, so no reader
        // may look at it (readers stop at `published`) and no other writer exists (one `Writer`
        // per file, guarded by `writer_taken`); `&mut self` makes this slice the only live one.
        Some(unsafe { std::slice::from_raw_parts_mut(self.file.map.as_mut_ptr().add(pos), len) })
    }

    /// Copies `data` to the unpublished position `pos`. Returns false if it does not fit.
    pub(crate) fn write(&mut self, pos: usize, data: &[u8]) -> bool {
        match self.unpublished_mut(pos, data.len()) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    /// Makes everything below `pos` readable. `pos` never moves backwards.
    pub(crate) fn publish(&mut self, pos: usize) {
        let pos = pos.min(self.file.len);
        if pos > self.file.published() {
            self.file.published.store(pos, Ordering::Release);
        }
    }

    /// Touches one byte per page of the unpublished region `[from, to)`, so that later appends
    /// do not take page faults. The bytes written are zeros, which the region already reads as.
    pub(crate) fn prefault(&mut self, from: usize, to: usize) {
        let from = from.max(self.file.published());
        let to = to.min(self.file.len);
        let mut pos = from.div_ceil(PAGE) * PAGE;
        while pos < to {
            if let Some(b) = self.unpublished_mut(pos, 1) {
                b[0] = 0;
            }
            pos += PAGE;
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.file.writer_taken.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_new_file_when_written_and_published_should_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let f = Arc::new(MappedFile::create(&path, 8192, 16).expect("create"));
        assert_eq!(f.published(), 16);
        let mut w = f.writer().expect("writer");
        assert!(f.writer().is_none(), "second writer must be refused");
        assert!(w.write(16, b"hello"));
        assert!(
            f.bytes(16, 5).is_none(),
            "unpublished bytes are not readable"
        );
        w.publish(21);
        assert_eq!(f.bytes(16, 5), Some(&b"hello"[..]));
        assert!(!w.write(18, b"x"), "published bytes cannot be rewritten");
        assert!(
            f.bytes(0, 4).is_none(),
            "atomic prefix is not readable as bytes"
        );
        f.atomic_u64(8).store(7, Ordering::Release);
        assert_eq!(f.atomic_u64(8).load(Ordering::Acquire), 7);
        drop(w);
        assert!(f.writer().is_some(), "writer slot frees on drop");
    }

    #[test]
    fn given_existing_file_when_reopened_should_see_data_and_zero_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        {
            let f = Arc::new(MappedFile::create(&path, 3 * PAGE, 0).expect("create"));
            let mut w = f.writer().expect("writer");
            assert!(w.write(0, &[1u8; 3 * PAGE]));
            w.publish(3 * PAGE);
            f.flush().expect("flush");
        }
        let mut f = MappedFile::open(&path, 3 * PAGE, 0).expect("open");
        assert!(f.recovery_bytes().iter().all(|b| *b == 1));
        f.zero_tail(100).expect("zero");
        let bytes = f.recovery_bytes();
        assert!(bytes[..100].iter().all(|b| *b == 1));
        assert!(bytes[100..].iter().all(|b| *b == 0));
        assert!(
            MappedFile::open(&path, 2 * PAGE, 0).is_err(),
            "size mismatch is an error"
        );
    }

    #[test]
    fn given_populated_range_when_written_should_read_back_and_keep_the_rest_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let f = Arc::new(MappedFile::create(&path, 4 * PAGE, 0).expect("create"));
        // Unaligned start, and a length past the end: both are clamped, neither panics.
        f.populate(100, 10 * PAGE);
        f.populate(4 * PAGE, PAGE);
        let mut w = f.writer().expect("writer");
        assert!(w.write(PAGE + 7, b"populated"));
        w.publish(4 * PAGE);
        let bytes = f.bytes(0, 4 * PAGE).expect("published");
        assert_eq!(&bytes[PAGE + 7..PAGE + 16], b"populated");
        assert!(bytes[..PAGE + 7].iter().all(|b| *b == 0));
        assert!(bytes[PAGE + 16..].iter().all(|b| *b == 0));
        f.flush().expect("flush");
        drop(w);
        drop(f);
        let mut f = MappedFile::open(&path, 4 * PAGE, 0).expect("open");
        assert_eq!(&f.recovery_bytes()[PAGE + 7..PAGE + 16], b"populated");
    }
}
