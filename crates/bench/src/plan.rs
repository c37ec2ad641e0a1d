//! What every task of a run shares: the [`Plan`] (the run's settings, id, body filler, live
//! counters and empty histogram) and its [`Clock`] (warmup, window, end).
//!
//! A request belongs to the window when its due time does: at or after the end of the warmup
//! and before the end of the window. Due times embedded in bodies are nanoseconds from the
//! clock's epoch, so producers and consumers classify a message the same way.

use std::time::Duration;

use bytes::Bytes;
use comet_proto::apache::rocketmq::v2::Resource;
use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::stats::Live;

/// The run's time line. Every `Instant` of the run is compared against these.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// Origin of the due times embedded in bodies.
    pub epoch: Instant,
    /// End of the warmup, start of the window.
    pub warm_end: Instant,
    /// End of the window: no request is due at or after it.
    pub end: Instant,
}

impl Clock {
    /// The time line of a run starting at `epoch`.
    pub(crate) fn new(epoch: Instant, warmup: Duration, duration: Duration) -> Self {
        let warm_end = epoch + warmup;
        Clock {
            epoch,
            warm_end,
            end: warm_end + duration,
        }
    }

    /// Nanoseconds from the epoch to `t` (0 before it).
    pub(crate) fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a request due at `due` belongs to the window.
    pub(crate) fn measured(&self, due: Instant) -> bool {
        due >= self.warm_end && due < self.end
    }

    /// Whether a message due `due_ns` after the epoch belongs to the window.
    pub(crate) fn measured_ns(&self, due_ns: u64) -> bool {
        due_ns >= self.ns(self.warm_end) && due_ns < self.ns(self.end)
    }
}

/// What every task of a run shares.
#[derive(Debug)]
pub(crate) struct Plan {
    pub topic: Resource,
    pub group: Resource,
    pub message_size: usize,
    pub batch: u32,
    pub inflight: usize,
    pub rate: u64,
    pub producers: usize,
    /// Random id of this run as 16 upper-case hex digits: in message ids, client ids and the
    /// run property.
    pub run_hex: String,
    pub born_host: String,
    /// The filler every body is made from (see `payload`).
    pub template: Bytes,
    pub clock: Clock,
    pub live: Live,
    /// Signalled by consumers after receiving, for the drain.
    pub consumed: Notify,
    /// Empty histogram every task clones.
    pub histogram: Histogram<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_clock_when_classifying_should_measure_only_the_window() {
        let epoch = Instant::now();
        let c = Clock::new(epoch, Duration::from_secs(1), Duration::from_secs(2));
        assert!(!c.measured(epoch));
        assert!(c.measured(epoch + Duration::from_secs(1)));
        assert!(c.measured(epoch + Duration::from_millis(2999)));
        assert!(!c.measured(epoch + Duration::from_secs(3)));
        assert!(!c.measured_ns(999_999_999));
        assert!(c.measured_ns(1_000_000_000));
        assert!(!c.measured_ns(3_000_000_000));
        assert_eq!(c.ns(epoch + Duration::from_millis(5)), 5_000_000);
    }
}
