//! PullMessage: offset-based reads of one queue, filtered, batched and long-polled.
//!
//! A pull names the exact position to read from; the broker keeps no state for it (the group
//! commits its progress with UpdateOffset, see the `offsets` module). Each round reads a bounded
//! window of the consume queue on the blocking pool; a selective filter that skips a whole
//! window makes the next round continue from where it stopped, and at the queue end the pull
//! waits on the topic's arrival channel, until the long-polling deadline.

use std::sync::Arc;
use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{self as v2, Code, PullMessageRequest};
use comet_proto::comet::v1::PullMessageResponse;
use comet_store::{MessageStore, StoreError, StoredMessage};

use crate::convert::{self, Delivery};
use crate::engine::Inner;
use crate::filter::Filter;
use crate::meta::Access;
use crate::outcome::{Outcome, blocking, ok, status, store_outcome};

/// Consume-queue entries examined per round, at least (a batch examines 4× its size).
const MIN_SCAN_WINDOW: usize = 256;

/// The public message of a stored one for reads that hand out nothing: no receipt handle,
/// invisible duration or delivery attempt.
pub(crate) fn plain_message(m: &StoredMessage, advertised_addr: &str) -> v2::Message {
    let mut msg = convert::to_proto(
        m,
        Delivery {
            receipt_handle: String::new(),
            attempt: 1,
            invisible: Duration::ZERO,
            advertised_addr,
        },
    );
    if let Some(sp) = msg.system_properties.as_mut() {
        sp.receipt_handle = None;
        sp.invisible_duration = None;
        sp.delivery_attempt = None;
    }
    msg
}

/// The topic and queue a pull or offset request names, checked against the metadata: the
/// topic must be placed on this broker set and the queue id must be one of its queues here.
pub(crate) fn concrete_queue(
    inner: &Inner,
    mq: Option<&v2::MessageQueue>,
    access: Access,
) -> Result<(String, i32), Outcome> {
    let (mq, topic) = queue_topic(mq)?;
    let queue_count = inner.meta.index().queues(&topic, access)?;
    if mq.id < 0 || mq.id as u32 >= queue_count {
        return Err((
            Code::BadRequest,
            format!(
                "queue id {} of topic {topic:?} is outside 0..{queue_count} on broker set {}",
                mq.id, inner.cfg.broker_set
            ),
        ));
    }
    Ok((topic, mq.id))
}

/// The queue a request names and its topic, which must be given.
pub(crate) fn queue_topic(
    mq: Option<&v2::MessageQueue>,
) -> Result<(&v2::MessageQueue, String), Outcome> {
    let Some(mq) = mq else {
        return Err((Code::BadRequest, "message_queue is required".into()));
    };
    let topic = mq
        .topic
        .as_ref()
        .map(|t| t.name.clone())
        .unwrap_or_default();
    if topic.is_empty() {
        return Err((Code::IllegalTopic, "message_queue has no topic".into()));
    }
    Ok((mq, topic))
}

/// The group of a request, which must be a valid name.
pub(crate) fn require_group(group: Option<&v2::Resource>) -> Result<String, Outcome> {
    let group = group.map(|g| g.name.clone()).unwrap_or_default();
    if group.is_empty() {
        return Err((Code::IllegalConsumerGroup, "consumer group is empty".into()));
    }
    if group.len() > 255 {
        return Err((
            Code::IllegalConsumerGroup,
            format!("consumer group name is {} bytes; at most 255", group.len()),
        ));
    }
    Ok(group)
}

/// One round's read.
struct Scan {
    messages: Vec<StoredMessage>,
    /// Past the last entry examined.
    next: i64,
    min: i64,
    max: i64,
}

/// Reads up to `batch` messages matching `filter` from `from` (blocking). Records that were
/// deleted or fail verification are skipped (and logged), never served.
fn scan(
    store: &MessageStore,
    topic: &str,
    queue_id: i32,
    from: i64,
    batch: usize,
    filter: &Filter,
) -> Result<Scan, StoreError> {
    let min = store.min_offset(topic, queue_id);
    let max = store.max_offset(topic, queue_id);
    let start = from.clamp(min, max);
    let entries = store.read_queue(
        topic,
        queue_id,
        start,
        batch.saturating_mul(4).max(MIN_SCAN_WINDOW),
    );
    let mut next = entries.last().map_or(max, |e| e.queue_offset + 1);
    let mut messages = Vec::new();
    for e in &entries {
        if messages.len() >= batch {
            next = e.queue_offset;
            break;
        }
        if !filter.matches_hash(e.tag_hash) {
            continue;
        }
        match store.read(e.physical_offset) {
            Ok(m) => {
                if filter.matches(&m.message.properties) {
                    messages.push(m);
                }
            }
            Err(StoreError::OffsetOutOfRange { .. }) => {}
            Err(StoreError::Corrupt { offset, reason }) => {
                tracing::error!(topic, queue_id, queue_offset = e.queue_offset,
                    physical_offset = offset, %reason, "corrupt record skipped by pull");
            }
            Err(err) => return Err(err),
        }
    }
    Ok(Scan {
        messages,
        next,
        min,
        max,
    })
}

