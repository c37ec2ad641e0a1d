//! Connection settings shared by every client: access points, namespace, credentials, TLS and
//! the request timeout. Each client builder embeds a [`ClientConfig`] and forwards its setters.

use std::time::Duration;

use crate::error::{Error, Result};

/// Default request timeout (the official clients use 3 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// An access key and secret; requests are signed with HMAC-SHA1 of `x-mq-date-time` (as the
/// official clients sign; a blank key or secret signs nothing).
#[derive(Clone)]
pub struct Credentials {
    pub(crate) access_key: String,
    pub(crate) access_secret: String,
    pub(crate) security_token: Option<String>,
}

impl Credentials {
    /// Credentials from an access key and its secret.
    pub fn new(access_key: impl Into<String>, access_secret: impl Into<String>) -> Self {
        Credentials {
            access_key: access_key.into(),
            access_secret: access_secret.into(),
            security_token: None,
        }
    }

    /// Adds a session token (sent as `x-mq-session-token`).
    pub fn with_security_token(mut self, token: impl Into<String>) -> Self {
        self.security_token = Some(token.into());
        self
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret and the token never appear in logs or debug output.
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// TLS for the client's connections (rustls). A server whose certificate these roots do not
/// vouch for is refused with [`crate::Error::Tls`].
#[derive(Debug, Clone)]
pub enum Tls {
    /// Trust the operating system's root certificates.
    SystemRoots,
    /// Trust this CA certificate (PEM) only.
    Ca {
        /// The CA certificate, PEM encoded.
        pem: Vec<u8>,
        /// The name to check the server's certificate against (defaults to the host).
        domain: Option<String>,
    },
}

/// Where and how a client connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub(crate) access_points: Vec<String>,
    pub(crate) namespace: String,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) tls: Option<Tls>,
    pub(crate) request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            access_points: Vec::new(),
            namespace: String::new(),
            credentials: None,
            tls: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl ClientConfig {
    /// Sets the access points from `host:port` addresses separated by `;` or `,`; the client
    /// uses the first that answers and fails over to the next.
    pub(crate) fn set_endpoints(&mut self, endpoints: &str) {
        self.access_points = endpoints
            .split([';', ','])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .to_owned()
            })
            .collect();
    }

    /// Checks what can be checked before connecting.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.access_points.is_empty() {
            return Err(Error::Config {
                setting: "endpoints",
                reason: "no access point given (expected host:port[;host:port...])".into(),
            });
        }
        for a in &self.access_points {
            let port = a.rsplit_once(':').map(|(_, p)| p);
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return Err(Error::Config {
                    setting: "endpoints",
                    reason: format!("{a:?} is not host:port"),
                });
            }
        }
        if self.request_timeout.is_zero() {
            return Err(Error::Config {
                setting: "request_timeout",
                reason: "must be greater than zero".into(),
            });
        }
        Ok(())
    }
}

/// Generates the common connection setters of a client builder that has a `config` field.
macro_rules! connection_setters {
    () => {
        /// Access points: `host:port` addresses separated by `;` (or `,`). The client fails over
        /// between them in order.
        pub fn endpoints(mut self, endpoints: impl AsRef<str>) -> Self {
            self.config.set_endpoints(endpoints.as_ref());
            self
        }

        /// The namespace resources live in (sent in every resource and as `x-mq-namespace`).
        pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
            self.config.namespace = namespace.into();
            self
        }

        /// Signs every request with these credentials.
        pub fn credentials(mut self, credentials: $crate::Credentials) -> Self {
            self.config.credentials = Some(credentials);
            self
        }

        /// Connects with TLS.
        pub fn tls(mut self, tls: $crate::Tls) -> Self {
            self.config.tls = Some(tls);
            self
        }

        /// How long a unary request may take (default 3 s). Long polls get this on top of their
        /// polling time.
        pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.config.request_timeout = timeout;
            self
        }
    };
}
pub(crate) use connection_setters;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_endpoint_lists_when_parsed_should_split_and_validate() {
        let mut c = ClientConfig::default();
        c.set_endpoints("127.0.0.1:8081; http://b:9000,");
        assert_eq!(c.access_points, vec!["127.0.0.1:8081", "b:9000"]);
        assert!(c.validate().is_ok());
        c.set_endpoints("nohost");
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                setting: "endpoints",
                ..
            })
        ));
        c.set_endpoints("");
        assert!(c.validate().is_err());
    }

    #[test]
    fn given_credentials_when_debug_printed_should_hide_the_secret() {
        let c = Credentials::new("ak", "very-secret").with_security_token("tok");
        let shown = format!("{c:?}");
        assert!(shown.contains("ak"));
        assert!(!shown.contains("very-secret"));
        assert!(!shown.contains("tok\""));
    }
}
