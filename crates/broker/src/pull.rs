//! PullMessage: offset-based reads of one queue, filtered, batched and long-polled.
//!
//! A pull names the exact position to read from; the broker keeps no state for it (the group
//! commits its progress with UpdateOffset, see the `offsets` module). Each round reads a bounded
//! window of the consume queue on the blocking pool; a selective filter that skips a whole
//! window makes the next round continue from where it stopped, and at the queue end the pull
//! waits on the topic's arrival channel, until the long-polling deadline.

use std::sync::Arc;
use std::time::Duration;

use comet_store::{MessageStore, StoreError, StoredMessage};
use comet_vocab::names;

use crate::engine::Inner;
use crate::filter::Filter;
use crate::meta::Access;
use crate::outcome::{Code, Failure, blocking, store_failure};

/// Consume-queue entries examined per round, at least (a batch examines 4× its size).
const MIN_SCAN_WINDOW: usize = 256;

/// Checks that `topic` is named and `queue_id` is one of its queues on this broker set.
pub(crate) fn concrete_queue(
    inner: &Inner,
    topic: &str,
    queue_id: i32,
    access: Access,
) -> Result<(), Failure> {
    if topic.is_empty() {
        return Err(Failure::new(
            Code::IllegalTopic,
            "message_queue has no topic",
        ));
    }
    let queue_count = inner.meta.index().queues(topic, access)?;
    if queue_id < 0 || queue_id as u32 >= queue_count {
        return Err(Failure::new(
            Code::BadRequest,
            format!(
                "queue id {queue_id} of topic {topic:?} is outside 0..{queue_count} on broker set {}",
                inner.cfg.broker_set
            ),
        ));
    }
    Ok(())
}

/// Checks a request's group name.
pub(crate) fn require_group(group: &str) -> Result<(), Failure> {
    if group.is_empty() {
        return Err(Failure::new(
            Code::IllegalConsumerGroup,
            "consumer group is empty",
        ));
    }
    if group.len() > names::GROUP_MAX_LEN {
        return Err(Failure::new(
            Code::IllegalConsumerGroup,
            format!(
                "consumer group name is {} bytes; at most {}",
                group.len(),
                names::GROUP_MAX_LEN
            ),
        ));
    }
    Ok(())
}

/// Reads one queue from an offset.
#[derive(Debug, Clone, PartialEq)]
pub struct PullRequest {
    /// The consumer group (for logs; a pull keeps no state).
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The queue.
    pub queue_id: i32,
    /// Where to read from.
    pub offset: i64,
    /// Which messages to return.
    pub filter: Filter,
    /// Most messages to return (positive; capped at `max_batch_size`).
    pub batch_size: i32,
    /// How long to wait at the queue's end (capped at `max_long_polling`).
    pub long_poll: Duration,
}

/// What a pull found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStatus {
    /// Messages (at least one).
    Found,
    /// No matching message before the poll ended; continue from `next_offset`.
    NotFound,
    /// The offset is outside the stored range; continue from `next_offset`.
    OffsetOutOfRange,
}

/// The answer to a pull.
#[derive(Debug, Clone, PartialEq)]
pub struct PullResult {
    /// What the pull found.
    pub status: PullStatus,
    /// The messages, in queue order.
    pub messages: Vec<StoredMessage>,
    /// Where the next pull continues.
    pub next_offset: i64,
    /// The queue's first stored offset.
    pub min_offset: i64,
    /// The queue's next offset to be written.
    pub max_offset: i64,
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
    /// Reads up to `batch_size` matching messages from `offset`, long-polling at the end.
    ///
    /// # Errors
    /// ILLEGAL_CONSUMER_GROUP, ILLEGAL_TOPIC, TOPIC_NOT_FOUND, FORBIDDEN, BAD_REQUEST (batch
    /// size, queue id), the store's failures.
    pub(crate) async fn pull(&self, req: &PullRequest) -> Result<PullResult, Failure> {
        let group = &req.group;
        require_group(group)?;
        let (topic, queue_id) = (req.topic.clone(), req.queue_id);
        concrete_queue(self, &topic, queue_id, Access::Read)?;
        let filter = Arc::new(req.filter.clone());
        if req.batch_size <= 0 {
            return Err(Failure::new(
                Code::BadRequest,
                format!("batch_size must be positive, got {}", req.batch_size),
            ));
        }
        let batch = (req.batch_size as u32).min(self.cfg.max_batch_size) as usize;
        let long_poll = req.long_poll.min(self.cfg.max_long_polling);
        let store = self.store()?;
        let (min, max) = (
            store.min_offset(&topic, queue_id),
            store.max_offset(&topic, queue_id),
        );
        if req.offset < min || req.offset > max {
            return Ok(PullResult {
                status: PullStatus::OffsetOutOfRange,
                messages: Vec::new(),
                next_offset: req.offset.clamp(min, max),
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
                    store_failure(&e)
                })?;
            from = s.next;
            if !s.messages.is_empty() {
                tracing::debug!(group = %group, topic = %topic, queue_id,
                    count = s.messages.len(), next_offset = s.next, "pulled");
                return Ok(PullResult {
                    status: PullStatus::Found,
                    messages: s.messages,
                    next_offset: s.next,
                    min_offset: s.min,
                    max_offset: s.max,
                });
            }
            let not_found = || PullResult {
                status: PullStatus::NotFound,
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
