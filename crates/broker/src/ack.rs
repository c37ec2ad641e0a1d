//! Ack and ChangeInvisibleDuration: both name an in-flight message by its receipt handle,
//! which is accepted only while its generation is the entry's current one.
//!
//! An ack completes the entry (releasing the next held message of a FIFO message group); a
//! change re-arms its deadline and issues a new handle (new generation). Both answer only
//! once the change is in the consumer-state log (inside the operation, whoever calls it), so
//! a crash of the process loses no answered ack or change.

use std::time::Duration;

use comet_vocab::duration;

use crate::clock::{duration_ms, now_ms};
use crate::engine::Inner;
use crate::outcome::{Code, Failure};

/// Acknowledges messages of one group on one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRequest {
    /// The consumer group.
    pub group: String,
    /// The topic the messages were received from.
    pub topic: String,
    /// The receipt handles of the deliveries to acknowledge (at least one).
    pub receipt_handles: Vec<String>,
    /// The acknowledging client (`x-mq-client-id`); a broadcast group needs it.
    pub client_id: String,
}

/// Changes the invisible time of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeInvisibleRequest {
    /// The consumer group.
    pub group: String,
    /// The topic the message was received from.
    pub topic: String,
    /// The delivery's current receipt handle.
    pub receipt_handle: String,
    /// From now until the message is visible again: at most `max_invisible_duration` (else
    /// ILLEGAL_INVISIBLE_TIME); zero or `None` makes it visible at once.
    pub invisible: Option<Duration>,
    /// The client (`x-mq-client-id`); a broadcast group needs it.
    pub client_id: String,
}

impl Inner {
    /// Acknowledges each handle; one result per handle, in order. Answers once the changes
    /// are in the consumer-state log.
    ///
    /// # Errors
    /// BAD_REQUEST for a request without handles. Each entry fails on its own with
    /// INVALID_RECEIPT_HANDLE (stale, malformed, another group's or broker set's) or
    /// ILLEGAL_CONSUMER_GROUP.
    pub(crate) async fn ack(&self, req: &AckRequest) -> Result<Vec<Result<(), Failure>>, Failure> {
        if req.receipt_handles.is_empty() {
            return Err(Failure::new(
                Code::BadRequest,
                "the request carries no entries",
            ));
        }
        // A broadcast group's client acknowledges in its own position (`broadcast`).
        let owner = self.consumer_owner(&req.group, &req.client_id)?;
        let results = req
            .receipt_handles
            .iter()
            .map(|h| self.ack_one(&owner, &req.topic, h))
            .collect();
        // Answer once the ack is in the state log: it then survives a crash of this process.
        self.state_written().await;
        Ok(results)
    }

    fn ack_one(&self, group: &str, topic: &str, receipt_handle: &str) -> Result<(), Failure> {
        let (slot, h) = self.resolve(group, topic, receipt_handle)?;
        let mut st = slot.state.lock();
        let was_full = st.inflight.len() >= self.cfg.max_inflight_per_queue;
        let released = match st.inflight.get(&h.offset) {
            Some(f) if f.generation == h.generation => {
                st.complete(h.offset, now_ms()).unwrap_or(false)
            }
            _ => {
                return Err(Failure::new(
                    Code::InvalidReceiptHandle,
                    "receipt handle became stale while being acknowledged",
                ));
            }
        };
        drop(st);
        // Written by `state_written` (or the next periodic persist).
        self.consumers.mark_changed(&slot);
        if was_full || released {
            self.hub.notify(crate::lite::arrival_topic(topic));
        }
        Ok(())
    }

    /// Re-arms a delivery's invisible time; returns its new receipt handle (the old one is
    /// stale from now on). Answers once the change is in the consumer-state log.
    ///
    /// # Errors
    /// ILLEGAL_INVISIBLE_TIME above `max_invisible_duration`; INVALID_RECEIPT_HANDLE (stale,
    /// malformed, another group's or broker set's, being dead-lettered),
    /// ILLEGAL_CONSUMER_GROUP.
    pub(crate) async fn change_invisible(
        &self,
        req: &ChangeInvisibleRequest,
    ) -> Result<String, Failure> {
        let result = self.change_invisible_now(req);
        self.state_written().await;
        result
    }

    fn change_invisible_now(&self, req: &ChangeInvisibleRequest) -> Result<String, Failure> {
        // The proxy's rule (comet_vocab), over the broker's range: refused above it.
        let d = self
            .cfg
            .invisible_range()
            .for_change(req.invisible.map(duration::to_proto).as_ref())
            .map_err(|e| Failure::new(Code::IllegalInvisibleTime, e.to_string()))?;
        let owner = self.consumer_owner(&req.group, &req.client_id)?;
        let (slot, h) = self.resolve(&owner, &req.topic, &req.receipt_handle)?;
        let now = now_ms();
        let mut st = slot.state.lock();
        let Some(f) = st
            .inflight
            .get_mut(&h.offset)
            .filter(|f| f.generation == h.generation && !f.dlq_pending)
        else {
            return Err(Failure::new(
                Code::InvalidReceiptHandle,
                "receipt handle became stale while being changed",
            ));
        };
        f.generation = self.consumers.next_generation();
        f.deadline_ms = now.saturating_add(duration_ms(d));
        f.visible_at_ms = f.deadline_ms;
        let (g, v) = (f.generation, f.visible_at_ms);
        st.ready.remove(&h.offset);
        drop(st);
        self.consumers.schedule(&slot, h.offset, g, v);
        // Written by `state_written` (or the next periodic persist).
        self.consumers.mark_changed(&slot);
        Ok(self
            .handle(&slot.key, h.offset, g)
            .encode(&self.cfg.broker_set))
    }
}
