//! AckMessage, ChangeInvisibleDuration and ForwardMessageToDeadLetterQueue: routed by the
//! `"<broker_set>~"` prefix of the receipt handle.

use comet_proto::apache::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, AckMessageResponse, AckMessageResultEntry,
    ChangeInvisibleDurationRequest, ChangeInvisibleDurationResponse, Code,
    ForwardMessageToDeadLetterQueueRequest, ForwardMessageToDeadLetterQueueResponse,
};

use super::{Inner, require_client_id};
use crate::context::RequestContext;
use crate::names;
use crate::routes::{Target, handle_target};
use crate::settings::duration;
use crate::status::{self, Failure, Outcome};

fn empty_handle() -> Failure {
    Failure::new(Code::InvalidReceiptHandle, "receipt handle is empty")
}

impl Inner {
    /// One result entry per request entry, in request order.
    pub(super) async fn ack_message(
        &self,
        ctx: &RequestContext,
        request: AckMessageRequest,
    ) -> Outcome<AckMessageResponse> {
        require_client_id(ctx)?;
        let group = names::group(ctx, request.group.as_ref())?;
        let topic = names::topic(ctx, request.topic.as_ref())?;
        if request.entries.is_empty() {
            // Upstream's answer to an ack without results.
            return Err(Failure::internal("AckMessage carries no entries"));
        }
        let index = self.metadata.current();
        let mut results: Vec<AckMessageResultEntry> = request
            .entries
            .iter()
            .map(|e| AckMessageResultEntry {
                message_id: e.message_id.clone(),
                receipt_handle: e.receipt_handle.clone(),
                status: None,
            })
            .collect();
        let mut by_set: Vec<(Target, Vec<usize>)> = Vec::new();
        for (i, entry) in request.entries.iter().enumerate() {
            let target = if entry.receipt_handle.is_empty() {
                Err(empty_handle())
            } else {
                handle_target(&index, &entry.receipt_handle)
            };
            match target {
                Err(f) => results[i].status = Some(f.status()),
                Ok(t) => match by_set
                    .iter_mut()
                    .find(|(s, _)| s.broker_set == t.broker_set)
                {
                    Some((_, idx)) => idx.push(i),
                    None => by_set.push((t, vec![i])),
                },
            }
        }
        let budget = self.unary_budget(ctx);
        let calls = by_set.into_iter().map(|(target, idx)| {
            let entries: Vec<AckMessageEntry> =
                idx.iter().map(|&i| request.entries[i].clone()).collect();
            let ack = AckMessageRequest {
                group: Some(group.internal()),
                topic: Some(topic.internal()),
                entries,
            };
            async move {
                let outcome = self
                    .call_for_client(ctx, &target, budget, ack, |b, r| {
                        Box::pin(async move { b.ack_message(r).await })
                    })
                    .await;
                (target, idx, outcome)
            }
        });
        for (target, idx, outcome) in futures::future::join_all(calls).await {
            let outcome = outcome.and_then(|r| {
                if r.entries.len() == idx.len() {
                    Ok(r)
                } else {
                    Err(Failure::internal(format!(
                        "broker set {} answered {} ack entries for {}",
                        target.broker_set,
                        r.entries.len(),
                        idx.len()
                    )))
                }
            });
            match outcome {
                Ok(r) => {
                    for (&i, entry) in idx.iter().zip(r.entries) {
                        let mut s = entry.status.unwrap_or_else(|| {
                            status::status(Code::InternalServerError, "broker returned no status")
                        });
                        status::normalize(&mut s);
                        results[i].status = Some(s);
                    }
                }
                Err(f) => {
                    for &i in &idx {
                        results[i].status = Some(f.status());
                    }
                }
            }
        }
        let overall = status::aggregate(results.iter().filter_map(|e| e.status.as_ref()));
        Ok(AckMessageResponse {
            status: Some(overall),
            entries: results,
        })
    }

    /// Re-arms a message's invisible time. As upstream, a negative duration or one above
    /// `invisible_max` is ILLEGAL_INVISIBLE_TIME and any other is accepted (absent reads as
    /// zero). Durations below `invisible_min` are raised to it: the Node client asks for ~0 s
    /// (1 ms) on every retry, whatever the backoff, and upstream's broker makes such a message
    /// visible again only at its next revive scan, about a second later; Comet's timers are
    /// exact, so the floor keeps that pace instead of redelivering at once.
    pub(super) async fn change_invisible_duration(
        &self,
        ctx: &RequestContext,
        request: ChangeInvisibleDurationRequest,
    ) -> Outcome<ChangeInvisibleDurationResponse> {
        require_client_id(ctx)?;
        let group = names::group(ctx, request.group.as_ref())?;
        let topic = names::topic(ctx, request.topic.as_ref())?;
        if request.receipt_handle.is_empty() {
            return Err(empty_handle());
        }
        let invisible = self
            .cfg
            .invisible_range()
            .for_change(request.invisible_duration.as_ref())
            .map_err(|e| Failure::new(Code::IllegalInvisibleTime, e.to_string()))?;
        let index = self.metadata.current();
        let target = handle_target(&index, &request.receipt_handle)?;
        let old_handle = request.receipt_handle.clone();
        let change = ChangeInvisibleDurationRequest {
            group: Some(group.internal()),
            topic: Some(topic.internal()),
            invisible_duration: Some(duration(invisible)),
            ..request
        };
        let mut response = self
            .call_for_client(ctx, &target, self.unary_budget(ctx), change, |b, r| {
                Box::pin(async move { b.change_invisible_duration(r).await })
            })
            .await?;
        let s = response.status.get_or_insert_with(|| {
            status::status(Code::InternalServerError, "broker returned no status")
        });
        status::normalize(s);
        if response.receipt_handle.is_empty() {
            response.receipt_handle = old_handle;
        }
        Ok(response)
    }

    pub(super) async fn forward_to_dlq(
        &self,
        ctx: &RequestContext,
        request: ForwardMessageToDeadLetterQueueRequest,
    ) -> Outcome<ForwardMessageToDeadLetterQueueResponse> {
        require_client_id(ctx)?;
        let group = names::group(ctx, request.group.as_ref())?;
        let topic = names::topic(ctx, request.topic.as_ref())?;
        if request.receipt_handle.is_empty() {
            return Err(empty_handle());
        }
        let index = self.metadata.current();
        let target = handle_target(&index, &request.receipt_handle)?;
        let forward = ForwardMessageToDeadLetterQueueRequest {
            group: Some(group.internal()),
            topic: Some(topic.internal()),
            ..request
        };
        let mut response = self
            .call_for_client(ctx, &target, self.unary_budget(ctx), forward, |b, r| {
                Box::pin(async move { b.forward_message_to_dead_letter_queue(r).await })
            })
            .await?;
        let s = response.status.get_or_insert_with(|| {
            status::status(Code::InternalServerError, "broker returned no status")
        });
        status::normalize(s);
        Ok(response)
    }
}
