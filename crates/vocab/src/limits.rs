//! Defaults and ranges that the proxy and the broker both apply.
//!
//! The proxy is the gatekeeper: it refuses what is out of range with the right code
//! ([`InvisibleRange::for_receive`], [`InvisibleRange::for_change`],
//! [`check_delivery_time`], [`check_priority`]); the broker places PRIORITY messages with
//! [`priority_queue`]. The defaults here are the compiled defaults of every
//! configuration that sets these values (proxy, broker, CLI config file).

use std::time::Duration;

use crate::duration::from_proto;
use crate::error::{Error, Result};

/// Shortest invisible time (default of the proxy's `invisible_min`).
pub const INVISIBLE_MIN: Duration = Duration::from_secs(1);
/// Longest invisible time (default of `invisible_max` / the broker's
/// `max_invisible_duration`).
pub const INVISIBLE_MAX: Duration = Duration::from_secs(12 * 3600);
/// Invisible time of a receive that carries none, e.g. from push consumers that renew it.
pub const INVISIBLE_DEFAULT: Duration = Duration::from_secs(60);
/// Furthest a delay message's delivery time may lie in the future (default): 40 days.
pub const MAX_DELIVERY_DELAY: Duration = Duration::from_secs(40 * 24 * 3600);
/// Longest `max_delivery_delay` a proxy or broker configuration accepts: one year.
pub const MAX_DELIVERY_DELAY_CEILING: Duration = Duration::from_secs(365 * 24 * 3600);
/// Redeliveries of a group without its own setting (metadata.proto: a group's 0 means
/// this); a message is delivered at most `DEFAULT_MAX_RETRIES + 1` times before it goes to
/// `%DLQ%<group>`.
pub const DEFAULT_MAX_RETRIES: u32 = 16;
/// RocketMQ's default consumer redelivery schedule (`messageDelayLevel` from level 3), in
/// seconds: the delay before redelivery attempt `n` is entry `n - 1`, the last one repeating.
pub const DEFAULT_BACKOFF_SECS: [u64; 18] = [
    1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
];

/// The accepted invisible times of a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvisibleRange {
    /// Shortest: receives below it are refused, changes below it are raised to it.
    pub min: Duration,
    /// Longest: receives and changes above it are refused.
    pub max: Duration,
    /// Used for receives that carry none.
    pub default: Duration,
}

impl Default for InvisibleRange {
    fn default() -> Self {
        InvisibleRange {
            min: INVISIBLE_MIN,
            max: INVISIBLE_MAX,
            default: INVISIBLE_DEFAULT,
        }
    }
}

impl InvisibleRange {
    /// The invisible time of a receive: [`InvisibleRange::default`] when absent, else the
    /// requested one within `[min, max]`.
    ///
    /// # Errors
    /// [`Error::InvisibleOutOfRange`] for a malformed, negative or out-of-range duration.
    pub fn for_receive(&self, requested: Option<&prost_types::Duration>) -> Result<Duration> {
        let Some(d) = requested else {
            return Ok(self.default);
        };
        match from_proto(d) {
            Some(v) if v >= self.min && v <= self.max => Ok(v),
            _ => Err(Error::InvisibleOutOfRange {
                seconds: d.seconds,
                nanos: d.nanos,
                min: self.min,
                max: self.max,
            }),
        }
    }

    /// The invisible time of a change: the requested one (zero when absent) raised to `min`.
    /// The floor keeps clients that ask for ~0 s on every retry (the Node client) at the pace
    /// upstream's revive scan gives them, since Comet's timers are exact.
    ///
    /// # Errors
    /// [`Error::InvisibleAboveMax`] for a malformed, negative or too long duration.
    pub fn for_change(&self, requested: Option<&prost_types::Duration>) -> Result<Duration> {
        let requested = match requested {
            None => Duration::ZERO,
            Some(d) => match from_proto(d) {
                Some(v) if v <= self.max => v,
                _ => {
                    return Err(Error::InvisibleAboveMax {
                        seconds: d.seconds,
                        nanos: d.nanos,
                        max: self.max,
                    });
                }
            },
        };
        Ok(requested.max(self.min))
    }
}

