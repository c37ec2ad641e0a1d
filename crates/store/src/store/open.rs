//! Opening a store: recovery after any stop, and wiping a replica's data.
//!
//! Recovery verifies the commitlog from the checkpoint (or the start), cuts a torn or corrupt
//! tail (keeping batches whole), drops consume-queue and index entries beyond the cut,
//! re-dispatches from there, flushes and writes a new checkpoint before any thread starts:
//! after `open` returns, queues and index never point past the valid end of the log.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::append::WriteGate;
use super::flush::GroupCommit;
use super::lock::{DirLock, lock_dir};
use super::signal::Signal;
use super::{Inner, MessageStore, QueueMap};
use crate::checkpoint::CheckpointFile;
use crate::commit_log::{self, CommitLog, ScanReport};
use crate::config::StoreConfig;
use crate::consume_queue::ConsumeQueue;
use crate::epoch::EpochFile;
use crate::error::{Result, StoreError};
use crate::index_file::{IndexConfig, IndexStore};

/// What recovery did when the store opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Whether a valid checkpoint was found.
    pub had_checkpoint: bool,
    /// Commitlog offset where verification started.
    pub scanned_from: i64,
    /// End of the valid commitlog.
    pub valid_end: i64,
    /// Records verified by CRC.
    pub records_verified: u64,
    /// Whether a torn or corrupt tail was cut.
    pub truncated: bool,
    /// Records re-dispatched into consume queues and the index.
    pub redispatched: u64,
    /// Time spent verifying the commitlog.
    pub scan_duration: Duration,
    /// Time spent re-dispatching into consume queues and the index.
    pub redispatch_duration: Duration,
    /// Time the whole open took.
    pub duration: Duration,
}

impl MessageStore {
    /// Opens the store in `cfg.data_dir`, creating it if needed, and recovers from whatever
    /// stop came before (clean shutdown, SIGKILL or power loss):
    ///
    /// 1. verifies the commitlog record by record from the checkpoint (or from the start if
    ///    there is none) and cuts a torn or corrupt tail, keeping batches whole;
    /// 2. drops consume-queue and index entries beyond the checkpoint's dispatch point (or
    ///    beyond the cut, if that is earlier);
    /// 3. re-dispatches the log from there, flushes everything and writes a new checkpoint;
    /// 4. starts the background threads.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another store has the directory open; [`StoreError::Layout`]
    /// for files that do not form a valid store; [`StoreError::Config`]; I/O errors.
    pub fn open(cfg: StoreConfig) -> Result<Self> {
        Self::open_inner(cfg, None)
    }

    /// Opens the store like [`MessageStore::open`], first cutting the commitlog before the
    /// first record that does not end at or below `end` (a replica dropping the tail its new
    /// master does not have; `end` is normally a record boundary). Consume queues, the index,
    /// the checkpoint and the epoch history follow the cut.
    ///
    /// # Errors
    /// As for [`MessageStore::open`].
    pub fn open_truncated(cfg: StoreConfig, end: i64) -> Result<Self> {
        Self::open_inner(cfg, Some(end.max(0)))
    }

