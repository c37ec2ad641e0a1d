//! The crate's one error type.

use std::path::PathBuf;

/// Failures of configuration, key and certificate handling (request refusals are
/// [`crate::Refusal`] and [`crate::Forbidden`], which are answers, not errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong ("no certificate", "no private key", ...).
        what: String,
    },
    /// rustls refused the certificates or keys.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (bad CA).
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    /// A cluster key is malformed (wrong length or encoding).
    #[error("cluster key: {0}")]
    Key(String),
    /// An encrypted secret could not be decrypted or is malformed.
    #[error("encrypted secret: {0}")]
    Secret(String),
    /// An ACL or user field is invalid; the message names the field and the rule.
    #[error("{0}")]
    Invalid(String),
}

/// Result with [`AuthError`].
pub type Result<T, E = AuthError> = std::result::Result<T, E>;
