//! Dead letters: a message whose deliveries reached `max_retries + 1` (group metadata, or
//! `default_max_retries`) is appended to `%DLQ%<group>` queue 0 when its last deadline passes
//! (the revive task), or at once on ForwardMessageToDeadLetterQueue, with its origin recorded
//! in system properties, and completed. A failed move leaves the entry in flight; it is
//! retried 5 s later. Dead-letter topics need no metadata to be read.

use std::sync::Arc;

use comet_store::StoreError;
use comet_vocab::system;

use crate::clock::now_ms;
use crate::engine::Inner;
use crate::outcome::{Code, Failure, blocking, store_failure};
use crate::owner;
use crate::record;
use crate::state::QueueSlot;
use crate::sys;

/// One in-flight message chosen for the dead-letter queue.
pub(crate) struct DlqItem {
    pub slot: Arc<QueueSlot>,
    pub offset: i64,
    pub generation: u64,
    pub attempts: u32,
}

/// Moves one delivery to its group's dead-letter queue at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRequest {
    /// The consumer group.
    pub group: String,
    /// The topic the message was received from.
    pub topic: String,
    /// The delivery's current receipt handle.
    pub receipt_handle: String,
    /// The client (`x-mq-client-id`); a broadcast group needs it.
    pub client_id: String,
}

impl Inner {
    /// Appends the delivered message to `%DLQ%<group>` and completes it. Answers once the
    /// completion is in the consumer-state log.
    ///
    /// # Errors
    /// INVALID_RECEIPT_HANDLE (stale, malformed, another group's), ILLEGAL_CONSUMER_GROUP,
    /// or the store's failure (the message then stays in flight and is retried later).
    pub(crate) async fn forward_to_dead_letter(
        &self,
        req: &DeadLetterRequest,
    ) -> Result<(), Failure> {
        let result = self.forward_now(req).await;
        self.state_written().await;
        result
    }

    async fn forward_now(&self, req: &DeadLetterRequest) -> Result<(), Failure> {
        let owner = self.consumer_owner(&req.group, &req.client_id)?;
        let (slot, h) = self.resolve(&owner, &req.topic, &req.receipt_handle)?;
        let attempts = {
            let mut st = slot.state.lock();
            let f = st
                .inflight
                .get_mut(&h.offset)
                .filter(|f| f.generation == h.generation && !f.dlq_pending)
                .ok_or(Failure::new(
                    Code::InvalidReceiptHandle,
                    "receipt handle became stale while being forwarded",
                ))?;
            f.dlq_pending = true;
            f.attempts
        };
        let item = DlqItem {
            slot,
            offset: h.offset,
            generation: h.generation,
            attempts,
        };
        let mut results = self.dead_letter(vec![item]).await;
        results.pop().unwrap_or(Ok(()))
    }

    /// Appends each item's message to `%DLQ%<group>` and completes it. On failure the item
    /// stays in flight and is retried a little later by the revive task.
    pub(crate) async fn dead_letter(&self, items: Vec<DlqItem>) -> Vec<Result<(), Failure>> {
        let store = match self.store() {
            Ok(s) => s,
            Err(o) => {
                for it in &items {
                    self.dlq_failed(it);
                }
                return items.iter().map(|_| Err(o.clone())).collect();
            }
        };
        let keys: Vec<(String, String, i32, i64, u32)> = items
            .iter()
            .map(|i| {
                (
                    i.slot.key.group.clone(),
                    i.slot.key.topic.clone(),
                    i.slot.key.queue_id,
                    i.offset,
                    i.attempts,
                )
            })
            .collect();
        let lite = Arc::clone(&self.lite);
        let outcomes = blocking(move || {
            keys.iter()
                .map(|(group, topic, queue_id, offset, attempts)| {
                    // A lite topic's slot names its offset in the lite topic.
                    let entry = if crate::lite::index::split_key(topic).is_some() {
                        lite.entry(&store, topic, *offset)
                    } else {
                        store.queue_entry(topic, *queue_id, *offset)
                    };
                    let Some(e) = entry else {
                        return Ok(false);
                    };
                    let m = match store.read(e.physical_offset) {
                        Ok(m) => m,
                        Err(StoreError::OffsetOutOfRange { .. }) => return Ok(false),
                        Err(StoreError::Corrupt { offset, reason }) => {
                            tracing::error!(topic = %topic, queue_id, offset, %reason,
                                "corrupt record cannot be dead-lettered; dropped");
                            return Ok(false);
                        }
                        Err(e) => return Err(e),
                    };
                    // A broadcast client's dead letters go to its group's queue, marked with
                    // the client.
                    let base = owner::group_of(group);
                    let dlq_topic = system::dlq_topic(base);
                    let mut rec = record::to_dlq_record(&m, &dlq_topic, base, *attempts);
                    if let Some(client) = owner::client_of(group) {
                        rec.properties
                            .user
                            .insert(sys::DLQ_CLIENT_ID.to_owned(), client.to_owned());
                    }
                    store.append(&rec).map(|_| true)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let outcomes = match outcomes {
            Ok(v) => v,
            Err(o) => {
                for it in &items {
                    self.dlq_failed(it);
                }
                return items.iter().map(|_| Err(o.clone())).collect();
            }
        };
        items
            .iter()
            .zip(outcomes)
            .map(|(it, r)| match r {
                Ok(stored) => {
                    let key = &it.slot.key;
                    if stored {
                        self.counters.dead_lettered(&key.group, &key.topic);
                        tracing::info!(group = %key.group, topic = %key.topic, queue_id = key.queue_id,
                            offset = it.offset, deliveries = it.attempts, "message moved to the dead-letter queue");
                    } else {
                        tracing::warn!(group = %key.group, topic = %key.topic, queue_id = key.queue_id,
                            offset = it.offset, "message to dead-letter is no longer stored; dropped");
                    }
                    let mut st = it.slot.state.lock();
                    let released = st
                        .inflight
                        .get(&it.offset)
                        .is_some_and(|f| f.generation == it.generation)
                        && st.complete(it.offset, now_ms()).unwrap_or(false);
                    drop(st);
                    self.consumers.mark_dirty(&it.slot);
                    if released {
                        self.hub.notify(crate::lite::arrival_topic(&key.topic));
                    }
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(group = %it.slot.key.group, topic = %it.slot.key.topic,
                        offset = it.offset, error = %e, "dead-lettering failed; will retry");
                    self.dlq_failed(it);
                    Err(store_failure(&e))
                }
            })
            .collect()
    }

    fn dlq_failed(&self, it: &DlqItem) {
        let retry_at = now_ms() + 5_000;
        let mut st = it.slot.state.lock();
        if let Some(f) = st.inflight.get_mut(&it.offset)
            && f.generation == it.generation
        {
            f.dlq_pending = false;
            f.visible_at_ms = f.visible_at_ms.max(retry_at);
            let v = f.visible_at_ms;
            drop(st);
            self.consumers
                .schedule(&it.slot, it.offset, it.generation, v);
        }
    }
}
