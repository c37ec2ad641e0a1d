//! RecallMessage: cancels a delay message before its delivery time, by the recall handle its
//! send answered ([`handle`]).
//!
//! ```text
//!  send(DELAY, t) ─► schedule record @origin ─► answer { recall_handle = "<set>~" + (origin,
//!                                                        t, crc(topic), crc(message id)) }
//!  recall(topic, handle) ─► decode ─► read @origin (a schedule record of that topic and id?)
//!                        ─► Delays::recall: recall record (a done record marked recalled)
//!                           unless a done record exists ─► SYNC replication wait
//! ```
//!
//! The recall record is part of the replicated log: a replica commits the recalled timer as
//! finished when it comes due, a promoted replica and a restarted broker find it before they
//! deliver an inherited timer (see [`crate::delay`]). Answers, in order of the checks:
//! BAD_REQUEST for a malformed handle, one of another broker set or of another topic;
//! NOT_FOUND for a handle that names no delay message here (never issued, or its record is
//! gone) and for a message delivered already (the message says which); OK with the message id
//! for a recall, and again for a repeated recall of the same message. Not MESSAGE_NOT_FOUND:
//! the official clients read that code as an empty result, so a failed recall would look like
//! a success to them.

pub(crate) mod handle;

use std::sync::Arc;

use comet_store::StoreError;

use crate::clock::now_ms;
use crate::delay::{self, RecallOutcome};
use crate::engine::Inner;
use crate::outcome::{Code, Failure, blocking, store_failure};
use handle::{HandleError, RecallHandle};

/// A recall of one delay message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecallRequest {
    /// The topic the message was sent to.
    pub topic: String,
    /// The handle its send answered (`SendResultEntry.recall_handle`).
    pub handle: String,
}

impl Inner {
    /// The recall handle of a delay message whose schedule record is at `origin`.
    pub(crate) fn recall_handle(
        &self,
        origin: i64,
        deliver_at_ms: i64,
        topic: &str,
        message_id: &str,
    ) -> String {
        RecallHandle::new(origin, deliver_at_ms, topic, message_id).encode(&self.cfg.broker_set)
    }

    /// Recalls a delay message; answers its message id once the recall is stored (and, with
    /// SYNC replication, replicated).
    pub(crate) async fn recall(&self, req: &RecallRequest) -> Result<String, Failure> {
        let topic = req.topic.as_str();
        if topic.is_empty() {
            return Err(Failure::new(Code::IllegalTopic, "recall names no topic"));
        }
        let h = RecallHandle::decode(&req.handle, &self.cfg.broker_set).map_err(|e| match e {
            HandleError::Malformed(why) => Failure::new(
                Code::BadRequest,
                format!("recall handle is malformed: {why}; use the one SendMessage returned"),
            ),
            HandleError::OtherBrokerSet(set) => Failure::new(
                Code::BadRequest,
                format!(
                    "recall handle belongs to broker set {set:?}, not {:?}",
                    self.cfg.broker_set
                ),
            ),
        })?;
        if !h.matches_topic(topic) {
            return Err(Failure::new(
                Code::BadRequest,
                format!("recall handle was issued for a message of another topic, not {topic:?}"),
            ));
        }
        let store = self.store()?;
        let delays = Arc::clone(&self.delays);
        let outcome = blocking(move || {
            let stored = match store.read(h.origin) {
                Ok(m) => m,
                Err(StoreError::OffsetOutOfRange { .. }) => return Ok(Err(Gone::NoLongerStored)),
                Err(StoreError::Corrupt { .. }) => return Ok(Err(Gone::Unknown)),
                Err(e) => return Err(e),
            };
            let m = &stored.message;
            let matches = delay::scheduled_topic(m).is_some_and(|t| h.matches_topic(t))
                && h.matches_message(&m.properties.message_id);
            if !matches {
                return Ok(Err(Gone::Unknown));
            }
            let id = m.properties.message_id.clone();
            delays.recall(&store, h.origin).map(|o| Ok((o, id)))
        })
        .await?
        .map_err(|e| store_failure(&e))?;
        let (outcome, message_id) = outcome.map_err(|gone| {
            Failure::new(
                Code::NotFound,
                match gone {
                    Gone::Unknown => format!(
                        "no delay message of topic {topic:?} matches this recall handle on broker set {:?}",
                        self.cfg.broker_set
                    ),
                    Gone::NoLongerStored => {
                        "the delay message of this recall handle is no longer stored".to_owned()
                    }
                },
            )
        })?;
        match outcome {
            RecallOutcome::Recalled { end } => {
                self.replicated(end).await?;
                tracing::info!(topic, message_id = %message_id, "delay message recalled");
                Ok(message_id)
            }
            RecallOutcome::AlreadyRecalled => Ok(message_id),
            RecallOutcome::Delivered => Err(Failure::new(
                Code::NotFound,
                format!(
                    "delay message {message_id} was already delivered{}; it can no longer be recalled",
                    if h.deliver_at_ms <= now_ms() {
                        format!(" (it was due at {} ms since the epoch)", h.deliver_at_ms)
                    } else {
                        String::new()
                    }
                ),
            )),
            RecallOutcome::IndexLagging => Err(Failure::new(
                Code::InternalServerError,
                "the broker's index is behind its log; nothing was recalled, retry",
            )),
        }
    }
}

/// Why a handle names no delay message here.
enum Gone {
    /// No schedule record of that topic and message id at the handle's offset.
    Unknown,
    /// The log no longer holds the offset (retention): long delivered or lost.
    NoLongerStored,
}
