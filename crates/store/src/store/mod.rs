//! [`MessageStore`]: the commitlog, consume queues and index behind one API, with the
//! background threads that keep them durable, dispatched and within their retention limits.
//!
//! ```text
//!  append ──► CommitLog ──(flusher: async interval | sync group commit)──► disk
//!                 │
//!                 └──(dispatcher)──► ConsumeQueue per (topic, queue) + IndexStore ──► Arrival
//!                                         │
//!   housekeeper: every checkpoint_interval flush CQs + index, then write the checkpoint
//!                every retention interval delete expired / over-watermark segments
//!   allocator:   create the next segment before the active one fills
//! ```
//!
//! Visibility: consumers read only dispatched records, and the dispatcher only goes as far as
//! the flush policy allows (see `dispatch`).
//!
//! # Layout
//! One job per module; each adds its part of `impl MessageStore` (the public API) and of
//! `impl Inner` (the state the background threads share), so this file holds only the two
//! structs, their shared types and the offset accessors.
//! - `open`: [`MessageStore::open`], [`MessageStore::open_truncated`], [`MessageStore::wipe`]:
//!   recovery orchestration and [`RecoveryReport`].
//! - `lifecycle`: starting and stopping the background threads; close, abandon, drop.
//! - `lock`: the data directory's lock file and [`Released`].
//! - `append`: local appends and their [`WriteGate`].
//! - `replication`: the byte-for-byte log copy of replicas and the epoch history.
//! - `flush`: making the log durable: the ASYNC interval flusher and the SYNC group commit.
//! - `dispatch`: the dispatcher that fills consume queues and the index (and the visibility
//!   rule).
//! - `read`: reads by commitlog offset, by queue offset, by time and through the index.
//! - `housekeeping`: the periodic checkpoint, and the thread that also runs retention.
//! - `retention`: disk usage watermarks and segment deletion ([`RetentionReport`]).
//! - `allocate`: the thread that prepares the next commitlog segment ahead of need.
//! - `signal`: the wake-up primitive the background threads wait on.
//!
//! Imports run one way: this file names its submodules; a submodule names its siblings only
//! for their types (`open` builds `Inner` from all of them), never back.

mod allocate;
mod append;
mod dispatch;
mod flush;
mod housekeeping;
mod lifecycle;
mod lock;
mod open;
mod read;
mod replication;
mod retention;
mod signal;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

pub use append::WriteGate;
pub use lock::Released;
pub use open::RecoveryReport;
pub use read::GetResult;
pub use retention::RetentionReport;

use crate::checkpoint::CheckpointFile;
use crate::commit_log::CommitLog;
use crate::config::StoreConfig;
use crate::consume_queue::ConsumeQueue;
use crate::epoch::EpochFile;
use crate::index_file::IndexStore;
use flush::GroupCommit;
use lock::DirLock;
use signal::Signal;

/// Offsets and sizes, for monitoring and tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// First commitlog offset still stored.
    pub min_offset: i64,
    /// End of the written commitlog.
    pub write_offset: i64,
    /// End of the durable commitlog.
    pub flushed_offset: i64,
    /// End of the dispatched commitlog.
    pub dispatched_offset: i64,
    /// Start offsets of the segment files.
    pub segments: Vec<i64>,
    /// `(topic, queue id, min offset, max offset)` of every consume queue.
    pub queues: Vec<(String, i32, i64, i64)>,
    /// Commitlog flushes done since open (one per group commit in SYNC mode).
    pub flushes: u64,
    /// Time spent in those flushes.
    pub flush_time: Duration,
}

type QueueMap = HashMap<String, HashMap<i32, Arc<ConsumeQueue>>>;

/// The state shared by the API and the background threads (each holds an `Arc`).
struct Inner {
    cfg: StoreConfig,
    log: CommitLog,
    queues: RwLock<QueueMap>,
    index: IndexStore,
    checkpoint: CheckpointFile,
    flushed: AtomicI64,
    dispatched: AtomicI64,
    shutdown: AtomicBool,
    group_commit: GroupCommit,
    dispatch_signal: Signal,
    dispatched_signal: Signal,
    /// Held by whoever walks the log into queues and index (the dispatcher thread, or an
    /// ASYNC appender dispatching its own records): one walker at a time, in log order.
    dispatch_lock: Mutex<()>,
    housekeeping: Signal,
    allocator: Signal,
    disk_full: AtomicBool,
    disk_used_bits: AtomicU64,
    last_disk_check_ms: AtomicI64,
    /// When the last "above the high watermark" warning was logged (ms; 0 = never).
    last_high_warning_ms: AtomicI64,
    dispatch_error: Mutex<Option<String>>,
    flushes: AtomicU64,
    flush_nanos: AtomicU64,
    gate: RwLock<WriteGate>,
    epochs: Mutex<EpochFile>,
    lock: DirLock,
}

/// The storage engine of one broker. Cheap to share behind an `Arc`; every method takes
/// `&self` and is safe to call from many threads.
pub struct MessageStore {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    recovery: RecoveryReport,
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore")
            .field("data_dir", &self.inner.cfg.data_dir)
            .field("write_offset", &self.inner.log.write_pos())
            .finish_non_exhaustive()
    }
}

impl MessageStore {
    /// End of the written commitlog (the next record's physical offset).
    pub fn write_offset(&self) -> i64 {
        self.inner.log.write_pos()
    }

    /// First commitlog offset still stored.
    pub fn min_physical_offset(&self) -> i64 {
        self.inner.log.min_pos()
    }

    /// End of the durable commitlog.
    pub fn flushed_offset(&self) -> i64 {
        self.inner.flushed.load(Ordering::Acquire)
    }

    /// End of the dispatched commitlog (consume queues and index are built up to here).
    pub fn dispatched_offset(&self) -> i64 {
        self.inner.dispatched.load(Ordering::Acquire)
    }

    /// Fraction of the store's disk in use at the last check (checked at most once a second
    /// by appends, and by every retention run).
    pub fn disk_used_ratio(&self) -> f64 {
        self.inner.disk_used()
    }

    /// The commitlog segment size this store was opened with.
    pub fn segment_size(&self) -> usize {
        self.inner.cfg.segment_size
    }

    /// Offsets, segments and queues.
    pub fn stats(&self) -> StoreStats {
        let inner = &self.inner;
        let mut queues: Vec<(String, i32, i64, i64)> = inner
            .queues
            .read()
            .iter()
            .flat_map(|(t, qs)| {
                qs.iter()
                    .map(|(q, cq)| (t.clone(), *q, cq.min_offset(), cq.max_offset()))
            })
            .collect();
        queues.sort();
        StoreStats {
            min_offset: inner.log.min_pos(),
            write_offset: inner.log.write_pos(),
            flushed_offset: inner.flushed.load(Ordering::Acquire),
            dispatched_offset: inner.dispatched.load(Ordering::Acquire),
            segments: inner.log.segment_starts(),
            queues,
            flushes: inner.flushes.load(Ordering::Relaxed),
            flush_time: Duration::from_nanos(inner.flush_nanos.load(Ordering::Relaxed)),
        }
    }
}
