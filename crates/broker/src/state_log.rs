//! The consumer-state log as the engine writes it: changes are appended by the call that made
//! them when the log is free (group commit: one write covers every change so far), else by
//! the persist task; calls that promise durability wait for their change to be written.
//! The log is fdatasynced every `state_persist_interval` and at shutdown.

use std::time::Duration;

use crate::engine::Inner;
use crate::error::BrokerError;
use crate::persist::StateFiles;
use crate::state::QueueRecord;

/// Longest an ack or invisible-time change waits for its state to be written.
const STATE_WRITE_WAIT: Duration = Duration::from_secs(5);

impl Inner {
    /// Appends the changed queues' state to the log (fdatasynced with `sync`), publishes the
    /// change sequence it covers, and compacts when the log is big.
    pub(crate) fn persist_once(&self, sync: bool) -> Result<(), BrokerError> {
        let mut guard = self.files.lock();
        let Some(files) = guard.as_mut() else {
            return Ok(());
        };
        self.write_dirty(files, sync)?;
        if files.needs_compaction(self.cfg.state_compact_bytes) {
            files.compact(|| self.all_records())?;
        }
        Ok(())
    }

    /// Writes the changed queues' state to the log on the calling thread, if nobody else is
    /// writing it: a write to the page cache takes microseconds, far less than handing the
    /// work to another thread and waiting for it to come back. Group commit: one write covers
    /// every change made so far, whoever made it. When the log is busy (a periodic fdatasync)
    /// or due for compaction, the persist task is asked instead. Never fdatasyncs.
    pub(crate) fn persist_inline(&self) {
        if *self.written.borrow() >= self.consumers.change_seq() {
            return;
        }
        let Some(mut guard) = self.files.try_lock() else {
            self.consumers.changed.notify_one();
            return;
        };
        let Some(files) = guard.as_mut() else {
            return;
        };
        if let Err(e) = self.write_dirty(files, false) {
            tracing::warn!(error = %e, "writing consumer state failed; the persist task retries");
        }
        if files.needs_compaction(self.cfg.state_compact_bytes) {
            self.consumers.changed.notify_one();
        }
    }

    /// Writes the dirty queues' records (with `sync`, fdatasyncs) and publishes the change
    /// sequence they cover. The caller holds the state files.
    fn write_dirty(&self, files: &mut StateFiles, sync: bool) -> Result<(), BrokerError> {
        // Read before taking the dirty slots: every change up to `seq` is in one of them.
        let seq = self.consumers.change_seq();
        let dirty = self.consumers.take_dirty();
        let records: Vec<_> = dirty.iter().filter_map(|s| s.record()).collect();
        if let Err(e) = files.append(&records, sync) {
            for s in &dirty {
                self.consumers.requeue_dirty(s);
            }
            return Err(e);
        }
        self.written.send_if_modified(|w| {
            let newer = seq > *w;
            if newer {
                *w = seq;
            }
            newer
        });
        Ok(())
    }

    /// Waits until every consumer-state change made so far is in the state log (bounded: a
    /// failing disk must not hang calls; the change stays in memory and is retried). Writes
    /// it on this thread when it can (see [`Inner::persist_inline`]).
    pub async fn state_written(&self) {
        let seq = self.consumers.change_seq();
        self.persist_inline();
        if *self.written.borrow() >= seq {
            return;
        }
        let mut rx = self.written.subscribe();
        let waited = tokio::time::timeout(STATE_WRITE_WAIT, rx.wait_for(|w| *w >= seq)).await;
        if waited.is_err() {
            tracing::warn!(seq, "consumer state not written in time; answering anyway");
        }
    }

    fn all_records(&self) -> Vec<QueueRecord> {
        let mut v: Vec<_> = self
            .consumers
            .all()
            .iter()
            .filter_map(|s| s.record())
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// At shutdown: a full snapshot, then the files are closed.
    pub(crate) fn persist_final(&self) -> Result<(), BrokerError> {
        let seq = self.consumers.change_seq();
        let _ = self.consumers.take_dirty();
        let mut guard = self.files.lock();
        let Some(mut files) = guard.take() else {
            return Ok(());
        };
        files.compact(|| self.all_records())?;
        self.written.send_replace(seq);
        Ok(())
    }
}
