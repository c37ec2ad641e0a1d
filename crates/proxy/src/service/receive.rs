//! ReceiveMessage: one POP on the broker set of the requested queue, answered as a stream
//! `[status, message..., delivery_timestamp]` (the Apache proxy's shape).
//!
//! Stream shape: every answer, whatever its path (messages found, nothing found after the long
//! poll, a broker failure, a validation error before any broker call, a missing client id,
//! shutdown), is one status frame, the messages (only after an OK status), and a closing
//! `delivery_timestamp` frame holding the proxy's wall-clock time in milliseconds when the
//! answer completes. The Python push consumer computes `now - delivery_timestamp` on every
//! batch and drops the whole batch when the frame is missing. Messages of an answer whose
//! stream ends before they were handed to the transport (the client cancelled or went away)
//! are given back as upstream does: their invisible time is changed to [`NACK_INVISIBLE`], so
//! they are redelivered in about a second instead of after the full invisible time.
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

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comet_proto::apache::rocketmq::v2::{
    ChangeInvisibleDurationRequest, Code, FilterExpression, FilterType, MessageQueue,
    ReceiveMessageRequest, ReceiveMessageResponse, Resource, Status, receive_message_response,
};
use comet_vocab::namespace::unqualify;
use futures::Stream;
use prost::Message as _;

use super::{Inner, require_client_id};
use crate::config::MAX_OUTBOUND_FRAME_BYTES;
use crate::context::{RequestContext, margin_for};
use crate::metrics::OutSeries;
use crate::names;
use crate::routes::{Target, accepted_types, permission, receive_target};
use crate::settings::{duration, from_proto};
use crate::status::{self, Failure, Outcome, Statuses};

/// Invisible time given to messages that were popped but never written to the client
/// (upstream's `NACK_INVISIBLE_TIME`).
pub(crate) const NACK_INVISIBLE: Duration = Duration::from_secs(1);

/// Longest accepted filter expression.
const MAX_FILTER_EXPRESSION_BYTES: usize = 4096;

fn status_frame(status: Status) -> ReceiveMessageResponse {
    ReceiveMessageResponse {
        content: Some(receive_message_response::Content::Status(status)),
    }
}

/// The closing frame of every answer: the proxy's wall-clock time, in milliseconds.
fn delivery_timestamp_frame() -> ReceiveMessageResponse {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    let millis = i64::try_from(millis).unwrap_or(i64::MAX);
    ReceiveMessageResponse {
        content: Some(receive_message_response::Content::DeliveryTimestamp(
            prost_types::Timestamp {
                seconds: millis.div_euclid(1000),
                // In 0..1_000_000_000: the remainder is below 1000.
                nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
            },
        )),
    }
}

impl Statuses for ReceiveMessageResponse {
    fn each_status(&mut self, f: &mut dyn FnMut(&mut Status)) {
        if let Some(receive_message_response::Content::Status(s)) = self.content.as_mut() {
            f(s);
        }
    }
}

/// What one ReceiveMessage answers before its closing `delivery_timestamp` frame.
pub(super) struct Answer {
    /// The status frame, then the message frames.
    frames: Vec<ReceiveMessageResponse>,
    /// Where the messages came from (None when there are none).
    origin: Option<Origin>,
    /// Where the messages are counted as they are handed to the transport.
    out: Option<Arc<OutSeries>>,
}

impl Answer {
    fn status(status: Status) -> Answer {
        Answer {
            frames: vec![status_frame(status)],
            origin: None,
            out: None,
        }
    }

    /// The answer to a request refused before it ran (authentication, authorization).
    pub(super) fn refused(ctx: &RequestContext, f: Failure) -> Answer {
        let mut answer = Answer::status(f.status());
        if let Some(first) = answer.frames.first_mut() {
            first.fit_for(&ctx.language);
        }
        answer
    }
}

/// The pop that produced an answer's messages: where unsent ones are given back.
struct Origin {
    target: Target,
    /// Internal (qualified) group and topic.
    group: Resource,
    topic: Resource,
}

/// The ReceiveMessage response stream: the answer's frames, then the `delivery_timestamp`
/// frame. Dropped before the end (client cancelled, connection gone), it gives back the
/// messages it still holds (see the module doc).
pub(super) struct ReceiveStream {
    frames: std::vec::IntoIter<ReceiveMessageResponse>,
    closed: bool,
    origin: Option<(Arc<Inner>, Origin)>,
    out: Option<Arc<OutSeries>>,
}

impl ReceiveStream {
    pub(super) fn new(inner: Arc<Inner>, answer: Answer) -> Self {
        ReceiveStream {
            frames: answer.frames.into_iter(),
            closed: false,
            origin: answer.origin.map(|o| (inner, o)),
            out: answer.out,
        }
    }
}

