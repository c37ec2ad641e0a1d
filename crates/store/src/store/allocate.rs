//! The allocator thread: creates (and optionally pre-faults) the next commitlog segment before
//! the active one fills, so an append rarely waits for a file to be created or mapped.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Inner;

impl Inner {
    pub(super) fn run_allocator(&self) {
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
}
