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
//! the flush policy allows: in SYNC mode, up to the flushed offset (nothing a consumer sees
//! can be lost to a power failure); in ASYNC mode, up to the written offset.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering, fence};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex, RwLock};
use rustix::thread::futex;

use crate::checkpoint::{Checkpoint, CheckpointFile};
use crate::commit_log::{self, AppendResult, CommitLog, RawAppended, RawChunk, ScanReport};
use crate::config::{Arrival, FlushPolicy, MAX_SYNC_FLUSHERS, StoreConfig};
use crate::consume_queue::{ConsumeQueue, CqEntry};
use crate::epoch::{EpochEntry, EpochFile};
use crate::error::{Result, StoreError};
use crate::index_file::{IndexConfig, IndexStore};
use crate::record::{Message, StoredMessage};

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

/// Messages read from a consume queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    /// Messages that passed the filter, in queue order.
    pub messages: Vec<StoredMessage>,
    /// Where the next read should start.
    pub next_offset: i64,
    /// First offset of the queue still stored.
    pub min_offset: i64,
    /// One past the last offset of the queue.
    pub max_offset: i64,
}

/// What a retention pass did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetentionReport {
    /// Commitlog segments deleted because they were older than the reserved time.
    pub expired_segments: usize,
    /// Commitlog segments deleted because the disk was above the high watermark.
    pub pressure_segments: usize,
    /// Consume-queue files deleted.
    pub cq_files: usize,
    /// Index files deleted.
    pub index_files: usize,
    /// Disk usage after the pass, as a fraction.
    pub disk_used: f64,
    /// Whether appends are refused.
    pub refusing_appends: bool,
}

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

/// Whether [`MessageStore::append`] and [`MessageStore::append_batch`] accept messages.
///
/// The broker of a replicated broker set sets it from its role: a replica is `Closed` (it
/// only takes [`MessageStore::append_raw`] from its master), a master is `Until` its lease
/// with the controller lapses (a master that cannot confirm it still is one must not accept
/// what a newly elected master would never have). A store opens `Open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteGate {
    /// Appends are accepted.
    Open,
    /// Appends are accepted until `deadline`; afterwards they fail with `reason`.
    Until {
        /// When appends stop.
        deadline: Instant,
        /// Why, once past the deadline (shown to clients).
        reason: String,
    },
    /// Appends fail with the reason (shown to clients).
    Closed(String),
}

impl WriteGate {
    fn check(&self, now: Instant) -> Result<()> {
        match self {
            WriteGate::Open => Ok(()),
            WriteGate::Until { deadline, .. } if now < *deadline => Ok(()),
            WriteGate::Until { reason, .. } | WriteGate::Closed(reason) => {
                Err(StoreError::NotWritable(reason.clone()))
            }
        }
    }
}

struct Signal {
    mu: Mutex<()>,
    cv: Condvar,
    waiting: AtomicBool,
}

impl Signal {
    fn new() -> Self {
        Self {
            mu: Mutex::new(()),
            cv: Condvar::new(),
            waiting: AtomicBool::new(false),
        }
    }

    /// Wakes the waiter if one is parked (cheap when none is).
    fn notify(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            let _g = self.mu.lock();
            self.cv.notify_all();
        }
    }

    /// Waits up to `timeout` unless `ready()` already holds; no wake-up is lost between the
    /// check and the wait because `notify` takes the same mutex.
    fn wait_unless(&self, timeout: Duration, ready: impl Fn() -> bool) {
        let mut g = self.mu.lock();
        self.waiting.store(true, Ordering::SeqCst);
        if !ready() {
            self.cv.wait_for(&mut g, timeout);
        }
        self.waiting.store(false, Ordering::SeqCst);
    }
}

/// Completion words of the group commit: sync number `n` signals on word `n % SYNC_WORDS`.
/// More words than syncs can run at once, so a wake-up is almost never meant for another sync
/// (and one that is only makes its waiters look again).
const SYNC_WORDS: usize = 2 * MAX_SYNC_FLUSHERS;

/// Group commit for SYNC flushing, pipelined over up to `max_in_flight` concurrent fdatasyncs.
///
/// An appender records how far it needs the log flushed, picks the sync that will cover it (a
/// running one whose target reaches its record, else the next one to start) and sleeps on that
/// sync's futex word. A flusher starts a sync covering everything written so far whenever some
/// appender is not covered by a running sync and fewer than `max_in_flight` run; when the sync
/// ends it bumps its word and wakes every sleeper on it with one `FUTEX_WAKE`, so waking a
/// group of 64 is one system call and the flusher is not preempted 64 times on the way.
/// Concurrent fdatasyncs of one file are safe (each covers every write made before it began),
/// and they overlap on the device.
struct GroupCommit {
    state: Mutex<GroupState>,
    words: [AtomicU32; SYNC_WORDS],
    max_in_flight: usize,
}

struct GroupState {
    /// Highest record end any appender has asked to have flushed.
    requested: i64,
    /// Highest target of any sync started (running or done): every write below it is covered.
    started: i64,
    /// Number of the next sync to start.
    next_sync: u64,
    /// Running syncs: their number and target.
    running: Vec<(u64, i64)>,
    /// Flushers parked with nothing to start.
    idle: Vec<std::thread::Thread>,
    /// A flusher was unparked and has not looked at the state yet (it will cover every appender
    /// registered until then), so appenders need not wake another.
    wake_pending: bool,
}

