//! Results of the broker's operations: the in-body failure (a status code and a message), how
//! store errors read to a client, and running blocking store work off the async runtime.
//!
//! A failure of one request is not an error of the broker: it travels to the caller as a code
//! and a message. [`crate::error::BrokerError`] is for opening, running and closing a broker.

use comet_proto::apache::rocketmq::v2::{Code, Status};
use comet_store::StoreError;

/// An in-body outcome: code and message.
pub(crate) type Outcome = (Code, String);

pub(crate) fn status(code: Code, message: impl Into<String>) -> Status {
    Status {
        code: code as i32,
        message: message.into(),
    }
}

pub(crate) fn ok() -> Status {
    status(Code::Ok, "OK")
}

/// The overall status of per-entry results: the common code if all agree, else
/// MULTIPLE_RESULTS.
pub(crate) fn overall(entries: &[&Status]) -> Status {
    match entries.first() {
        None => ok(),
        Some(first) if entries.iter().all(|s| s.code == first.code) => {
            if first.code == Code::Ok as i32 {
                ok()
            } else {
                (*first).clone()
            }
        }
        Some(_) => status(
            Code::MultipleResults,
            "entries have different results; see each entry's status",
        ),
    }
}

/// Why a call found the store closed. HA_NOT_AVAILABLE: retryable, like every answer of a
/// broker between two instances or two masters.
pub(crate) const SHUTTING_DOWN: &str = "the broker is shutting down or changing its role; retry";

/// How a store failure reads to a client.
pub(crate) fn store_outcome(e: &StoreError) -> Outcome {
    match e {
        StoreError::FlushTimeout { .. } => (Code::MasterPersistenceTimeout, e.to_string()),
        StoreError::MessageTooLarge { .. } => (Code::MessageBodyTooLarge, e.to_string()),
        StoreError::InvalidMessage(_) => (Code::BadRequest, e.to_string()),
        // Closed under the call: the instance is being replaced (role change) or stopped; a
        // retry reaches the next instance or the set's next master.
        StoreError::Closed => (Code::HaNotAvailable, SHUTTING_DOWN.into()),
        StoreError::NotWritable(reason) => (Code::HaNotAvailable, reason.clone()),
        _ => (Code::InternalServerError, e.to_string()),
    }
}

/// Runs blocking store work on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Outcome> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "blocking broker task failed");
        (
            Code::InternalServerError,
            format!("internal task failed: {e}"),
        )
    })
}
