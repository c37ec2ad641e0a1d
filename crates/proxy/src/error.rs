//! The crate's error type: failures of configuration and of the server itself. Per-request
//! business errors are not errors here: they travel as in-body statuses (see [`crate::status`]).

/// Errors of [`crate::Proxy::serve`] and [`crate::ProxyConfig::validate`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A configuration value is out of range.
    #[error("invalid proxy configuration: {key}: {reason}")]
    InvalidConfig {
        /// The offending key(s).
        key: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The gRPC server failed (accepting connections, HTTP/2).
    #[error("proxy gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A connection thread or its runtime could not be started, or the listener failed.
    #[error("proxy {what} failed: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A connection thread ended without reporting (it panicked).
    #[error("proxy connection thread {0} panicked")]
    LanePanicked(usize),
    /// The reflection service could not load the descriptor set.
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Telemetry tasks were still running `shutdown_grace` after the server stopped.
    #[error("{remaining} telemetry task(s) still running {grace:?} after shutdown")]
    DrainTimedOut {
        /// Tasks left.
        remaining: usize,
        /// The grace period waited.
        grace: std::time::Duration,
    },
}

/// Result alias of this crate.
pub type Result<T, E = ProxyError> = std::result::Result<T, E>;
