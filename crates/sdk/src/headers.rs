//! The `x-mq-*` metadata on every request, and its HMAC-SHA1 signature.
//!
//! What never changes for a client (client id, language, protocol, version, namespace,
//! session token) is encoded once into a base [`HeaderMap`] that each call clones. What
//! changes: `x-mq-date-time` (one value per second), the `authorization` signature of that
//! date (computed once per second, only with credentials) and `x-mq-request-id` (a UUID per
//! call). The date and the signature are cached together, so signing costs one HMAC per
//! second rather than one per request.
//!
//! Below the session, which holds one [`RequestHeaders`]; depends on `config` and `error`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;

use crate::config::ClientConfig;
use crate::error::{Error, Result};

const DATE_TIME: HeaderName = HeaderName::from_static("x-mq-date-time");
const AUTHORIZATION: HeaderName = HeaderName::from_static("authorization");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-mq-request-id");

/// The headers of one client's requests.
pub(crate) struct RequestHeaders {
    base: HeaderMap,
    /// Access key and secret, when both are non-blank (blank credentials sign nothing, as in
    /// the official clients).
    signer: Option<(String, String)>,
    /// The date and signature of the latest second a request was made in.
    stamp: Mutex<Option<Stamp>>,
}

#[derive(Clone)]
struct Stamp {
    second: u64,
    date: HeaderValue,
    authorization: Option<HeaderValue>,
}

impl RequestHeaders {
    /// The headers of the client `client_id` with `config`'s namespace and credentials.
    ///
    /// # Errors
    /// [`Error::Config`] when a value is not printable ASCII.
    pub(crate) fn new(client_id: &str, config: &ClientConfig) -> Result<RequestHeaders> {
        let ascii = |setting: &'static str, v: &str| {
            HeaderValue::try_from(v)
                .ok()
                .filter(|_| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
                .ok_or_else(|| Error::Config {
                    setting,
                    reason: "must be printable ASCII".into(),
                })
        };
        let mut base = HeaderMap::with_capacity(8);
        base.insert("x-mq-client-id", ascii("client id", client_id)?);
        base.insert("x-mq-language", HeaderValue::from_static("RUST"));
        base.insert("x-mq-protocol", HeaderValue::from_static("v2"));
        base.insert(
            "x-mq-client-version",
            HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
        );
        if !config.namespace.is_empty() {
            base.insert("x-mq-namespace", ascii("namespace", &config.namespace)?);
        }
        let mut signer = None;
        if let Some(c) = &config.credentials {
            ascii("credentials", &c.access_key)?;
            if let Some(token) = &c.security_token {
                base.insert("x-mq-session-token", ascii("credentials", token)?);
            }
            if !c.access_key.trim().is_empty() && !c.access_secret.trim().is_empty() {
                signer = Some((c.access_key.clone(), c.access_secret.clone()));
            }
        }
        Ok(RequestHeaders {
            base,
            signer,
            stamp: Mutex::new(None),
        })
    }

    /// The headers that are the same on every request.
    pub(crate) fn base(&self) -> &HeaderMap {
        &self.base
    }

    /// Adds the headers of a request made at `now`: date, signature, request id.
    pub(crate) fn stamp(&self, headers: &mut HeaderMap, now: SystemTime) {
        let Stamp {
            date,
            authorization,
            ..
        } = self.stamp_of(now);
        headers.insert(DATE_TIME, date);
        if let Some(a) = authorization {
            headers.insert(AUTHORIZATION, a);
        }
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
        if let Ok(v) = HeaderValue::from_str(id) {
            headers.insert(REQUEST_ID, v);
        }
    }

    /// The date and signature for `now`'s second, from the cache when it is that second's.
    fn stamp_of(&self, now: SystemTime) -> Stamp {
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut cached = self.stamp.lock();
        if let Some(s) = cached.as_ref().filter(|s| s.second == second) {
            return s.clone();
        }
        let date = date_time(UNIX_EPOCH + std::time::Duration::from_secs(second));
        let authorization = self
            .signer
            .as_ref()
            .and_then(|(key, secret)| shared_value(authorization(key, secret, &date)));
        let stamp = Stamp {
            second,
            date: shared_value(date).unwrap_or_else(|| HeaderValue::from_static("")),
            authorization,
        };
        *cached = Some(stamp.clone());
        stamp
    }
}

