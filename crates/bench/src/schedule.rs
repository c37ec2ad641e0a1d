//! The send schedule of a rate-limited run.
//!
//! All producers together follow one global timeline: request `j` (of `batch` messages) is due
//! at `start + j * batch / rate` seconds. Producer `p` of `P` owns the requests `p, p + P,
//! p + 2P, ...`, so the producers interleave instead of bursting together. Each due time is
//! computed from the request index in integer nanoseconds, never by adding intervals, so the
//! schedule does not drift however long the run is.
//!
//! Latency is measured from the *due* time, not from the moment the request actually left:
//! when the server stalls, the requests that should have gone out during the stall are late,
//! and their lateness counts. Measuring from the actual send time would hide the stall behind
//! a handful of slow samples ("coordinated omission").

use std::time::Duration;

/// When each request of one producer is due, relative to the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// This producer's index, `0..stride`.
    first: u64,
    /// Number of producers sharing the global timeline.
    stride: u64,
    /// Messages per request.
    batch: u64,
    /// Target messages per second over all producers (> 0).
    rate: u64,
}

impl Schedule {
    /// The schedule of producer `producer` of `producers`, sending `batch` messages per request
    /// at `rate` messages per second in total. `None` when `rate` is 0 (as fast as possible).
    pub(crate) fn new(producer: usize, producers: usize, batch: u32, rate: u64) -> Option<Self> {
        (rate > 0).then(|| Schedule {
            first: producer as u64,
            stride: producers.max(1) as u64,
            batch: u64::from(batch.max(1)),
            rate,
        })
    }

    /// Due time of this producer's `k`-th request (counting from 0), relative to the start.
    pub(crate) fn due(&self, k: u64) -> Duration {
        let j = u128::from(self.first) + u128::from(k) * u128::from(self.stride);
        let nanos = j * u128::from(self.batch) * 1_000_000_000 / u128::from(self.rate);
        // u64 nanoseconds cover 584 years; saturate rather than wrap beyond that.
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_rate_zero_when_scheduling_should_be_unlimited() {
        assert_eq!(Schedule::new(0, 4, 1, 0), None);
    }

    #[test]
    fn given_one_producer_when_scheduling_should_space_requests_evenly() {
        let s = Schedule::new(0, 1, 1, 200).expect("rate > 0");
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(5));
        assert_eq!(s.due(200), Duration::from_secs(1));
    }

    #[test]
    fn given_several_producers_when_scheduling_should_interleave_on_one_timeline() {
        // 3 producers, 300 msg/s: the global timeline has a request every 1/300 s.
        let all: Vec<Duration> = (0..3)
            .flat_map(|p| {
                let s = Schedule::new(p, 3, 1, 300).expect("rate > 0");
                (0..100).map(move |k| s.due(k))
            })
            .collect();
        let mut sorted = all.clone();
        sorted.sort();
        for (i, due) in sorted.iter().enumerate() {
            let expected = Duration::from_nanos((i as u64 * 1_000_000_000) / 300);
            assert_eq!(*due, expected, "request {i}");
        }
        // Producer 1's first request is the second one on the timeline.
        assert_eq!(
            Schedule::new(1, 3, 1, 300).expect("rate > 0").due(0),
            Duration::from_nanos(3_333_333)
        );
    }

    #[test]
    fn given_batches_when_scheduling_should_count_messages_not_requests() {
        // 10 messages per request at 1000 msg/s: 100 requests per second.
        let s = Schedule::new(0, 1, 10, 1000).expect("rate > 0");
        assert_eq!(s.due(1), Duration::from_millis(10));
        assert_eq!(s.due(100), Duration::from_secs(1));
    }

    #[test]
    fn given_a_long_run_when_scheduling_should_not_drift() {
        // 7 msg/s does not divide a second evenly; the millionth due time is still exact.
        let s = Schedule::new(0, 1, 1, 7).expect("rate > 0");
        assert_eq!(s.due(7_000_000), Duration::from_secs(1_000_000));
        assert_eq!(s.due(1), Duration::from_nanos(142_857_142));
    }

    #[test]
    fn given_absurd_indices_when_scheduling_should_saturate() {
        let s = Schedule::new(0, 1, 1, 1).expect("rate > 0");
        assert_eq!(s.due(u64::MAX), Duration::from_nanos(u64::MAX));
    }
}
