//! Results of the broker's operations: the one failure type ([`Failure`]: a status code and a
//! message), the refusal of a call that reached no instance ([`Unavailable`]), how store
//! errors read to a caller, and running blocking store work off the async runtime.
//!
//! A failure of one request is not an error of the broker: it travels to the caller as a code
//! and a message (in the gRPC adapter, an in-body `Status`). `BrokerError` is for opening,
//! running and closing a broker.

use std::fmt;

pub use comet_proto::apache::rocketmq::v2::Code;
use comet_store::StoreError;

/// Why an operation (or one entry of a batch) did not succeed: RocketMQ's status code and a
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The status code (never OK).
    pub code: Code,
    /// What went wrong, and what to do about it where that is known.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// The store closed under the call: the instance is being replaced (role change) or
    /// stopped. HA_NOT_AVAILABLE: a retry reaches the next instance or the set's next master.
    pub(crate) fn shutting_down() -> Failure {
        Failure::new(Code::HaNotAvailable, SHUTTING_DOWN)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str_name(), self.message)
    }
}

/// A call the broker did not take: it is shutting down or changing its role, or the store
/// closed under the call. Retryable elsewhere (the gRPC adapter answers UNAVAILABLE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a call found the store closed. HA_NOT_AVAILABLE: retryable, like every answer of a
/// broker between two instances or two masters.
pub(crate) const SHUTTING_DOWN: &str = "the broker is shutting down or changing its role; retry";

/// How a store failure reads to a client.
pub(crate) fn store_failure(e: &StoreError) -> Failure {
    match e {
        StoreError::FlushTimeout { .. } => {
            Failure::new(Code::MasterPersistenceTimeout, e.to_string())
        }
        StoreError::MessageTooLarge { .. } => {
            Failure::new(Code::MessageBodyTooLarge, e.to_string())
        }
        StoreError::InvalidMessage(_) => Failure::new(Code::BadRequest, e.to_string()),
        StoreError::Closed => Failure::shutting_down(),
        StoreError::NotWritable(reason) => Failure::new(Code::HaNotAvailable, reason.clone()),
        _ => Failure::new(Code::InternalServerError, e.to_string()),
    }
}

/// Runs blocking store work on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "blocking broker task failed");
        Failure::new(
            Code::InternalServerError,
            format!("internal task failed: {e}"),
        )
    })
}
