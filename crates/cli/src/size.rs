//! Human-readable byte sizes for flags such as `--segment-size 1GiB`.

use std::fmt;
use std::str::FromStr;

/// A size in bytes, parsed from `1048576`, `64KiB`, `1GiB` or `1 GiB`.
///
/// Units are binary (IEC): `B`, `KiB`, `MiB`, `GiB`, `TiB`, case-insensitive. Decimal-looking
/// units (`KB`, `MB`, ...) are refused rather than guessed, because a store opened with the
/// wrong segment size does not open at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

const UNITS: [(&str, u64); 5] = [
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        if digits.is_empty() {
            return Err(format!(
                "{s:?} is not a size: expected a number such as 1GiB"
            ));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is too large a size"))?;
        let unit = unit.trim().to_ascii_lowercase();
        if unit.is_empty() {
            return Ok(ByteSize(n));
        }
        let Some(&(_, mult)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!(
                "{s:?} has an unknown unit; use bytes or one of B, KiB, MiB, GiB, TiB"
            ));
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large a size"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly, e.g. `64KiB`, `1GiB`, `1000B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, mult) in NAMES {
            if self.0 != 0 && self.0.is_multiple_of(mult) {
                return write!(f, "{}{name}", self.0 / mult);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    /// Accepts an integer number of bytes or a string such as `"4MiB"`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 4194304 or \"4MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{v} is not a size: sizes are not negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<u64, String> {
        s.parse::<ByteSize>().map(|b| b.0)
    }

    #[test]
    fn given_plain_bytes_or_binary_units_when_parsed_should_give_bytes() {
        assert_eq!(parse("1048576"), Ok(1_048_576));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("512B"), Ok(512));
        assert_eq!(parse("64KiB"), Ok(65_536));
        assert_eq!(parse("64kib"), Ok(65_536));
        assert_eq!(parse("16MiB"), Ok(16 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse(" 1 GiB "), Ok(1 << 30));
        assert_eq!(parse("2TiB"), Ok(2 << 40));
    }

    #[test]
    fn given_bad_input_when_parsed_should_fail_with_a_reason() {
        for bad in [
            "",
            "GiB",
            "-1",
            "1.5GiB",
            "1GB",
            "1K",
            "1 gigabyte",
            "10XiB",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(
            parse("1GB")
                .expect_err("decimal unit")
                .contains("KiB, MiB, GiB")
        );
        assert!(parse("99999999999999999999").is_err());
        assert!(parse("17179869184GiB").is_err(), "overflows u64");
    }

    #[test]
    fn given_a_size_when_displayed_should_use_the_largest_exact_unit() {
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert_eq!(ByteSize(65_536).to_string(), "64KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(ByteSize(0).to_string(), "0B");
        for s in ["1GiB", "64KiB", "1000B", "3MiB"] {
            assert_eq!(parse(s).map(|n| ByteSize(n).to_string()), Ok(s.to_owned()));
        }
    }
}
