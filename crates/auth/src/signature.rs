//! The `authorization` header of the RocketMQ 5 clients and its HMAC-SHA1 verification.
//!
//! ```text
//! authorization: MQv2-HMAC-SHA1 Credential=<access key>, SignedHeaders=x-mq-date-time, Signature=<hex>
//! signature = HMAC-SHA1(key = secret key, message = value of x-mq-date-time)
//! ```
//!
//! Rust and Python clients write the hex in lower case, Node in upper case: both are accepted.
//! The comparison is constant-time (`hmac`'s `verify_slice`). Parsing never panics, whatever
//! the bytes (a proptest pins it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Header carrying the signature.
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// Header whose value is signed.
pub const DATE_TIME_HEADER: &str = "x-mq-date-time";
/// The only algorithm the clients use.
pub const ALGORITHM: &str = "MQv2-HMAC-SHA1";
/// Longest `authorization` value looked at (a real one is about 130 bytes).
const MAX_AUTHORIZATION_LEN: usize = 1024;

/// Why a request was not authenticated (UNAUTHORIZED, 40100). The text says what was wrong
/// and names nothing but what the client itself sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No `authorization` header.
    #[error("authentication required: the authorization header is missing")]
    MissingAuthorization,
    /// The header is not `MQv2-HMAC-SHA1 Credential=…, SignedHeaders=…, Signature=<hex>`.
    #[error("malformed authorization header: {0}")]
    Malformed(&'static str),
    /// No `x-mq-date-time` header (the signed value).
    #[error("authentication failed: the x-mq-date-time header is missing")]
    MissingDate,
    /// No user has this access key.
    #[error("authentication failed: unknown access key {0:?}")]
    UnknownAccessKey(String),
    /// The signature is not HMAC-SHA1(secret of the access key, x-mq-date-time).
    #[error(
        "authentication failed: signature mismatch for access key {0:?} (check the secret key)"
    )]
    BadSignature(String),
    /// The date is further from the server's clock than `auth.max_clock_skew` allows, or
    /// cannot be read while that window is on.
    #[error("authentication failed: x-mq-date-time {date:?} {why}")]
    StaleDate {
        /// The header value.
        date: String,
        /// "is 120s away from the server clock (allowed: 60s)" or "is not a date".
        why: String,
    },
}

/// A parsed `authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// The access key (the user name).
    pub access_key: &'a str,
    /// The headers named as signed (always `x-mq-date-time` from the official clients).
    pub signed_headers: &'a str,
    /// The 20 bytes of the HMAC-SHA1.
    pub signature: [u8; 20],
}

/// Parses an `authorization` value.
///
/// # Errors
/// [`Refusal::Malformed`] naming the first problem.
pub fn parse_authorization(value: &[u8]) -> Result<Authorization<'_>, Refusal> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(Refusal::Malformed("longer than 1024 bytes"));
    }
    let text = std::str::from_utf8(value).map_err(|_| Refusal::Malformed("not UTF-8"))?;
    let text = text.trim();
    let (algorithm, rest) = text.split_once(' ').ok_or(Refusal::Malformed(
        "expected \"MQv2-HMAC-SHA1 Credential=...\"",
    ))?;
    if algorithm != ALGORITHM {
        return Err(Refusal::Malformed("the algorithm is not MQv2-HMAC-SHA1"));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for item in rest.split(',') {
        let (key, val) = item
            .trim()
            .split_once('=')
            .ok_or(Refusal::Malformed("an item is not key=value"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(Refusal::Malformed(
                    "unknown item (expected Credential, SignedHeaders, Signature)",
                ));
            }
        };
        if slot.replace(val.trim()).is_some() {
            return Err(Refusal::Malformed("an item appears twice"));
        }
    }
    // Older clients append "/<scope>" to the access key; the key is what precedes it.
    let access_key = credential
        .ok_or(Refusal::Malformed("Credential is missing"))?
        .split('/')
        .next()
        .unwrap_or_default();
    if access_key.is_empty() {
        return Err(Refusal::Malformed(
            "Credential is empty (no access key configured)",
        ));
    }
    let signed_headers = signed_headers.ok_or(Refusal::Malformed("SignedHeaders is missing"))?;
    if !signed_headers
        .split(';')
        .any(|h| h.trim().eq_ignore_ascii_case(DATE_TIME_HEADER))
    {
        return Err(Refusal::Malformed(
            "SignedHeaders does not name x-mq-date-time",
        ));
    }
    let hex_signature = signature.ok_or(Refusal::Malformed("Signature is missing"))?;
    let mut signature = [0u8; 20];
    hex::decode_to_slice(hex_signature, &mut signature)
        .map_err(|_| Refusal::Malformed("Signature is not 40 hex digits"))?;
    Ok(Authorization {
        access_key,
        signed_headers,
        signature,
    })
}

