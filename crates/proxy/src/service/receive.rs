//! ReceiveMessage: one POP on the broker set of the requested queue, answered as a stream
//! `[status, message..., delivery_timestamp]`. Every answer ends with the delivery timestamp
//! frame, as the upstream proxy's do, whether messages were found or not and on errors: the
//! Python push consumer computes its delivery latency from it and drops the batch without it.
//!
//! Timing: the long poll is the request's `long_polling_timeout` (absent: the maximum) clamped
//! to `[long_polling_min, long_polling_max]` and to the client's `grpc-timeout` minus
//! `deadline_margin` (at most a quarter of the deadline), so the answer always precedes the client's deadline. On shutdown a
//! pending poll ends at once with MESSAGE_NOT_FOUND.
//!
//! Frame size: every message frame stays within [`MAX_OUTBOUND_FRAME_BYTES`] because sends
//! are bounded (`ProxyConfig::validate`). A frame that would still exceed it (data written
//! under older, larger limits) is not sent: it would break the whole stream for Rust and Node
//! clients. It is logged and stays invisible until the broker redelivers it.

use comet_proto::apache::rocketmq::v2::{
    Code, FilterExpression, FilterType, MessageQueue, ReceiveMessageRequest,
    ReceiveMessageResponse, Status, receive_message_response,
};
use prost::Message as _;

use super::{Inner, require_client_id};
use crate::config::MAX_OUTBOUND_FRAME_BYTES;
use crate::context::{RequestContext, margin_for};
use crate::names::{self, unqualify};
use crate::routes::{accepted_types, permission, receive_target};
use crate::settings::{duration, from_proto};
use crate::status::{self, Failure, Outcome};

/// Longest accepted filter expression.
const MAX_FILTER_EXPRESSION_BYTES: usize = 4096;

fn status_frame(status: Status) -> ReceiveMessageResponse {
    ReceiveMessageResponse {
        content: Some(receive_message_response::Content::Status(status)),
    }
}

