//! The data directory's lock: one open store per directory, and [`Released`] for whoever
//! waits to reopen it.
//!
//! The lock is an advisory file lock on `LOCK`, held by [`DirLock`] inside the store's shared
//! state, so it outlives [`MessageStore::close`] until the last thread and `Arc` let go; only
//! then do waiters on [`Released`] wake.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::MessageStore;
use crate::error::{Result, StoreError};

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
pub(super) struct DirLock {
    file: Option<File>,
    released: Released,
}

impl DirLock {
    /// Holds `file`, a lock taken with [`lock_dir`], until dropped.
    pub(super) fn new(file: File) -> Self {
        Self {
            file: Some(file),
            released: Released::default(),
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        drop(self.file.take());
        self.released.set();
    }
}

/// Takes the lock of a data directory.
///
/// # Errors
/// [`StoreError::Locked`] if another store holds it; I/O errors.
pub(super) fn lock_dir(dir: &Path) -> Result<File> {
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
    /// Tells when this store's data directory is unlocked again (see [`Released`]).
    pub fn released(&self) -> Released {
        self.inner.lock.released.clone()
    }
}
