//! Consume offsets: UpdateOffset, GetOffset, QueryOffset, and the admin ResetOffset and
//! GetConsumerProgress.
//!
//! A group's consume offset on a queue lives in the same per-(group, topic, queue) consumer
//! state as POP progress ([`crate::state`]), so it is persisted, compacted and recovered by the
//! same snapshot + log ([`crate::persist`]):
//!
//! ```text
//!   pull group:  pop_offset = committed offset, nothing in flight  → offset = pop_offset
//!   POP group:   pop_offset, in-flight entries                     → offset = ack offset
//! ```
//!
//! Setting an offset (UpdateOffset, ResetOffset) sets `pop_offset` and forgets the entries in
//! flight, under the queue's pop lock so that no pop of the group interleaves; the caller
//! answers once the change is in the state log.

use std::sync::Arc;

use comet_proto::apache::rocketmq::v2::{
    Code, GetOffsetRequest, GetOffsetResponse, QueryOffsetPolicy, QueryOffsetRequest,
    QueryOffsetResponse, UpdateOffsetRequest, UpdateOffsetResponse,
};
use comet_proto::comet::v1::{
    GetConsumerProgressRequest, GetConsumerProgressResponse, QueueOffsetChange, QueueProgress,
    ResetOffsetRequest, ResetOffsetResponse, reset_offset_request,
};

use crate::convert::ts_to_ms;
use crate::engine::Inner;
use crate::meta::Access;
use crate::outcome::{Outcome, blocking, ok, status};
use crate::pull::{concrete_queue, require_group};
use crate::state::{QueueKey, QueueSlot};

/// A group's offset before and after it was set.
struct Moved {
    previous: Option<i64>,
    dropped_inflight: usize,
}

impl Inner {
    /// Sets the consume offset of `key` to `offset`, forgetting its messages in flight.
    async fn set_offset(&self, key: &QueueKey, offset: i64) -> Moved {
        let slot: Arc<QueueSlot> = self.consumers.get_or_create(key);
        let _pop = slot.pop_lock.lock().await;
        let moved = {
            let mut st = slot.state.lock();
            let previous = st.initialized.then(|| st.ack_offset());
            let dropped_inflight = st.inflight.len();
            st.inflight.clear();
            st.ready.clear();
            st.pop_offset = offset;
            st.initialized = true;
            Moved {
                previous,
                dropped_inflight,
            }
        };
        self.consumers.mark_dirty(&slot);
        // Pollers of the group may have something to read now (or room in flight again).
        self.hub.notify(&key.topic);
        tracing::info!(group = %key.group, topic = %key.topic, queue_id = key.queue_id, offset,
            previous = ?moved.previous, dropped_inflight = moved.dropped_inflight,
            "consume offset set");
        moved
    }

    /// The group's consume offset on `key`, if it has one.
    fn consume_offset(&self, key: &QueueKey) -> Option<(i64, usize)> {
        let slot = self.consumers.get(key)?;
        let st = slot.state.lock();
        st.initialized.then(|| (st.ack_offset(), st.inflight.len()))
    }

    /// `(min, max)` offsets of a queue.
    fn bounds(&self, topic: &str, queue_id: i32) -> Result<(i64, i64), Outcome> {
        let store = self.store()?;
        Ok((
            store.min_offset(topic, queue_id),
            store.max_offset(topic, queue_id),
        ))
    }

    /// UpdateOffset (see broker.proto).
    pub async fn update_offset(&self, req: UpdateOffsetRequest) -> UpdateOffsetResponse {
        let result = async {
            let group = require_group(req.group.as_ref())?;
            let (topic, queue_id) = concrete_queue(self, req.message_queue.as_ref(), Access::Read)?;
            let (_, max) = self.bounds(&topic, queue_id)?;
            if req.offset < 0 || req.offset > max {
                return Err((
                    Code::IllegalOffset,
                    format!(
                        "offset {} of {topic:?} queue {queue_id} is outside [0, {max}] (the next \
                         offset to be written is {max})",
                        req.offset
                    ),
                ));
            }
            let key = QueueKey {
                group,
                topic,
                queue_id,
            };
            self.set_offset(&key, req.offset).await;
            Ok(())
        }
        .await;
        UpdateOffsetResponse {
            status: Some(match result {
                Ok(()) => ok(),
                Err((code, msg)) => status(code, msg),
            }),
        }
    }

    /// GetOffset (see broker.proto).
    pub fn get_offset(&self, req: GetOffsetRequest) -> GetOffsetResponse {
        let result = (|| {
            let group = require_group(req.group.as_ref())?;
            let (topic, queue_id) = concrete_queue(self, req.message_queue.as_ref(), Access::Read)?;
            let key = QueueKey {
                group,
                topic,
                queue_id,
            };
            self.consume_offset(&key).map(|(o, _)| o).ok_or_else(|| {
                (
                    Code::OffsetNotFound,
                    format!(
                        "group {:?} has no offset on {:?} queue {queue_id}: it never committed \
                         or received there (QueryOffset tells where to start)",
                        key.group, key.topic
                    ),
                )
            })
        })();
        match result {
            Ok(offset) => GetOffsetResponse {
                status: Some(ok()),
                offset,
            },
            Err((code, msg)) => GetOffsetResponse {
                status: Some(status(code, msg)),
                offset: 0,
            },
        }
    }

