//! Index files: find messages by message id or key within a time range.
//!
//! An [`IndexStore`] owns one directory of index files. Each file is a hash table whose buckets
//! ("slots") are the heads of singly linked lists of fixed-size entries, one entry per key of a
//! record, appended in physical-offset order. A query hashes the key, walks the slot's chain
//! newest first in every file whose time range overlaps the query, and returns the physical
//! (commitlog) offsets of the entries whose full 64-bit hash matches. Callers read each message
//! and compare the key exactly, so hash collisions cost a read, never a wrong answer.
//!
//! # File format
//!
//! A file is named after the physical offset of its first entry, as 20 zero-padded decimal
//! digits, so sorting names sorts files. It is a [`MappedFile`] whose atomic prefix holds a
//! header and the slot table, and whose append region holds the entries:
//!
//! ```text
//!  0          64                    64 + 8 * slots                                  file end
//!  ├──────────┼─────────────────────┼─────────┬─────────┬─────┬────────────────────────┤
//!  │ header   │ slot heads          │ entry 0 │ entry 1 │ ... │ entry capacity - 1     │
//!  │ 8 words  │ `slots` words       │ 32 B    │ 32 B    │     │                        │
//!  └──────────┴─────────────────────┴─────────┴─────────┴─────┴────────────────────────┘
//!   atomic prefix (native-endian u64 words,   append region (little-endian entries,
//!   updated in place)                         written once, then published)
//!
//!  header word  content
//!  ──────────── ─────────────────────────────────────────────────────────────────────────
//!  0  magic     "CMTIDX01" (format version 1)
//!  1  slots     number of slots of this file
//!  2  capacity  number of entries this file holds
//!  3  seal      0 = the file takes appends; else 0x5EA1ED1D << 32 | entry count, written
//!               only after every entry below that count was flushed (see Recovery)
//!  4  count     entries visible to queries
//!  5  min_ts    smallest store timestamp of the entries (i64::MAX when empty)
//!  6  max_ts    largest store timestamp of the entries (i64::MIN when empty)
//!  7  last_phys physical offset of the last entry (-1 when empty)
//!
//!  slot s       0 = empty chain, else (index + 1) of the newest entry with hash % slots == s
//!
//!  entry bytes  content
//!  ──────────── ─────────────────────────────────────────────────────────────────────────
//!  0..8         key hash (u64, see `key_hash`)
//!  8..16        physical offset of the record (i64)
//!  16..24       store timestamp of the record, ms (i64)
//!  24..28       link (u32): bit 31 set on the last entry of a record; bits 0..=30 hold
//!               (index + 1) of the previous entry of the same slot, 0 = none
//!  28..32       CRC32C of (entry index as u32 LE ++ bytes 0..28)
//! ```
//!
//! The header words other than magic, geometry and seal are a cache for queries: recovery
//! recomputes them, and recomputes the slot table, from the entries. Each file records its own
//! geometry, so changing [`IndexConfig`] only affects files created afterwards.
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
//! # Recovery
//!
//! After a crash, pages of a mapped file reach the disk in any order: an entry may be lost
//! (reads zeros) while later ones survived, and slot heads may point at lost entries. On open,
//! every file is scanned from entry 0, in name order, and stops at the first entry that is
//! all zeros, fails its CRC, has a link that is not the slot's previous entry (so every chain
//! of the valid prefix is exactly the one the writer built), or disagrees with the physical
//! order (entry 0 must carry the offset in the file name; a record's entries share offset and
//! timestamp; each record's offset exceeds the one before, also across files). A record whose
//! last entry (bit 31) is not in the valid prefix is dropped whole, so every record is either
//! fully indexed or not at all. The slot heads and header words are then rebuilt from the valid
//! prefix, and everything after it is zeroed (durably) so no stale entry can come back.
//!
//! A file is *damaged* when entries are missing that were there before the crash: a sealed
//! file whose valid prefix is shorter than its seal, or an unsealed file that is not the last
//! one (rolling seals a file durably before creating the next, so that cannot happen without
//! loss). Entries after a damaged file's valid prefix cannot be told apart from lost ones, so
//! recovery keeps the damaged file's valid prefix, seals it at that count, and deletes every
//! later file. A file with no valid record is deleted the same way. [`IndexStore::last_indexed`]
//! is then the physical offset of the last record that survived, which is at or before the
//! earliest loss point, and a dispatcher that re-dispatches from there rebuilds everything
//! that was lost. Entries above a sealed file's count are leftovers of [`IndexStore::truncate`]
//! and are dropped without counting as damage.
//!
//! Unknown file names in the directory are left alone (and logged).
//!
//! Cost: recovery reads every entry of every file (sequentially), plus one `fdatasync` per
//! file that is not full. A later optimization could trust sealed files, whose seal already
//! proves they were flushed whole.
//!
//! # Truncation and retention
//!
//! [`IndexStore::truncate`] cannot rewrite published bytes while queries may read them, so it
//! lowers the file's count (queries skip entries at or above it), moves slot heads back below
//! the cut, and seals the file there; its leftovers are zeroed by the next recovery, which
//! honours the seal. [`IndexStore::delete_before`] deletes whole files, never the newest.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use tracing::{debug, info, warn};

use crate::error::{Result, StoreError};
use crate::mapped_file::{MappedFile, Writer};

/// Header word 0: "CMTIDX01".
const MAGIC: u64 = u64::from_be_bytes(*b"CMTIDX01");
/// Byte positions of the header words.
const W_MAGIC: usize = 0;
const W_SLOTS: usize = 8;
const W_CAPACITY: usize = 16;
const W_SEAL: usize = 24;
const W_COUNT: usize = 32;
const W_MIN_TS: usize = 40;
const W_MAX_TS: usize = 48;
const W_LAST_PHYS: usize = 56;
const HEADER_BYTES: usize = 64;
/// Upper half of a seal word; the lower half is the sealed entry count.
const SEAL_TAG: u64 = 0x5EA1_ED1D;

const ENTRY_SIZE: usize = 32;
/// Link bit marking the last entry of a record.
const LAST_OF_RECORD: u32 = 1 << 31;
/// Link bits holding (index + 1) of the previous entry in the chain.
const PREV_MASK: u32 = LAST_OF_RECORD - 1;
/// Largest `entries_per_file`: an entry's (index + 1) must fit the link's 31 bits.
pub(crate) const MAX_ENTRIES_PER_FILE: u32 = PREV_MASK;

