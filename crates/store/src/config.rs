//! Store configuration, its defaults, and validation.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Result, StoreError};
use crate::record::UNKNOWN_HOST;

/// When appended data reaches the disk, and what an acknowledged append promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Appends return once the record is in the page cache; a background thread flushes every
    /// `interval`.
    ///
    /// **Durability:** an acknowledged record survives a crash of the process (the kernel still
    /// holds it), but a power loss or kernel crash can lose up to `interval` of acknowledged
    /// records. Consumers may see a record before it is on disk.
    Async {
        /// Time between background flushes (default 500 ms).
        interval: Duration,
    },
    /// Appends return only once the record is on disk (group commit: one fdatasync covers
    /// every append that arrived while the previous one ran).
    ///
    /// **Durability:** an acknowledged record survives process crash and power loss. An append
    /// not durable within `timeout` fails with [`StoreError::FlushTimeout`]; its record is
    /// still in the log and may or may not survive a power loss. Consumers only see records
    /// that are on disk.
    Sync {
        /// How long an append waits for its flush (default 5 s).
        timeout: Duration,
    },
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy::Async {
            interval: Duration::from_millis(500),
        }
    }
}

/// Space figures for the filesystem that holds a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStats {
    /// Filesystem size in bytes.
    pub total: u64,
    /// Bytes an unprivileged writer can still use.
    pub available: u64,
}

impl DiskStats {
    /// Used fraction in `[0, 1]`, as `df` computes it (reserved blocks count as used).
    pub fn used_ratio(&self) -> f64 {
        if self.total == 0 {
            return 1.0;
        }
        1.0 - (self.available as f64 / self.total as f64)
    }
}

/// Where the store learns how full its disk is. Tests inject fake sources.
pub trait DiskUsage: Send + Sync {
    /// Figures for the filesystem holding `path`.
    ///
    /// # Errors
    /// Whatever the underlying query fails with; the store then keeps its last figures.
    fn stats(&self, path: &Path) -> io::Result<DiskStats>;
}

/// The real source: `statvfs(2)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatvfsDiskUsage;

impl DiskUsage for StatvfsDiskUsage {
    fn stats(&self, path: &Path) -> io::Result<DiskStats> {
        let s = rustix::fs::statvfs(path)?;
        Ok(DiskStats {
            total: s.f_blocks.saturating_mul(s.f_frsize),
            available: s.f_bavail.saturating_mul(s.f_frsize),
        })
    }
}

/// What the dispatcher reports after making messages visible in a consume queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// Topic of the messages.
    pub topic: String,
    /// Queue id.
    pub queue_id: i32,
    /// One past the highest logical offset now readable.
    pub max_offset: i64,
    /// Tag hash of the newest message (for long-poll filters).
    pub tag_hash: i64,
}

/// Called by the dispatcher thread; must be quick and must not call back into the store's
/// append path.
pub type ArrivalListener = Arc<dyn Fn(&Arrival) + Send + Sync>;

/// Called after every local append (not replica appends) with the new end of the written
/// log; must be quick (it runs on the appending thread).
pub type AppendListener = Arc<dyn Fn(i64) + Send + Sync>;

/// Retention: what is deleted when.
#[derive(Clone)]
pub struct RetentionConfig {
    /// Segments whose last write is older than this are deleted (default 72 h).
    pub file_reserved_time: Duration,
    /// Above this used fraction, the oldest segments are deleted whatever their age
    /// (default 0.85).
    pub disk_high_watermark: f64,
    /// Above this used fraction, appends fail with [`StoreError::DiskFull`] (default 0.90).
    pub disk_refuse_watermark: f64,
    /// How often the cleaner runs (default 10 s).
    pub check_interval: Duration,
    /// Source of disk figures.
    pub disk_usage: Arc<dyn DiskUsage>,
}

impl fmt::Debug for RetentionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetentionConfig")
            .field("file_reserved_time", &self.file_reserved_time)
            .field("disk_high_watermark", &self.disk_high_watermark)
            .field("disk_refuse_watermark", &self.disk_refuse_watermark)
            .field("check_interval", &self.check_interval)
            .finish_non_exhaustive()
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            file_reserved_time: Duration::from_secs(72 * 3600),
            disk_high_watermark: 0.85,
            disk_refuse_watermark: 0.90,
            check_interval: Duration::from_secs(10),
            disk_usage: Arc::new(StatvfsDiskUsage),
        }
    }
}

/// Everything the store needs to open. Build with [`StoreConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct StoreConfig {
    /// Root directory; created if missing. Holds `commitlog/`, `consumequeue/`, `index/` and the
    /// checkpoint.
    pub data_dir: PathBuf,
    /// Size of each commitlog segment file (default 1 GiB).
    pub segment_size: usize,
    /// Flush policy and its durability promise.
    pub flush: FlushPolicy,
    /// Largest encoded record (or batch) accepted (default 8 MiB).
    pub max_record_size: usize,
    /// Entries per consume-queue file (default 300,000, i.e. 6 MB files).
    pub cq_entries_per_file: usize,
    /// Hash slots per index file (default 1,000,000).
    pub index_slots_per_file: u32,
    /// Entries per index file (default 4,000,000).
    pub index_entries_per_file: u32,
    /// How often consume queues and the index are flushed and the checkpoint written
    /// (default 1 s). Recovery re-dispatches at most this much of the log.
    pub checkpoint_interval: Duration,
    /// Retention and disk watermarks.
    pub retention: RetentionConfig,
    /// How many fdatasyncs SYNC group commit may run at once (default 1, at most 8). With more
    /// than one, a new group's sync starts while earlier ones are still running, which hides
    /// part of the device latency when a flush takes long (milliseconds) and the device serves
    /// concurrent flushes in parallel; when flushes are fast, groups only get smaller and
    /// throughput drops, which is why the default is 1. Ignored in ASYNC mode.
    pub sync_flushers: usize,
    /// Touch every page of a new segment before it is used, so appends take no page faults
    /// (default false: it also makes the kernel write the zeros back).
    pub prefault_segments: bool,
    /// The address recorded as each record's store host.
    pub store_host: SocketAddr,
    /// Told about newly visible messages (long-poll wake-ups).
    pub arrival_listener: Option<ArrivalListener>,
    /// Told about every local append (replication wake-ups).
    pub append_listener: Option<AppendListener>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("data_dir", &self.data_dir)
            .field("segment_size", &self.segment_size)
            .field("flush", &self.flush)
            .field("max_record_size", &self.max_record_size)
            .field("cq_entries_per_file", &self.cq_entries_per_file)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("sync_flushers", &self.sync_flushers)
            .field("retention", &self.retention)
            .field("store_host", &self.store_host)
            .finish_non_exhaustive()
    }
}

