//! The on-disk format of an index file: header words, slot table and entries, their
//! encoding and the key hash. Everything here is part of the format.
//!
//!
//! A file is named after the physical offset of its first entry, as 20 zero-padded decimal
//! digits, so sorting names sorts files. It is a [`MappedFile`](crate::mapped_file::MappedFile) whose atomic prefix holds a
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

use crate::error::{Result, StoreError};

/// Header word 0: "CMTIDX01".
pub(super) const MAGIC: u64 = u64::from_be_bytes(*b"CMTIDX01");
/// Byte positions of the header words.
pub(super) const W_MAGIC: usize = 0;
pub(super) const W_SLOTS: usize = 8;
pub(super) const W_CAPACITY: usize = 16;
pub(super) const W_SEAL: usize = 24;
pub(super) const W_COUNT: usize = 32;
pub(super) const W_MIN_TS: usize = 40;
pub(super) const W_MAX_TS: usize = 48;
pub(super) const W_LAST_PHYS: usize = 56;
pub(super) const HEADER_BYTES: usize = 64;
/// Upper half of a seal word; the lower half is the sealed entry count.
pub(super) const SEAL_TAG: u64 = 0x5EA1_ED1D;

pub(super) const ENTRY_SIZE: usize = 32;
/// Link bit marking the last entry of a record.
pub(super) const LAST_OF_RECORD: u32 = 1 << 31;
/// Link bits holding (index + 1) of the previous entry in the chain.
pub(super) const PREV_MASK: u32 = LAST_OF_RECORD - 1;
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
pub(super) struct Geometry {
    pub(super) slots: u32,
    pub(super) capacity: u32,
}

impl Geometry {
    pub(super) fn from_config(cfg: &IndexConfig) -> Result<Self> {
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
    pub(super) fn from_words(slots: u64, capacity: u64) -> Option<Self> {
        let slots = u32::try_from(slots).ok().filter(|s| *s > 0)?;
        let capacity = u32::try_from(capacity)
            .ok()
            .filter(|c| *c > 0 && *c <= MAX_ENTRIES_PER_FILE)?;
        let geo = Self { slots, capacity };
        geo.file_len().map(|_| geo)
    }

    pub(super) fn atomic_prefix(&self) -> usize {
        HEADER_BYTES + 8 * self.slots as usize
    }

    pub(super) fn file_len(&self) -> Option<usize> {
        (self.capacity as usize)
            .checked_mul(ENTRY_SIZE)?
            .checked_add(self.atomic_prefix())
    }

    pub(super) fn entry_pos(&self, idx: u32) -> usize {
        self.atomic_prefix() + idx as usize * ENTRY_SIZE
    }

    pub(super) fn slot_of(&self, hash: u64) -> usize {
        (hash % u64::from(self.slots)) as usize
    }

    pub(super) fn slot_pos(&self, slot: usize) -> usize {
        HEADER_BYTES + 8 * slot
    }
}

pub(super) fn seal_word(count: u32) -> u64 {
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

pub(super) fn le_u64(b: &[u8; ENTRY_SIZE], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

pub(super) fn le_u32(b: &[u8; ENTRY_SIZE], at: usize) -> u32 {
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