impl GroupCommit {
    fn new(max_in_flight: usize) -> Self {
        Self {
            state: Mutex::new(GroupState {
                requested: 0,
                started: 0,
                next_sync: 0,
                running: Vec::new(),
                idle: Vec::new(),
                wake_pending: false,
            }),
            words: std::array::from_fn(|_| AtomicU32::new(0)),
            max_in_flight: max_in_flight.clamp(1, MAX_SYNC_FLUSHERS),
        }
    }

    fn word(&self, sync: u64) -> &AtomicU32 {
        &self.words[(sync % SYNC_WORDS as u64) as usize]
    }

    /// Wakes everyone sleeping on `sync`'s word (after the flushed offset moved, or the sync
    /// failed).
    fn signal(&self, sync: u64) {
        let w = self.word(sync);
        w.fetch_add(1, Ordering::SeqCst);
        let _ = futex::wake(w, futex::Flags::PRIVATE, i32::MAX as u32);
    }

    /// Wakes every sleeper on every word (shutdown).
    fn signal_all(&self) {
        for n in 0..SYNC_WORDS as u64 {
            self.signal(n);
        }
    }
}

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
    dispatch_error: Mutex<Option<String>>,
    flushes: AtomicU64,
    flush_nanos: AtomicU64,
    gate: RwLock<WriteGate>,
    epochs: Mutex<EpochFile>,
    lock: DirLock,
}

/// When a store's data directory is free again. The store holds the directory's lock until
/// its last user lets go (its own threads and every `Arc` of it), which can be later than
/// [`MessageStore::close`] or a drop of one handle: a reopen waits on this instead of
/// retrying against [`StoreError::Locked`]. Obtained with [`MessageStore::released`].
#[derive(Debug, Clone, Default)]
pub struct Released(Arc<(Mutex<bool>, Condvar)>);

impl Released {
    /// Whether the directory lock has been released.
    pub fn is_released(&self) -> bool {
        *self.0.0.lock()
    }

    /// Blocks until the directory lock is released or `timeout` has passed; true if it was
    /// released.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (done, cv) = &*self.0;
        let mut done = done.lock();
        // A spurious wake-up only loops; the deadline bounds the whole wait.
        let deadline = Instant::now() + timeout;
        while !*done {
            if cv.wait_until(&mut done, deadline).timed_out() {
                break;
            }
        }
        *done
    }

    fn set(&self) {
        let (done, cv) = &*self.0;
        *done.lock() = true;
        cv.notify_all();
    }
}

/// The data directory's lock file, held while the store is open. Dropping it unlocks the
/// directory first and then tells [`Released`] waiters, so a waiter that wakes can open it.
struct DirLock {
    file: Option<File>,
    released: Released,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        drop(self.file.take());
        self.released.set();
    }
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

fn index_key(topic: &str, key: &str) -> String {
    let mut s = String::with_capacity(topic.len() + 1 + key.len());
    s.push_str(topic);
    s.push('#');
    s.push_str(key);
    s
}

/// The index keys of a record: `topic#message_id` and `topic#key` for each key.
fn index_keys(topic: &str, message_id: &str, keys: &[&str]) -> Vec<String> {
    let mut ks = Vec::with_capacity(keys.len() + 1);
    if !message_id.is_empty() {
        ks.push(index_key(topic, message_id));
    }
    ks.extend(keys.iter().map(|k| index_key(topic, k)));
    ks
}