/// Checks a delay message's delivery time against `now` (since the Unix epoch) and the
/// accepted delay, and returns it as time since the epoch. A time in the past is accepted
/// (delivered at once).
///
/// # Errors
/// [`Error::DeliveryTimeInvalid`] before the epoch or with nanos outside `0..1e9`;
/// [`Error::DeliveryTimeTooFar`] beyond `now + max_delay`.
pub fn check_delivery_time(
    at: &prost_types::Timestamp,
    now: Duration,
    max_delay: Duration,
) -> Result<Duration> {
    if !(0..1_000_000_000).contains(&at.nanos) {
        return Err(Error::DeliveryTimeInvalid);
    }
    let Ok(seconds) = u64::try_from(at.seconds) else {
        return Err(Error::DeliveryTimeInvalid);
    };
    let at = Duration::new(seconds, at.nanos.unsigned_abs());
    if at > now.saturating_add(max_delay) {
        return Err(Error::DeliveryTimeTooFar {
            ahead_secs: (at - now).as_secs(),
            max_secs: max_delay.as_secs(),
        });
    }
    Ok(at)
}

/// What a message carries besides a priority, for [`check_priority`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PriorityPeers {
    /// A FIFO message group.
    pub message_group: bool,
    /// A delivery timestamp (DELAY).
    pub delivery_time: bool,
    /// A lite topic (LITE).
    pub lite_topic: bool,
}

/// RIP-80's rule for a PRIORITY message, as the official clients check it (Java 5.2's
/// `MessageBuilder.setPriority`, Node 1.0.8's `Message`): the priority is 0 or more, and the
/// message carries no message group, delivery time or lite topic.
///
/// # Errors
/// [`Error::NegativePriority`] below zero (checked first); [`Error::PriorityConflict`] naming
/// the first conflicting field (message group, delivery timestamp, lite topic).
pub fn check_priority(priority: i32, peers: PriorityPeers) -> Result<()> {
    if priority < 0 {
        return Err(Error::NegativePriority { priority });
    }
    let what = if peers.message_group {
        "a message group"
    } else if peers.delivery_time {
        "a delivery timestamp"
    } else if peers.lite_topic {
        "a lite topic"
    } else {
        return Ok(());
    };
    Err(Error::PriorityConflict { what })
}

