//! Human-readable durations (`500ms`, `20s`, `12h`) in the config file, environment and flags.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration written the humantime way: `500ms`, `1s`, `1m 30s`, `12h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("{s:?} is not a duration such as 500ms, 20s or 12h: {e}"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_humantime_strings_when_parsed_should_round_trip() {
        for (s, d) in [
            ("500ms", Duration::from_millis(500)),
            ("20s", Duration::from_secs(20)),
            ("12h", Duration::from_secs(12 * 3600)),
            ("1m 30s", Duration::from_secs(90)),
        ] {
            let parsed: HumanDuration = s.parse().unwrap();
            assert_eq!(parsed.0, d);
            let again: HumanDuration = parsed.to_string().parse().unwrap();
            assert_eq!(again.0, d);
        }
        let err = "fast".parse::<HumanDuration>().unwrap_err();
        assert!(err.contains("not a duration"), "{err}");
    }
}
