//! The broker's one error type.

use std::io;
use std::path::PathBuf;

/// What can go wrong opening, running or shutting down a broker. Per-request outcomes are not
/// errors of this type: they travel as in-body `Status` codes of the RPC responses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A configuration value is out of range.
    #[error("invalid broker config `{key}`: {reason}")]
    Config {
        /// The config key.
        key: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// The storage engine failed.
    #[error("store: {0}")]
    Store(#[from] comet_store::StoreError),

    /// Reading or writing the consumer state failed.
    #[error("consumer state {op} {path}: {source}")]
    StateIo {
        /// What the broker was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The consumer-state files do not form a valid state.
    #[error("consumer state in {path} is invalid: {reason}")]
    StateCorrupt {
        /// The file with the problem.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),

    /// Calls were still running when the shutdown grace period ended.
    #[error("{calls} calls were still running after the {grace:?} shutdown grace period")]
    DrainTimeout {
        /// Calls still running.
        calls: usize,
        /// The grace period.
        grace: std::time::Duration,
    },

    /// The node's gRPC server failed (accepting connections, HTTP/2).
    #[error("broker gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl BrokerError {
    pub(crate) fn state_io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| BrokerError::StateIo { op, path, source }
    }
}