/// Sizing of new index files.
///
/// Existing files keep the geometry they were created with (it is stored in their header), so
/// a change applies to files created afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexConfig {
    /// Hash slots per file; more slots make shorter chains. Each costs 8 bytes of the file.
    pub(crate) slots_per_file: u32,
    /// Entries (keys) per file, at most [`MAX_ENTRIES_PER_FILE`]. Each costs 32 bytes.
    pub(crate) entries_per_file: u32,
}

impl Default for IndexConfig {
    /// 1M slots and 4M entries: a sparse file of about 136 MB.
    fn default() -> Self {
        Self {
            slots_per_file: 1_000_000,
            entries_per_file: 4_000_000,
        }
    }
}

/// The stable 64-bit key hash: FNV-1a over the UTF-8 bytes, then the murmur3 64-bit finalizer
/// so that the low bits, which pick the slot, depend on every byte of the key.
///
/// Part of the file format: changing it makes existing files unsearchable.
pub(crate) fn key_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The shape of one index file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    slots: u32,
    capacity: u32,
}

impl Geometry {
    fn from_config(cfg: &IndexConfig) -> Result<Self> {
        if cfg.slots_per_file == 0 {
            return Err(StoreError::Config {
                key: "index.slots_per_file",
                reason: "must be at least 1".to_owned(),
            });
        }
        if cfg.entries_per_file == 0 || cfg.entries_per_file > MAX_ENTRIES_PER_FILE {
            return Err(StoreError::Config {
                key: "index.entries_per_file",
                reason: format!(
                    "is {}, must be in [1, {MAX_ENTRIES_PER_FILE}]",
                    cfg.entries_per_file
                ),
            });
        }
        let geo = Self {
            slots: cfg.slots_per_file,
            capacity: cfg.entries_per_file,
        };
        if geo.file_len().is_none() {
            return Err(StoreError::Config {
                key: "index.slots_per_file",
                reason: "slots and entries make a file larger than the address space".to_owned(),
            });
        }
        Ok(geo)
    }

    /// Reads a geometry from header words, if they are plausible.
    fn from_words(slots: u64, capacity: u64) -> Option<Self> {
        let slots = u32::try_from(slots).ok().filter(|s| *s > 0)?;
        let capacity = u32::try_from(capacity)
            .ok()
            .filter(|c| *c > 0 && *c <= MAX_ENTRIES_PER_FILE)?;
        let geo = Self { slots, capacity };
        geo.file_len().map(|_| geo)
    }

    fn atomic_prefix(&self) -> usize {
        HEADER_BYTES + 8 * self.slots as usize
    }

    fn file_len(&self) -> Option<usize> {
        (self.capacity as usize)
            .checked_mul(ENTRY_SIZE)?
            .checked_add(self.atomic_prefix())
    }

    fn entry_pos(&self, idx: u32) -> usize {
        self.atomic_prefix() + idx as usize * ENTRY_SIZE
    }

    fn slot_of(&self, hash: u64) -> usize {
        (hash % u64::from(self.slots)) as usize
    }

    fn slot_pos(&self, slot: usize) -> usize {
        HEADER_BYTES + 8 * slot
    }
}

fn seal_word(count: u32) -> u64 {
    (SEAL_TAG << 32) | u64::from(count)
}

/// The sealed entry count, if `word` is a valid seal for a file of `capacity` entries.
pub(crate) fn decode_seal(word: u64, capacity: u32) -> Option<u32> {
    if word >> 32 != SEAL_TAG {
        return None;
    }
    u32::try_from(word & 0xFFFF_FFFF)
        .ok()
        .filter(|c| *c <= capacity)
}

/// One decoded entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) hash: u64,
    pub(crate) phys: i64,
    pub(crate) ts: i64,
    /// (index + 1) of the previous entry of the same slot, 0 = none.
    pub(crate) prev: u32,
    pub(crate) last_of_record: bool,
}

pub(crate) fn entry_crc(idx: u32, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&idx.to_le_bytes()), body)
}

