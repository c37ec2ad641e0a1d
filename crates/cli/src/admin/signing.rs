//! The credentials admin calls are signed with, as the official clients sign theirs:
//! `x-mq-date-time` (RFC 3339, UTC) and `authorization: MQv2-HMAC-SHA1 Credential=<user>,
//! SignedHeaders=x-mq-date-time, Signature=<hex HMAC-SHA1(password, date)>`.
//!
//! Where they come from, first found wins: `--auth-username` / `--auth-password`, `COMET_USERNAME` /
//! `COMET_PASSWORD`, then `auth.username` / `auth.password` of the config file. Without a user
//! name calls go unsigned (what a controller with auth off expects).

use std::time::SystemTime;

use tonic::Request;
use tonic::metadata::MetadataValue;

use super::args::AdminTarget;
use crate::config::Config;

/// Signs admin requests (or leaves them unsigned without credentials).
#[derive(Clone, Default)]
pub struct Signer {
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl Signer {
    /// Credentials from the flags (and their environment variables), else from `cfg`.
    ///
    /// # Errors
    /// A user name without a password, or one that cannot travel in a header.
    pub fn new(target: &AdminTarget, cfg: Option<&Config>) -> anyhow::Result<Signer> {
        let from_cfg = |f: fn(&Config) -> &String| cfg.map(f).filter(|s| !s.is_empty()).cloned();
        let user = target
            .username
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| from_cfg(|c| &c.auth.username));
        let password = target
            .password
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| from_cfg(|c| &c.auth.password));
        let credentials = match (user, password) {
            (None, _) => None,
            (Some(u), None) => anyhow::bail!(
                "user {u:?} has no password: give --auth-password, COMET_PASSWORD or auth.password"
            ),
            (Some(u), Some(p)) => {
                if !comet_auth::acl::valid_username(&u) {
                    anyhow::bail!(
                        "user name {u:?} is invalid: 1 to 64 letters, digits, '-', '_' or '.'"
                    );
                }
                Some((u, p))
            }
        };
        Ok(Signer { credentials })
    }

    /// Credentials from `auth.username` / `auth.password` of `cfg` only (servers signing their
    /// own admin calls, e.g. a proxy auto-creating topics).
    ///
    /// # Errors
    /// As [`Signer::new`].
    pub fn from_config(cfg: &Config) -> anyhow::Result<Signer> {
        let none = AdminTarget {
            controllers: Vec::new(),
            config: None,
            namespace: String::new(),
            username: None,
            password: None,
        };
        Signer::new(&none, Some(cfg))
    }

    /// `message` as a request, signed when there are credentials.
    pub fn sign<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some((user, password)) = &self.credentials {
            let date = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
            let signature: String = comet_auth::signature::sign(password.as_bytes(), &date)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let authorization = format!(
                "{} Credential={user}, SignedHeaders={}, Signature={signature}",
                comet_auth::signature::ALGORITHM,
                comet_auth::DATE_TIME_HEADER
            );
            // Both values are ASCII by construction (validated user name, RFC 3339, hex).
            if let (Ok(d), Ok(a)) = (
                MetadataValue::try_from(date.as_str()),
                MetadataValue::try_from(authorization.as_str()),
            ) {
                request
                    .metadata_mut()
                    .insert(comet_auth::DATE_TIME_HEADER, d);
                request
                    .metadata_mut()
                    .insert(comet_auth::AUTHORIZATION_HEADER, a);
            }
        }
        request
    }
}