impl Inner {
    /// PullMessage (see broker.proto).
    pub async fn pull(&self, req: PullMessageRequest) -> PullMessageResponse {
        match self.pull_inner(req).await {
            Ok(r) => r,
            Err((code, msg)) => PullMessageResponse {
                status: Some(status(code, msg)),
                ..Default::default()
            },
        }
    }

    async fn pull_inner(&self, req: PullMessageRequest) -> Result<PullMessageResponse, Outcome> {
        let group = require_group(req.group.as_ref())?;
        let (topic, queue_id) = concrete_queue(self, req.message_queue.as_ref(), Access::Read)?;
        let filter = Arc::new(
            Filter::from_request(req.filter_expression.as_ref())
                .map_err(|e| (Code::IllegalFilterExpression, e.to_string()))?,
        );
        if req.batch_size <= 0 {
            return Err((
                Code::BadRequest,
                format!("batch_size must be positive, got {}", req.batch_size),
            ));
        }
        let batch = (req.batch_size as u32).min(self.cfg.max_batch_size) as usize;
        let long_poll = req
            .long_polling_timeout
            .as_ref()
            .and_then(convert::to_duration)
            .unwrap_or(Duration::ZERO)
            .min(self.cfg.max_long_polling);
        let store = self.store()?;
        let (min, max) = (
            store.min_offset(&topic, queue_id),
            store.max_offset(&topic, queue_id),
        );
        if req.offset < min || req.offset > max {
            let next = req.offset.clamp(min, max);
            return Ok(PullMessageResponse {
                status: Some(status(
                    Code::IllegalOffset,
                    format!(
                        "offset {} of {topic:?} queue {queue_id} is outside the stored range \
                         [{min}, {max}]; continue from {next}",
                        req.offset
                    ),
                )),
                messages: Vec::new(),
                next_offset: next,
                min_offset: min,
                max_offset: max,
            });
        }
        let deadline = tokio::time::Instant::now() + long_poll;
        let mut arrivals = self.hub.subscribe(&topic);
        let mut from = req.offset;
        loop {
            arrivals.borrow_and_update();
            let (reader, t, f) = (Arc::clone(&store), topic.clone(), Arc::clone(&filter));
            let s = blocking(move || scan(&reader, &t, queue_id, from, batch, &f))
                .await?
                .map_err(|e| {
                    tracing::error!(topic = %topic, queue_id, error = %e, "pull read failed");
                    store_outcome(&e)
                })?;
            from = s.next;
            if !s.messages.is_empty() {
                tracing::debug!(group = %group, topic = %topic, queue_id,
                    count = s.messages.len(), next_offset = s.next, "pulled");
                let advertised = &self.cfg.advertised_addr;
                return Ok(PullMessageResponse {
                    status: Some(ok()),
                    messages: s
                        .messages
                        .iter()
                        .map(|m| plain_message(m, advertised))
                        .collect(),
                    next_offset: s.next,
                    min_offset: s.min,
                    max_offset: s.max,
                });
            }
            let not_found = || PullMessageResponse {
                status: Some(status(
                    Code::MessageNotFound,
                    format!("no new matching message; continue from offset {}", s.next),
                )),
                messages: Vec::new(),
                next_offset: s.next,
                min_offset: s.min,
                max_offset: s.max,
            };
            if self.closing() || tokio::time::Instant::now() >= deadline {
                return Ok(not_found());
            }
            if s.next < s.max {
                // The filter skipped a whole window and more is stored: keep scanning.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                changed = arrivals.changed() => {
                    if changed.is_err() {
                        return Ok(not_found());
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(not_found()),
                () = self.shutdown.cancelled() => return Ok(not_found()),
            }
        }
    }
}
