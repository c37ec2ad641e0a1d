//! Retry policies as the server's Settings carry them (`RetryPolicy`): a maximum number of
//! attempts and either an exponential or a customized backoff.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2 as pb;

use crate::session::std_duration;

/// Attempts and delays between them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
}

/// How long to wait before attempt `n + 1`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Backoff {
    Exponential {
        initial: Duration,
        max: Duration,
        multiplier: f32,
    },
    /// Delay `i` is for attempt `i + 1`; beyond the list the last delay repeats.
    Customized(Vec<Duration>),
}

impl RetryPolicy {
    /// The producer default before the server's echo (the reference proxy's values).
    pub(crate) fn producer_default(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(10),
                max: Duration::from_secs(1),
                multiplier: 2.0,
            },
        }
    }

    /// RocketMQ's consumer default: 17 attempts on the 1 s … 2 h schedule.
    pub(crate) fn consumer_default() -> RetryPolicy {
        const SECS: [u64; 18] = [
            1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
        ];
        RetryPolicy {
            max_attempts: 17,
            backoff: Backoff::Customized(SECS.iter().map(|s| Duration::from_secs(*s)).collect()),
        }
    }

    /// The server's policy; `None` when it carries no usable strategy.
    pub(crate) fn from_proto(p: &pb::RetryPolicy) -> Option<RetryPolicy> {
        let backoff = match p.strategy.as_ref()? {
            pb::retry_policy::Strategy::ExponentialBackoff(e) => Backoff::Exponential {
                initial: e.initial.as_ref().map(std_duration).unwrap_or_default(),
                max: e.max.as_ref().map(std_duration).unwrap_or_default(),
                multiplier: if e.multiplier.is_finite() && e.multiplier >= 1.0 {
                    e.multiplier
                } else {
                    1.0
                },
            },
            pb::retry_policy::Strategy::CustomizedBackoff(c) => {
                if c.next.is_empty() {
                    return None;
                }
                Backoff::Customized(c.next.iter().map(std_duration).collect())
            }
        };
        Some(RetryPolicy {
            max_attempts: p.max_attempts.max(1).unsigned_abs(),
            backoff,
        })
    }

    /// The delay after failed attempt `attempt` (1-based).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let attempt = attempt.max(1);
        match &self.backoff {
            Backoff::Exponential {
                initial,
                max,
                multiplier,
            } => {
                let exp = i32::try_from(attempt - 1).unwrap_or(i32::MAX).min(64);
                let d = initial.as_secs_f64() * f64::from(*multiplier).powi(exp);
                let capped = d.min(max.as_secs_f64()).max(0.0);
                Duration::from_secs_f64(capped)
            }
            Backoff::Customized(list) => {
                let i = usize::try_from(attempt - 1).unwrap_or(usize::MAX);
                list.get(i)
                    .or_else(|| list.last())
                    .copied()
                    .unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_an_exponential_policy_when_asked_should_double_up_to_the_cap() {
        let p = RetryPolicy::producer_default(3);
        assert_eq!(p.delay(1), Duration::from_millis(10));
        assert_eq!(p.delay(2), Duration::from_millis(20));
        assert_eq!(p.delay(20), Duration::from_secs(1));
    }

    #[test]
    fn given_a_customized_policy_when_past_its_end_should_repeat_the_last_delay() {
        let p = RetryPolicy::from_proto(&pb::RetryPolicy {
            max_attempts: 4,
            strategy: Some(pb::retry_policy::Strategy::CustomizedBackoff(
                pb::CustomizedBackoff {
                    next: vec![
                        prost_types::Duration {
                            seconds: 1,
                            nanos: 0,
                        },
                        prost_types::Duration {
                            seconds: 5,
                            nanos: 0,
                        },
                    ],
                },
            )),
        })
        .expect("usable policy");
        assert_eq!(p.max_attempts, 4);
        assert_eq!(p.delay(1), Duration::from_secs(1));
        assert_eq!(p.delay(2), Duration::from_secs(5));
        assert_eq!(p.delay(9), Duration::from_secs(5));
        assert_eq!(
            RetryPolicy::consumer_default().delay(1),
            Duration::from_secs(1)
        );
        assert!(RetryPolicy::from_proto(&pb::RetryPolicy::default()).is_none());
    }
}
