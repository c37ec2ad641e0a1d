//! PullMessage, UpdateOffset, GetOffset and QueryOffset: offset-based consumption of one
//! concrete queue, forwarded to the broker set the queue names.
//!
//! - The queue is `message_queue.broker.name` + `message_queue.id` exactly as QueryRoute
//!   returned it (offsets are per broker set, so there is no fallback to another set). When the
//!   broker name is omitted and the topic lives on one broker set only, that set is used.
//! - PullMessage answers as a stream `[status, message..., next_offset]` on every path: OK with
//!   messages; MESSAGE_NOT_FOUND when nothing matched within the long poll; ILLEGAL_OFFSET when
//!   the offset lies outside the queue (`next_offset` is then the nearest valid one); any other
//!   failure (validation, broker call) is the status followed by `next_offset` = the requested
//!   offset, so a client that always reads the offset frame stays where it was. Long polling
//!   is clamped as for ReceiveMessage. (The Apache proxy does not serve PullMessage; the shape
//!   is the one its remoting pull and the protocol's oneof describe.)
//! - ILLEGAL_OFFSET and OFFSET_NOT_FOUND are newer than the Rust 5.0.0 client, which panics on
//!   them: a Rust client (`x-mq-language: RUST`) gets BAD_REQUEST / NOT_FOUND with the code
//!   named in the message instead (see [`status::for_client`]); every other language gets
//!   the codes.

use comet_proto::apache::rocketmq::v2::{
    Code, GetOffsetRequest, GetOffsetResponse, MessageQueue, PullMessageRequest,
    PullMessageResponse, QueryOffsetPolicy, QueryOffsetRequest, QueryOffsetResponse, Status,
    UpdateOffsetRequest, UpdateOffsetResponse, pull_message_response,
};
use comet_proto::comet::v1::Topic;
use comet_vocab::namespace::unqualify;
use prost::Message as _;

use super::receive::filter;
use super::{Inner, require_client_id};
use crate::config::MAX_OUTBOUND_FRAME_BYTES;
use crate::context::{RequestContext, margin_for};
use crate::names::{self, Name};
use crate::routes::{MetadataIndex, Target, permission, readable};
use crate::settings::{duration, from_proto};
use crate::status::{self, Failure, Outcome, Statuses};

/// The frames answering a pull refused before it ran (authentication, authorization).
pub(super) fn refused_pull(
    ctx: &RequestContext,
    f: Failure,
    offset: i64,
) -> Vec<PullMessageResponse> {
    let mut frames = vec![status_frame(f.status()), next_offset_frame(offset)];
    if let Some(first) = frames.first_mut() {
        first.fit_for(&ctx.language);
    }
    frames
}

fn status_frame(status: Status) -> PullMessageResponse {
    PullMessageResponse {
        content: Some(pull_message_response::Content::Status(status)),
    }
}

fn next_offset_frame(offset: i64) -> PullMessageResponse {
    PullMessageResponse {
        content: Some(pull_message_response::Content::NextOffset(offset)),
    }
}

impl Statuses for PullMessageResponse {
    fn each_status(&mut self, f: &mut dyn FnMut(&mut Status)) {
        if let Some(pull_message_response::Content::Status(s)) = self.content.as_mut() {
            f(s);
        }
    }
}

/// The broker set and queue a request names, with the address of the member serving it (its
/// master, or a replica while the set has none; see [`MetadataIndex::read_address`]).
fn queue_target(
    index: &MetadataIndex,
    topic: &Topic,
    name: &Name,
    requested: Option<&MessageQueue>,
) -> Outcome<Target> {
    if !readable(permission(topic)) {
        return Err(Failure::new(
            Code::Forbidden,
            format!("topic {} is not readable", name.name),
        ));
    }
    let Some(mq) = requested else {
        return Err(Failure::bad_request("message_queue is required"));
    };
    let wanted = mq.broker.as_ref().map(|b| b.name.as_str()).unwrap_or("");
    let placements: Vec<_> = topic
        .placements
        .iter()
        .filter(|p| p.queue_count > 0)
        .collect();
    let placement = if wanted.is_empty() {
        match placements.as_slice() {
            [only] => *only,
            _ => {
                return Err(Failure::bad_request(format!(
                    "message_queue.broker.name is required: topic {} has queues on {} broker \
                     sets; use a queue exactly as QueryRoute returned it",
                    name.name,
                    placements.len()
                )));
            }
        }
    } else {
        match placements.iter().find(|p| p.broker_set == wanted) {
            Some(p) => *p,
            None => {
                let sets: Vec<&str> = placements.iter().map(|p| p.broker_set.as_str()).collect();
                return Err(Failure::bad_request(format!(
                    "topic {} has no queues on broker set {wanted} (it has queues on: {})",
                    name.name,
                    sets.join(", ")
                )));
            }
        }
    };
    if mq.id < 0 || i64::from(mq.id) >= i64::from(placement.queue_count) {
        return Err(Failure::bad_request(format!(
            "queue id {} is out of range for topic {} on broker set {}: valid are 0..{}",
            mq.id, name.name, placement.broker_set, placement.queue_count
        )));
    }
    let Some(address) = index.read_address(&placement.broker_set) else {
        return Err(Failure::new(
            Code::HaNotAvailable,
            format!(
                "broker set {} of topic {} has no live member",
                placement.broker_set, name.name
            ),
        ));
    };
    Ok(Target {
        broker_set: placement.broker_set.clone(),
        address: address.to_owned(),
        queue_id: mq.id,
    })
}

