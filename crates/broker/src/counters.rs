//! Event counters of one broker instance for its metrics: messages dead-lettered per (group,
//! origin topic) and in-flight messages revived (visible again after their invisible time).
//! Plain numbers; `metrics` turns them into OpenTelemetry instruments.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Counters since the instance opened.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    dead_lettered: Mutex<HashMap<(String, String), u64>>,
    revived: AtomicU64,
}

impl Counters {
    /// One message of `group` from `topic` stored in the dead-letter queue.
    pub fn dead_lettered(&self, group: &str, topic: &str) {
        *self
            .dead_lettered
            .lock()
            .entry((group.to_owned(), topic.to_owned()))
            .or_insert(0) += 1;
    }

    /// `n` in-flight messages became visible again.
    pub fn revived(&self, n: u64) {
        self.revived.fetch_add(n, Ordering::Relaxed);
    }

    /// ((group, topic), count) of every dead-lettering so far.
    pub fn dead_letters(&self) -> Vec<((String, String), u64)> {
        self.dead_lettered
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Messages revived so far.
    pub fn revived_total(&self) -> u64 {
        self.revived.load(Ordering::Relaxed)
    }
}