impl Stream for ReceiveStream {
    type Item = Result<ReceiveMessageResponse, tonic::Status>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(frame) = this.frames.next() {
            if let (Some(out), Some(receive_message_response::Content::Message(m))) =
                (&this.out, &frame.content)
            {
                out.delivered(m.body.len());
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        if this.closed {
            return Poll::Ready(None);
        }
        this.closed = true;
        Poll::Ready(Some(Ok(delivery_timestamp_frame())))
    }
}

impl Drop for ReceiveStream {
    fn drop(&mut self) {
        let unsent: Vec<(String, String)> = self
            .frames
            .by_ref()
            .filter_map(|f| match f.content {
                Some(receive_message_response::Content::Message(m)) => {
                    let sys = m.system_properties?;
                    Some((sys.message_id, sys.receipt_handle?))
                }
                _ => None,
            })
            .collect();
        if let (false, Some((inner, origin))) = (unsent.is_empty(), self.origin.take()) {
            inner.give_back(origin, unsent);
        }
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
    /// The answer of one ReceiveMessage, its status fitted to the client; the first frame is
    /// always the status.
    pub(super) async fn receive_message(
        &self,
        ctx: &RequestContext,
        request: ReceiveMessageRequest,
    ) -> Answer {
        let mut answer = match self.receive(ctx, request).await {
            Ok(answer) => answer,
            Err(f) => {
                tracing::debug!(code = ?f.code, reason = %f.message, "receive failed");
                Answer::status(f.status())
            }
        };
        if let Some(first) = answer.frames.first_mut() {
            first.fit_for(&ctx.language);
        }
        answer
    }

    /// Changes the invisible time of popped messages that were never written to the client to
    /// [`NACK_INVISIBLE`], in the background (the stream that held them is gone).
    fn give_back(self: &Arc<Self>, origin: Origin, unsent: Vec<(String, String)>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                messages = unsent.len(),
                "receive answer dropped outside a runtime; unsent messages wait for their \
                 invisible time"
            );
            return;
        };
        let inner = Arc::clone(self);
        let task = async move {
            let budget = inner.cfg.broker_timeout;
            for (message_id, receipt_handle) in unsent {
                let change = ChangeInvisibleDurationRequest {
                    group: Some(origin.group.clone()),
                    topic: Some(origin.topic.clone()),
                    receipt_handle,
                    invisible_duration: Some(duration(NACK_INVISIBLE)),
                    message_id,
                    ..ChangeInvisibleDurationRequest::default()
                };
                let given_back = inner
                    .call(&origin.target, budget, change, |b, r| {
                        Box::pin(async move { b.change_invisible_duration(r).await })
                    })
                    .await;
                match given_back {
                    Ok(_) => tracing::debug!(
                        broker_set = %origin.target.broker_set,
                        "unsent message given back"
                    ),
                    Err(f) => tracing::warn!(
                        broker_set = %origin.target.broker_set,
                        code = ?f.code,
                        reason = %f.message,
                        "could not give back an unsent message; it waits for its invisible time"
                    ),
                }
            }
        };
        runtime.spawn(self.tasks.track_future(task));
    }

    async fn receive(
        &self,
        ctx: &RequestContext,
        request: ReceiveMessageRequest,
    ) -> Outcome<Answer> {
        let cfg = &self.cfg;
        require_client_id(ctx)?;
        let group = names::group(ctx, request.group.as_ref())?;
        let requested_queue = request.message_queue.as_ref();
        let topic_name = names::topic(ctx, requested_queue.and_then(|q| q.topic.as_ref()))?;
        let filter = filter(request.filter_expression.as_ref())?;
        if let Some(client_id) = ctx.client_id.as_deref() {
            // Consumers that declare no subscriptions in their settings (the Rust simple
            // consumer) are known by what they receive.
            let (kind, expression) = request.filter_expression.as_ref().map_or_else(
                || ("TAG", "*".to_owned()),
                |x| {
                    let sql = x.r#type == comet_proto::apache::rocketmq::v2::FilterType::Sql as i32;
                    (if sql { "SQL" } else { "TAG" }, x.expression.clone())
                },
            );
            self.sessions
                .note_subscription(client_id, &topic_name.qualified, kind, &expression);
        }

        if request.batch_size < 1 {
            return Err(Failure::bad_request(format!(
                "batch size must be at least 1, got {}",
                request.batch_size
            )));
        }
        let batch_size = request
            .batch_size
            .min(i32::try_from(cfg.max_receive_batch_size).unwrap_or(i32::MAX));

        let invisible = cfg
            .invisible_range()
            .for_receive(request.invisible_duration.as_ref())
            .map_err(|e| Failure::new(Code::IllegalInvisibleTime, e.to_string()))?;

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
        // A lite consumer's lite topics may be on any broker set of the parent topic: its
        // pops visit them in turn, whatever queue it names.
        let lite = topic.message_type == comet_proto::comet::v1::TopicMessageType::Lite as i32;
        let target = receive_target(
            &index,
            topic,
            &topic_name,
            requested_queue.filter(|_| !lite),
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
                return Ok(Answer::status(status::status(
                    Code::MessageNotFound,
                    "proxy is shutting down; no message was taken",
                )));
            }
            r = self.call_for_client(ctx, &target, budget, pop, |b, r| Box::pin(async move { b.pop_message(r).await })) => r?,
        };

        let mut response = response;
        let dropped = std::mem::take(&mut response.unsubscribed_lite_topics);
        if let (false, Some(client_id)) = (dropped.is_empty(), ctx.client_id.as_deref()) {
            self.notify_unsubscribed_lite(client_id, dropped);
        }
        let mut pop_status = response.status.unwrap_or_else(|| {
            status::status(Code::InternalServerError, "broker returned no status")
        });
        status::normalize(&mut pop_status);
        if pop_status.code != Code::Ok as i32 {
            return Ok(Answer::status(pop_status));
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
                    format!(
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
        let origin = (frames.len() > 1).then(|| Origin {
            group: group.internal(),
            topic: topic_name.internal(),
            target,
        });
        let out =
            (frames.len() > 1).then(|| self.metrics.out(&topic_name.qualified, &group.qualified));
        Ok(Answer {
            frames,
            origin,
            out,
        })
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
