//! QueryMessage (admin): stored messages by message id, by key within a store-time range, or
//! at a queue offset, read through the store's index and consume queues.
//!
//! Queries read stored data only: the topic need not exist in the metadata any more (its
//! messages stay until retention removes them), but its name must be valid.

use comet_proto::apache::rocketmq::v2::Code;
use comet_proto::comet::v1::{QueryMessageRequest, QueryMessageResponse, query_message_request};
use comet_store::StoreError;

use crate::convert::ts_to_ms;
use crate::engine::Inner;
use crate::outcome::{Outcome, blocking, ok, status, store_outcome};
use crate::pull::plain_message;

/// Messages a key query returns when it names no maximum.
pub(crate) const DEFAULT_KEY_RESULTS: usize = 32;
/// Most messages one key query returns.
pub(crate) const MAX_KEY_RESULTS: usize = 1000;

impl Inner {
    /// QueryMessage (admin, see broker.proto).
    pub async fn query_message(&self, req: QueryMessageRequest) -> QueryMessageResponse {
        match self.query_message_inner(req).await {
            Ok(messages) if messages.is_empty() => QueryMessageResponse {
                status: Some(status(Code::MessageNotFound, "no stored message matches")),
                messages,
            },
            Ok(messages) => QueryMessageResponse {
                status: Some(ok()),
                messages,
            },
            Err((code, msg)) => QueryMessageResponse {
                status: Some(status(code, msg)),
                messages: Vec::new(),
            },
        }
    }

    async fn query_message_inner(
        &self,
        req: QueryMessageRequest,
    ) -> Result<Vec<comet_proto::apache::rocketmq::v2::Message>, Outcome> {
        let topic = req
            .topic
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        if topic.is_empty() {
            return Err((Code::IllegalTopic, "topic is required".into()));
        }
        comet_store::record::validate_topic(&topic)
            .map_err(|e| (Code::IllegalTopic, format!("topic {topic:?}: {e}")))?;
        let Some(query) = req.query else {
            return Err((
                Code::BadRequest,
                "a query needs one of message_id, key or queue_offset".into(),
            ));
        };
        let store = self.store()?;
        let found = match query {
            query_message_request::Query::MessageId(id) => {
                if id.is_empty() {
                    return Err((Code::IllegalMessageId, "message_id is empty".into()));
                }
                blocking(move || store.query_by_id(&topic, &id)).await?
            }
            query_message_request::Query::Key(k) => {
                if k.key.is_empty() {
                    return Err((Code::IllegalMessageKey, "key is empty".into()));
                }
                let max = match usize::try_from(k.max) {
                    Ok(0) => DEFAULT_KEY_RESULTS,
                    Ok(n) if n <= MAX_KEY_RESULTS => n,
                    _ => {
                        return Err((
                            Code::BadRequest,
                            format!("max must be within 0..={MAX_KEY_RESULTS}, got {}", k.max),
                        ));
                    }
                };
                let begin = k.begin.as_ref().map_or(0, ts_to_ms);
                let end = k.end.as_ref().map_or(i64::MAX, ts_to_ms);
                if begin > end {
                    return Err((
                        Code::BadRequest,
                        format!("the time range is reversed: begin {begin} ms > end {end} ms"),
                    ));
                }
                blocking(move || store.query_by_key(&topic, &k.key, max, begin, end)).await?
            }
            query_message_request::Query::QueueOffset(q) => {
                if q.queue_id < 0 || q.queue_id > comet_store::record::MAX_QUEUE_ID {
                    return Err((
                        Code::BadRequest,
                        format!("queue id {} is out of range", q.queue_id),
                    ));
                }
                blocking(
                    move || match store.queue_entry(&topic, q.queue_id, q.offset) {
                        None => Ok(Vec::new()),
                        Some(e) => match store.read(e.physical_offset) {
                            Ok(m) => Ok(vec![m]),
                            Err(StoreError::OffsetOutOfRange { .. }) => Ok(Vec::new()),
                            Err(err) => Err(err),
                        },
                    },
                )
                .await?
            }
        };
        let found = found.map_err(|e| {
            tracing::warn!(error = %e, "message query failed");
            store_outcome(&e)
        })?;
        let advertised = &self.cfg.advertised_addr;
        Ok(found.iter().map(|m| plain_message(m, advertised)).collect())
    }
}