/// What a dispatch pass fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Targets {
    /// Consume queues and the index: normal dispatch.
    QueuesAndIndex,
    /// The index only: catching up an index that lost entries the queues still hold.
    IndexOnly,
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io("open lock file", &path))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::io("lock store directory", &path)(e))
        }
    }
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
            dispatch_error: Mutex::new(None),
            flushes: AtomicU64::new(0),
            flush_nanos: AtomicU64::new(0),
            gate: RwLock::new(WriteGate::Open),
            epochs: Mutex::new(epochs),
            lock: DirLock {
                file: Some(lock),
                released: Released::default(),
            },
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

    fn start_threads(&self) -> Result<()> {
        let mut threads = self.threads.lock();
        let spawn = |name: &str, f: fn(&Inner)| -> Result<JoinHandle<()>> {
            let inner = Arc::clone(&self.inner);
            std::thread::Builder::new()
                .name(format!("store-{name}"))
                .spawn(move || f(&inner))
                .map_err(StoreError::io(
                    "spawn store thread",
                    &self.inner.cfg.data_dir,
                ))
        };
        match self.inner.cfg.flush {
            FlushPolicy::Async { .. } => threads.push(spawn("flusher", Inner::run_flusher)?),
            FlushPolicy::Sync { .. } => {
                for _ in 0..self.inner.group_commit.max_in_flight {
                    threads.push(spawn("flusher", Inner::run_sync_flusher)?);
                }
            }
        }
        threads.push(spawn("dispatch", Inner::run_dispatcher)?);
        threads.push(spawn("alloc", Inner::run_allocator)?);
        threads.push(spawn("housekeeping", Inner::run_housekeeping)?);
        Ok(())
    }

    /// Tells when this store's data directory is unlocked again (see [`Released`]).
    pub fn released(&self) -> Released {
        self.inner.lock.released.clone()
    }

    /// What recovery did when this store opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.recovery
    }

    /// Appends one message. See [`MessageStore::append_batch`].
    ///
    /// # Errors
    /// As for [`MessageStore::append_batch`].
    pub fn append(&self, msg: &Message) -> Result<AppendResult> {
        let mut r = self.append_batch(std::slice::from_ref(msg))?;
        r.pop().ok_or(StoreError::Closed)
    }

    /// Appends messages as one operation: they are written contiguously under one lock,
    /// recovery keeps or drops them together, and (SYNC) one flush wait covers them all.
    ///
    /// Durability on return follows the [`FlushPolicy`]: in SYNC mode the batch is on disk; in
    /// ASYNC mode it is in the page cache and reaches the disk within the flush interval.
    ///
    /// # Errors
    /// [`StoreError::DiskFull`] above the refuse watermark; [`StoreError::MessageTooLarge`];
    /// [`StoreError::InvalidMessage`]; [`StoreError::FlushTimeout`] (SYNC: written but not
    /// confirmed durable in time); [`StoreError::Closed`].
    pub fn append_batch(&self, msgs: &[Message]) -> Result<Vec<AppendResult>> {
        let inner = &self.inner;
        if inner.shutdown.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        inner.gate.read().check(Instant::now())?;
        let now = commit_log::now_ms();
        inner.maybe_refresh_disk_usage(now);
        if inner.disk_full.load(Ordering::Acquire) {
            return Err(StoreError::DiskFull {
                path: inner.cfg.data_dir.clone(),
                used_percent: inner.disk_used() * 100.0,
                limit_percent: inner.cfg.retention.disk_refuse_watermark * 100.0,
            });
        }
        let results = inner.log.append(msgs, inner.cfg.max_record_size, now)?;
        let (Some(first), Some(last)) = (results.first(), results.last()) else {
            return Ok(results);
        };
        if inner.log.wants_populate()
            || results
                .iter()
                .any(|r| r.physical_offset % inner.cfg.segment_size as i64 == 0)
        {
            inner.allocator.notify();
        }
        let end = last.physical_offset + i64::from(last.size);
        if let Some(listener) = &inner.cfg.append_listener {
            listener(end);
        }
        match inner.cfg.flush {
            FlushPolicy::Async { .. } => inner.dispatch_inline(),
            FlushPolicy::Sync { timeout } => {
                if !inner.wait_flushed(end, timeout) {
                    return Err(StoreError::FlushTimeout {
                        offset: first.physical_offset,
                        timeout,
                    });
                }
            }
        }
        Ok(results)
    }

    /// Sets the [`WriteGate`] of [`MessageStore::append`] and [`MessageStore::append_batch`].
    /// Appends already past the check complete; later ones see the new gate.
    pub fn set_write_gate(&self, gate: WriteGate) {
        *self.inner.gate.write() = gate;
    }

    /// The current [`WriteGate`].
    pub fn write_gate(&self) -> WriteGate {
        self.inner.gate.read().clone()
    }

    /// Appends bytes a master wrote, verbatim, at physical offset `at` (the end of this log),
    /// as written by master epoch `epoch`: a replica's copy of its master's commitlog. The
    /// bytes are verified record by record (CRC32C, offsets, structure; see
    /// [`crate::record`]) before anything is written; then the records are dispatched into
    /// consume queues and the index like local appends. A newer epoch is recorded in the
    /// epoch history first. Durability on return follows the [`FlushPolicy`], as for
    /// [`MessageStore::append_batch`]. Only allowed while the [`WriteGate`] is `Closed` (a
    /// replica never takes local appends). Epoch 0 marks data written before replication
    /// existed: it is copied but not recorded in the history.
    ///
    /// # Errors
    /// [`StoreError::NotContiguous`] when `at` is not the end of the log;
    /// [`StoreError::Corrupt`] for bytes that fail verification; [`StoreError::InvalidState`]
    /// for an epoch older than the log's newest or a store that is not a replica;
    /// [`StoreError::FlushTimeout`]; [`StoreError::Closed`].
    pub fn append_raw(&self, epoch: u64, at: i64, data: &[u8]) -> Result<RawAppended> {
        let inner = &self.inner;
        if inner.shutdown.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if !matches!(*inner.gate.read(), WriteGate::Closed(_)) {
            return Err(StoreError::InvalidState(
                "replica appends need a closed write gate (this store takes local appends)".into(),
            ));
        }
        let mut epochs = inner.epochs.lock();
        match epochs.last() {
            Some(last) if epoch < last.epoch => {
                return Err(StoreError::InvalidState(format!(
                    "replica data of epoch {epoch} cannot follow data of epoch {}",
                    last.epoch
                )));
            }
            Some(last) if epoch == last.epoch => {}
            // Epoch 0 is data from before replication: no known writer, nothing to record.
            _ if data.is_empty() || epoch == 0 => {}
            _ => {
                let end = inner.log.write_pos();
                if end != at {
                    return Err(StoreError::NotContiguous {
                        offset: at,
                        expected: end,
                    });
                }
                epochs.record(epoch, at)?;
            }
        }
        let appended = inner.log.append_raw(at, data)?;
        drop(epochs);
        if appended.records == 0 && appended.end == at {
            return Ok(appended);
        }
        if inner.log.wants_populate() || appended.end % inner.cfg.segment_size as i64 == 0 {
            inner.allocator.notify();
        }
        match inner.cfg.flush {
            FlushPolicy::Async { .. } => inner.dispatch_signal.notify(),
            FlushPolicy::Sync { timeout } => {
                if !inner.wait_flushed(appended.end, timeout) {
                    return Err(StoreError::FlushTimeout {
                        offset: at,
                        timeout,
                    });
                }
            }
        }
        Ok(appended)
    }

    /// Up to about `max_bytes` of raw log bytes from `from` for a replica (see
    /// [`MessageStore::append_raw`]): whole records from a record boundary, never past `limit`
    /// or the written end, never across a segment end, ending on a batch boundary (a batch
    /// larger than `max_bytes` comes whole).
    ///
    /// # Errors
    /// [`StoreError::OffsetOutOfRange`] when `from` is outside `[min, write end]`;
    /// [`StoreError::Corrupt`] when `from` is not a record boundary.
    pub fn read_raw(&self, from: i64, max_bytes: usize, limit: i64) -> Result<RawChunk> {
        self.inner.log.read_raw(from, max_bytes, limit)
    }

    /// Records that master epoch `epoch` writes from the current end of the log (a broker
    /// that becomes master). Returns that offset. Call it while the [`WriteGate`] is
    /// `Closed`, before opening it, so no append races the recorded start.
    ///
    /// # Errors
    /// [`StoreError::InvalidState`] for an epoch older than the newest recorded or an open
    /// gate; I/O errors.
    pub fn begin_epoch(&self, epoch: u64) -> Result<i64> {
        if !matches!(*self.inner.gate.read(), WriteGate::Closed(_)) {
            return Err(StoreError::InvalidState(
                "an epoch begins while the write gate is closed".into(),
            ));
        }
        let mut epochs = self.inner.epochs.lock();
        let start = self.inner.log.write_pos();
        epochs.record(epoch, start)?;
        Ok(start)
    }

    /// The epoch history of the log, oldest first (see [`crate::epoch`]).
    pub fn epochs(&self) -> Vec<EpochEntry> {
        self.inner.epochs.lock().entries().to_vec()
    }

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

    /// The commitlog segment size this store was opened with.
    pub fn segment_size(&self) -> usize {
        self.inner.cfg.segment_size
    }

    /// Reads the record at a commitlog offset, verifying its CRC.
    ///
    /// # Errors
    /// [`StoreError::OffsetOutOfRange`]; [`StoreError::Corrupt`] (never served).
    pub fn read(&self, physical_offset: i64) -> Result<StoredMessage> {
        self.inner.log.read(physical_offset)
    }

    fn queue(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.inner
            .queues
            .read()
            .get(topic)
            .and_then(|q| q.get(&queue_id))
            .cloned()
    }

    /// The consume-queue entry at `queue_offset` of (topic, queue), if it is stored.
    pub fn queue_entry(&self, topic: &str, queue_id: i32, queue_offset: i64) -> Option<CqEntry> {
        self.queue(topic, queue_id)?.entry(queue_offset)
    }

    /// Up to `max` consume-queue entries of (topic, queue) from logical offset `from`.
    pub fn read_queue(&self, topic: &str, queue_id: i32, from: i64, max: usize) -> Vec<CqEntry> {
        self.queue(topic, queue_id)
            .map(|cq| cq.read(from, max))
            .unwrap_or_default()
    }

    /// Reads up to `max_count` messages of (topic, queue) from logical offset `from`, keeping
    /// those whose consume-queue entry passes `filter` (e.g. a tag-hash pre-filter). At most
    /// `max(4 * max_count, 256)` entries are examined per call, so a selective filter cannot make
    /// one call scan a whole queue; `next_offset` says where to continue.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if a record fails verification.
    pub fn get_messages(
        &self,
        topic: &str,
        queue_id: i32,
        from: i64,
        max_count: usize,
        filter: impl Fn(&CqEntry) -> bool,
    ) -> Result<GetResult> {
        let Some(cq) = self.queue(topic, queue_id) else {
            return Ok(GetResult {
                messages: Vec::new(),
                next_offset: 0,
                min_offset: 0,
                max_offset: 0,
            });
        };
        let (min, max) = (cq.min_offset(), cq.max_offset());
        let start = from.clamp(min, max);
        let budget = (max_count.saturating_mul(4)).max(256);
        let entries = cq.read(start, budget);
        let mut messages = Vec::with_capacity(max_count.min(entries.len()));
        // Past the last entry examined; with none (only holes or nothing left), the queue end.
        let mut next = entries.last().map_or(max, |last| last.queue_offset + 1);
        for e in &entries {
            if messages.len() >= max_count {
                next = e.queue_offset;
                break;
            }
            if !filter(e) {
                continue;
            }
            match self.inner.log.read(e.physical_offset) {
                Ok(m) => messages.push(m),
                // Retention removed the record after the entry was read: skip it.
                Err(StoreError::OffsetOutOfRange { .. }) => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(GetResult {
            messages,
            next_offset: next,
            min_offset: min,
            max_offset: max,
        })
    }

    /// First logical offset of (topic, queue) still stored (0 for an unknown queue).
    pub fn min_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.queue(topic, queue_id).map_or(0, |q| q.min_offset())
    }

    /// One past the last logical offset of (topic, queue) (0 for an unknown queue).
    pub fn max_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.queue(topic, queue_id).map_or(0, |q| q.max_offset())
    }

    /// The first logical offset of (topic, queue) whose message was stored at or after
    /// `timestamp_ms`; the max offset if none was (reset-by-time).
    pub fn offset_by_time(&self, topic: &str, queue_id: i32, timestamp_ms: i64) -> i64 {
        let Some(cq) = self.queue(topic, queue_id) else {
            return 0;
        };
        cq.offset_by_time(timestamp_ms, |phys| {
            self.inner
                .log
                .with_record(phys, false, |v| v.store_timestamp())
                .ok()
        })
    }

    /// Messages of `topic` that carry `key` among their keys, stored within
    /// `[begin_ms, end_ms]`, newest first, at most `max`.
    ///
    /// # Errors
    /// I/O errors of the index.
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<StoredMessage>> {
        self.query_index(topic, key, max, begin_ms, end_ms, |m| {
            m.properties.keys.iter().any(|k| k == key)
        })
    }

    /// Messages of `topic` whose message id is `message_id` (normally one; more if a producer
    /// retried), newest first.
    ///
    /// # Errors
    /// I/O errors of the index.
    pub fn query_by_id(&self, topic: &str, message_id: &str) -> Result<Vec<StoredMessage>> {
        self.query_index(topic, message_id, 32, 0, i64::MAX, |m| {
            m.properties.message_id == message_id
        })
    }

    fn query_index(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin_ms: i64,
        end_ms: i64,
        keep: impl Fn(&Message) -> bool,
    ) -> Result<Vec<StoredMessage>> {
        let offsets = self.inner.index.query(
            &index_key(topic, key),
            max.saturating_mul(4).max(max),
            begin_ms,
            end_ms,
        )?;
        let mut out = Vec::new();
        for phys in offsets {
            if out.len() >= max {
                break;
            }
            // Index entries are hash matches: the record decides.
            if let Ok(m) = self.inner.log.read(phys)
                && m.message.topic == topic
                && keep(&m.message)
                && (begin_ms..=end_ms).contains(&m.store_timestamp)
            {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Flushes the commitlog to disk now.
    ///
    /// # Errors
    /// I/O errors of msync.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush_now()
    }

    /// Flushes consume queues and the index and writes the checkpoint now.
    ///
    /// # Errors
    /// I/O errors.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.write_checkpoint()
    }

    /// Runs one retention pass now (the housekeeping thread also runs them periodically).
    ///
    /// # Errors
    /// I/O errors while deleting files.
    pub fn run_retention(&self) -> Result<RetentionReport> {
        self.inner.run_retention()
    }

    /// Blocks until every record below `offset` is dispatched, or `timeout` passes.
    /// Returns whether it was reached.
    pub fn wait_dispatched(&self, offset: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.inner.dispatched.load(Ordering::Acquire) >= offset {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.inner.shutdown.load(Ordering::Acquire) {
                return false;
            }
            self.inner.dispatch_signal.notify();
            self.inner
                .dispatched_signal
                .wait_unless((deadline - now).min(Duration::from_millis(50)), || {
                    self.inner.dispatched.load(Ordering::Acquire) >= offset
                });
        }
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

    /// Stops the background threads, flushes everything and writes the checkpoint.
    ///
    /// # Errors
    /// The first I/O error of the final flush; the store is closed either way.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    /// Stops the background threads and releases the directory *without* the final flush,
    /// dispatch and checkpoint, leaving the files as a crash of the process would (the kernel
    /// still holds what was written). Recovery on the next open handles the rest. For tests
    /// of crash behaviour and for callers that must stop at once.
    pub fn abandon(self) {
        self.stop_threads();
        // `Drop` sees the threads already stopped and skips the final flush and checkpoint.
    }

    fn stop_threads(&self) -> bool {
        let inner = &self.inner;
        if inner.shutdown.swap(true, Ordering::AcqRel) {
            return false;
        }
        for t in inner.group_commit.state.lock().idle.drain(..) {
            t.unpark();
        }
        inner.group_commit.signal_all();
        // The ASYNC flusher parks between flushes.
        for t in self.threads.lock().iter() {
            t.thread().unpark();
        }
        for s in [
            &inner.dispatch_signal,
            &inner.housekeeping,
            &inner.allocator,
            &inner.dispatched_signal,
        ] {
            let _g = s.mu.lock();
            s.cv.notify_all();
        }
        for t in self.threads.lock().drain(..) {
            if t.join().is_err() {
                tracing::error!("a store thread panicked");
            }
        }
        true
    }

    fn shutdown(&self) -> Result<()> {
        if !self.stop_threads() {
            return Ok(());
        }
        let inner = &self.inner;
        inner.flush_now()?;
        inner.dispatch_until(inner.log.write_pos())?;
        inner.write_checkpoint()?;
        inner.log.discard_prepared()?;
        tracing::info!(dir = %inner.cfg.data_dir.display(), "store closed");
        Ok(())
    }
}

impl Drop for MessageStore {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "store shutdown failed");
        }
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