    /// Deletes everything the store holds in `cfg.data_dir` (commitlog, consume queues, index,
    /// checkpoint, epoch history) and leaves an empty log that starts at `start_offset`, a
    /// multiple of the segment size: a replica that must copy its master's log from the
    /// master's first stored offset. The store must not be open.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if the store is open; [`StoreError::Config`] for an unaligned
    /// offset; I/O errors.
    pub fn wipe(cfg: &StoreConfig, start_offset: i64) -> Result<()> {
        cfg.validate()?;
        let seg = cfg.segment_size as i64;
        if start_offset < 0 || start_offset % seg != 0 {
            return Err(StoreError::Config {
                key: "start_offset",
                reason: format!(
                    "{start_offset} is not a multiple of the segment size {seg}: the log must \
                     start at a segment boundary"
                ),
            });
        }
        let dir = &cfg.data_dir;
        fs::create_dir_all(dir).map_err(StoreError::io("create data dir", dir))?;
        let _lock = lock_dir(dir)?;
        for sub in ["commitlog", "consumequeue", "index"] {
            let path = dir.join(sub);
            match fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove directory", &path)(e)),
            }
        }
        for file in ["checkpoint", "checkpoint.tmp"] {
            let path = dir.join(file);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove file", &path)(e)),
            }
        }
        EpochFile::open(dir)?.clear()?;
        commit_log::create_empty_log(&dir.join("commitlog"), cfg.segment_size, start_offset)?;
        crate::checkpoint::sync_dir(dir)?;
        tracing::warn!(dir = %dir.display(), start_offset, "store wiped");
        Ok(())
    }

    fn open_inner(cfg: StoreConfig, limit: Option<i64>) -> Result<Self> {
        let started = Instant::now();
        cfg.validate()?;
        let dir = cfg.data_dir.clone();
        fs::create_dir_all(&dir).map_err(StoreError::io("create data dir", &dir))?;
        let lock = lock_dir(&dir)?;
        let checkpoint = CheckpointFile::new(&dir);
        let cp = checkpoint.load()?;
        let mut epochs = EpochFile::open(&dir)?;
        let mut scan_from = cp.map(|c| c.commitlog_flushed.min(c.dispatched));
        if let Some(l) = limit {
            // Verification must start at a record boundary at or below the cut: a segment
            // start is one.
            let seg = cfg.segment_size as i64;
            if scan_from.is_none_or(|s| s > l) {
                scan_from = Some(l / seg * seg);
            }
        }
        let (log, scan): (CommitLog, ScanReport) = CommitLog::open(
            &dir.join("commitlog"),
            cfg.segment_size,
            cfg.store_host,
            cfg.prefault_segments,
            scan_from,
            limit,
        )?;
        let end = scan.valid_end;
        if let Some(l) = limit {
            tracing::warn!(dir = %dir.display(), requested = l, end, "commitlog truncated for replication");
        }
        epochs.truncate(end)?;
        let cut = match cp {
            Some(c) => c.dispatched.min(end).max(log.min_pos()),
            None => log.min_pos(),
        };
        crate::mapped_file::remove_temp_files(&dir.join("index"))?;
        let index = IndexStore::open(
            &dir.join("index"),
            IndexConfig {
                slots_per_file: cfg.index_slots_per_file,
                entries_per_file: cfg.index_entries_per_file,
            },
        )?;
        index.truncate(cut)?;
        let queues = open_queues(&dir.join("consumequeue"), cfg.cq_entries_per_file, cut)?;
        let inner = Arc::new(Inner {
            log,
            queues: RwLock::new(queues),
            index,
            checkpoint,
            flushed: AtomicI64::new(cut),
            dispatched: AtomicI64::new(cut),
            shutdown: AtomicBool::new(false),
            group_commit: GroupCommit::new(cfg.sync_flushers),
            dispatch_signal: Signal::new(),
            dispatched_signal: Signal::new(),
            dispatch_lock: Mutex::new(()),
            housekeeping: Signal::new(),
            allocator: Signal::new(),
            disk_full: AtomicBool::new(false),
            disk_used_bits: AtomicU64::new(0f64.to_bits()),
            last_disk_check_ms: AtomicI64::new(0),
            last_high_warning_ms: AtomicI64::new(0),
            dispatch_error: Mutex::new(None),
            flushes: AtomicU64::new(0),
            flush_nanos: AtomicU64::new(0),
            gate: RwLock::new(WriteGate::Open),
            epochs: Mutex::new(epochs),
            lock: DirLock::new(lock),
            cfg,
        });
        let scan_duration = started.elapsed();
        // Make the recovered log durable, then rebuild what lies beyond the cut.
        inner.log.flush_range(scan.scanned_from.min(cut), end)?;
        inner.flushed.store(end, Ordering::Release);
        let dispatch_started = Instant::now();
        // An index damaged beyond the checkpoint (its files are verified on open) is behind the
        // cut: bring it up to the cut first, then dispatch everything after the cut.
        if inner.index.damaged_on_open() {
            inner.index_catch_up(cut)?;
        }
        let redispatched = inner.dispatch_until(end)?;
        let redispatch_duration = dispatch_started.elapsed();
        let offsets = inner
            .queues
            .read()
            .iter()
            .map(|(t, qs)| {
                let m = qs.iter().map(|(q, cq)| (*q, cq.max_offset())).collect();
                (t.clone(), m)
            })
            .collect();
        inner.log.set_queue_offsets(offsets);
        inner.write_checkpoint()?;
        inner.refresh_disk_usage();
        let recovery = RecoveryReport {
            had_checkpoint: cp.is_some(),
            scanned_from: scan.scanned_from,
            valid_end: end,
            records_verified: scan.records,
            truncated: scan.truncated,
            redispatched,
            scan_duration,
            redispatch_duration,
            duration: started.elapsed(),
        };
        tracing::info!(
            dir = %inner.cfg.data_dir.display(),
            valid_end = end,
            verified = scan.records,
            truncated = scan.truncated,
            redispatched,
            ms = recovery.duration.as_millis() as u64,
            "store opened"
        );
        let store = MessageStore {
            inner,
            threads: Mutex::new(Vec::new()),
            recovery,
        };
        store.start_threads()?;
        Ok(store)
    }

    /// What recovery did when this store opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.recovery
    }
}

fn open_queues(root: &Path, per_file: usize, cut: i64) -> Result<QueueMap> {
    let mut map = QueueMap::new();
    if !root.exists() {
        return Ok(map);
    }
    for t in fs::read_dir(root).map_err(StoreError::io("list consume queues", root))? {
        let t = t.map_err(StoreError::io("list consume queues", root))?;
        let Some(topic) = t.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if crate::record::validate_topic(&topic).is_err() {
            tracing::warn!(dir = %t.path().display(), "ignoring directory that is not a topic");
            continue;
        }
        let tdir = t.path();
        for q in fs::read_dir(&tdir).map_err(StoreError::io("list consume queues", &tdir))? {
            let q = q.map_err(StoreError::io("list consume queues", &tdir))?;
            let Some(qid) = q.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let cq = ConsumeQueue::open(&q.path(), per_file, cut)?;
            map.entry(topic.clone())
                .or_default()
                .insert(qid, Arc::new(cq));
        }
    }
    Ok(map)
}
