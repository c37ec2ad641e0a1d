//! [`Signal`]: how a background thread sleeps until there is work, a timeout, or shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// A wake-up for one kind of waiter. Notifying is an atomic load when nobody waits, so the
/// append path can notify on every call.
pub(super) struct Signal {
    mu: Mutex<()>,
    cv: Condvar,
    waiting: AtomicBool,
}

impl Signal {
    pub(super) fn new() -> Self {
        Self {
            mu: Mutex::new(()),
            cv: Condvar::new(),
            waiting: AtomicBool::new(false),
        }
    }

    /// Wakes the waiter if one is parked (cheap when none is).
    pub(super) fn notify(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            let _g = self.mu.lock();
            self.cv.notify_all();
        }
    }

    /// Waits up to `timeout` unless `ready()` already holds; no wake-up is lost between the
    /// check and the wait because `notify` takes the same mutex.
    pub(super) fn wait_unless(&self, timeout: Duration, ready: impl Fn() -> bool) {
        let mut g = self.mu.lock();
        self.waiting.store(true, Ordering::SeqCst);
        if !ready() {
            self.cv.wait_for(&mut g, timeout);
        }
        self.waiting.store(false, Ordering::SeqCst);
    }

    /// Wakes every waiter whether or not it announced itself (shutdown: no waiter may miss it).
    pub(super) fn wake(&self) {
        let _g = self.mu.lock();
        self.cv.notify_all();
    }
}