impl Inner {
    fn disk_used(&self) -> f64 {
        f64::from_bits(self.disk_used_bits.load(Ordering::Acquire))
    }

    /// Re-reads disk usage at most once a second, from whichever appender notices first.
    fn maybe_refresh_disk_usage(&self, now: i64) {
        let last = self.last_disk_check_ms.load(Ordering::Acquire);
        if now - last >= 1000
            && self
                .last_disk_check_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.refresh_disk_usage();
        }
    }

    fn refresh_disk_usage(&self) -> f64 {
        match self.cfg.retention.disk_usage.stats(&self.cfg.data_dir) {
            Ok(s) => {
                let used = s.used_ratio();
                self.disk_used_bits.store(used.to_bits(), Ordering::Release);
                let full = used > self.cfg.retention.disk_refuse_watermark;
                if self.disk_full.swap(full, Ordering::AcqRel) != full {
                    if full {
                        tracing::error!(
                            used = used * 100.0,
                            "disk above refuse watermark: refusing appends"
                        );
                    } else {
                        tracing::info!(
                            used = used * 100.0,
                            "disk below refuse watermark: accepting appends"
                        );
                    }
                }
                used
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read disk usage; keeping last figures");
                self.disk_used()
            }
        }
    }

    fn dispatch_limit(&self) -> i64 {
        match self.cfg.flush {
            FlushPolicy::Async { .. } => self.log.write_pos(),
            FlushPolicy::Sync { .. } => self.flushed.load(Ordering::Acquire),
        }
    }

    /// Dispatches records from the current dispatch point up to `limit`. Returns the number of
    /// records dispatched.
    fn dispatch_until(&self, limit: i64) -> Result<u64> {
        let _walker = self.dispatch_lock.lock();
        self.dispatch_until_locked(limit)
    }

    /// [`Inner::dispatch_until`] with `dispatch_lock` already held.
    fn dispatch_until_locked(&self, limit: i64) -> Result<u64> {
        let from = self.dispatched.load(Ordering::Acquire);
        let (end, count) = self.dispatch_range(from, limit, Targets::QueuesAndIndex)?;
        self.dispatched.fetch_max(end, Ordering::AcqRel);
        self.dispatched_signal.notify();
        Ok(count)
    }

    /// ASYNC: an appender makes its records visible itself instead of waking the dispatcher
    /// thread (a thread wake-up per send cost more CPU than the dispatch). If another thread is
    /// dispatching, that thread picks the new records up: every walker looks at the write
    /// position again after it lets go of the lock, and the fences order "append, then try the
    /// lock" against "release, then look again", so at least one of the two sees the other. The
    /// dispatcher thread stays the fallback (errors, its periodic check, and appenders that
    /// already walked a few passes for others: no sender waits long on other senders' records).
    fn dispatch_inline(&self) {
        const MAX_PASSES: usize = 4;
        for _ in 0..MAX_PASSES {
            fence(Ordering::SeqCst);
            let Some(walker) = self.dispatch_lock.try_lock() else {
                return;
            };
            let limit = self.dispatch_limit();
            if self.dispatched.load(Ordering::Acquire) < limit
                && self.dispatch_until_locked(limit).is_err()
            {
                // The dispatcher thread reports the error and retries.
                drop(walker);
                self.dispatch_signal.notify();
                return;
            }
            drop(walker);
            fence(Ordering::SeqCst);
            if self.dispatched.load(Ordering::Acquire) >= self.dispatch_limit() {
                return;
            }
        }
        self.dispatch_signal.notify();
    }

    /// Re-indexes the records between the index's last indexed record and `to`; consume
    /// queues already hold them. Runs only when the index lost entries on open.
    fn index_catch_up(&self, to: i64) -> Result<()> {
        let last = self.index.last_indexed();
        let from = if last < self.log.min_pos() {
            self.log.min_pos()
        } else {
            last + i64::from(
                self.log
                    .with_record(last, false, |v| v.total_len() as u32)?,
            )
        };
        let (_, count) = self.dispatch_range(from, to, Targets::IndexOnly)?;
        if count > 0 {
            tracing::warn!(
                records = count,
                "index was behind the checkpoint; re-indexed"
            );
        }
        Ok(())
    }

    /// Walks the log from `from` (a record boundary) to `limit`, dispatching each record into
    /// `targets`. Returns where the walk ended and how many records it dispatched. Normal
    /// dispatch publishes its progress every 1024 records so readers need not wait for the end.
    fn dispatch_range(&self, from: i64, limit: i64, targets: Targets) -> Result<(i64, u64)> {
        let mut pos = from;
        let mut count = 0u64;
        let mut arrivals: HashMap<(String, i32), Arrival> = HashMap::new();
        while pos < limit {
            let Some(p) = self.log.next_record_pos(pos) else {
                // Only blank segment ends remain below the written end.
                pos = limit;
                break;
            };
            if p >= limit {
                pos = p;
                break;
            }
            pos = self.dispatch_record(p, targets, &mut arrivals)?;
            count += 1;
            if targets == Targets::QueuesAndIndex && count.is_multiple_of(1024) {
                self.dispatched.fetch_max(pos, Ordering::AcqRel);
                self.publish_arrivals(&mut arrivals);
            }
        }
        self.publish_arrivals(&mut arrivals);
        Ok((pos, count))
    }

    fn publish_arrivals(&self, arrivals: &mut HashMap<(String, i32), Arrival>) {
        if let Some(listener) = &self.cfg.arrival_listener {
            for (_, a) in arrivals.drain() {
                listener(&a);
            }
        } else {
            arrivals.clear();
        }
    }

    /// Dispatches the record at `phys`; returns the position after it.
    fn dispatch_record(
        &self,
        phys: i64,
        targets: Targets,
        arrivals: &mut HashMap<(String, i32), Arrival>,
    ) -> Result<i64> {
        let (topic, qid, qoff, size, tag_hash, ts, keys) =
            self.log.with_record(phys, false, |v| {
                let (tag, id, keys) = v.index_fields();
                (
                    v.topic().to_owned(),
                    v.queue_id(),
                    v.queue_offset(),
                    v.total_len() as i32,
                    crate::record::tag_hash(tag),
                    v.store_timestamp(),
                    index_keys(v.topic(), id, &keys),
                )
            })?;
        self.index
            .put_record(phys, ts, keys.iter().map(String::as_str))?;
        if targets == Targets::IndexOnly {
            return Ok(phys + i64::from(size));
        }
        let cq = self.queue_or_create(&topic, qid)?;
        cq.put(qoff, phys, size, tag_hash)?;
        if self.cfg.arrival_listener.is_some() {
            let max_offset = cq.max_offset();
            arrivals
                .entry((topic.clone(), qid))
                .and_modify(|a| {
                    a.max_offset = max_offset;
                    a.tag_hash = tag_hash;
                })
                .or_insert(Arrival {
                    topic,
                    queue_id: qid,
                    max_offset,
                    tag_hash,
                });
        }
        Ok(phys + i64::from(size))
    }

    fn queue_or_create(&self, topic: &str, qid: i32) -> Result<Arc<ConsumeQueue>> {
        if let Some(q) = self.queues.read().get(topic).and_then(|m| m.get(&qid)) {
            return Ok(Arc::clone(q));
        }
        let mut w = self.queues.write();
        if let Some(q) = w.get(topic).and_then(|m| m.get(&qid)) {
            return Ok(Arc::clone(q));
        }
        let dir = self
            .cfg
            .data_dir
            .join("consumequeue")
            .join(topic)
            .join(qid.to_string());
        let cq = Arc::new(ConsumeQueue::create(&dir, self.cfg.cq_entries_per_file)?);
        w.entry(topic.to_owned())
            .or_default()
            .insert(qid, Arc::clone(&cq));
        Ok(cq)
    }

    fn wait_flushed(&self, end: i64, timeout: Duration) -> bool {
        if self.flushed.load(Ordering::Acquire) >= end {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let gc = &self.group_commit;
        loop {
            let (sync, wake) = {
                let mut st = gc.state.lock();
                st.requested = st.requested.max(end);
                let covering = st
                    .running
                    .iter()
                    .filter(|(_, target)| *target >= end)
                    .map(|(n, _)| *n)
                    .min();
                match covering {
                    Some(n) => (n, None),
                    None if end <= st.started => (st.next_sync.saturating_sub(1), None),
                    // No running sync covers us: the next one to start will. If the pipeline
                    // has room, start it now, unless a flusher is already on its way.
                    None => {
                        let wake = if !st.wake_pending && st.running.len() < gc.max_in_flight {
                            let t = st.idle.pop();
                            st.wake_pending = t.is_some();
                            t
                        } else {
                            None
                        };
                        (st.next_sync, wake)
                    }
                }
            };
            // Read before the flushed offset: a sync bumps its word after moving the offset, so
            // either we see the offset below or the futex sees the new word and returns.
            let word = gc.word(sync);
            let seen = word.load(Ordering::SeqCst);
            if let Some(t) = wake {
                t.unpark();
            }
            loop {
                if self.flushed.load(Ordering::SeqCst) >= end {
                    return true;
                }
                if self.shutdown.load(Ordering::Acquire) {
                    return self.flush_now().is_ok() && self.flushed.load(Ordering::Acquire) >= end;
                }
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                let left = deadline - now;
                let ts = rustix::fs::Timespec {
                    tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
                    tv_nsec: left.subsec_nanos().into(),
                };
                // Returns when woken, when the word already moved, on timeout or on a signal.
                let _ = futex::wait(word, futex::Flags::PRIVATE, seen, Some(&ts));
                if word.load(Ordering::SeqCst) != seen {
                    break;
                }
            }
            // Our sync ended: covered (seen at the top of the loop) or failed (register again).
        }
    }

    fn flush_now(&self) -> Result<()> {
        let target = self.log.write_pos();
        let from = self.flushed.load(Ordering::Acquire);
        if target <= from {
            return Ok(());
        }
        self.flush_to(from, target)
    }

    /// Syncs `[from, to)` of the log and advances the flushed offset to `to`.
    fn flush_to(&self, from: i64, to: i64) -> Result<()> {
        let started = Instant::now();
        self.log.flush_range(from, to)?;
        self.flushed.fetch_max(to, Ordering::AcqRel);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The ASYNC flusher: flushes everything written every `interval`.
    fn run_flusher(&self) {
        let FlushPolicy::Async { interval } = self.cfg.flush else {
            return;
        };
        while !self.shutdown.load(Ordering::Acquire) {
            std::thread::park_timeout(interval);
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = self.flush_now() {
                tracing::error!(error = %e, "commitlog flush failed; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// One of the SYNC flushers (see [`GroupCommit`]).
    fn run_sync_flusher(&self) {
        let gc = &self.group_commit;
        let me = std::thread::current();
        let mut st = gc.state.lock();
        while !self.shutdown.load(Ordering::Acquire) {
            // Looking at the state now covers every appender registered so far.
            st.wake_pending = false;
            if st.requested <= st.started || st.running.len() >= gc.max_in_flight {
                // Every appender is covered by a running sync, or the pipeline is full (a
                // running sync starts the next when it ends). An appender that needs a sync
                // unparks us.
                st.idle.push(me.clone());
                drop(st);
                std::thread::park_timeout(Duration::from_millis(500));
                st = gc.state.lock();
                st.idle.retain(|t| t.id() != me.id());
                continue;
            }
            // Every registered appender's record lies below the write position: it was written
            // before the appender registered under this lock.
            let target = self.log.write_pos();
            let from = self.flushed.load(Ordering::Acquire);
            let sync = st.next_sync;
            st.next_sync += 1;
            st.started = target;
            st.running.push((sync, target));
            drop(st);
            let res = self.flush_to(from, target);
            st = gc.state.lock();
            st.running.retain(|(n, _)| *n != sync);
            if let Err(e) = res {
                // Not durable: the next sync must cover this range again; our waiters register
                // again for it.
                st.started = st
                    .running
                    .iter()
                    .map(|(_, t)| *t)
                    .max()
                    .unwrap_or(0)
                    .max(self.flushed.load(Ordering::Acquire));
                drop(st);
                gc.signal(sync);
                tracing::error!(error = %e, "commitlog flush failed; retrying");
                std::thread::sleep(Duration::from_millis(100));
                st = gc.state.lock();
                continue;
            }
            drop(st);
            gc.signal(sync);
            self.dispatch_signal.notify();
            st = gc.state.lock();
        }
    }

    fn run_dispatcher(&self) {
        while !self.shutdown.load(Ordering::Acquire) {
            let limit = self.dispatch_limit();
            if self.dispatched.load(Ordering::Acquire) < limit {
                if let Err(e) = self.dispatch_until(limit) {
                    // A record the dispatcher cannot read stops dispatch (consumers would
                    // otherwise skip it silently); the error is kept for operators.
                    let msg = e.to_string();
                    let mut last = self.dispatch_error.lock();
                    if last.as_deref() != Some(msg.as_str()) {
                        tracing::error!(error = %msg, "dispatch failed");
                        *last = Some(msg);
                    }
                    self.dispatch_signal
                        .wait_unless(Duration::from_secs(1), || {
                            self.shutdown.load(Ordering::Acquire)
                        });
                }
                continue;
            }
            // ASYNC appenders dispatch their own records and call on this thread only when
            // they need help, so records pending right now are normally being walked by one of
            // them: wait for a call (or the periodic check) rather than contend for the walk.
            let inline = matches!(self.cfg.flush, FlushPolicy::Async { .. });
            self.dispatch_signal
                .wait_unless(Duration::from_millis(100), || {
                    self.shutdown.load(Ordering::Acquire)
                        || (!inline
                            && self.dispatched.load(Ordering::Acquire) < self.dispatch_limit())
                });
        }
    }

    fn run_allocator(&self) {
        while !self.shutdown.load(Ordering::Acquire) {
            if let Err(e) = self.log.prepare_next() {
                tracing::warn!(error = %e, "cannot prepare the next commitlog segment");
            }
            self.log.populate_ahead();
            self.allocator.wait_unless(Duration::from_secs(1), || {
                self.shutdown.load(Ordering::Acquire) || self.log.wants_populate()
            });
        }
    }

    fn run_housekeeping(&self) {
        let mut next_retention = Instant::now() + self.cfg.retention.check_interval;
        while !self.shutdown.load(Ordering::Acquire) {
            self.housekeeping
                .wait_unless(self.cfg.checkpoint_interval, || {
                    self.shutdown.load(Ordering::Acquire)
                });
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = self.write_checkpoint() {
                tracing::error!(error = %e, "checkpoint failed");
            }
            if Instant::now() >= next_retention {
                next_retention = Instant::now() + self.cfg.retention.check_interval;
                if let Err(e) = self.run_retention() {
                    tracing::error!(error = %e, "retention pass failed");
                }
            }
        }
    }

    /// Every consume queue, so that slow work on them runs without holding the map's lock.
    fn all_queues(&self) -> Vec<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Flushes consume queues and the index up to the current dispatch point, then records
    /// that point (and the flushed commitlog offset) in the checkpoint.
    fn write_checkpoint(&self) -> Result<()> {
        let dispatched = self.dispatched.load(Ordering::Acquire);
        let flushed = self.flushed.load(Ordering::Acquire);
        let queues = self.all_queues();
        for q in queues {
            q.flush()?;
        }
        self.index.flush()?;
        self.checkpoint.store(&Checkpoint {
            commitlog_flushed: flushed,
            dispatched,
            written_at_ms: commit_log::now_ms(),
        })
    }

    fn run_retention(&self) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        let r = &self.cfg.retention;
        let mut used = self.refresh_disk_usage();
        let seg = self.log.segment_size() as i64;
        while let Some((start, modified)) = self.log.oldest_sealed() {
            // Never delete what is not yet durable and dispatched.
            let safe_end = self
                .flushed
                .load(Ordering::Acquire)
                .min(self.dispatched.load(Ordering::Acquire));
            if start + seg > safe_end {
                break;
            }
            let expired = modified
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age > r.file_reserved_time);
            let pressure = used > r.disk_high_watermark;
            if !expired && !pressure {
                break;
            }
            if !self.log.delete_oldest(start)? {
                break;
            }
            if expired {
                report.expired_segments += 1;
            } else {
                report.pressure_segments += 1;
                tracing::warn!(
                    segment = start,
                    used = used * 100.0,
                    "deleted segment under disk pressure"
                );
                used = self.refresh_disk_usage();
            }
        }
        let min = self.log.min_pos();
        let queues = self.all_queues();
        for q in queues {
            report.cq_files += q.retain_from_phys(min)?;
        }
        report.index_files = self.index.delete_before(min)?;
        report.disk_used = self.refresh_disk_usage();
        report.refusing_appends = self.disk_full.load(Ordering::Acquire);
        Ok(report)
    }
}
