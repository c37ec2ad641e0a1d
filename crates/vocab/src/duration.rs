//! `google.protobuf.Duration` to and from [`std::time::Duration`].

use std::time::Duration;

/// A protobuf duration as a std one; `None` when negative or malformed (nanos outside
/// `0..1e9`).
pub fn from_proto(d: &prost_types::Duration) -> Option<Duration> {
    if d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(d.seconds).ok()?,
        d.nanos.unsigned_abs(),
    ))
}

/// A std duration as a protobuf one (seconds saturate at `i64::MAX`).
pub fn to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pd(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    #[test]
    fn valid_durations_round_trip() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::new(12 * 3600, 999_999_999),
        ] {
            assert_eq!(from_proto(&to_proto(d)), Some(d));
        }
        assert_eq!(to_proto(Duration::MAX).seconds, i64::MAX);
    }

    #[test]
    fn negative_or_malformed_durations_are_refused() {
        assert_eq!(from_proto(&pd(-1, 0)), None);
        assert_eq!(from_proto(&pd(0, -1)), None);
        assert_eq!(from_proto(&pd(1, 1_000_000_000)), None);
        assert_eq!(
            from_proto(&pd(0, 999_999_999)),
            Some(Duration::new(0, 999_999_999))
        );
    }
}