/// The internal form of a requested queue: qualified topic, broker set and queue id.
fn internal_queue(name: &Name, target: &Target) -> MessageQueue {
    MessageQueue {
        topic: Some(name.internal()),
        id: target.queue_id,
        permission: 0,
        broker: Some(comet_proto::apache::rocketmq::v2::Broker {
            name: target.broker_set.clone(),
            id: 0,
            endpoints: None,
        }),
        accept_message_types: Vec::new(),
    }
}

impl Inner {
    /// Topic name, topic and target of a request's message_queue.
    fn resolve_queue(
        &self,
        ctx: &RequestContext,
        requested: Option<&MessageQueue>,
    ) -> Outcome<(Name, Target)> {
        let name = names::topic(ctx, requested.and_then(|q| q.topic.as_ref()))?;
        let index = self.metadata.current();
        let topic = index.require_topic(&name)?;
        let target = queue_target(&index, &topic, &name, requested)?;
        Ok((name, target))
    }

    /// The broker's status, present and with a defined code.
    fn broker_status(s: Option<Status>) -> Status {
        let mut s = s.unwrap_or_else(|| {
            status::status(Code::InternalServerError, "broker returned no status")
        });
        status::normalize(&mut s);
        s
    }

    /// The frames of one PullMessage answer: the status (fitted to the client), the
    /// messages, and always the closing `next_offset`.
    pub(super) async fn pull_message(
        &self,
        ctx: &RequestContext,
        request: PullMessageRequest,
    ) -> Vec<PullMessageResponse> {
        let requested_offset = request.offset;
        let mut frames = match self.pull(ctx, request).await {
            Ok(frames) => frames,
            Err(f) => {
                tracing::debug!(code = ?f.code, reason = %f.message, "pull failed");
                vec![
                    status_frame(f.status()),
                    next_offset_frame(requested_offset),
                ]
            }
        };
        if let Some(first) = frames.first_mut() {
            first.fit_for(&ctx.language);
        }
        frames
    }

