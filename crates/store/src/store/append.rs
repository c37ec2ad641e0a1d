//! Local appends ([`MessageStore::append`], [`MessageStore::append_batch`]) and the
//! [`WriteGate`] that admits them.
//!
//! An append passes, in order: the shutdown flag, the write gate, the disk refuse watermark;
//! then the commitlog writes the batch contiguously under one lock, and the flush policy
//! decides when it returns (ASYNC: written, and dispatched by the appender itself when it can;
//! SYNC: on disk through the group commit).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::MessageStore;
use crate::commit_log::{self, AppendResult};
use crate::config::FlushPolicy;
use crate::error::{Result, StoreError};
use crate::record::Message;

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

impl MessageStore {
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
}