fn le_u64(b: &[u8; ENTRY_SIZE], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn le_u32(b: &[u8; ENTRY_SIZE], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

impl Entry {
    /// Encodes the entry to be stored at index `idx` (the index is covered by the CRC).
    pub(crate) fn encode(&self, idx: u32) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        b[0..8].copy_from_slice(&self.hash.to_le_bytes());
        b[8..16].copy_from_slice(&self.phys.to_le_bytes());
        b[16..24].copy_from_slice(&self.ts.to_le_bytes());
        let link = (self.prev & PREV_MASK)
            | if self.last_of_record {
                LAST_OF_RECORD
            } else {
                0
            };
        b[24..28].copy_from_slice(&link.to_le_bytes());
        let crc = entry_crc(idx, &b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the entry stored at index `idx`; `None` if it is all zeros (never written or
    /// lost), has the wrong length, or fails its CRC.
    pub(crate) fn decode(bytes: &[u8], idx: u32) -> Option<Self> {
        let b: &[u8; ENTRY_SIZE] = bytes.try_into().ok()?;
        if b.iter().all(|x| *x == 0) || le_u32(b, 28) != entry_crc(idx, &b[..28]) {
            return None;
        }
        let link = le_u32(b, 24);
        Some(Self {
            hash: le_u64(b, 0),
            phys: le_u64(b, 8) as i64,
            ts: le_u64(b, 16) as i64,
            prev: link & PREV_MASK,
            last_of_record: link & LAST_OF_RECORD != 0,
        })
    }
}

/// One open index file.
struct IndexFile {
    /// Physical offset of entry 0; the file's name.
    first_phys: i64,
    geo: Geometry,
    map: Arc<MappedFile>,
    /// Set after appends or in-place updates, cleared by a flush.
    dirty: AtomicBool,
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
    fn word(&self, pos: usize) -> &AtomicU64 {
        self.map.atomic_u64(pos)
    }

    fn path(&self) -> &Path {
        self.map.path()
    }

    fn count(&self) -> u32 {
        let c = self.word(W_COUNT).load(Ordering::Acquire);
        u32::try_from(c).map_or(0, |c| c.min(self.geo.capacity))
    }

    fn sealed(&self) -> Option<u32> {
        decode_seal(self.word(W_SEAL).load(Ordering::Acquire), self.geo.capacity)
    }

    fn min_ts(&self) -> i64 {
        self.word(W_MIN_TS).load(Ordering::Acquire) as i64
    }

    fn max_ts(&self) -> i64 {
        self.word(W_MAX_TS).load(Ordering::Acquire) as i64
    }

    fn last_phys(&self) -> i64 {
        self.word(W_LAST_PHYS).load(Ordering::Acquire) as i64
    }

    fn head_word(&self, slot: usize) -> &AtomicU64 {
        self.word(self.geo.slot_pos(slot))
    }

    /// The slot's head link ((index + 1) of its newest entry, 0 = none).
    fn head(&self, slot: usize) -> u32 {
        u32::try_from(self.head_word(slot).load(Ordering::Acquire)).unwrap_or(0)
    }

    /// The published entry at `idx`, if it is readable and passes its CRC.
    fn entry(&self, idx: u32) -> Option<Entry> {
        let bytes = self.map.bytes(self.geo.entry_pos(idx), ENTRY_SIZE)?;
        Entry::decode(bytes, idx)
    }

    fn entry_or_corrupt(&self, idx: u32) -> Result<Entry> {
        self.entry(idx).ok_or_else(|| {
            StoreError::corrupt(
                self.geo.entry_pos(idx) as i64,
                format!("unreadable index entry {idx} in {}", self.path().display()),
            )
        })
    }

    /// Index of the first entry with a physical offset at or above `phys`, or `count()`.
    fn first_at_or_after(&self, phys: i64) -> Result<u32> {
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
    fn seal(&self) -> Result<()> {
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

/// What recovery decided about one file.
enum Recovered {
    /// Keep the file; later files are kept too.
    Keep(IndexFile),
    /// Keep the file's valid prefix (now sealed) and delete every later file.
    KeepAndDropLater(IndexFile),
    /// Delete this file and every later one.
    Drop,
}

/// The valid prefix of a file's entries, as found by [`scan_entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scan {
    /// Entries up to and including the last complete record.
    count: u32,
    min_ts: i64,
    max_ts: i64,
    /// Physical offset of the last complete record, -1 if none.
    last_phys: i64,
    /// Why the scan stopped before `limit`, with the index where it stopped.
    stop: Option<(u32, &'static str)>,
}

/// Scans the entries in `region` (the append region of a file) from index 0 up to `limit` and
/// returns the valid prefix; `heads` receives the slot heads of that prefix.
fn scan_entries(
    region: &[u8],
    geo: Geometry,
    first_phys: i64,
    limit: u32,
    heads: &mut Vec<u32>,
) -> Scan {
    heads.clear();
    heads.resize(geo.slots as usize, 0);
    let mut scan = Scan {
        count: 0,
        min_ts: i64::MAX,
        max_ts: i64::MIN,
        last_phys: -1,
        stop: None,
    };
    // Heads replaced by the entries of the record in progress, to undo them if it is cut off.
    let mut pending: Vec<(usize, u32)> = Vec::new();
    // (phys, ts) of the record in progress.
    let mut record: Option<(i64, i64)> = None;
    let limit = limit.min(geo.capacity);
    for idx in 0..limit {
        let pos = idx as usize * ENTRY_SIZE;
        let Some(bytes) = region.get(pos..pos + ENTRY_SIZE) else {
            scan.stop = Some((idx, "entry beyond the end of the file"));
            break;
        };
        let Some(e) = Entry::decode(bytes, idx) else {
            scan.stop = Some((idx, "entry is empty or fails its CRC"));
            break;
        };
        let slot = geo.slot_of(e.hash);
        // Heads only hold earlier indexes, so this also proves `prev <= idx`.
        if e.prev != heads[slot] {
            scan.stop = Some((idx, "entry does not link to its slot's previous entry"));
            break;
        }
        match record {
            None if idx == 0 && e.phys != first_phys => {
                scan.stop = Some((idx, "first entry does not match the file name"));
                break;
            }
            None if e.phys <= scan.last_phys => {
                scan.stop = Some((idx, "record offset does not increase"));
                break;
            }
            Some((phys, ts)) if e.phys != phys || e.ts != ts => {
                scan.stop = Some((idx, "entry disagrees with the rest of its record"));
                break;
            }
            _ => {}
        }
        pending.push((slot, heads[slot]));
        heads[slot] = idx + 1;
        if e.last_of_record {
            scan.count = idx + 1;
            scan.last_phys = e.phys;
            scan.min_ts = scan.min_ts.min(e.ts);
            scan.max_ts = scan.max_ts.max(e.ts);
            pending.clear();
            record = None;
        } else {
            record = Some((e.phys, e.ts));
        }
    }
    if !pending.is_empty() && scan.stop.is_none() {
        scan.stop = Some((limit, "record cut off"));
    }
    for (slot, old) in pending.into_iter().rev() {
        heads[slot] = old;
    }
    scan
}

/// Reads the geometry of an existing file from its header, falling back to `default` when the
/// header is unreadable but the size fits it. `None` if the file cannot be interpreted.
fn read_geometry(path: &Path, default: Geometry) -> Result<Option<Geometry>> {
    let mut file = File::open(path).map_err(StoreError::io("open index file", path))?;
    let len = file
        .metadata()
        .map_err(StoreError::io("stat index file", path))?
        .len();
    let mut header = [0u8; 24];
    match file.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(StoreError::io("read index header", path)(e)),
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&header[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w)
    };
    let fits = |g: &Geometry| g.file_len().is_some_and(|l| l as u64 == len);
    if word(0) == MAGIC
        && let Some(geo) = Geometry::from_words(word(1), word(2)).filter(fits)
    {
        return Ok(Some(geo));
    }
    if fits(&default) {
        warn!(path = %path.display(), "index header unreadable; assuming the configured geometry");
        return Ok(Some(default));
    }
    Ok(None)
}

/// Recovers one file; see the module docs.
fn recover_file(
    path: &Path,
    first_phys: i64,
    default_geo: Geometry,
    is_last: bool,
    prev_last_phys: i64,
    heads: &mut Vec<u32>,
) -> Result<Recovered> {
    let Some(geo) = read_geometry(path, default_geo)? else {
        warn!(path = %path.display(), "index file has an unknown size and no header; dropping it");
        return Ok(Recovered::Drop);
    };
    if first_phys <= prev_last_phys {
        warn!(
            path = %path.display(),
            prev_last_phys,
            "index file starts at or before the end of the previous one; dropping it"
        );
        return Ok(Recovered::Drop);
    }
    let len = geo.file_len().unwrap_or(0);
    let mut map = MappedFile::open(path, len, geo.atomic_prefix())?;
    map.advise_sequential();
    let seal = decode_seal(map.atomic_u64(W_SEAL).load(Ordering::Acquire), geo.capacity);
    let scan = scan_entries(
        map.recovery_bytes(),
        geo,
        first_phys,
        seal.unwrap_or(geo.capacity),
        heads,
    );
    // The scan is done: from here on the file is used for scattered slot reads and writes.
    map.advise_random();
    let damaged = match seal {
        Some(sealed) => scan.count < sealed,
        None => !is_last,
    };
    if let Some((at, reason)) = scan.stop {
        let msg = "index file scan stopped";
        if damaged {
            warn!(path = %path.display(), at, reason, valid = scan.count, ?seal, "{msg}");
        } else {
            debug!(path = %path.display(), at, reason, valid = scan.count, "{msg}");
        }
    }
    if scan.count == 0 {
        warn!(path = %path.display(), "index file holds no valid record; dropping it");
        return Ok(Recovered::Drop);
    }
    if scan.count < geo.capacity {
        map.zero_tail(geo.entry_pos(scan.count))?;
    }
    map.set_published(geo.entry_pos(scan.count));
    let file = IndexFile {
        first_phys,
        geo,
        map: Arc::new(map),
        dirty: AtomicBool::new(false),
    };
    // Heads on disk are not trusted; only changed words are stored, to keep clean pages clean.
    for (slot, head) in heads.iter().enumerate() {
        let w = file.head_word(slot);
        if w.load(Ordering::Relaxed) != u64::from(*head) {
            w.store(u64::from(*head), Ordering::Release);
        }
    }
    let words = [
        (W_MAGIC, MAGIC),
        (W_SLOTS, u64::from(geo.slots)),
        (W_CAPACITY, u64::from(geo.capacity)),
        (W_COUNT, u64::from(scan.count)),
        (W_MIN_TS, scan.min_ts as u64),
        (W_MAX_TS, scan.max_ts as u64),
        (W_LAST_PHYS, scan.last_phys as u64),
    ];
    for (pos, value) in words {
        let w = file.word(pos);
        if w.load(Ordering::Relaxed) != value {
            w.store(value, Ordering::Release);
        }
    }
    if damaged {
        // Resealing at the valid count makes the next recovery agree with this one.
        file.seal()?;
        return Ok(Recovered::KeepAndDropLater(file));
    }
    Ok(Recovered::Keep(file))
}

/// Index files in `dir`, sorted by name, as (first physical offset, path).
fn list_files(dir: &Path) -> Result<Vec<(i64, PathBuf)>> {
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

fn file_name(phys: i64) -> String {
    format!("{phys:020}")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("sync index directory", dir))
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("delete index file", path)(e)),
    }
}

impl IndexStore {
    /// Opens the index in `dir` (creating the directory if needed) and recovers every file as
    /// described in the module docs: valid prefixes are kept, slot heads and header words are
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::{Seek, SeekFrom, Write};

    use proptest::prelude::*;

    use super::*;

    const ALL: (i64, i64) = (i64::MIN, i64::MAX);

    fn cfg(slots: u32, entries: u32) -> IndexConfig {
        IndexConfig {
            slots_per_file: slots,
            entries_per_file: entries,
        }
    }

    fn open(dir: &Path, c: IndexConfig) -> IndexStore {
        IndexStore::open(dir, c).expect("open index")
    }

    fn put(store: &IndexStore, phys: i64, ts: i64, keys: &[&str]) {
        store
            .put_record(phys, ts, keys.iter().copied())
            .expect("put record");
    }

    fn all(store: &IndexStore, key: &str) -> Vec<i64> {
        store.query(key, usize::MAX, ALL.0, ALL.1).expect("query")
    }

    fn files_on_disk(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    /// File position of entry `idx` in a file with `slots` slots.
    fn entry_at(slots: u32, idx: u32) -> u64 {
        (HEADER_BYTES + 8 * slots as usize + ENTRY_SIZE * idx as usize) as u64
    }

    fn overwrite(path: &Path, pos: u64, bytes: &[u8]) {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open for corruption");
        f.seek(SeekFrom::Start(pos)).expect("seek");
        f.write_all(bytes).expect("corrupt");
    }

    fn flip_byte(path: &Path, pos: u64) {
        let mut b = fs::read(path).expect("read file");
        b[pos as usize] ^= 0x40;
        fs::write(path, b).expect("write file");
    }

    #[test]
    fn given_key_hash_when_computed_should_match_the_pinned_format() {
        // The hash is part of the file format: these values (computed independently from
        // the FNV-1a and murmur3 fmix64 definitions) must never change.
        let pinned = [
            ("", 0xefd0_1f60_ba99_2926_u64),
            ("a", 0x82a2_a958_a9be_ce5b),
            ("TopicTest#order-42", 0x7028_f9f4_2781_ec38),
        ];
        for (key, hash) in pinned {
            assert_eq!(
                key_hash(key),
                hash,
                "{key:?} hashes to {:#x}",
                key_hash(key)
            );
        }
    }

    #[test]
    fn given_entry_when_encoded_should_decode_only_at_its_own_index() {
        let e = Entry {
            hash: 0x0123_4567_89ab_cdef,
            phys: 1 << 40,
            ts: -5,
            prev: 7,
            last_of_record: true,
        };
        let b = e.encode(9);
        assert_eq!(Entry::decode(&b, 9), Some(e));
        assert_eq!(Entry::decode(&b, 10), None, "the CRC covers the index");
        assert_eq!(
            Entry::decode(&[0u8; ENTRY_SIZE], 0),
            None,
            "zeros are never an entry"
        );
        for i in 0..ENTRY_SIZE {
            let mut c = b;
            c[i] ^= 1;
            assert_eq!(
                Entry::decode(&c, 9),
                None,
                "flipped byte {i} must fail the CRC"
            );
        }
    }

    #[test]
    fn given_invalid_config_when_opened_should_fail_with_config_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [cfg(0, 10), cfg(10, 0), cfg(10, MAX_ENTRIES_PER_FILE + 1)] {
            let err = IndexStore::open(dir.path(), bad).expect_err("invalid config");
            assert!(matches!(err, StoreError::Config { .. }), "{err}");
        }
    }

    #[test]
    fn given_one_slot_when_keys_collide_should_return_only_matching_key_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), cfg(1, 100));
        put(&store, 0, 1, &["a"]);
        put(&store, 10, 2, &["b"]);
        put(&store, 20, 3, &["a", "b", "c"]);
        put(&store, 30, 4, &["c"]);
        put(&store, 40, 5, &["a"]);
        assert_eq!(all(&store, "a"), vec![40, 20, 0]);
        assert_eq!(all(&store, "b"), vec![20, 10]);
        assert_eq!(all(&store, "c"), vec![30, 20]);
        assert!(all(&store, "d").is_empty());
        assert_eq!(store.last_indexed(), 40);
    }

    #[test]
    fn given_records_over_time_when_queried_by_range_should_return_only_those_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Two records per file, so ranges also skip whole files.
        let store = open(dir.path(), cfg(3, 2));
        for i in 0..10 {
            put(&store, i * 10, 1000 * (i + 1), &["k"]);
        }
        assert_eq!(files_on_disk(dir.path()).len(), 5);
        let q = |b, e| store.query("k", 100, b, e).expect("query");
        assert_eq!(q(2000, 4000), vec![30, 20, 10], "bounds are inclusive");
        assert_eq!(q(2001, 3999), vec![20]);
        assert_eq!(q(9500, 20_000), vec![90]);
        assert!(q(0, 999).is_empty());
        assert!(q(4000, 2000).is_empty(), "empty range");
        assert_eq!(
            store.query("k", 2, ALL.0, ALL.1).expect("query"),
            vec![90, 80]
        );
        assert!(store.query("k", 0, ALL.0, ALL.1).expect("query").is_empty());
    }

    #[test]
    fn given_out_of_order_timestamps_when_queried_should_filter_each_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), cfg(2, 100));
        put(&store, 0, 500, &["k"]);
        put(&store, 10, 100, &["k"]); // the clock went back
        put(&store, 20, 300, &["k"]);
        assert_eq!(store.query("k", 10, 100, 300).expect("query"), vec![20, 10]);
        assert_eq!(store.query("k", 10, 400, 600).expect("query"), vec![0]);
    }

    #[test]
    fn given_small_files_when_records_exceed_capacity_should_roll_and_seal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), cfg(2, 3));
        // Two keys per record: a second record never fits, so every record gets a file.
        for i in 0..5 {
            put(&store, 100 + i, i, &["id", &format!("k{i}")]);
        }
        assert_eq!(
            files_on_disk(dir.path()),
            (100..105).map(file_name).collect::<Vec<_>>()
        );
        assert_eq!(all(&store, "id"), vec![104, 103, 102, 101, 100]);
        assert_eq!(all(&store, "k3"), vec![103]);
        let files = store.files.read().clone();
        for f in &files[..4] {
            assert_eq!(
                f.sealed(),
                Some(2),
                "rolled files are sealed at their count"
            );
        }
        assert_eq!(files[4].sealed(), None, "the active file takes appends");
    }

    #[test]
    fn given_repeated_keys_and_redispatch_when_queried_should_return_each_offset_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), cfg(1, 100));
        put(&store, 0, 1, &["k", "k", "m"]);
        put(&store, 0, 1, &["k"]); // re-dispatch: ignored
        put(&store, 10, 2, &["k"]);
        put(&store, 5, 2, &["k"]); // below last_indexed: ignored
        put(&store, 10, 2, &["x"]); // re-dispatch of the last record: ignored
        assert_eq!(
            store.files.read()[0].count(),
            3,
            "k, m, k: duplicates are not stored"
        );
        assert_eq!(all(&store, "k"), vec![10, 0]);
        assert!(all(&store, "x").is_empty());
        assert_eq!(store.query("k", 1, ALL.0, ALL.1).expect("query"), vec![10]);
        assert_eq!(store.last_indexed(), 10);
    }

    #[test]
    fn given_record_with_more_keys_than_a_file_when_put_should_index_the_first_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), cfg(4, 2));
        put(&store, 0, 1, &["a", "b", "c"]);
        assert_eq!(all(&store, "a"), vec![0]);
        assert_eq!(all(&store, "b"), vec![0]);
        assert!(all(&store, "c").is_empty());
        assert_eq!(store.last_indexed(), 0);
    }

    #[test]
    fn given_records_without_keys_when_reopened_should_fall_back_to_last_record_with_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path(), cfg(4, 10));
            assert_eq!(store.last_indexed(), -1);
            put(&store, 0, 1, &["a"]);
            put(&store, 10, 1, &[]);
            assert_eq!(store.last_indexed(), 10);
        }
        let store = open(dir.path(), cfg(4, 10));
        assert_eq!(store.last_indexed(), 0);
    }

    #[test]
    fn given_store_when_dropped_and_reopened_should_keep_entries_and_take_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(3, 4);
        {
            let store = open(dir.path(), c);
            for i in 0..10 {
                put(
                    &store,
                    i * 10,
                    i,
                    &["all", if i % 2 == 0 { "even" } else { "odd" }],
                );
            }
            store.flush().expect("flush");
        }
        let store = open(dir.path(), c);
        assert_eq!(store.last_indexed(), 90);
        assert_eq!(
            all(&store, "all"),
            (0..10).rev().map(|i| i * 10).collect::<Vec<_>>()
        );
        assert_eq!(all(&store, "odd"), vec![90, 70, 50, 30, 10]);
        put(&store, 100, 10, &["all", "even"]);
        assert_eq!(all(&store, "even"), vec![100, 80, 60, 40, 20, 0]);
        drop(store);
        let store = open(dir.path(), c);
        assert_eq!(store.last_indexed(), 100);
        assert_eq!(all(&store, "even"), vec![100, 80, 60, 40, 20, 0]);
        assert_eq!(all(&store, "all").len(), 11);
    }

    #[test]
    fn given_truncate_in_middle_of_file_when_putting_again_should_keep_chains_correct() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(2, 100);
        let store = open(dir.path(), c);
        let keys = ["a", "b", "c"];
        for i in 0..10 {
            put(&store, i * 10, i, &[keys[i as usize % 3]]);
        }
        store.truncate(55).expect("truncate");
        assert_eq!(store.last_indexed(), 50);
        assert_eq!(all(&store, "a"), vec![30, 0]);
        assert_eq!(all(&store, "b"), vec![40, 10]);
        assert_eq!(all(&store, "c"), vec![50, 20]);
        let file = Arc::clone(&store.files.read()[0]);
        assert_eq!(file.count(), 6);
        for slot in 0..2 {
            assert!(file.head(slot) <= 6, "no head points at a dropped entry");
        }
        // The commitlog continues at the cut with different records.
        put(&store, 55, 20, &["a", "c"]);
        put(&store, 65, 21, &["b"]);
        let expect = |s: &IndexStore| {
            assert_eq!(all(s, "a"), vec![55, 30, 0]);
            assert_eq!(all(s, "b"), vec![65, 40, 10]);
            assert_eq!(all(s, "c"), vec![55, 50, 20]);
            assert_eq!(s.last_indexed(), 65);
        };
        expect(&store);
        assert_eq!(files_on_disk(dir.path()), vec![file_name(0), file_name(55)]);
        drop((store, file));
        let store = open(dir.path(), c);
        expect(&store);
        assert_eq!(store.files.read()[0].count(), 6, "recovery honours the cut");
        store
            .truncate(1000)
            .expect("truncate beyond the end is a no-op");
        expect(&store);
    }

    #[test]
    fn given_truncate_before_later_files_when_called_should_delete_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(2, 2);
        let store = open(dir.path(), c);
        for i in 0..6 {
            put(&store, i * 10, i, &["k"]);
        }
        assert_eq!(files_on_disk(dir.path()).len(), 3);
        store.truncate(20).expect("truncate");
        assert_eq!(files_on_disk(dir.path()), vec![file_name(0)]);
        assert_eq!(all(&store, "k"), vec![10, 0]);
        assert_eq!(store.last_indexed(), 10);
        store.truncate(0).expect("truncate everything");
        assert!(files_on_disk(dir.path()).is_empty());
        assert_eq!(store.last_indexed(), -1);
        assert!(all(&store, "k").is_empty());
        put(&store, 0, 1, &["k"]);
        drop(store);
        let store = open(dir.path(), c);
        assert_eq!(all(&store, "k"), vec![0]);
    }

    #[test]
    fn given_old_files_when_delete_before_should_delete_whole_expired_files_but_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(2, 2);
        let store = open(dir.path(), c);
        for i in 0..6 {
            put(&store, i * 10, i, &["k"]);
        }
        assert_eq!(store.delete_before(0).expect("delete"), 0);
        assert_eq!(
            store.delete_before(15).expect("delete"),
            1,
            "file 0 ends at 10"
        );
        assert_eq!(
            store.delete_before(25).expect("delete"),
            0,
            "file 20 ends at 30"
        );
        assert_eq!(all(&store, "k"), vec![50, 40, 30, 20]);
        assert_eq!(store.delete_before(i64::MAX).expect("delete"), 1);
        assert_eq!(files_on_disk(dir.path()), vec![file_name(40)]);
        assert_eq!(all(&store, "k"), vec![50, 40]);
        drop(store);
        let store = open(dir.path(), c);
        assert_eq!(store.last_indexed(), 50);
        assert_eq!(all(&store, "k"), vec![50, 40]);
    }

    #[test]
    fn given_zeroed_page_in_middle_of_entries_when_reopened_should_keep_prefix_and_fall_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(4, 1000);
        let key = |i: i64| format!("k{}", i % 7);
        {
            let store = open(dir.path(), c);
            for i in 0..400 {
                put(&store, i * 10, i, &[&key(i)]);
            }
        }
        // Lose the page holding entry 200: entries overlapping it are gone, later ones remain.
        let path = dir.path().join(file_name(0));
        let page = entry_at(4, 200) / 4096 * 4096;
        overwrite(&path, page, &[0u8; 4096]);
        let first_lost = ((page - entry_at(4, 0)) / ENTRY_SIZE as u64) as i64;
        let store = open(dir.path(), c);
        assert_eq!(store.last_indexed(), (first_lost - 1) * 10);
        for k in 0..7 {
            let got = all(&store, &format!("k{k}"));
            let want: Vec<i64> = (0..first_lost)
                .rev()
                .filter(|i| i % 7 == k)
                .map(|i| i * 10)
                .collect();
            assert_eq!(got, want, "key k{k}");
        }
        // Re-dispatch past the lost page, but not to the end: the stale entries after it are
        // identical to what re-dispatch would write, so only the zeroed tail stops them from
        // coming back and claiming records that were not dispatched again.
        let redone = first_lost + 150;
        assert!(redone < 400 && entry_at(4, redone as u32) > page + 4096);
        for i in first_lost..redone {
            put(&store, i * 10, i, &[&key(i)]);
        }
        drop(store);
        let store = open(dir.path(), c);
        assert_eq!(store.last_indexed(), (redone - 1) * 10);
        for k in 0..7 {
            let got = all(&store, &format!("k{k}"));
            let want: Vec<i64> = (0..redone)
                .rev()
                .filter(|i| i % 7 == k)
                .map(|i| i * 10)
                .collect();
            assert_eq!(got, want, "key k{k}");
        }
    }

    #[test]
    fn given_flipped_byte_when_reopened_should_drop_from_that_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(3, 200);
        {
            let store = open(dir.path(), c);
            for i in 0..100 {
                put(&store, i * 10, i, &["k"]);
            }
        }
        flip_byte(&dir.path().join(file_name(0)), entry_at(3, 50) + 9);
        let store = open(dir.path(), c);
        assert_eq!(store.last_indexed(), 490);
        assert_eq!(
            all(&store, "k"),
            (0..50).rev().map(|i| i * 10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn given_cut_off_record_when_reopened_should_drop_the_whole_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(8, 100);
        {
            let store = open(dir.path(), c);
            put(&store, 0, 1, &["id0", "a"]);
            put(&store, 10, 2, &["id1", "a", "b"]);
        }
        // The record at 10 occupies entries 2..5; lose its last entry only.
        overwrite(
            &dir.path().join(file_name(0)),
            entry_at(8, 4),
            &[0u8; ENTRY_SIZE],
        );
        let store = open(dir.path(), c);
        assert_eq!(store.last_indexed(), 0);
        assert_eq!(all(&store, "a"), vec![0]);
        assert!(all(&store, "id1").is_empty());
        assert!(all(&store, "b").is_empty());
        put(&store, 10, 2, &["id1", "a", "b"]);
        assert_eq!(all(&store, "a"), vec![10, 0]);
        assert_eq!(all(&store, "b"), vec![10]);
    }

    #[test]
    fn given_lost_header_and_slot_heads_when_reopened_should_rebuild_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(16, 100);
        {
            let store = open(dir.path(), c);
            for i in 0..30 {
                put(&store, i * 10, i, &[&format!("k{}", i % 4)]);
            }
        }
        let path = dir.path().join(file_name(0));
        overwrite(&path, 0, &vec![0u8; entry_at(16, 0) as usize]);
        let store = open(dir.path(), c);
        assert_eq!(store.last_indexed(), 290);
        assert_eq!(
            all(&store, "k1"),
            (0..30)
                .rev()
                .filter(|i| i % 4 == 1)
                .map(|i| i * 10)
                .collect::<Vec<_>>()
        );
        put(&store, 300, 30, &["k1"]);
        assert_eq!(all(&store, "k1")[..2], [300, 290]);
    }

    #[test]
    fn given_heads_pointing_at_wrong_entries_when_reopened_should_ignore_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(1, 100);
        {
            let store = open(dir.path(), c);
            for i in 0..10 {
                put(&store, i * 10, i, &["k"]);
            }
        }
        // Head of slot 0 claims entry 50, which was never written.
        overwrite(
            &dir.path().join(file_name(0)),
            HEADER_BYTES as u64,
            &51u64.to_ne_bytes(),
        );
        let store = open(dir.path(), c);
        assert_eq!(all(&store, "k").len(), 10);
    }

    #[test]
    fn given_valid_entry_with_wrong_chain_link_when_reopened_should_stop_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(1, 100);
        {
            let store = open(dir.path(), c);
            for i in 0..5 {
                put(&store, i * 10, i, &["k"]);
            }
        }
        // A CRC-valid entry after the last one, but its link skips the slot's chain (as a
        // stale entry from an older history would).
        let stale = Entry {
            hash: key_hash("k"),
            phys: 50,
            ts: 5,
            prev: 0,
            last_of_record: true,
        };
        overwrite(
            &dir.path().join(file_name(0)),
            entry_at(1, 5),
            &stale.encode(5),
        );
        let store = open(dir.path(), c);
        assert_eq!(store.last_indexed(), 40);
        assert_eq!(all(&store, "k"), vec![40, 30, 20, 10, 0]);
    }

    #[test]
    fn given_damaged_earlier_file_when_reopened_should_delete_later_files_and_fall_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(2, 10);
        {
            let store = open(dir.path(), c);
            for i in 0..30 {
                put(&store, i * 10, i, &["k"]);
            }
        }
        assert_eq!(files_on_disk(dir.path()).len(), 3);
        flip_byte(&dir.path().join(file_name(0)), entry_at(2, 5));
        let store = open(dir.path(), c);
        assert_eq!(files_on_disk(dir.path()), vec![file_name(0)]);
        assert_eq!(store.last_indexed(), 40);
        assert_eq!(all(&store, "k"), vec![40, 30, 20, 10, 0]);
        assert_eq!(store.files.read()[0].sealed(), Some(5));
        // Re-dispatch from the loss point rebuilds everything.
        for i in 5..30 {
            put(&store, i * 10, i, &["k"]);
        }
        drop(store);
        let store = open(dir.path(), c);
        assert_eq!(store.last_indexed(), 290);
        assert_eq!(
            all(&store, "k"),
            (0..30).rev().map(|i| i * 10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn given_empty_or_foreign_files_when_reopened_should_drop_or_ignore_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(2, 4);
        {
            let store = open(dir.path(), c);
            for i in 0..6 {
                put(&store, i * 10, i, &["k"]);
            }
        }
        // The newest file lost its only flushed page; a stray file is not ours.
        let newest = dir.path().join(file_name(40));
        overwrite(&newest, 0, &vec![0u8; entry_at(2, 4) as usize]);
        fs::write(dir.path().join("README"), b"not an index file").expect("write");
        let store = open(dir.path(), c);
        assert_eq!(store.last_indexed(), 30);
        assert_eq!(
            files_on_disk(dir.path()),
            vec![file_name(0), "README".to_owned()]
        );
        // The first file was sealed when it rolled, so the next record starts a new file.
        put(&store, 40, 4, &["k"]);
        assert_eq!(all(&store, "k"), vec![40, 30, 20, 10, 0]);
    }

    #[test]
    fn given_changed_config_when_reopened_should_read_old_files_with_their_geometry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = cfg(4, 8);
        let new = cfg(16, 32);
        {
            let store = open(dir.path(), old);
            for i in 0..10 {
                put(&store, i * 10, i, &["k"]);
            }
        }
        let store = open(dir.path(), new);
        assert_eq!(all(&store, "k").len(), 10);
        // The old active file (8 entries, 2 used) fills up before a new-geometry file starts.
        for i in 10..20 {
            put(&store, i * 10, i, &["k"]);
        }
        let files = store.files.read().clone();
        assert_eq!(
            files.iter().map(|f| f.geo.capacity).collect::<Vec<_>>(),
            vec![8, 8, 32]
        );
        let len = fs::metadata(dir.path().join(file_name(160)))
            .expect("stat")
            .len();
        assert_eq!(
            len,
            Geometry::from_config(&new)
                .expect("geo")
                .file_len()
                .expect("len") as u64
        );
        drop((store, files));
        let store = open(dir.path(), old);
        assert_eq!(
            all(&store, "k"),
            (0..20).rev().map(|i| i * 10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn given_concurrent_queries_when_putting_should_see_only_whole_valid_results() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<IndexStore>();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(dir.path(), cfg(3, 16)));
        let writer = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..2000i64 {
                    let k = format!("k{}", i % 5);
                    put(&store, i * 10, i, &[&format!("id{i}"), &k]);
                }
            })
        };
        let mut checks = 0;
        while !writer.is_finished() || checks == 0 {
            for k in 0..5i64 {
                let got = all(&store, &format!("k{k}"));
                assert!(
                    got.windows(2).all(|w| w[0] > w[1]),
                    "newest first, no duplicates"
                );
                assert!(
                    got.iter().all(|p| (p / 10) % 5 == k),
                    "only records with the key"
                );
                if let Some(newest) = got.first() {
                    // Every older record with the key is visible too.
                    assert_eq!(got.len() as i64, newest / 10 / 5 + 1, "key k{k}");
                }
            }
            checks += 1;
        }
        writer.join().expect("writer thread");
        assert_eq!(all(&store, "k0").len(), 400);
        assert_eq!(all(&store, "id1999"), vec![19990]);
    }

    /// Keys the property test draws from.
    const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

    #[derive(Debug, Clone)]
    enum Op {
        Put {
            gap: i64,
            ts: i64,
            keys: Vec<usize>,
        },
        Restart,
        Truncate {
            back: usize,
        },
        DeleteBefore {
            at: usize,
        },
        Query {
            key: usize,
            lo: i64,
            hi: i64,
            max: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (1..40i64, 0..100i64, prop::collection::vec(0..KEYS.len(), 0..4))
                .prop_map(|(gap, ts, keys)| Op::Put { gap, ts, keys }),
            1 => Just(Op::Restart),
            1 => (0..8usize).prop_map(|back| Op::Truncate { back }),
            1 => (0..64usize).prop_map(|at| Op::DeleteBefore { at }),
            2 => (0..KEYS.len(), 0..100i64, 0..100i64, 1..6usize)
                .prop_map(|(key, lo, hi, max)| Op::Query { key, lo, hi, max }),
        ]
    }

    /// The model: every record put and not truncated, in offset order.
    #[derive(Default)]
    struct Model {
        records: Vec<(i64, i64, BTreeSet<usize>)>,
        next_phys: i64,
        /// Records below this may have been deleted by retention.
        floor: i64,
    }

    impl Model {
        fn expected(&self, key: usize, lo: i64, hi: i64) -> Vec<i64> {
            self.records
                .iter()
                .rev()
                .filter(|(_, ts, keys)| keys.contains(&key) && (lo..=hi).contains(ts))
                .map(|(phys, _, _)| *phys)
                .collect()
        }

        fn last_with_keys(&self) -> i64 {
            self.records
                .iter()
                .rev()
                .find(|(_, _, keys)| !keys.is_empty())
                .map_or(-1, |(phys, _, _)| *phys)
        }

        fn check_last_indexed(&self, actual: i64) {
            let exact = self.last_with_keys();
            assert!(
                actual == exact || (actual == -1 && exact < self.floor),
                "last_indexed {actual}, model {exact}, floor {}",
                self.floor
            );
        }

        fn check_query(&self, got: &[i64], key: usize, lo: i64, hi: i64, max: usize) {
            let want = self.expected(key, lo, hi);
            assert!(got.windows(2).all(|w| w[0] > w[1]), "newest first: {got:?}");
            assert!(got.len() <= max);
            let present: Vec<i64> = want.iter().copied().filter(|p| *p >= self.floor).collect();
            if present.len() == want.len() {
                let n = want.len().min(max);
                assert_eq!(got, &want[..n], "key {key} [{lo}, {hi}] max {max}");
            } else {
                assert!(
                    got.iter().all(|p| want.contains(p)),
                    "{got:?} not in {want:?}"
                );
                let n = present.len().min(max);
                assert_eq!(&got[..n], &present[..n], "key {key} [{lo}, {hi}] max {max}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn given_random_operations_when_compared_with_a_model_should_agree(
            ops in prop::collection::vec(op(), 1..80),
            slots in 1..5u32,
            entries in 2..7u32,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let c = cfg(slots, entries);
            let mut store = open(dir.path(), c);
            let mut model = Model::default();
            for op in ops {
                match op {
                    Op::Put { gap, ts, keys } => {
                        let phys = model.next_phys;
                        model.next_phys += gap;
                        let names: Vec<&str> = keys.iter().map(|k| KEYS[*k]).collect();
                        put(&store, phys, ts, &names);
                        prop_assert_eq!(store.last_indexed(), phys);
                        // A record with more keys than a file holds keeps its first keys.
                        let set: BTreeSet<usize> =
                            keys.into_iter().take(entries as usize).collect();
                        model.records.push((phys, ts, set));
                    }
                    Op::Restart => {
                        drop(store);
                        store = open(dir.path(), c);
                        model.check_last_indexed(store.last_indexed());
                    }
                    Op::Truncate { back } => {
                        let n = model.records.len();
                        let end = if back == 0 || n == 0 {
                            model.next_phys
                        } else {
                            model.records[n.saturating_sub(back)].0
                        }
                        .max(model.floor);
                        store.truncate(end).expect("truncate");
                        model.records.retain(|(phys, _, _)| *phys < end);
                        model.next_phys = end;
                        model.check_last_indexed(store.last_indexed());
                    }
                    Op::DeleteBefore { at } => {
                        if let Some((phys, _, _)) = model.records.get(at) {
                            store.delete_before(*phys).expect("delete before");
                            model.floor = model.floor.max(*phys);
                        }
                    }
                    Op::Query { key, lo, hi, max } => {
                        let got = store.query(KEYS[key], max, lo, hi).expect("query");
                        model.check_query(&got, key, lo, hi, max);
                    }
                }
                for (key, name) in KEYS.iter().enumerate() {
                    let got = all(&store, name);
                    model.check_query(&got, key, ALL.0, ALL.1, usize::MAX);
                }
            }
        }
    }
}
