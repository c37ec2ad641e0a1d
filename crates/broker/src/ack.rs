//! Ack and ChangeInvisibleDuration: both name an in-flight message by its receipt handle,
//! which is accepted only while its generation is the entry's current one.
//!
//! An ack completes the entry (releasing the next held message of a FIFO message group); a
//! change re-arms its deadline and issues a new handle (new generation). Both answer only
//! once the change is in the consumer-state log, so a crash of the process loses no answered
//! ack or change.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, AckMessageResultEntry, ChangeInvisibleDurationRequest,
    ChangeInvisibleDurationResponse, Code, Status,
};

use crate::clock::{duration_ms, now_ms};
use crate::convert;
use crate::engine::Inner;
use crate::outcome::{Outcome, ok, overall, status};

impl Inner {
    // ------------------------------------------------------------------------------ ack

    pub fn ack(&self, req: AckMessageRequest) -> AckMessageResponse {
        let group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or("");
        let topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("");
        if req.entries.is_empty() {
            return AckMessageResponse {
                status: Some(status(Code::BadRequest, "the request carries no entries")),
                entries: Vec::new(),
            };
        }
        let entries: Vec<AckMessageResultEntry> = req
            .entries
            .iter()
            .map(|e| {
                let st = match self.ack_one(group, topic, &e.receipt_handle) {
                    Ok(()) => ok(),
                    Err((code, msg)) => status(code, msg),
                };
                AckMessageResultEntry {
                    message_id: e.message_id.clone(),
                    receipt_handle: e.receipt_handle.clone(),
                    status: Some(st),
                }
            })
            .collect();
        let st = overall(
            &entries
                .iter()
                .filter_map(|e| e.status.as_ref())
                .collect::<Vec<_>>(),
        );
        AckMessageResponse {
            status: Some(st),
            entries,
        }
    }

    fn ack_one(&self, group: &str, topic: &str, receipt_handle: &str) -> Result<(), Outcome> {
        let (slot, h) = self.resolve(group, topic, receipt_handle)?;
        let mut st = slot.state.lock();
        let was_full = st.inflight.len() >= self.cfg.max_inflight_per_queue;
        let released = match st.inflight.get(&h.offset) {
            Some(f) if f.generation == h.generation => {
                st.complete(h.offset, now_ms()).unwrap_or(false)
            }
            _ => {
                return Err((
                    Code::InvalidReceiptHandle,
                    "receipt handle became stale while being acknowledged".into(),
                ));
            }
        };
        drop(st);
        // Written by the caller's `state_written` (or the next periodic persist).
        self.consumers.mark_changed(&slot);
        if was_full || released {
            self.hub.notify(topic);
        }
        Ok(())
    }

    // ----------------------------------------------------------------- change invisible

    pub fn change_invisible(
        &self,
        req: ChangeInvisibleDurationRequest,
    ) -> ChangeInvisibleDurationResponse {
        let reply = |st: Status, handle: String| ChangeInvisibleDurationResponse {
            status: Some(st),
            receipt_handle: handle,
        };
        let group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or("");
        let topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("");
        let Some(d) = req.invisible_duration.as_ref() else {
            return reply(
                status(Code::IllegalInvisibleTime, "invisible_duration is required"),
                req.receipt_handle,
            );
        };
        // Negative reads as zero (visible at once); sub-second values are honoured.
        let d = convert::to_duration(d)
            .unwrap_or(Duration::ZERO)
            .min(self.cfg.max_invisible_duration);
        let (slot, h) = match self.resolve(group, topic, &req.receipt_handle) {
            Ok(x) => x,
            Err((code, msg)) => return reply(status(code, msg), req.receipt_handle),
        };
        let now = now_ms();
        let mut st = slot.state.lock();
        let Some(f) = st
            .inflight
            .get_mut(&h.offset)
            .filter(|f| f.generation == h.generation && !f.dlq_pending)
        else {
            return reply(
                status(
                    Code::InvalidReceiptHandle,
                    "receipt handle became stale while being changed",
                ),
                req.receipt_handle,
            );
        };
        f.generation = self.consumers.next_generation();
        f.deadline_ms = now.saturating_add(duration_ms(d));
        f.visible_at_ms = f.deadline_ms;
        let (g, v) = (f.generation, f.visible_at_ms);
        st.ready.remove(&h.offset);
        drop(st);
        self.consumers.schedule(&slot, h.offset, g, v);
        // Written by the caller's `state_written` (or the next periodic persist).
        self.consumers.mark_changed(&slot);
        let new = self
            .handle(&slot.key, h.offset, g)
            .encode(&self.cfg.broker_set);
        reply(ok(), new)
    }
}
