//! Retention and disk watermarks: whole commitlog segments are deleted when older than
//! `file_reserved_time` or while the disk is above the high watermark, then consume-queue and
//! index files that only point below the new minimum; above the refuse watermark appends fail.
//!
//! A segment is deleted only when it lies wholly below both the flushed and the dispatched
//! offsets: retention never removes what is not yet durable and dispatched.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::{Inner, MessageStore};
use crate::error::Result;

/// Least time between two "above the high watermark" warnings.
const HIGH_WATERMARK_WARNING_EVERY_MS: i64 = 10 * 60 * 1000;

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

impl MessageStore {
    /// Runs one retention pass now (the housekeeping thread also runs them periodically).
    ///
    /// # Errors
    /// I/O errors while deleting files.
    pub fn run_retention(&self) -> Result<RetentionReport> {
        self.inner.run_retention()
    }
}

impl Inner {
    pub(super) fn disk_used(&self) -> f64 {
        f64::from_bits(self.disk_used_bits.load(Ordering::Acquire))
    }

    /// Re-reads disk usage at most once a second, from whichever appender notices first.
    pub(super) fn maybe_refresh_disk_usage(&self, now: i64) {
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

    pub(super) fn refresh_disk_usage(&self) -> f64 {
        match self.cfg.retention.disk_usage.stats(&self.cfg.data_dir) {
            Ok(s) => {
                let used = s.used_ratio();
                self.disk_used_bits.store(used.to_bits(), Ordering::Release);
                self.warn_above_high_watermark(used);
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

    /// Past the high (clean) watermark, well before appends are refused: one warning, repeated
    /// at most every [`HIGH_WATERMARK_WARNING_EVERY_MS`] while it lasts.
    fn warn_above_high_watermark(&self, used: f64) {
        let r = &self.cfg.retention;
        if used <= r.disk_high_watermark {
            return;
        }
        let now = crate::commit_log::now_ms();
        let last = self.last_high_warning_ms.load(Ordering::Acquire);
        if (last == 0 || now - last >= HIGH_WATERMARK_WARNING_EVERY_MS)
            && self
                .last_high_warning_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                used_percent = used * 100.0,
                high_watermark_percent = r.disk_high_watermark * 100.0,
                refuse_watermark_percent = r.disk_refuse_watermark * 100.0,
                "disk above the high watermark: old segments are deleted early; appends are \
                 refused above the refuse watermark"
            );
        }
    }

    pub(super) fn run_retention(&self) -> Result<RetentionReport> {
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
