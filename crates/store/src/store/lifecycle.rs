//! The background threads' lives: started by `open` once recovery is done, stopped by
//! [`MessageStore::close`], [`MessageStore::abandon`] or the last drop.
//!
//! Threads: the flusher (one for ASYNC; up to `sync_flushers` for SYNC), the dispatcher, the
//! segment allocator and housekeeping. A clean stop joins them all, then flushes the log,
//! dispatches the rest and writes the checkpoint, in that order (the checkpoint never claims
//! more than is on disk); `abandon` skips the last three, like a crash.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use super::{Inner, MessageStore};
use crate::config::FlushPolicy;
use crate::error::{Result, StoreError};

impl MessageStore {
    /// Starts the background threads (once, at the end of open).
    pub(super) fn start_threads(&self) -> Result<()> {
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
                for _ in 0..self.inner.group_commit.max_in_flight() {
                    threads.push(spawn("flusher", Inner::run_sync_flusher)?);
                }
            }
        }
        threads.push(spawn("dispatch", Inner::run_dispatcher)?);
        threads.push(spawn("alloc", Inner::run_allocator)?);
        threads.push(spawn("housekeeping", Inner::run_housekeeping)?);
        Ok(())
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
        inner.group_commit.wake_for_shutdown();
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
            s.wake();
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
