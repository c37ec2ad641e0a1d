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
//! flight, under the queue's pop lock so that no pop of the group interleaves; the operation
//! answers once the change is in the state log.

use std::sync::Arc;

use crate::engine::Inner;
use crate::meta::Access;
use crate::outcome::{Code, Failure, blocking};
use crate::pull::{concrete_queue, require_group};
use crate::state::{QueueKey, QueueSlot};

/// A group's consume offset on one queue, to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOffset {
    /// The consumer group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The queue.
    pub queue_id: i32,
    /// The next offset the group consumes.
    pub offset: i64,
}

/// Where QueryOffset looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetPolicy {
    /// The first stored offset.
    Beginning,
    /// The next offset to be written.
    End,
    /// The first offset stored at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// Where ResetOffset moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    /// The first offset stored at or after this time (ms since the epoch).
    Timestamp(i64),
    /// This offset, clamped to the stored range.
    Offset(i64),
}

/// One queue's offset change by a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetChange {
    /// The queue.
    pub queue_id: i32,
    /// The offset before (`None`: the group had none).
    pub previous_offset: Option<i64>,
    /// The offset now.
    pub offset: i64,
    /// Messages that were in flight and are forgotten.
    pub dropped_inflight: usize,
}

/// A group's progress on one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueProgress {
    /// The queue.
    pub queue_id: i32,
    /// The first stored offset.
    pub min_offset: i64,
    /// The next offset to be written.
    pub max_offset: i64,
    /// The group's consume offset (`None`: it has none).
    pub consume_offset: Option<i64>,
    /// Stored messages the group has not consumed.
    pub backlog: i64,
    /// Messages in flight.
    pub inflight: usize,
}

/// A group's offset before and after it was set.
pub(crate) struct Moved {
    previous: Option<i64>,
    dropped_inflight: usize,
}

impl Inner {
    /// Sets the consume offset of `key` to `offset`, forgetting its messages in flight.
    pub(crate) async fn set_offset(&self, key: &QueueKey, offset: i64) -> Moved {
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
        self.hub.notify(crate::lite::arrival_topic(&key.topic));
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
    fn bounds(&self, topic: &str, queue_id: i32) -> Result<(i64, i64), Failure> {
        let store = self.store()?;
        Ok((
            store.min_offset(topic, queue_id),
            store.max_offset(topic, queue_id),
        ))
    }

    /// Commits `group`'s consume offset on a queue (forgetting its messages in flight).
    /// Answers once the offset is in the consumer-state log.
    ///
    /// # Errors
    /// ILLEGAL_CONSUMER_GROUP, ILLEGAL_TOPIC, TOPIC_NOT_FOUND, BAD_REQUEST (queue id),
    /// ILLEGAL_OFFSET (outside `[0, max]`).
    pub(crate) async fn update_offset(&self, at: &QueueOffset) -> Result<(), Failure> {
        let result = self.update_offset_now(at).await;
        // Answer once the offset is in the state log: it then survives a crash of this process.
        self.state_written().await;
        result
    }

    async fn update_offset_now(&self, at: &QueueOffset) -> Result<(), Failure> {
        require_group(&at.group)?;
        concrete_queue(self, &at.topic, at.queue_id, Access::Read)?;
        let (topic, queue_id) = (&at.topic, at.queue_id);
        let (_, max) = self.bounds(topic, queue_id)?;
        if at.offset < 0 || at.offset > max {
            return Err(Failure::new(
                Code::IllegalOffset,
                format!(
                    "offset {} of {topic:?} queue {queue_id} is outside [0, {max}] (the next \
                     offset to be written is {max})",
                    at.offset
                ),
            ));
        }
        let key = QueueKey {
            group: at.group.clone(),
            topic: topic.clone(),
            queue_id,
        };
        self.set_offset(&key, at.offset).await;
        Ok(())
    }

    /// `group`'s consume offset on a queue.
    ///
    /// # Errors
    /// ILLEGAL_CONSUMER_GROUP, ILLEGAL_TOPIC, TOPIC_NOT_FOUND, BAD_REQUEST (queue id),
    /// OFFSET_NOT_FOUND (the group never committed or received there).
    pub(crate) fn get_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Result<i64, Failure> {
        require_group(group)?;
        concrete_queue(self, topic, queue_id, Access::Read)?;
        let key = QueueKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
            queue_id,
        };
        self.consume_offset(&key).map(|(o, _)| o).ok_or_else(|| {
            Failure::new(
                Code::OffsetNotFound,
                format!(
                    "group {:?} has no offset on {:?} queue {queue_id}: it never committed \
                     or received there (QueryOffset tells where to start)",
                    key.group, key.topic
                ),
            )
        })
    }

