//! The crate's one error type.

/// Why setting up or serving observability failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Prometheus exporter or its encoder failed.
    #[error("prometheus exposition: {0}")]
    Prometheus(String),
    /// The OTLP exporter could not be built for `endpoint`.
    #[error("OTLP exporter for {endpoint}: {reason}")]
    Otlp { endpoint: String, reason: String },
    /// A log filter did not parse; `directives` is what was given.
    #[error(
        "invalid log level {directives:?}: {reason} (e.g. `info`, `debug`, `comet_broker=debug,info`)"
    )]
    LogLevel { directives: String, reason: String },
    /// The tracing subscriber was installed by someone else, so the level cannot be changed here.
    #[error("the log subscriber of this process is not Comet's; its level cannot be changed")]
    NoLogHandle,
    /// A setting is out of range; `key` names it.
    #[error("{key}: {reason}")]
    Config { key: &'static str, reason: String },
    /// The HTTP listener failed.
    #[error("metrics listener: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
