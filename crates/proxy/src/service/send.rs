//! SendMessage: validate the whole batch, place every message, forward per broker set.
//!
//! The batch is checked completely before anything is sent, so a bad message never leaves a
//! half-sent batch behind: it gets its own entry status, the others PRECONDITION_FAILED ("not
//! sent"), and the overall status is the first failure. Once placed, messages go to their
//! broker sets concurrently, one call per set; a failed call fails only its own entries and the
//! overall status is OK, the shared code, or MULTIPLE_RESULTS.

use comet_proto::apache::rocketmq::v2::{
    Code, Message, SendMessageRequest, SendMessageResponse, SendResultEntry, Status,
};

use tracing::Instrument as _;

use super::{Inner, require_client_id};
use crate::context::RequestContext;
use crate::routes::{Target, send_target};
use crate::status::{self, Failure, Outcome};
use crate::validate::{self, ValidMessage};

impl Inner {
    pub(super) async fn send_message(
        &self,
        ctx: &RequestContext,
        request: SendMessageRequest,
    ) -> Outcome<SendMessageResponse> {
        require_client_id(ctx)?;
        let count = request.messages.len();
        if count == 0 {
            return Err(Failure::new(
                Code::MessageCorrupted,
                "SendMessage carries no messages",
            ));
        }
        if count > self.cfg.max_batch_messages {
            return Err(Failure::bad_request(format!(
                "SendMessage carries {count} messages, more than the limit of {}",
                self.cfg.max_batch_messages
            )));
        }

        // Upstream sends one batch to one topic and refuses mixed ones.
        let first_topic = &request.messages[0].topic;
        if let Some(other) = request
            .messages
            .iter()
            .position(|m| m.topic != *first_topic)
        {
            return Err(Failure::new(
                Code::MessageCorrupted,
                format!(
                    "message {other} names another topic than message 0; a batch goes to one \
                     topic"
                ),
            ));
        }

        // Phase 1: validate and place every message; nothing is sent yet.
        let mut placed: Vec<Outcome<(ValidMessage, Target)>> = Vec::with_capacity(count);
        for message in &request.messages {
            placed.push(self.place(ctx, message).await);
        }
        if let Some(first) = placed.iter().position(Result::is_err) {
            return Ok(rejected_batch(&request.messages, &placed, first));
        }

        // Metrics: the topic's series, looked up once for the whole batch (one topic).
        let topic_metrics = placed
            .first()
            .and_then(|p| p.as_ref().ok())
            .map(|(v, _)| self.metrics.topic(&v.topic.qualified));
        let bodies: Vec<usize> = request.messages.iter().map(|m| m.body.len()).collect();
        // Traces: the broker calls run in a `forward` span. A client that sent no
        // `traceparent` header may have set the messages' `trace_context` (the official
        // clients do); the forward span then joins that trace.
        let forward = if comet_observe::trace_context::exporting() {
            let span = tracing::info_span!("forward", topic = %first_topic_name(&placed));
            if !ctx.traceparent
                && let Some(parent) = request.messages[0]
                    .system_properties
                    .as_ref()
                    .and_then(|s| s.trace_context.as_deref())
                    .and_then(comet_observe::trace_context::from_traceparent)
            {
                comet_observe::trace_context::set_parent(&span, parent);
            }
            span
        } else {
            tracing::Span::none()
        };

        // Phase 2: one broker call per broker set, concurrently.
        let mut statuses: Vec<Option<SendResultEntry>> = vec![None; count];
        let mut by_set: Vec<(Target, Vec<usize>)> = Vec::new();
        for (i, p) in placed.iter().enumerate() {
            let Ok((_, target)) = p else { continue };
            match by_set
                .iter_mut()
                .find(|(t, _)| t.broker_set == target.broker_set)
            {
                Some((_, idx)) => idx.push(i),
                None => by_set.push((target.clone(), vec![i])),
            }
        }
        let mut messages: Vec<Option<Message>> = request.messages.into_iter().map(Some).collect();
        let budget = self.unary_budget(ctx);
        let calls = by_set.into_iter().map(|(target, idx)| {
            let batch: Vec<Message> = idx
                .iter()
                .filter_map(|&i| {
                    let mut m = messages[i].take()?;
                    let (valid, target) = placed[i].as_ref().ok()?;
                    Some(internal_message(&mut m, valid, target.queue_id))
                })
                .collect();
            async move {
                let sent = batch.len();
                let outcome = self
                    .call(
                        &target,
                        budget,
                        SendMessageRequest { messages: batch },
                        |b, r| Box::pin(async move { b.send_message(r).await }),
                    )
                    .await;
                (target, idx, sent, outcome)
            }
        });
        let answers = futures::future::join_all(calls).instrument(forward).await;
        for (target, idx, sent, outcome) in answers {
            let response = outcome.and_then(|r| {
                if r.entries.len() == sent {
                    Ok(r)
                } else {
                    Err(Failure::internal(format!(
                        "broker set {} answered {} entries for {sent} messages",
                        target.broker_set,
                        r.entries.len()
                    )))
                }
            });
            match response {
                Ok(r) => {
                    for (&i, mut entry) in idx.iter().zip(r.entries) {
                        let s = entry.status.get_or_insert_with(|| {
                            status::status(Code::InternalServerError, "broker returned no status")
                        });
                        status::normalize(s);
                        if s.code == Code::Ok as i32
                            && let (Some(t), Ok((v, _))) = (&topic_metrics, &placed[i])
                        {
                            self.metrics.typed(t, v.message_type).sent(bodies[i]);
                        }
                        statuses[i] = Some(entry);
                    }
                }
                Err(f) => {
                    for &i in &idx {
                        statuses[i] = Some(SendResultEntry {
                            status: Some(f.status()),
                            ..SendResultEntry::default()
                        });
                    }
                }
            }
        }
        // The client's message id is returned as sent (Python transactions compare it).
        let entries: Vec<SendResultEntry> = statuses
            .into_iter()
            .zip(&placed)
            .map(|(entry, p)| {
                let mut entry = entry.unwrap_or_else(|| SendResultEntry {
                    status: Some(status::status(
                        Code::InternalServerError,
                        "message was not sent",
                    )),
                    ..SendResultEntry::default()
                });
                if let Ok((v, _)) = p {
                    entry.message_id.clone_from(&v.message_id);
                }
                entry
            })
            .collect();
        let overall = status::aggregate(entries.iter().filter_map(|e| e.status.as_ref()));
        tracing::debug!(messages = count, code = overall.code, "sent");
        Ok(SendMessageResponse {
            status: Some(overall),
            entries,
        })
    }

