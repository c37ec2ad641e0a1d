//! The crate's error type.

use std::path::PathBuf;

/// Errors of starting, running and stopping a controller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// A configuration value is out of range.
    #[error("invalid controller config `{key}`: {reason}")]
    Config {
        /// The config key.
        key: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// Disk I/O failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another controller holds the data directory.
    #[error(
        "data directory {path} is locked by another controller process; stop it or use another data_dir"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// Persisted data cannot be read back (not a torn tail).
    #[error("corrupt controller data in {path}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Raft refused or failed an operation.
    #[error("raft: {0}")]
    Raft(String),
    /// A remoting (NameServer protocol) frame is malformed, truncated or too
    /// large, or a command does not fit its encoding.
    #[error("remoting frame: {reason}")]
    Frame {
        /// What is wrong with it.
        reason: String,
    },
    /// A remoting body (route data JSON) cannot be read.
    #[error("remoting body: {reason}")]
    Body {
        /// What is wrong with it.
        reason: String,
    },
    /// A remoting connection failed (connect, read, write or timeout).
    #[error("remoting connection to {addr}: {reason}")]
    Connection {
        /// The peer address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// A background task panicked or could not be joined.
    #[error("controller task failed: {0}")]
    Task(String),
    /// The node's gRPC server failed (accepting connections, HTTP/2).
    #[error("controller gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = ControllerError> = std::result::Result<T, E>;
