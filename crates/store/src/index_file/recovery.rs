//! Recovery of one index file on open.
//!
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
//! later file. A file with no valid record is deleted the same way. [`IndexStore::last_indexed`](super::IndexStore::last_indexed)
//! is then the physical offset of the last record that survived, which is at or before the
//! earliest loss point, and a dispatcher that re-dispatches from there rebuilds everything
//! that was lost. Entries above a sealed file's count are leftovers of [`IndexStore::truncate`](super::IndexStore::truncate)
//! and are dropped without counting as damage.
//!
//! Unknown file names in the directory are left alone (and logged).
//!
//! Cost: recovery reads every entry of every file (sequentially), plus one `fdatasync` per
//! file that is not full. A later optimization could trust sealed files, whose seal already
//! proves they were flushed whole.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{debug, warn};

use super::file::*;
use super::format::*;
use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;

/// What recovery decided about one file.
pub(super) enum Recovered {
    /// Keep the file; later files are kept too.
    Keep(IndexFile),
    /// Keep the file's valid prefix (now sealed) and delete every later file.
    KeepAndDropLater(IndexFile),
    /// Delete this file and every later one.
    Drop,
}

/// The valid prefix of a file's entries, as found by [`scan_entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Scan {
    /// Entries up to and including the last complete record.
    pub(super) count: u32,
    pub(super) min_ts: i64,
    pub(super) max_ts: i64,
    /// Physical offset of the last complete record, -1 if none.
    pub(super) last_phys: i64,
    /// Why the scan stopped before `limit`, with the index where it stopped.
    pub(super) stop: Option<(u32, &'static str)>,
}

/// Scans the entries in `region` (the append region of a file) from index 0 up to `limit` and
/// returns the valid prefix; `heads` receives the slot heads of that prefix.
pub(super) fn scan_entries(
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
pub(super) fn read_geometry(path: &Path, default: Geometry) -> Result<Option<Geometry>> {
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
pub(super) fn recover_file(
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
