//! [`ByteSize`]: the `--message-size` flag, written `1024`, `1KiB` or `64 KiB`.

use std::fmt;
use std::str::FromStr;

/// A number of bytes. Units are binary and case-insensitive (`B`, `KiB`, `MiB`, `GiB`);
/// decimal units (`KB`, `MB`) are refused rather than guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Units from the largest, with their multipliers.
const UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(digits_end);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a size: expected e.g. 1024, 1KiB, 4MiB"))?;
        let unit = unit.trim();
        if unit.is_empty() {
            return Ok(ByteSize(n));
        }
        let (_, mult) = UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .ok_or_else(|| format!("{s:?}: unknown unit; use B, KiB, MiB or GiB"))?;
        n.checked_mul(*mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that divides the size exactly: `64KiB`, `1000B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, mult) = UNITS
            .iter()
            .find(|(_, mult)| self.0 != 0 && self.0.is_multiple_of(*mult))
            .copied()
            .unwrap_or(("B", 1));
        write!(f, "{}{name}", self.0 / mult)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_bytes_or_binary_units_when_parsed_should_give_bytes() {
        let parse = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(parse("1024"), Ok(1024));
        assert_eq!(parse("1KiB"), Ok(1024));
        assert_eq!(parse(" 64 kib "), Ok(64 << 10));
        assert_eq!(parse("4MiB"), Ok(4 << 20));
        for bad in ["", "KiB", "1KB", "1.5KiB", "-1", "99999999999GiB"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn given_a_size_when_displayed_should_use_the_largest_exact_unit() {
        assert_eq!(ByteSize(1024).to_string(), "1KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(ByteSize(0).to_string(), "0B");
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }
}
