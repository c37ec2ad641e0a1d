//! Parsing what an operator types: namespaced names, retry backoffs and points in time, into
//! the values the APIs take.

use anyhow::{Context, bail};
use comet_proto::apache::rocketmq::v2 as pb;

use crate::duration::HumanDuration;

/// `<namespace>%<name>`, or the plain name without a namespace (`comet_vocab::namespace`:
/// `%DLQ%<name>` becomes `%DLQ%<namespace>%<name>`).
pub fn qualify(namespace: &str, name: &str) -> anyhow::Result<String> {
    if name.is_empty() {
        bail!("the name is empty");
    }
    if namespace.contains(comet_vocab::namespace::SEPARATOR) {
        bail!(
            "namespace {namespace:?} must not contain '{}'",
            comet_vocab::namespace::SEPARATOR
        )
    }
    Ok(comet_vocab::namespace::qualify(namespace, name))
}

/// Parses `exponential:1s:60s:2` or `customized:1s,5s,30s`.
pub fn parse_backoff(spec: &str) -> anyhow::Result<pb::RetryPolicy> {
    let dur = |s: &str| -> anyhow::Result<prost_types::Duration> {
        let d: HumanDuration = s.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        prost_types::Duration::try_from(d.0).context("duration out of range")
    };
    let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let strategy = match kind {
        "exponential" => {
            let parts: Vec<&str> = rest.split(':').collect();
            let [initial, max, multiplier] = parts.as_slice() else {
                bail!(
                    "backoff {spec:?}: expected exponential:INITIAL:MAX:MULTIPLIER, e.g. \
                     exponential:1s:60s:2"
                );
            };
            let multiplier: f32 = multiplier
                .parse()
                .with_context(|| format!("backoff {spec:?}: multiplier must be a number"))?;
            if !(multiplier >= 1.0 && multiplier.is_finite()) {
                bail!("backoff {spec:?}: multiplier must be at least 1");
            }
            pb::retry_policy::Strategy::ExponentialBackoff(pb::ExponentialBackoff {
                initial: Some(dur(initial)?),
                max: Some(dur(max)?),
                multiplier,
            })
        }
        "customized" => {
            let next = rest
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(dur)
                .collect::<anyhow::Result<Vec<_>>>()?;
            if next.is_empty() {
                bail!("backoff {spec:?}: give at least one delay, e.g. customized:1s,5s,30s");
            }
            pb::retry_policy::Strategy::CustomizedBackoff(pb::CustomizedBackoff { next })
        }
        _ => bail!(
            "backoff {spec:?}: use exponential:INITIAL:MAX:MULTIPLIER or customized:D1,D2,..."
        ),
    };
    Ok(pb::RetryPolicy {
        max_attempts: 0,
        strategy: Some(strategy),
    })
}

/// Parses a time given as ms since the Unix epoch or as RFC 3339 (UTC).
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        anyhow::anyhow!(
            "{s:?} is not a time: give milliseconds since the Unix epoch or an RFC 3339 time \
             such as 2024-05-01T12:00:00Z ({e})"
        )
    })?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| anyhow::anyhow!("{s:?} is before 1970"))?;
    i64::try_from(d.as_millis()).context("time out of range")
}

pub(super) fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::render::time_json;

    #[test]
    fn given_times_when_parsed_should_accept_epoch_ms_and_rfc3339() {
        assert_eq!(parse_time("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z").unwrap(),
            1_700_000_000_500
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(
            time_json(Some(&timestamp(1_700_000_000_500)))["utc"],
            "2023-11-14T22:13:20.500Z"
        );
    }

    #[test]
    fn given_backoff_specs_when_parsed_should_build_policies() {
        let p = parse_backoff("exponential:1s:60s:2").unwrap();
        match p.strategy {
            Some(pb::retry_policy::Strategy::ExponentialBackoff(e)) => {
                assert_eq!(e.initial.unwrap().seconds, 1);
                assert_eq!(e.max.unwrap().seconds, 60);
                assert!((e.multiplier - 2.0).abs() < f32::EPSILON);
            }
            other => panic!("{other:?}"),
        }
        let p = parse_backoff("customized:100ms,1s").unwrap();
        match p.strategy {
            Some(pb::retry_policy::Strategy::CustomizedBackoff(c)) => {
                assert_eq!(c.next.len(), 2);
                assert_eq!(c.next[0].nanos, 100_000_000);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "linear:1s",
            "exponential:1s:2",
            "exponential:1s:60s:0.5",
            "customized:",
            "customized:soon",
        ] {
            assert!(parse_backoff(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn given_namespaces_when_qualified_should_join_with_percent() {
        assert_eq!(qualify("", "orders").unwrap(), "orders");
        assert_eq!(qualify("prod", "orders").unwrap(), "prod%orders");
        assert!(qualify("a%b", "orders").is_err());
        assert!(qualify("", "").is_err());
    }
}