    async fn pull(
        &self,
        ctx: &RequestContext,
        request: PullMessageRequest,
    ) -> Outcome<Vec<PullMessageResponse>> {
        let cfg = &self.cfg;
        require_client_id(ctx)?;
        let group = names::group(ctx, request.group.as_ref())?;
        let (name, target) = self.resolve_queue(ctx, request.message_queue.as_ref())?;
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
        let pull = PullMessageRequest {
            group: Some(group.internal()),
            message_queue: Some(internal_queue(&name, &target)),
            offset: request.offset,
            batch_size,
            filter_expression: Some(filter),
            long_polling_timeout: Some(duration(polling)),
        };
        let response = tokio::select! {
            () = self.shutdown.cancelled() => {
                return Ok(vec![
                    status_frame(status::status(
                        Code::MessageNotFound,
                        "proxy is shutting down; nothing was read",
                    )),
                    next_offset_frame(request.offset),
                ]);
            }
            r = self.call(&target, budget, pull, |b, r| Box::pin(async move { b.pull_message(r).await })) => r?,
        };
        let broker_code = response.status.as_ref().map(|s| s.code);
        let st = Self::broker_status(response.status);
        let broker_offset = matches!(
            broker_code.map(Code::try_from),
            Some(Ok(Code::Ok | Code::MessageNotFound | Code::IllegalOffset))
        );
        if !broker_offset {
            return Ok(vec![status_frame(st), next_offset_frame(request.offset)]);
        }
        let mut frames = Vec::with_capacity(response.messages.len() + 2);
        frames.push(status_frame(st));
        let out = (!response.messages.is_empty())
            .then(|| self.metrics.out(&name.qualified, &group.qualified));
        for mut message in response.messages {
            if let Some(t) = message.topic.as_mut() {
                *t = names::public_resource(&name.namespace, t);
            }
            if let Some(dlq) = message
                .system_properties
                .as_mut()
                .and_then(|s| s.dead_letter_queue.as_mut())
            {
                dlq.topic = unqualify(&name.namespace, &dlq.topic);
            }
            let frame = PullMessageResponse {
                content: Some(pull_message_response::Content::Message(message)),
            };
            let size = frame.encoded_len();
            if size > MAX_OUTBOUND_FRAME_BYTES {
                tracing::error!(
                    topic = %name.qualified,
                    size,
                    limit = MAX_OUTBOUND_FRAME_BYTES,
                    "pulled message too large for one frame; skipped"
                );
                continue;
            }
            if let (Some(out), Some(pull_message_response::Content::Message(m))) =
                (&out, &frame.content)
            {
                out.delivered(m.body.len());
            }
            frames.push(frame);
        }
        frames.push(next_offset_frame(response.next_offset));
        tracing::debug!(
            broker_set = %target.broker_set,
            topic = %name.qualified,
            group = %group.qualified,
            queue_id = target.queue_id,
            pulled = frames.len() - 2,
            next_offset = response.next_offset,
            "pulled"
        );
        Ok(frames)
    }

    pub(super) async fn update_offset(
        &self,
        ctx: &RequestContext,
        request: UpdateOffsetRequest,
    ) -> Outcome<UpdateOffsetResponse> {
        require_client_id(ctx)?;
        let group = names::group(ctx, request.group.as_ref())?;
        let (name, target) = self.resolve_queue(ctx, request.message_queue.as_ref())?;
        let update = UpdateOffsetRequest {
            group: Some(group.internal()),
            message_queue: Some(internal_queue(&name, &target)),
            offset: request.offset,
        };
        let budget = self.unary_budget(ctx);
        let r = self
            .call(&target, budget, update, |b, r| {
                Box::pin(async move { b.update_offset(r).await })
            })
            .await?;
        Ok(UpdateOffsetResponse {
            status: Some(Self::broker_status(r.status)),
        })
    }

    pub(super) async fn get_offset(
        &self,
        ctx: &RequestContext,
        request: GetOffsetRequest,
    ) -> Outcome<GetOffsetResponse> {
        require_client_id(ctx)?;
        let group = names::group(ctx, request.group.as_ref())?;
        let (name, target) = self.resolve_queue(ctx, request.message_queue.as_ref())?;
        let get = GetOffsetRequest {
            group: Some(group.internal()),
            message_queue: Some(internal_queue(&name, &target)),
        };
        let budget = self.unary_budget(ctx);
        let r = self
            .call(&target, budget, get, |b, r| {
                Box::pin(async move { b.get_offset(r).await })
            })
            .await?;
        Ok(GetOffsetResponse {
            status: Some(Self::broker_status(r.status)),
            offset: r.offset,
        })
    }

    pub(super) async fn query_offset(
        &self,
        ctx: &RequestContext,
        request: QueryOffsetRequest,
    ) -> Outcome<QueryOffsetResponse> {
        require_client_id(ctx)?;
        let (name, target) = self.resolve_queue(ctx, request.message_queue.as_ref())?;
        match QueryOffsetPolicy::try_from(request.query_offset_policy) {
            Ok(QueryOffsetPolicy::Timestamp) if request.timestamp.is_none() => {
                return Err(Failure::bad_request(
                    "timestamp is required when query_offset_policy is TIMESTAMP",
                ));
            }
            Ok(_) => {}
            Err(_) => {
                return Err(Failure::bad_request(format!(
                    "unknown query_offset_policy {}; use BEGINNING, END or TIMESTAMP",
                    request.query_offset_policy
                )));
            }
        }
        let query = QueryOffsetRequest {
            message_queue: Some(internal_queue(&name, &target)),
            query_offset_policy: request.query_offset_policy,
            timestamp: request.timestamp,
        };
        let budget = self.unary_budget(ctx);
        let r = self
            .call(&target, budget, query, |b, r| {
                Box::pin(async move { b.query_offset(r).await })
            })
            .await?;
        Ok(QueryOffsetResponse {
            status: Some(Self::broker_status(r.status)),
            offset: r.offset,
        })
    }
}
