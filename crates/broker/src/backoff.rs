//! Retry backoff of a consumer group: the delay before a delivery that follows a failed one.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{RetryPolicy, retry_policy::Strategy};
use comet_vocab::duration;
use comet_vocab::limits::DEFAULT_BACKOFF_SECS;

/// A backoff table or formula.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// `initial * multiplier^(attempt-1)`, capped at `max`.
    Exponential {
        /// Delay after the first delivery.
        initial: Duration,
        /// Upper bound.
        max: Duration,
        /// Growth factor (values below 1 are read as 1).
        multiplier: f64,
    },
    /// Delay after the n-th delivery is `next[n-1]`; the last entry repeats.
    Customized(Vec<Duration>),
}

impl Default for Backoff {
    /// RocketMQ's default customized backoff (`comet_vocab::limits::DEFAULT_BACKOFF_SECS`,
    /// the delay levels from 1 s on): 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h.
    fn default() -> Self {
        Backoff::Customized(
            DEFAULT_BACKOFF_SECS
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
        )
    }
}

/// A step of a group's policy; absent, negative or malformed reads as zero (the policy comes
/// from metadata the controller accepted, not from a request).
fn to_duration(d: Option<&prost_types::Duration>) -> Duration {
    d.and_then(duration::from_proto).unwrap_or(Duration::ZERO)
}

impl Backoff {
    /// The backoff of a group's retry policy; absent or empty → [`Backoff::default`].
    pub fn from_policy(policy: Option<&RetryPolicy>) -> Backoff {
        match policy.and_then(|p| p.strategy.as_ref()) {
            Some(Strategy::ExponentialBackoff(e)) => Backoff::Exponential {
                initial: to_duration(e.initial.as_ref()),
                max: to_duration(e.max.as_ref()),
                multiplier: if e.multiplier.is_finite() {
                    f64::from(e.multiplier).max(1.0)
                } else {
                    1.0
                },
            },
            Some(Strategy::CustomizedBackoff(c)) if !c.next.is_empty() => {
                Backoff::Customized(c.next.iter().map(|d| to_duration(Some(d))).collect())
            }
            _ => Backoff::default(),
        }
    }

    /// Delay after the `attempt`-th delivery failed (`attempt` >= 1; 0 is read as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let n = attempt.max(1);
        match self {
            Backoff::Customized(next) => {
                let i = (n as usize - 1).min(next.len().saturating_sub(1));
                next.get(i).copied().unwrap_or(Duration::ZERO)
            }
            Backoff::Exponential {
                initial,
                max,
                multiplier,
            } => {
                let exp = i32::try_from(n - 1).unwrap_or(i32::MAX);
                let secs = initial.as_secs_f64() * multiplier.powi(exp);
                if !secs.is_finite() || secs >= max.as_secs_f64() {
                    *max
                } else {
                    Duration::from_secs_f64(secs.max(0.0))
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use comet_proto::apache::rocketmq::v2::{CustomizedBackoff, ExponentialBackoff};

    fn d(secs: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration {
            seconds: secs,
            nanos,
        }
    }

    #[test]
    fn given_no_policy_when_delay_should_follow_rocketmq_levels() {
        let b = Backoff::from_policy(None);
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(2), Duration::from_secs(5));
        assert_eq!(b.delay(4), Duration::from_secs(30));
        assert_eq!(b.delay(16), Duration::from_secs(1800));
        assert_eq!(b.delay(18), Duration::from_secs(7200));
        assert_eq!(
            b.delay(100),
            Duration::from_secs(7200),
            "last level repeats"
        );
        assert_eq!(b.delay(0), Duration::from_secs(1));
    }

    #[test]
    fn given_exponential_policy_when_delay_should_grow_and_cap() {
        let p = RetryPolicy {
            max_attempts: 3,
            strategy: Some(Strategy::ExponentialBackoff(ExponentialBackoff {
                initial: Some(d(0, 100_000_000)),
                max: Some(d(1, 0)),
                multiplier: 2.0,
            })),
        };
        let b = Backoff::from_policy(Some(&p));
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn given_customized_policy_when_delay_should_index_by_attempt() {
        let p = RetryPolicy {
            max_attempts: 0,
            strategy: Some(Strategy::CustomizedBackoff(CustomizedBackoff {
                next: vec![d(2, 0), d(3, 0), d(-1, 0)],
            })),
        };
        let b = Backoff::from_policy(Some(&p));
        assert_eq!(b.delay(1), Duration::from_secs(2));
        assert_eq!(b.delay(2), Duration::from_secs(3));
        assert_eq!(
            b.delay(3),
            Duration::ZERO,
            "negative durations read as zero"
        );
        assert_eq!(b.delay(9), Duration::ZERO);
        let empty = RetryPolicy {
            max_attempts: 0,
            strategy: Some(Strategy::CustomizedBackoff(CustomizedBackoff {
                next: vec![],
            })),
        };
        assert_eq!(Backoff::from_policy(Some(&empty)), Backoff::default());
    }
}