/// The queue (of `queue_count` on one broker set) a message of `priority` goes to: the
/// priority itself, capped at the highest queue, so queue order is priority order and
/// priorities at or above `queue_count - 1` share the highest queue.
pub fn priority_queue(priority: i32, queue_count: u32) -> i32 {
    let top = i32::try_from(queue_count.max(1) - 1).unwrap_or(i32::MAX);
    priority.clamp(0, top)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_priority_is_zero_or_more_and_excludes_group_delay_and_lite() {
        let none = PriorityPeers::default();
        assert_eq!(check_priority(0, none), Ok(()));
        assert_eq!(check_priority(i32::MAX, none), Ok(()));
        let e = check_priority(-1, none).unwrap_err();
        assert_eq!(
            e.to_string(),
            "priority -1 is negative; priorities are 0 or more (higher is first)"
        );
        for (peers, what) in [
            (
                PriorityPeers {
                    message_group: true,
                    ..none
                },
                "a message group",
            ),
            (
                PriorityPeers {
                    delivery_time: true,
                    ..none
                },
                "a delivery timestamp",
            ),
            (
                PriorityPeers {
                    lite_topic: true,
                    ..none
                },
                "a lite topic",
            ),
        ] {
            let e = check_priority(1, peers).unwrap_err();
            assert_eq!(e, Error::PriorityConflict { what });
            assert_eq!(
                e.to_string(),
                format!(
                    "a PRIORITY message must not carry {what}; priority does not combine with it"
                )
            );
        }
        // A negative priority is reported before a conflict.
        let both = PriorityPeers {
            message_group: true,
            ..none
        };
        assert!(matches!(
            check_priority(-2, both),
            Err(Error::NegativePriority { priority: -2 })
        ));
    }

    #[test]
    fn a_priority_maps_to_its_queue_capped_at_the_highest() {
        assert_eq!(priority_queue(0, 4), 0);
        assert_eq!(priority_queue(3, 4), 3);
        assert_eq!(priority_queue(9, 4), 3);
        assert_eq!(priority_queue(5, 1), 0);
        assert_eq!(priority_queue(5, 0), 0);
        assert_eq!(priority_queue(-1, 4), 0);
    }

    fn pd(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    #[test]
    fn a_receive_takes_the_default_or_a_duration_within_the_range() {
        let r = InvisibleRange::default();
        assert_eq!(r.for_receive(None), Ok(INVISIBLE_DEFAULT));
        assert_eq!(r.for_receive(Some(&pd(1, 0))), Ok(INVISIBLE_MIN));
        assert_eq!(r.for_receive(Some(&pd(12 * 3600, 0))), Ok(INVISIBLE_MAX));
        for bad in [pd(0, 999_999_999), pd(12 * 3600, 1), pd(-1, 0), pd(5, -1)] {
            assert!(
                matches!(
                    r.for_receive(Some(&bad)),
                    Err(Error::InvisibleOutOfRange { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            r.for_receive(Some(&pd(0, 5))).unwrap_err().to_string(),
            "invisible duration 0s5ns is outside the allowed range [1s, 43200s]"
        );
    }

    #[test]
    fn a_change_is_raised_to_the_minimum_and_refused_above_the_maximum() {
        let r = InvisibleRange::default();
        assert_eq!(r.for_change(None), Ok(INVISIBLE_MIN));
        assert_eq!(r.for_change(Some(&pd(0, 1_000_000))), Ok(INVISIBLE_MIN));
        assert_eq!(r.for_change(Some(&pd(30, 0))), Ok(Duration::from_secs(30)));
        assert_eq!(r.for_change(Some(&pd(12 * 3600, 0))), Ok(INVISIBLE_MAX));
        assert_eq!(
            r.for_change(Some(&pd(12 * 3600 + 1, 0)))
                .unwrap_err()
                .to_string(),
            "invisible duration 43201s0ns is negative or above the maximum of 43200s"
        );
        assert!(matches!(
            r.for_change(Some(&pd(-1, 0))),
            Err(Error::InvisibleAboveMax { .. })
        ));
    }

    #[test]
    fn delivery_times_within_the_delay_are_accepted() {
        let now = Duration::from_secs(1_700_000_000);
        let ts = |seconds: i64, nanos: i32| prost_types::Timestamp { seconds, nanos };
        let now_s = now.as_secs() as i64;
        assert_eq!(
            check_delivery_time(&ts(now_s + 10, 5), now, MAX_DELIVERY_DELAY),
            Ok(Duration::new(now.as_secs() + 10, 5))
        );
        assert!(check_delivery_time(&ts(0, 0), now, MAX_DELIVERY_DELAY).is_ok());
        let max = MAX_DELIVERY_DELAY.as_secs() as i64;
        assert!(check_delivery_time(&ts(now_s + max, 0), now, MAX_DELIVERY_DELAY).is_ok());
        let err =
            check_delivery_time(&ts(now_s + 41 * 86_400, 0), now, MAX_DELIVERY_DELAY).unwrap_err();
        assert_eq!(
            err.to_string(),
            "delivery time is 3542400s in the future, more than the limit of 3456000s (40 days)"
        );
        for bad in [ts(-1, 0), ts(now_s, -1), ts(now_s, 1_000_000_000)] {
            assert_eq!(
                check_delivery_time(&bad, now, MAX_DELIVERY_DELAY),
                Err(Error::DeliveryTimeInvalid),
                "{bad:?}"
            );
        }
    }
}