/// HMAC-SHA1 of `date` under `secret`, as the official clients compute it.
pub fn sign(secret: &[u8], date: &str) -> [u8; 20] {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(date.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Whether `signature` is HMAC-SHA1(`secret`, `date`); constant-time in the signature.
pub fn signature_matches(secret: &[u8], date: &str, signature: &[u8]) -> bool {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(date.as_bytes());
    mac.verify_slice(signature).is_ok()
}

/// Checks `date` against the clock when a skew window is set.
///
/// # Errors
/// [`Refusal::StaleDate`] when the date is unreadable or too far from `now`.
pub fn check_skew(date: &str, now: SystemTime, max_skew: Option<Duration>) -> Result<(), Refusal> {
    let Some(max) = max_skew else {
        return Ok(());
    };
    let Some(at) = parse_date_time(date) else {
        return Err(Refusal::StaleDate {
            date: date.to_owned(),
            why: "is not a date (RFC 3339 or yyyyMMddTHHmmssZ)".to_owned(),
        });
    };
    let off = match now.duration_since(at) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if off > max {
        return Err(Refusal::StaleDate {
            date: date.to_owned(),
            why: format!(
                "is {}s away from the server clock (allowed: {}s)",
                off.as_secs(),
                max.as_secs()
            ),
        });
    }
    Ok(())
}

/// Reads the clients' date formats: RFC 3339 with optional fraction and `Z` or `±hh:mm`
/// (Rust, Java) and `yyyyMMddTHHmmssZ` (Python, Node).
pub fn parse_date_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (y, mo, d, h, mi, sec, mut rest) = if b.get(4) == Some(&b'-') {
        if b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
            return None;
        }
        if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
            return None;
        }
        (
            num(0..4)?,
            num(5..7)?,
            num(8..10)?,
            num(11..13)?,
            num(14..16)?,
            num(17..19)?,
            19,
        )
    } else {
        if b.get(8) != Some(&b'T') {
            return None;
        }
        (
            num(0..4)?,
            num(4..6)?,
            num(6..8)?,
            num(9..11)?,
            num(11..13)?,
            num(13..15)?,
            15,
        )
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut nanos: u32 = 0;
    if b.get(rest) == Some(&b'.') {
        rest += 1;
        let start = rest;
        while b.get(rest).is_some_and(u8::is_ascii_digit) {
            rest += 1;
        }
        let digits = s.get(start..rest)?;
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        let scale = 10u32.pow(9 - u32::try_from(digits.len()).ok()?);
        nanos = digits.parse::<u32>().ok()?.checked_mul(scale)?;
    }
    let offset_secs = match s.get(rest..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let hh = num(rest + 1..rest + 3)?;
            let mm = num(rest + 4..rest + 6)?;
            sign * (hh * 3600 + mm * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The signature the official clients send for secret "sk" and this date, computed
    /// independently (`printf %s 20261121T004054Z | openssl sha1 -hmac sk`, and Python's
    /// `hmac.new(b"sk", date, hashlib.sha1).hexdigest()` as the Python client does).
    const DATE: &str = "20261121T004054Z";
    const OFFICIAL: &str = "1693d0bf930c550b9a2f605356bc68d2981c793f";

    #[test]
    fn given_the_official_algorithm_when_signing_should_match_its_bytes() {
        assert_eq!(hex::encode(sign(b"sk", DATE)), OFFICIAL);
        let mut raw = [0u8; 20];
        hex::decode_to_slice(OFFICIAL, &mut raw).unwrap();
        assert!(signature_matches(b"sk", DATE, &raw));
    }

    fn header(ak: &str, sig: &str) -> String {
        format!("MQv2-HMAC-SHA1 Credential={ak}, SignedHeaders=x-mq-date-time, Signature={sig}")
    }

    #[test]
    fn given_upper_or_lower_hex_when_parsing_should_read_the_same_signature() {
        let sig = hex::encode(sign(b"sk", DATE));
        let lower = header("ak", &sig);
        let upper = header("ak", &sig.to_ascii_uppercase());
        let a = parse_authorization(lower.as_bytes()).unwrap();
        let b = parse_authorization(upper.as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.access_key, "ak");
        assert!(signature_matches(b"sk", DATE, &a.signature));
        assert!(!signature_matches(b"other", DATE, &a.signature));
        assert!(!signature_matches(b"sk", "20261121T004055Z", &a.signature));
    }

    #[test]
    fn given_malformed_headers_when_parsing_should_say_what_is_wrong() {
        let sig = hex::encode(sign(b"sk", DATE));
        let cases = [
            ("", "expected"),
            ("Basic abc", "algorithm"),
            ("AWS4 Credential=a", "algorithm"),
            (
                "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=00",
                "empty",
            ),
            (
                "MQv2-HMAC-SHA1 SignedHeaders=x-mq-date-time, Signature=00",
                "Credential is missing",
            ),
            (
                "MQv2-HMAC-SHA1 Credential=a, Signature=00",
                "SignedHeaders is missing",
            ),
            (
                "MQv2-HMAC-SHA1 Credential=a, SignedHeaders=host, Signature=00",
                "x-mq-date-time",
            ),
            (
                "MQv2-HMAC-SHA1 Credential=a, SignedHeaders=x-mq-date-time",
                "Signature is missing",
            ),
            (
                "MQv2-HMAC-SHA1 Credential=a, SignedHeaders=x-mq-date-time, Signature=zz",
                "40 hex",
            ),
            ("MQv2-HMAC-SHA1 Credential=a, Credential=b", "twice"),
            ("MQv2-HMAC-SHA1 Credential=a, Foo=b", "unknown item"),
            ("MQv2-HMAC-SHA1 Credential", "key=value"),
        ];
        for (value, says) in cases {
            let err = parse_authorization(value.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(says), "{value:?}: {err}");
        }
        // Python's header without credentials.
        let python = header("", &sig);
        assert!(matches!(
            parse_authorization(python.as_bytes()),
            Err(Refusal::Malformed(_))
        ));
        assert!(parse_authorization(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn given_the_clients_date_formats_when_parsing_should_agree() {
        let basic = parse_date_time("20261121T004054Z").unwrap();
        let rfc = parse_date_time("2026-11-21T00:40:54Z").unwrap();
        let nanos = parse_date_time("2026-11-21T00:40:54.536817941Z").unwrap();
        let offset = parse_date_time("2026-11-21T08:40:54+08:00").unwrap();
        assert_eq!(basic, rfc);
        assert_eq!(offset, rfc);
        assert_eq!(
            nanos.duration_since(rfc).unwrap(),
            Duration::from_nanos(536_817_941)
        );
        assert_eq!(parse_date_time("1970-01-01T00:00:00Z").unwrap(), UNIX_EPOCH);
        assert_eq!(
            rfc.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_221_654
        );
        for bad in [
            "",
            "2026",
            "2026-13-01T00:00:00Z",
            "20261121T004054",
            "x0261121T004054Z",
            "2026-11-21T00:40:54.Z",
        ] {
            assert_eq!(parse_date_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn given_a_skew_window_when_the_date_is_far_should_refuse() {
        let at = parse_date_time("2026-11-21T00:40:54Z").unwrap();
        let window = Some(Duration::from_secs(60));
        assert!(check_skew("2026-11-21T00:41:30Z", at, window).is_ok());
        assert!(check_skew("2026-11-21T00:39:00Z", at, None).is_ok());
        let err = check_skew("2026-11-21T00:39:00Z", at, window).unwrap_err();
        assert!(err.to_string().contains("114s away"), "{err}");
        assert!(matches!(
            check_skew("yesterday", at, window),
            Err(Refusal::StaleDate { .. })
        ));
    }
}
