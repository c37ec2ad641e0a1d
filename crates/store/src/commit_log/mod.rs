//! The commitlog: every topic's messages, appended to one log of fixed-size segment files.
//!
//! ```text
//! commitlog/00000000000000000000   segment 0: physical offsets [0, S)
//! commitlog/00000000001073741824   segment 1: [S, 2S)          (S = segment size)
//! ```
//!
//! A segment holds whole records (see [`crate::record`]); a record never spans two segments.
//! When the next record does not fit, the rest of the segment is covered by a blank marker
//! (or left as fewer than 8 zero bytes) and appends continue at the next segment's start.
//!
//! # Layout
//! - this file: the [`CommitLog`] type, its shared state (segments, append state, positions)
//!   and accessors;
//! - `recovery`: opening the log and the recovery scan ([`ScanReport`]);
//! - `append`: local appends ([`AppendResult`]);
//! - `read`: reading a record, walking the log;
//! - `segments`: rolling, creating, preparing and populating segments, flushing, deleting
//!   old segments;
//! - `replica`: raw-chunk verification ([`replica::verify_raw_chunk`]) and the replica
//!   append and master read ([`RawAppended`], [`RawChunk`]).
//!
//! Invariants (each submodule's docs add its own):
//! - Appends are serialized by one lock; a batch is written contiguously under one
//!   acquisition, and its records say how many follow (`batch_left`), so recovery keeps or
//!   drops a batch whole.
//! - `write_pos` only moves forward while the store runs, and every byte below it belongs to a
//!   complete, CRC-protected record or blank marker.
//! - Segment files are never shrunk or rewritten below `write_pos`; retention deletes whole
//!   segments from the front.

mod append;
mod read;
mod recovery;
mod replica;
mod segments;

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

use crate::error::{Result, StoreError};
use crate::mapped_file::{MappedFile, Writer};

pub use append::AppendResult;
pub(crate) use recovery::ScanReport;
// The fuzz entry point for replica chunks calls the verification directly.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use replica::verify_raw_chunk;
pub use replica::{RawAppended, RawChunk};

#[derive(Clone)]
pub(crate) struct Segment {
    pub start: i64,
    pub file: Arc<MappedFile>,
}

struct AppendState {
    writer: Writer,
    active_start: i64,
    queue_offsets: HashMap<String, HashMap<i32, i64>>,
    last_store_ts: i64,
}

struct Prepared {
    start: i64,
    writer: Writer,
}

pub(crate) struct CommitLog {
    dir: PathBuf,
    segment_size: usize,
    store_host: SocketAddr,
    prefault: bool,
    segments: RwLock<VecDeque<Segment>>,
    append: Mutex<AppendState>,
    prepared: Mutex<Option<Prepared>>,
    active_start: AtomicI64,
    write_pos: AtomicI64,
    min_pos: AtomicI64,
    /// Log offset up to which the pages ahead of the write position were populated.
    populated: AtomicI64,
}

/// How far ahead of the write position [`CommitLog::populate_ahead`] keeps pages mapped.
pub(crate) const POPULATE_WINDOW: i64 = 4 << 20;

fn segment_name(start: i64) -> String {
    format!("{start:020}")
}

/// Creates `dir` holding one empty segment that starts at `start` (a multiple of the segment
/// size), for a log that begins there.
pub(crate) fn create_empty_log(dir: &Path, segment_size: usize, start: i64) -> Result<()> {
    fs::create_dir_all(dir).map_err(StoreError::io("create commitlog dir", dir))?;
    MappedFile::create(&dir.join(segment_name(start)), segment_size, 0)?;
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl CommitLog {
    pub(crate) fn segment_size(&self) -> usize {
        self.segment_size
    }

    /// One past the last byte of the last complete record.
    pub(crate) fn write_pos(&self) -> i64 {
        self.write_pos.load(Ordering::Acquire)
    }

    /// Start of the oldest segment still stored.
    pub(crate) fn min_pos(&self) -> i64 {
        self.min_pos.load(Ordering::Acquire)
    }

    /// Sets the next logical offset of each (topic, queue); recovery calls this once the
    /// consume queues are rebuilt.
    pub(crate) fn set_queue_offsets(&self, offsets: HashMap<String, HashMap<i32, i64>>) {
        self.append.lock().queue_offsets = offsets;
    }
}