    /// The offset of a queue a policy names.
    ///
    /// # Errors
    /// ILLEGAL_TOPIC, TOPIC_NOT_FOUND, BAD_REQUEST (queue id), the store's failures.
    pub(crate) async fn query_offset(
        &self,
        topic: &str,
        queue_id: i32,
        policy: OffsetPolicy,
    ) -> Result<i64, Failure> {
        concrete_queue(self, topic, queue_id, Access::Read)?;
        let store = self.store()?;
        match policy {
            OffsetPolicy::Beginning => Ok(store.min_offset(topic, queue_id)),
            OffsetPolicy::End => Ok(store.max_offset(topic, queue_id)),
            OffsetPolicy::Timestamp(ms) => {
                let topic = topic.to_owned();
                blocking(move || store.offset_by_time(&topic, queue_id, ms)).await
            }
        }
    }

    /// The queue ids of `topic` a request names (-1 = all here).
    fn queue_ids(&self, topic: &str, queue_id: i32) -> Result<Vec<i32>, Failure> {
        let count = self.meta.index().queues(topic, Access::Read)?;
        match queue_id {
            -1 => Ok((0..count as i32).collect()),
            q if q >= 0 && (q as u32) < count => Ok(vec![q]),
            q => Err(Failure::new(
                Code::BadRequest,
                format!(
                    "queue id {q} of topic {topic:?} is outside 0..{count} on broker set {} \
                     (-1 = every queue)",
                    self.cfg.broker_set
                ),
            )),
        }
    }

    /// Resets `group`'s offset on one queue or every queue (`queue_id` -1) of `topic` here, by
    /// store time or to an offset (clamped to the stored range). Answers once the offsets are
    /// in the consumer-state log.
    ///
    /// # Errors
    /// ILLEGAL_CONSUMER_GROUP, ILLEGAL_TOPIC, TOPIC_NOT_FOUND, BAD_REQUEST (queue id).
    pub(crate) async fn reset_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        target: ResetTarget,
    ) -> Result<Vec<OffsetChange>, Failure> {
        let result = self.reset_offset_now(group, topic, queue_id, target).await;
        self.state_written().await;
        result
    }

    async fn reset_offset_now(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        target: ResetTarget,
    ) -> Result<Vec<OffsetChange>, Failure> {
        require_group(group)?;
        if topic.is_empty() {
            return Err(Failure::new(Code::IllegalTopic, "topic is required"));
        }
        let queues = self.queue_ids(topic, queue_id)?;
        let store = self.store()?;
        let (t, qs) = (topic.to_owned(), queues.clone());
        let offsets: Vec<i64> = blocking(move || {
            qs.iter()
                .map(|&q| {
                    let (min, max) = (store.min_offset(&t, q), store.max_offset(&t, q));
                    match target {
                        ResetTarget::Timestamp(ms) => store.offset_by_time(&t, q, ms),
                        ResetTarget::Offset(o) => o.clamp(min, max),
                    }
                })
                .collect()
        })
        .await?;
        let mut changes = Vec::with_capacity(queues.len());
        for (queue_id, offset) in queues.into_iter().zip(offsets) {
            let key = QueueKey {
                group: group.to_owned(),
                topic: topic.to_owned(),
                queue_id,
            };
            let moved = self.set_offset(&key, offset).await;
            changes.push(OffsetChange {
                queue_id,
                previous_offset: moved.previous,
                offset,
                dropped_inflight: moved.dropped_inflight,
            });
        }
        Ok(changes)
    }

    /// `group`'s progress on every queue of `topic` here.
    ///
    /// # Errors
    /// ILLEGAL_CONSUMER_GROUP, ILLEGAL_TOPIC, TOPIC_NOT_FOUND.
    pub(crate) fn group_progress(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<QueueProgress>, Failure> {
        require_group(group)?;
        if topic.is_empty() {
            return Err(Failure::new(Code::IllegalTopic, "topic is required"));
        }
        let mut out = Vec::new();
        for queue_id in self.queue_ids(topic, -1)? {
            let (min, max) = self.bounds(topic, queue_id)?;
            let key = QueueKey {
                group: group.to_owned(),
                topic: topic.to_owned(),
                queue_id,
            };
            let (consume_offset, inflight) = match self.consume_offset(&key) {
                Some((o, n)) => (Some(o), n),
                None => (None, 0),
            };
            let from = consume_offset.map_or(min, |o| o.max(min));
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
    }
}
