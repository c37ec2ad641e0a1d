//! QueryMessage (admin): stored messages by message id, by key within a store-time range, or
//! at a queue offset, read through the store's index and consume queues.
//!
//! Queries read stored data only: the topic need not exist in the metadata any more (its
//! messages stay until retention removes them), but its name must be valid.

use comet_store::{StoreError, StoredMessage};

use crate::engine::Inner;
use crate::outcome::{Code, Failure, blocking, store_failure};

/// Messages a key query returns when it names no maximum.
pub const DEFAULT_KEY_RESULTS: usize = 32;
/// Most messages one key query returns.
pub const MAX_KEY_RESULTS: usize = 1000;

/// What a message query looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageQuery {
    /// The message with this id.
    Id(String),
    /// Messages with this key stored within `[begin_ms, end_ms]`, at most `max` of them
    /// (0: [`DEFAULT_KEY_RESULTS`]; at most [`MAX_KEY_RESULTS`]).
    Key {
        /// The key.
        key: String,
        /// At most this many (0: the default).
        max: i32,
        /// Stored at or after this time (ms since the epoch).
        begin_ms: i64,
        /// Stored at or before this time (ms since the epoch).
        end_ms: i64,
    },
    /// The message at this queue offset.
    QueueOffset {
        /// The queue.
        queue_id: i32,
        /// The offset.
        offset: i64,
    },
}

impl Inner {
    /// Stored messages of `topic` that match `query` (empty when none does).
    ///
    /// # Errors
    /// ILLEGAL_TOPIC, ILLEGAL_MESSAGE_ID, ILLEGAL_MESSAGE_KEY, BAD_REQUEST (max, time range,
    /// queue id), the store's failures.
    pub(crate) async fn query_message(
        &self,
        topic: &str,
        query: MessageQuery,
    ) -> Result<Vec<StoredMessage>, Failure> {
        let topic = topic.to_owned();
        if topic.is_empty() {
            return Err(Failure::new(Code::IllegalTopic, "topic is required"));
        }
        comet_store::record::validate_topic(&topic)
            .map_err(|e| Failure::new(Code::IllegalTopic, format!("topic {topic:?}: {e}")))?;
        let store = self.store()?;
        let found = match query {
            MessageQuery::Id(id) => {
                if id.is_empty() {
                    return Err(Failure::new(Code::IllegalMessageId, "message_id is empty"));
                }
                blocking(move || store.query_by_id(&topic, &id)).await?
            }
            MessageQuery::Key {
                key,
                max,
                begin_ms: begin,
                end_ms: end,
            } => {
                if key.is_empty() {
                    return Err(Failure::new(Code::IllegalMessageKey, "key is empty"));
                }
                let max_results = match usize::try_from(max) {
                    Ok(0) => DEFAULT_KEY_RESULTS,
                    Ok(n) if n <= MAX_KEY_RESULTS => n,
                    _ => {
                        return Err(Failure::new(
                            Code::BadRequest,
                            format!("max must be within 0..={MAX_KEY_RESULTS}, got {max}"),
                        ));
                    }
                };
                if begin > end {
                    return Err(Failure::new(
                        Code::BadRequest,
                        format!("the time range is reversed: begin {begin} ms > end {end} ms"),
                    ));
                }
                blocking(move || store.query_by_key(&topic, &key, max_results, begin, end)).await?
            }
            MessageQuery::QueueOffset { queue_id, offset } => {
                if !(0..=comet_store::record::MAX_QUEUE_ID).contains(&queue_id) {
                    return Err(Failure::new(
                        Code::BadRequest,
                        format!("queue id {} is out of range", queue_id),
                    ));
                }
                blocking(move || match store.queue_entry(&topic, queue_id, offset) {
                    None => Ok(Vec::new()),
                    Some(e) => match store.read(e.physical_offset) {
                        Ok(m) => Ok(vec![m]),
                        Err(StoreError::OffsetOutOfRange { .. }) => Ok(Vec::new()),
                        Err(err) => Err(err),
                    },
                })
                .await?
            }
        };
        let found = found.map_err(|e| {
            tracing::warn!(error = %e, "message query failed");
            store_failure(&e)
        })?;
        Ok(found)
    }
}