/// A header value backed by shared bytes, so clones of it are reference counts.
fn shared_value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(s)).ok()
}

/// `x-mq-date-time`: `yyyyMMdd'T'HHmmss'Z'` in UTC.
fn date_time(now: SystemTime) -> String {
    humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

/// The `authorization` header: HMAC-SHA1 of the date with the secret, hex.
fn authorization(access_key: &str, secret: &str, date: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(date.as_bytes());
    let signature = hex::encode_upper(mac.finalize().into_bytes());
    format!(
        "MQv2-HMAC-SHA1 Credential={access_key}, SignedHeaders=x-mq-date-time, Signature={signature}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Credentials;
    use std::time::Duration;

    #[test]
    fn given_a_known_time_when_formatted_should_follow_the_x_mq_date_time_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(date_time(t), "20231114T221320Z");
    }

    #[test]
    fn given_a_secret_when_signing_should_produce_the_rfc2202_hmac_sha1() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        let v = authorization("ak", "Jefe", "what do ya want for nothing?");
        assert_eq!(
            v,
            "MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time, \
             Signature=EFFCDF6AE5EB2FA2D27416D5F184DF9C259A7C79"
        );
    }

    fn signed_config() -> ClientConfig {
        ClientConfig {
            namespace: "ns".into(),
            credentials: Some(Credentials::new("ak", "sk").with_security_token("tok")),
            ..ClientConfig::default()
        }
    }

    #[test]
    fn given_requests_in_one_second_should_share_the_cached_date_and_signature() {
        let h = RequestHeaders::new("host@1@0@x", &signed_config()).unwrap();
        let second = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (mut a, mut b) = (h.base().clone(), h.base().clone());
        h.stamp(&mut a, second + Duration::from_millis(10));
        h.stamp(&mut b, second + Duration::from_millis(990));
        assert_eq!(a["x-mq-date-time"], "20231114T221320Z");
        for name in ["x-mq-date-time", "authorization"] {
            // The same bytes, not an equal copy: the value was built once for the second.
            assert_eq!(
                a[name].as_bytes().as_ptr(),
                b[name].as_bytes().as_ptr(),
                "{name}"
            );
        }
        assert_eq!(
            a["authorization"],
            authorization("ak", "sk", "20231114T221320Z").as_str()
        );
        assert_ne!(
            a["x-mq-request-id"], b["x-mq-request-id"],
            "one request id per call"
        );
        assert_eq!(a["x-mq-namespace"], "ns");
        assert_eq!(a["x-mq-session-token"], "tok");
        assert_eq!(a["x-mq-client-id"], "host@1@0@x");

        let mut c = h.base().clone();
        h.stamp(&mut c, second + Duration::from_secs(1));
        assert_eq!(c["x-mq-date-time"], "20231114T221321Z");
        assert_eq!(
            c["authorization"],
            authorization("ak", "sk", "20231114T221321Z").as_str(),
            "the next second is signed anew"
        );
    }

    #[test]
    fn given_blank_or_no_credentials_should_sign_nothing() {
        let blank = ClientConfig {
            credentials: Some(Credentials::new("ak", " ")),
            ..ClientConfig::default()
        };
        for config in [blank, ClientConfig::default()] {
            let h = RequestHeaders::new("id", &config).unwrap();
            let mut m = h.base().clone();
            h.stamp(&mut m, SystemTime::now());
            assert!(m.get("authorization").is_none());
            assert!(m.get("x-mq-date-time").is_some());
            assert!(m.get("x-mq-namespace").is_none());
        }
    }

    #[test]
    fn given_non_ascii_settings_should_be_refused() {
        let config = ClientConfig {
            namespace: "名前".into(),
            ..ClientConfig::default()
        };
        assert!(matches!(
            RequestHeaders::new("id", &config),
            Err(Error::Config {
                setting: "namespace",
                ..
            })
        ));
    }
}
