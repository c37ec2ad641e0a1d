//! The store's one error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Result alias used throughout the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
///
/// Variants carry the facts a person needs to act on the error (the path, the offset, the limit
/// that was crossed). Callers that map errors to protocol codes match on the variant, never on the
/// message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the store was doing, e.g. "open segment".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Another process (or another `MessageStore` in this process) holds the data directory.
    #[error("store directory {path} is locked by another process")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },

    /// Bytes on disk failed verification (length, magic or CRC32C). The record is never served.
    #[error("corrupt data at offset {offset}: {reason}")]
    Corrupt {
        /// Physical (commitlog) or file offset of the bad data.
        offset: i64,
        /// What check failed.
        reason: String,
    },

    /// A SYNC-flush append was written but not made durable within the sync timeout.
    ///
    /// The record stays in the log and becomes durable with a later flush unless the machine
    /// loses power first: the caller must treat the outcome as unknown.
    #[error("append at offset {offset} was not flushed to disk within {timeout:?}")]
    FlushTimeout {
        /// Physical offset of the record (or first record of a batch).
        offset: i64,
        /// The configured sync timeout.
        timeout: Duration,
    },

    /// The disk holding the store is above the refuse watermark; appends fail, reads continue.
    #[error(
        "disk full: {path} is {used_percent:.1}% used, above the {limit_percent:.1}% refuse \
         watermark; appends are refused until retention frees space"
    )]
    DiskFull {
        /// The data directory.
        path: PathBuf,
        /// Current usage of the filesystem, in percent.
        used_percent: f64,
        /// The configured refuse watermark, in percent.
        limit_percent: f64,
    },

    /// A message (or batch) does not fit the limits of the log.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// Encoded size of the record or batch.
        size: usize,
        /// The limit that applies.
        max: usize,
    },

    /// A message field is invalid (too long, empty where required, ...).
    #[error("invalid message: {0}")]
    InvalidMessage(String),

    /// A physical or logical offset outside the range the store holds.
    #[error("offset {offset} is outside the stored range [{min}, {max})")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// First offset still stored.
        min: i64,
        /// One past the last offset stored.
        max: i64,
    },

    /// A configuration value is out of its allowed range.
    #[error("invalid store config `{key}`: {reason}")]
    Config {
        /// The config key, as written in the config file.
        key: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// The files in the data directory do not form a valid layout (bad names, gaps, sizes).
    #[error("invalid store layout in {path}: {reason}")]
    Layout {
        /// The file or directory with the problem.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The store has been shut down.
    #[error("the store is shut down")]
    Closed,

    /// Appends are refused by the write gate (see [`crate::WriteGate`]): the broker is a
    /// replica, or a master that cannot confirm it still is one. Nothing was written.
    #[error("appends are refused: {0}")]
    NotWritable(String),

    /// A replica append does not continue the log where it ends.
    #[error(
        "replica append at offset {offset} does not continue the log, which ends at {expected}"
    )]
    NotContiguous {
        /// Where the rejected bytes claim to start.
        offset: i64,
        /// The end of the local log.
        expected: i64,
    },

    /// The operation does not fit the store's current state (e.g. an epoch that goes back).
    #[error("{0}")]
    InvalidState(String),
}

impl StoreError {
    /// Builds an [`StoreError::Io`] from an operation name and path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }

    /// Builds a [`StoreError::Corrupt`].
    pub(crate) fn corrupt(offset: i64, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            offset,
            reason: reason.into(),
        }
    }
}
