//! Replication's side of the store: a master serves its log byte for byte
//! ([`MessageStore::read_raw`]); a replica appends those bytes verbatim after verifying them
//! record by record ([`MessageStore::append_raw`]) and dispatches them as usual. The epoch
//! history records which master epoch wrote which offsets ([`crate::epoch`]); a replica only
//! takes raw appends while its [`WriteGate`] is `Closed`.

use std::sync::atomic::Ordering;

use super::MessageStore;
use super::append::WriteGate;
use crate::commit_log::{RawAppended, RawChunk};
use crate::config::FlushPolicy;
use crate::epoch::EpochEntry;
use crate::error::{Result, StoreError};

impl MessageStore {
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
}
