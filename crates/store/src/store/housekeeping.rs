//! Housekeeping: the thread that writes the checkpoint every `checkpoint_interval` and runs
//! retention every retention `check_interval`.
//!
//! A checkpoint is written only after consume queues and the index are flushed up to the
//! dispatch point it records, so recovery may trust everything below it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Inner, MessageStore};
use crate::checkpoint::Checkpoint;
use crate::commit_log;
use crate::consume_queue::ConsumeQueue;
use crate::error::Result;

impl MessageStore {
    /// Flushes consume queues and the index and writes the checkpoint now.
    ///
    /// # Errors
    /// I/O errors.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.write_checkpoint()
    }
}

impl Inner {
    pub(super) fn run_housekeeping(&self) {
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
    pub(super) fn all_queues(&self) -> Vec<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Flushes consume queues and the index up to the current dispatch point, then records
    /// that point (and the flushed commitlog offset) in the checkpoint.
    pub(super) fn write_checkpoint(&self) -> Result<()> {
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
}