    /// QueryOffset (see broker.proto).
    pub async fn query_offset(&self, req: QueryOffsetRequest) -> QueryOffsetResponse {
        let result = async {
            let (topic, queue_id) = concrete_queue(self, req.message_queue.as_ref(), Access::Read)?;
            let store = self.store()?;
            match QueryOffsetPolicy::try_from(req.query_offset_policy) {
                Ok(QueryOffsetPolicy::Beginning) => Ok(store.min_offset(&topic, queue_id)),
                Ok(QueryOffsetPolicy::End) => Ok(store.max_offset(&topic, queue_id)),
                Ok(QueryOffsetPolicy::Timestamp) => {
                    let Some(ts) = req.timestamp.as_ref() else {
                        return Err((
                            Code::BadRequest,
                            "timestamp is required with the TIMESTAMP policy".to_owned(),
                        ));
                    };
                    let ms = ts_to_ms(ts);
                    blocking(move || store.offset_by_time(&topic, queue_id, ms)).await
                }
                Err(_) => Err((
                    Code::BadRequest,
                    format!(
                        "unknown query_offset_policy {}; use BEGINNING, END or TIMESTAMP",
                        req.query_offset_policy
                    ),
                )),
            }
        }
        .await;
        match result {
            Ok(offset) => QueryOffsetResponse {
                status: Some(ok()),
                offset,
            },
            Err((code, msg)) => QueryOffsetResponse {
                status: Some(status(code, msg)),
                offset: 0,
            },
        }
    }

    /// The queue ids of `topic` a request names (-1 = all here).
    fn queue_ids(&self, topic: &str, queue_id: i32) -> Result<Vec<i32>, Outcome> {
        let count = self.meta.index().queues(topic, Access::Read)?;
        match queue_id {
            -1 => Ok((0..count as i32).collect()),
            q if q >= 0 && (q as u32) < count => Ok(vec![q]),
            q => Err((
                Code::BadRequest,
                format!(
                    "queue id {q} of topic {topic:?} is outside 0..{count} on broker set {} \
                     (-1 = every queue)",
                    self.cfg.broker_set
                ),
            )),
        }
    }

    /// ResetOffset (admin, see broker.proto).
    pub async fn reset_offset(&self, req: ResetOffsetRequest) -> ResetOffsetResponse {
        match self.reset_offset_inner(req).await {
            Ok(queues) => ResetOffsetResponse {
                status: Some(ok()),
                queues,
            },
            Err((code, msg)) => ResetOffsetResponse {
                status: Some(status(code, msg)),
                queues: Vec::new(),
            },
        }
    }

    async fn reset_offset_inner(
        &self,
        req: ResetOffsetRequest,
    ) -> Result<Vec<QueueOffsetChange>, Outcome> {
        let group = require_group(req.group.as_ref())?;
        let topic = req
            .topic
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        if topic.is_empty() {
            return Err((Code::IllegalTopic, "topic is required".into()));
        }
        let Some(target) = req.target else {
            return Err((
                Code::BadRequest,
                "a reset needs a target: timestamp or offset".into(),
            ));
        };
        let queues = self.queue_ids(&topic, req.queue_id)?;
        let store = self.store()?;
        let (t, qs) = (topic.clone(), queues.clone());
        let offsets: Vec<i64> = blocking(move || {
            qs.iter()
                .map(|&q| {
                    let (min, max) = (store.min_offset(&t, q), store.max_offset(&t, q));
                    match target {
                        reset_offset_request::Target::Timestamp(ts) => {
                            store.offset_by_time(&t, q, ts_to_ms(&ts))
                        }
                        reset_offset_request::Target::Offset(o) => o.clamp(min, max),
                    }
                })
                .collect()
        })
        .await?;
        let mut changes = Vec::with_capacity(queues.len());
        for (queue_id, offset) in queues.into_iter().zip(offsets) {
            let key = QueueKey {
                group: group.clone(),
                topic: topic.clone(),
                queue_id,
            };
            let moved = self.set_offset(&key, offset).await;
            changes.push(QueueOffsetChange {
                queue_id,
                previous_offset: moved.previous.unwrap_or(-1),
                offset,
                dropped_inflight: moved.dropped_inflight as i64,
            });
        }
        Ok(changes)
    }

    /// GetConsumerProgress (admin, see broker.proto).
    pub fn consumer_progress(
        &self,
        req: GetConsumerProgressRequest,
    ) -> GetConsumerProgressResponse {
        let result = (|| {
            let group = require_group(req.group.as_ref())?;
            let topic = req
                .topic
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default();
            if topic.is_empty() {
                return Err((Code::IllegalTopic, "topic is required".to_owned()));
            }
            let mut out = Vec::new();
            for queue_id in self.queue_ids(&topic, -1)? {
                let (min, max) = self.bounds(&topic, queue_id)?;
                let key = QueueKey {
                    group: group.clone(),
                    topic: topic.clone(),
                    queue_id,
                };
                let (consume_offset, inflight) = self
                    .consume_offset(&key)
                    .map_or((-1, 0), |(o, n)| (o, n as i64));
                let from = if consume_offset < 0 {
                    min
                } else {
                    consume_offset.max(min)
                };
                out.push(QueueProgress {
                    queue_id,
                    min_offset: min,
                    max_offset: max,
                    consume_offset,
                    backlog: (max - from).max(0),
                    inflight,
                });
            }
            Ok(out)
        })();
        match result {
            Ok(queues) => GetConsumerProgressResponse {
                status: Some(ok()),
                queues,
            },
            Err((code, msg)) => GetConsumerProgressResponse {
                status: Some(status(code, msg)),
                queues: Vec::new(),
            },
        }
    }
}