pub(super) fn filter(request: Option<&FilterExpression>) -> Outcome<FilterExpression> {
    let mut f = request.cloned().unwrap_or_default();
    let code = Code::IllegalFilterExpression;
    match FilterType::try_from(f.r#type) {
        Ok(FilterType::Unspecified | FilterType::Tag) => {
            f.r#type = FilterType::Tag as i32;
            if f.expression.trim().is_empty() {
                f.expression = "*".to_owned();
            }
        }
        Ok(FilterType::Sql) => {
            if f.expression.trim().is_empty() {
                return Err(Failure::new(
                    code,
                    "SQL filter expression must not be empty",
                ));
            }
        }
        Err(_) => {
            return Err(Failure::new(
                code,
                format!("unknown filter type {}; use TAG or SQL", f.r#type),
            ));
        }
    }
    if f.expression.len() > MAX_FILTER_EXPRESSION_BYTES {
        return Err(Failure::new(
            code,
            format!(
                "filter expression is {} bytes, more than the limit of {MAX_FILTER_EXPRESSION_BYTES}",
                f.expression.len()
            ),
        ));
    }
    Ok(f)
}

impl Inner {
    /// The frames of one ReceiveMessage answer; the first is always the status and the last
    /// the delivery timestamp (now).
    pub(super) async fn receive_message(
        &self,
        ctx: &RequestContext,
        request: ReceiveMessageRequest,
    ) -> Vec<ReceiveMessageResponse> {
        let mut frames = match self.receive(ctx, request).await {
            Ok(frames) => frames,
            Err(f) => {
                tracing::debug!(code = ?f.code, reason = %f.message, "receive failed");
                vec![status_frame(f.status())]
            }
        };
        frames.push(ReceiveMessageResponse {
            content: Some(receive_message_response::Content::DeliveryTimestamp(
                prost_types::Timestamp::from(std::time::SystemTime::now()),
            )),
        });
        frames
    }

    async fn receive(
        &self,
        ctx: &RequestContext,
        request: ReceiveMessageRequest,
    ) -> Outcome<Vec<ReceiveMessageResponse>> {
        let cfg = &self.cfg;
        require_client_id(ctx)?;
        let group = names::group(ctx, request.group.as_ref())?;
        let requested_queue = request.message_queue.as_ref();
        let topic_name = names::topic(ctx, requested_queue.and_then(|q| q.topic.as_ref()))?;
        let filter = filter(request.filter_expression.as_ref())?;

        if request.batch_size < 1 {
            return Err(Failure::bad_request(format!(
                "batch size must be at least 1, got {}",
                request.batch_size
            )));
        }
        let batch_size = request
            .batch_size
            .min(i32::try_from(cfg.max_receive_batch_size).unwrap_or(i32::MAX));

        let invisible = match request.invisible_duration.as_ref() {
            None => cfg.invisible_default,
            Some(d) => match from_proto(d) {
                Some(d) if d >= cfg.invisible_min && d <= cfg.invisible_max => d,
                _ => {
                    return Err(Failure::new(
                        Code::IllegalInvisibleTime,
                        format!(
                            "invisible duration {}s{}ns is outside the allowed range [{:?}, {:?}]",
                            d.seconds, d.nanos, cfg.invisible_min, cfg.invisible_max
                        ),
                    ));
                }
            },
        };

        let requested_polling = match request.long_polling_timeout.as_ref() {
            None => cfg.long_polling_max,
            Some(d) => from_proto(d).ok_or_else(|| {
                Failure::new(
                    Code::IllegalPollingTime,
                    format!(
                        "long polling timeout {}s{}ns is negative or malformed",
                        d.seconds, d.nanos
                    ),
                )
            })?,
        };
        let mut polling = requested_polling.clamp(cfg.long_polling_min, cfg.long_polling_max);
        let budget = match ctx.timeout {
            Some(t) => {
                let margin = margin_for(t, cfg.deadline_margin);
                polling = polling.min(t.saturating_sub(margin));
                t.saturating_sub(margin / 2).max(polling)
            }
            None => polling + cfg.broker_timeout,
        };

        let index = self.metadata.current();
        let topic = &*index.require_topic(&topic_name)?;
        let target = receive_target(
            &index,
            topic,
            &topic_name,
            requested_queue,
            &self.receive_round_robin,
        )?;
        let pop = ReceiveMessageRequest {
            group: Some(group.internal()),
            message_queue: Some(MessageQueue {
                topic: Some(topic_name.internal()),
                id: target.queue_id,
                permission: permission(topic) as i32,
                broker: Some(comet_proto::apache::rocketmq::v2::Broker {
                    name: target.broker_set.clone(),
                    id: 0,
                    endpoints: None,
                }),
                accept_message_types: accepted_types(topic)
                    .into_iter()
                    .map(|t| t as i32)
                    .collect(),
            }),
            filter_expression: Some(filter),
            batch_size,
            invisible_duration: Some(duration(invisible)),
            auto_renew: request.auto_renew,
            long_polling_timeout: Some(duration(polling)),
            attempt_id: request.attempt_id,
        };

        let response = tokio::select! {
            () = self.shutdown.cancelled() => {
                return Ok(vec![status_frame(status::status(
                    Code::MessageNotFound,
                    "proxy is shutting down; no message was taken",
                ))]);
            }
            r = self.call(&target, budget, pop, |b, r| Box::pin(async move { b.pop_message(r).await })) => r?,
        };

        let mut pop_status = response.status.unwrap_or_else(|| {
            status::status(Code::InternalServerError, "broker returned no status")
        });
        status::sanitize(&mut pop_status);
        if pop_status.code != Code::Ok as i32 {
            return Ok(vec![status_frame(pop_status)]);
        }
        let offered = response.messages.len();
        let mut frames = Vec::with_capacity(offered + 1);
        frames.push(status_frame(pop_status));
        for mut message in response.messages {
            if let Some(t) = message.topic.as_mut() {
                *t = names::public_resource(&topic_name.namespace, t);
            }
            if let Some(dlq) = message
                .system_properties
                .as_mut()
                .and_then(|s| s.dead_letter_queue.as_mut())
            {
                dlq.topic = unqualify(&topic_name.namespace, &dlq.topic);
            }
            let frame = ReceiveMessageResponse {
                content: Some(receive_message_response::Content::Message(message)),
            };
            let size = frame.encoded_len();
            if size > MAX_OUTBOUND_FRAME_BYTES {
                let id = match &frame.content {
                    Some(receive_message_response::Content::Message(m)) => m
                        .system_properties
                        .as_ref()
                        .map(|s| s.message_id.clone())
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                tracing::error!(
                    message_id = %id,
                    size,
                    limit = MAX_OUTBOUND_FRAME_BYTES,
                    "message too large for one frame; not delivered"
                );
                continue;
            }
            frames.push(frame);
        }
        if frames.len() == 1 {
            frames[0] = status_frame(if offered == 0 {
                status::status(Code::MessageNotFound, "no message available")
            } else {
                status::status(
                    Code::InternalServerError,
                    &format!(
                        "{offered} message(s) exceed the 4 MiB frame limit and cannot be delivered"
                    ),
                )
            });
        }
        tracing::debug!(
            broker_set = %target.broker_set,
            topic = %topic_name.qualified,
            group = %group.qualified,
            delivered = frames.len() - 1,
            "received"
        );
        Ok(frames)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn filters_default_to_all_tags() {
        let f = filter(None).unwrap();
        assert_eq!(
            (f.r#type, f.expression.as_str()),
            (FilterType::Tag as i32, "*")
        );
        let sql = FilterExpression {
            r#type: FilterType::Sql as i32,
            expression: " ".into(),
        };
        assert_eq!(
            filter(Some(&sql)).unwrap_err().code,
            Code::IllegalFilterExpression
        );
        let bad = FilterExpression {
            r#type: 7,
            expression: "a".into(),
        };
        assert_eq!(
            filter(Some(&bad)).unwrap_err().message,
            "unknown filter type 7; use TAG or SQL"
        );
    }
}