/// Most concurrent SYNC flushes [`StoreConfig::sync_flushers`] accepts.
pub const MAX_SYNC_FLUSHERS: usize = 8;

/// Smallest segment size accepted (tests use small segments; production uses the default).
pub const MIN_SEGMENT_SIZE: usize = 4096;

impl StoreConfig {
    /// Defaults for a store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            segment_size: 1 << 30,
            flush: FlushPolicy::default(),
            max_record_size: 8 << 20,
            cq_entries_per_file: 300_000,
            index_slots_per_file: 1_000_000,
            index_entries_per_file: 4_000_000,
            checkpoint_interval: Duration::from_secs(1),
            retention: RetentionConfig::default(),
            sync_flushers: 1,
            prefault_segments: false,
            store_host: UNKNOWN_HOST,
            arrival_listener: None,
            append_listener: None,
        }
    }

    /// Checks every value against its allowed range.
    ///
    /// # Errors
    /// [`StoreError::Config`] naming the key and the allowed range.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &'static str, reason: String| Err(StoreError::Config { key, reason });
        if self.segment_size < MIN_SEGMENT_SIZE || self.segment_size > (1 << 40) {
            return bad(
                "segment_size",
                format!("{} is outside {MIN_SEGMENT_SIZE}..=1TiB", self.segment_size),
            );
        }
        if self.max_record_size < 256 || self.max_record_size > self.segment_size {
            return bad(
                "max_record_size",
                format!(
                    "{} must be between 256 bytes and segment_size ({})",
                    self.max_record_size, self.segment_size
                ),
            );
        }
        match self.flush {
            FlushPolicy::Async { interval } if interval.is_zero() => {
                return bad("flush.interval", "must be greater than 0".into());
            }
            FlushPolicy::Sync { timeout } if timeout.is_zero() => {
                return bad("flush.sync_timeout", "must be greater than 0".into());
            }
            _ => {}
        }
        if !(1..=MAX_SYNC_FLUSHERS).contains(&self.sync_flushers) {
            return bad(
                "sync_flushers",
                format!("{} is outside 1..={MAX_SYNC_FLUSHERS}", self.sync_flushers),
            );
        }
        if !(16..=(1 << 26)).contains(&self.cq_entries_per_file) {
            return bad(
                "cq_entries_per_file",
                format!("{} is outside 16..=67108864", self.cq_entries_per_file),
            );
        }
        if self.index_slots_per_file == 0 || self.index_entries_per_file == 0 {
            return bad(
                "index",
                "slots and entries per index file must be greater than 0".into(),
            );
        }
        if self.checkpoint_interval.is_zero() {
            return bad("checkpoint_interval", "must be greater than 0".into());
        }
        let r = &self.retention;
        let ratio_ok = |x: f64| x > 0.0 && x <= 1.0;
        if !ratio_ok(r.disk_high_watermark) || !ratio_ok(r.disk_refuse_watermark) {
            return bad(
                "retention.disk_watermarks",
                "watermarks are fractions in (0, 1]".into(),
            );
        }
        if r.disk_high_watermark > r.disk_refuse_watermark {
            return bad(
                "retention.disk_high_watermark",
                format!(
                    "{} must not exceed disk_refuse_watermark {}",
                    r.disk_high_watermark, r.disk_refuse_watermark
                ),
            );
        }
        if r.check_interval.is_zero() {
            return bad("retention.check_interval", "must be greater than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_defaults_when_validated_should_pass() {
        StoreConfig::new("/tmp/x")
            .validate()
            .expect("defaults are valid");
    }

    #[test]
    fn given_bad_values_when_validated_should_name_the_key() {
        let mut c = StoreConfig::new("/tmp/x");
        c.segment_size = 10;
        assert!(
            c.validate()
                .expect_err("small")
                .to_string()
                .contains("segment_size")
        );
        let mut c = StoreConfig::new("/tmp/x");
        c.retention.disk_high_watermark = 0.95;
        let e = c.validate().expect_err("order").to_string();
        assert!(e.contains("disk_high_watermark"), "{e}");
        let mut c = StoreConfig::new("/tmp/x");
        c.flush = FlushPolicy::Sync {
            timeout: Duration::ZERO,
        };
        assert!(c.validate().is_err());
        for n in [0, MAX_SYNC_FLUSHERS + 1] {
            let mut c = StoreConfig::new("/tmp/x");
            c.sync_flushers = n;
            let e = c.validate().expect_err("flushers").to_string();
            assert!(e.contains("sync_flushers"), "{e}");
        }
    }
}
