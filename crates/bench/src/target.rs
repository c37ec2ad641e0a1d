//! The proxy to benchmark: `--endpoint` parsed into a URI and the `Endpoints` message the
//! protocol wants in QueryRoute and Settings. Every client kind connects to a [`Target`].

use std::net::SocketAddr;

use anyhow::{anyhow, bail};
use comet_proto::apache::rocketmq::v2::{Address, AddressScheme, Endpoints};

/// The access key and secret key a bench client signs its calls with (`--access-key`,
/// `--secret-key`), as the official clients do.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `x-mq-date-time` and `authorization` of a call made at `now`: the date in the official
    /// clients' form (`yyyyMMdd'T'HHmmss'Z'`, one value per second) and
    /// `MQv2-HMAC-SHA1 Credential=<ak>, SignedHeaders=x-mq-date-time, Signature=<hex>`.
    pub(crate) fn headers(
        &self,
        now: std::time::SystemTime,
    ) -> [(http::HeaderName, http::HeaderValue); 2] {
        use hmac::Mac;
        let date: String = humantime::format_rfc3339_seconds(now)
            .to_string()
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        let signature = match hmac::Hmac::<sha1::Sha1>::new_from_slice(self.secret_key.as_bytes()) {
            Ok(mut mac) => {
                mac.update(date.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
            // HMAC takes keys of any length; this arm is never taken.
            Err(_) => String::new(),
        };
        let authorization = format!(
            "MQv2-HMAC-SHA1 Credential={}, SignedHeaders=x-mq-date-time, Signature={signature}",
            self.access_key
        );
        let value = |s: String| {
            http::HeaderValue::try_from(s).unwrap_or_else(|_| http::HeaderValue::from_static(""))
        };
        [
            (http::HeaderName::from_static("x-mq-date-time"), value(date)),
            (
                http::HeaderName::from_static("authorization"),
                value(authorization),
            ),
        ]
    }
}

/// The proxy to benchmark.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `host:port` as the user wrote it (without a scheme).
    pub authority: String,
    /// `http://host:port`.
    pub uri: String,
    /// The same address as a protocol `Endpoints` (scheme from the host's form).
    pub endpoints: Endpoints,
    /// What every call is signed with (`--access-key`, `--secret-key`); `None`: unsigned.
    pub credentials: Option<Credentials>,
}

impl Target {
    /// Parses `host:port`, `[v6]:port` or `http://host:port`.
    pub(crate) fn parse(endpoint: &str) -> anyhow::Result<Self> {
        let trimmed = endpoint.trim();
        if trimmed.starts_with("https://") {
            bail!(
                "--endpoint {endpoint:?}: TLS is not supported by the benchmark; use the plain \
                 gRPC address (host:port)"
            );
        }
        let authority = trimmed
            .strip_prefix("http://")
            .unwrap_or(trimmed)
            .trim_end_matches('/');
        let bad = || {
            anyhow!(
                "--endpoint {endpoint:?} is not an address: expected host:port, e.g. \
                 127.0.0.1:8081 or proxy.example.com:8081"
            )
        };
        let (scheme, host, port) = if let Ok(addr) = authority.parse::<SocketAddr>() {
            let scheme = if addr.is_ipv4() {
                AddressScheme::IPv4
            } else {
                AddressScheme::IPv6
            };
            (scheme, addr.ip().to_string(), addr.port())
        } else {
            let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            let valid_host = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !valid_host {
                return Err(bad());
            }
            (AddressScheme::DomainName, host.to_owned(), port)
        };
        if port == 0 {
            return Err(bad());
        }
        Ok(Target {
            authority: authority.to_owned(),
            uri: format!("http://{authority}"),
            endpoints: Endpoints {
                scheme: scheme as i32,
                addresses: vec![Address {
                    host,
                    port: i32::from(port),
                }],
            },
            credentials: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_addresses_when_parsed_should_give_uri_and_endpoints() {
        let t = Target::parse("127.0.0.1:8081").expect("valid endpoint");
        assert_eq!(t.uri, "http://127.0.0.1:8081");
        assert_eq!(t.endpoints.scheme, AddressScheme::IPv4 as i32);
        assert_eq!(t.endpoints.addresses[0].host, "127.0.0.1");
        assert_eq!(t.endpoints.addresses[0].port, 8081);

        let t = Target::parse("http://proxy.example.com:9876/").expect("valid endpoint");
        assert_eq!(t.authority, "proxy.example.com:9876");
        assert_eq!(t.endpoints.scheme, AddressScheme::DomainName as i32);

        let t = Target::parse("[::1]:8081").expect("valid endpoint");
        assert_eq!(t.endpoints.scheme, AddressScheme::IPv6 as i32);
        assert_eq!(t.endpoints.addresses[0].host, "::1");
    }

    #[test]
    fn given_bad_addresses_when_parsed_should_explain() {
        for bad in [
            "",
            "localhost",
            "host:",
            "host:99999",
            ":8081",
            "a b:1",
            "h:0",
        ] {
            let e = Target::parse(bad)
                .expect_err("invalid endpoint")
                .to_string();
            assert!(e.contains("host:port"), "{bad:?}: {e}");
        }
        let e = Target::parse("https://h:443")
            .expect_err("invalid endpoint")
            .to_string();
        assert!(e.contains("TLS"), "{e}");
    }
}