    /// Validates one message and picks its queue (auto-creating the topic when enabled).
    async fn place(
        &self,
        ctx: &RequestContext,
        message: &Message,
    ) -> Outcome<(ValidMessage, Target)> {
        let valid = validate::message(&self.cfg, ctx, message)?;
        let index = self.topic_index(&valid.topic, true).await?;
        let topic = &*index.require_topic(&valid.topic)?;
        validate::check_topic_type(topic, &valid)?;
        // A lite topic lives in one queue: placed like a message group.
        let key = valid
            .message_group
            .as_deref()
            .or(valid.lite_topic.as_deref());
        let target = send_target(&index, topic, &valid.topic, key, &self.send_round_robin)?;
        Ok((valid, target))
    }
}

/// The message as a broker receives it: qualified topic, chosen queue, resolved type.
fn internal_message(message: &mut Message, valid: &ValidMessage, queue_id: i32) -> Message {
    let mut m = std::mem::take(message);
    m.topic = Some(valid.topic.internal());
    let sys = m.system_properties.get_or_insert_with(Default::default);
    sys.queue_id = queue_id;
    sys.message_type = valid.message_type as i32;
    if sys.tag.as_deref() == Some("") {
        sys.tag = None;
    }
    if sys.message_group.as_deref() == Some("") {
        sys.message_group = None;
    }
    m
}

/// The answer to a batch in which some message failed validation or placement.
fn rejected_batch(
    messages: &[Message],
    placed: &[Outcome<(ValidMessage, Target)>],
    first: usize,
) -> SendMessageResponse {
    let batch = messages.len() > 1;
    let entries: Vec<SendResultEntry> = messages
        .iter()
        .zip(placed)
        .map(|(m, p)| {
            let status: Status = match p {
                Err(f) => f.status(),
                Ok(_) => status::status(
                    Code::PreconditionFailed,
                    format!("not sent: message {first} of this batch is invalid, so none was sent"),
                ),
            };
            SendResultEntry {
                status: Some(status),
                message_id: m
                    .system_properties
                    .as_ref()
                    .map(|s| s.message_id.clone())
                    .unwrap_or_default(),
                ..SendResultEntry::default()
            }
        })
        .collect();
    let overall = match &placed[first] {
        Err(f) if batch => f.clone().context(format_args!("message {first}")).status(),
        Err(f) => f.status(),
        Ok(_) => status::status(Code::InternalServerError, "batch rejected"),
    };
    SendMessageResponse {
        status: Some(overall),
        entries,
    }
}

/// The qualified topic of a placed batch (for span fields).
fn first_topic_name(placed: &[Outcome<(ValidMessage, Target)>]) -> &str {
    placed
        .first()
        .and_then(|p| p.as_ref().ok())
        .map_or("", |(v, _)| v.topic.qualified.as_str())
}
