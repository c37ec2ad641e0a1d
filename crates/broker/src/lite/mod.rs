//! Lite topics (RIP-83): many small, short-lived ordered topics under one LITE parent topic
//! (one per chat session, device, job...), created by their first message and removed after
//! `lite_topic_ttl` without one.
//!
//! # Design
//! ```text
//!  send (lite_topic = L) ─► parent queue hash(L) % queues ─► commitlog + parent consume queue
//!                                            │ catch-up (send, pop), in queue order
//!                                            ▼
//!  LiteIndex (memory + lite/index.log): "<parent>+<L>" → [parent-queue offsets]  (logical queue)
//!                                            │
//!  pop of a lite consumer ─► its subscribed lite topics (Subscriptions, per group+client)
//!      ─► per lite topic a consumer-state slot {group, "<parent>+<L>", queue 0} over the
//!         logical offsets: POP, in flight, receipt handles, ack, retry, DLQ as for any queue
//! ```
//! - **Storage scales with messages, not lite topics**: no file, mmap or consume queue per lite
//!   topic. A lite topic costs one map entry (name, parent queue, base, offsets) in memory and a
//!   DEFINE record in the index log; each message 8 bytes in memory and 12 in the log. See
//!   `index` for the log and its recovery (the store is the truth: whatever the log lacks after
//!   a crash is re-read from the parent queues).
//! - **Order**: a lite topic's messages are in one parent queue, indexed in queue order, and
//!   its consumer state is FIFO with the whole lite topic as one message group: the next
//!   message is handed out once the previous one is acknowledged or dead-lettered (an
//!   unacknowledged one is redelivered first).
//! - **Consumer state** per (group, lite topic) is an ordinary slot of the consumer state
//!   (persisted in its log, replicated to replicas), keyed by the topic `"<parent>+<lite>"`;
//!   its receipt handles name that key, so Ack, ChangeInvisibleDuration and
//!   ForwardMessageToDeadLetterQueue need the lite topic (`lite_topic` in their requests).
//! - **Subscriptions** are per (group, client, parent) and soft (see `subscriptions`); a new
//!   subscription starts at the lite topic's first kept message unless its offset option says
//!   otherwise, and resumes the group's position when it has one.
//! - **Expiry**: the lite task removes lite topics without a write for `lite_topic_ttl`, their
//!   consumer slots, and takes them out of every subscription with a notice the proxy turns
//!   into NotifyUnsubscribeLiteCommand (returned with the client's next pop, which the expiry
//!   wakes).
//! - **Quotas**: `max_lite_topics` per broker (LITE_TOPIC_QUOTA_EXCEEDED on the send that
//!   would create one more; concurrent first sends may pass it by a few), and the proxy's
//!   `lite_subscription_quota` per client (LITE_SUBSCRIPTION_QUOTA_EXCEEDED).

pub(crate) mod index;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use index::{LiteIndex, arrival_topic, check_lite_name, lite_queue, state_key};
pub use subscriptions::LiteAction;
pub(crate) use subscriptions::Subscriptions;

use crate::clock::{duration_ms, now_ms};
use crate::engine::Inner;
use crate::meta::Access;
use crate::outcome::{Code, Failure, blocking};
use crate::pop::{Delivery, PopRequest, Source};
use crate::pull::require_group;
use crate::state::QueueKey;

/// Where a new lite subscription starts (SyncLiteSubscription's `offset_option`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteOffset {
    /// The group's position when it has one, else the first kept message (the default).
    Last,
    /// The first kept message.
    Min,
    /// The end: only messages stored from now on.
    Max,
    /// This logical offset (within the lite topic's bounds, else ILLEGAL_OFFSET).
    Offset(i64),
    /// The last `n` messages.
    TailN(i64),
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// A SyncLiteSubscription, as the broker gets it from a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteSubscriptionRequest {
    /// The consumer group.
    pub group: String,
    /// The LITE parent topic.
    pub topic: String,
    /// The client (`x-mq-client-id`).
    pub client_id: String,
    /// What to do with the client's set.
    pub action: LiteAction,
    /// The lite topics the action names.
    pub lite_topics: Vec<String>,
    /// Where the named lite topics start (adds only).
    pub offset: Option<LiteOffset>,
    /// Most lite topics the client may hold on the parent topic.
    pub quota: usize,
}

impl Inner {
    /// Applies a SyncLiteSubscription (see [`LiteSubscriptionRequest`]).
    ///
    /// # Errors
    /// ILLEGAL_CONSUMER_GROUP, ILLEGAL_TOPIC (not a LITE topic), TOPIC_NOT_FOUND,
    /// CLIENT_ID_REQUIRED, ILLEGAL_LITE_TOPIC, LITE_SUBSCRIPTION_QUOTA_EXCEEDED,
    /// ILLEGAL_OFFSET.
    pub(crate) async fn sync_lite_subscription(
        &self,
        req: &LiteSubscriptionRequest,
    ) -> Result<(), Failure> {
        require_group(&req.group)?;
        let topic = req.topic.as_str();
        if topic.is_empty() {
            return Err(Failure::new(Code::IllegalTopic, "topic is required"));
        }
        let queue_count = {
            let idx = self.meta.index();
            let n = idx.queues(topic, Access::Read)?;
            if !idx.is_lite_topic(topic) {
                return Err(Failure::new(
                    Code::IllegalTopic,
                    format!("topic {topic:?} is not a LITE topic; lite subscriptions need one"),
                ));
            }
            n
        };
        if req.client_id.is_empty() {
            return Err(Failure::new(
                Code::ClientIdRequired,
                "a lite subscription needs the client id (x-mq-client-id)",
            ));
        }
        for l in &req.lite_topics {
            check_lite_name(l)?;
        }
        // Positions are checked before anything changes: a refused request changes nothing.
        let adds = matches!(req.action, LiteAction::PartialAdd | LiteAction::CompleteAdd);
        let mut positions = Vec::new();
        if let (true, Some(offset)) = (adds, req.offset)
            && offset != LiteOffset::Last
        {
            self.lite_catch_up(topic, queue_count).await?;
            for l in &req.lite_topics {
                positions.push((l, self.lite_position(topic, l, offset).await?));
            }
        }
        let who = (req.group.as_str(), req.client_id.as_str(), topic);
        let held = self
            .lite_subs
            .sync(who, req.action, &req.lite_topics, req.quota, now_ms())
            .map_err(|e| {
                Failure::new(
                    Code::LiteSubscriptionQuotaExceeded,
                    format!(
                        "the client would hold {} lite subscriptions on topic {topic:?}; the \
                         quota is {}: unsubscribe unused lite topics first",
                        e.would_hold, req.quota
                    ),
                )
            })?;
        for (l, at) in positions {
            let qkey = QueueKey {
                group: req.group.clone(),
                topic: state_key(topic, l),
                queue_id: 0,
            };
            self.set_offset(&qkey, at).await;
        }
        tracing::info!(group = %req.group, topic, client = %req.client_id, action = ?req.action,
            named = req.lite_topics.len(), held, "lite subscription synced");
        // A long poll of this client may have something to hand out now.
        self.hub.notify(topic);
        Ok(())
    }

    /// Where `offset` puts a group on a lite topic (logical offset).
    async fn lite_position(
        &self,
        parent: &str,
        lite: &str,
        offset: LiteOffset,
    ) -> Result<i64, Failure> {
        let key = state_key(parent, lite);
        let (min, max) = self.lite.bounds(&key).unwrap_or((0, 0));
        Ok(match offset {
            LiteOffset::Last => max,
            LiteOffset::Min => min,
            LiteOffset::Max => max,
            LiteOffset::Offset(o) if (min..=max).contains(&o) => o,
            LiteOffset::Offset(o) => {
                return Err(Failure::new(
                    Code::IllegalOffset,
                    format!("offset {o} of lite topic {lite:?} is outside [{min}, {max}]"),
                ));
            }
            LiteOffset::TailN(n) if n >= 0 => max.saturating_sub(n).max(min),
            LiteOffset::TailN(n) => {
                return Err(Failure::new(
                    Code::IllegalOffset,
                    format!("tail_n {n} must not be negative"),
                ));
            }
            LiteOffset::Timestamp(ms) => {
                let store = self.store()?;
                let index = Arc::clone(&self.lite);
                blocking(move || first_at_or_after(&index, &store, &key, min, max, ms)).await?
            }
        })
    }

    /// Indexes what the parent's queues here hold beyond the lite index (see `index`): on the
    /// calling thread when little is new, else on the blocking pool.
    pub(crate) async fn lite_catch_up(
        &self,
        parent: &str,
        queue_count: u32,
    ) -> Result<(), Failure> {
        let store = self.store()?;
        let mut far = Vec::new();
        for q in 0..queue_count as i32 {
            match self.lite.lag(&store, parent, q) {
                0 => {}
                1..=64 => {
                    self.lite.catch_up(&store, parent, q);
                }
                _ => far.push(q),
            }
        }
        if !far.is_empty() {
            let index = Arc::clone(&self.lite);
            let parent = parent.to_owned();
            blocking(move || {
                for q in far {
                    index.catch_up(&store, &parent, q);
                }
            })
            .await?;
        }
        Ok(())
    }

    /// A pop of a LITE parent topic: messages of the client's subscribed lite topics, in
    /// order within each, the lite topics visited round-robin; long-polls like any pop, and
    /// returns at once (empty) when the client has notices waiting.
    pub(crate) async fn lite_pop(
        &self,
        req: &PopRequest,
        queue_count: u32,
        batch: usize,
        invisible: Duration,
        long_poll: Duration,
    ) -> Result<Vec<Delivery>, Failure> {
        let topic = req.topic.as_str();
        let who = (req.group.as_str(), req.client_id.as_str(), topic);
        let filter = Arc::new(req.filter.clone());
        let source = Source::Lite(Arc::clone(&self.lite));
        let deadline = tokio::time::Instant::now() + long_poll;
        let mut arrivals = self.hub.subscribe(topic);
        loop {
            arrivals.borrow_and_update();
            if self.lite_subs.has_notices(who) {
                return Ok(Vec::new());
            }
            self.lite_catch_up(topic, queue_count).await?;
            let mut out = Vec::new();
            if let Some((list, start)) = self.lite_subs.for_pop(who, now_ms()) {
                let maxes = self.lite.max_offsets(list.iter().map(|s| s.key.as_str()));
                let n = list.len();
                for i in 0..n {
                    if out.len() >= batch {
                        break;
                    }
                    let j = (start + i) % n;
                    let qkey = QueueKey {
                        group: req.group.clone(),
                        topic: list[j].key.clone(),
                        queue_id: 0,
                    };
                    let slot = match self.consumers.get(&qkey) {
                        Some(slot) => {
                            let st = slot.state.lock();
                            let idle =
                                st.initialized && st.pop_offset >= maxes[j] && st.ready.is_empty();
                            drop(st);
                            if idle {
                                continue;
                            }
                            slot
                        }
                        // Nothing stored yet: nothing to start a position on.
                        None if maxes[j] == 0 => continue,
                        None => self.consumers.get_or_create(&qkey),
                    };
                    let (got, _) = self
                        .pop_queue(&slot, &filter, batch - out.len(), invisible, &source)
                        .await?;
                    out.extend(got);
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if self.closing() {
                return Ok(Vec::new());
            }
            tokio::select! {
                changed = arrivals.changed() => {
                    if changed.is_err() {
                        return Ok(Vec::new());
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                () = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    /// Lite topics dropped from the client's subscription since its last pop (see
    /// `subscriptions`); empty for other topics.
    pub(crate) fn take_lite_notices(
        &self,
        group: &str,
        client_id: &str,
        topic: &str,
    ) -> Vec<String> {
        if !self.meta.index().is_lite_topic(topic) {
            return Vec::new();
        }
        self.lite_subs.take_notices((group, client_id, topic))
    }

    /// One round of the lite task: removes expired lite topics (their consumer slots too,
    /// and tells their subscribers), forgets silent clients, compacts or syncs the index log.
    pub(crate) async fn lite_sweep(&self) {
        // Parent queues a crash left unknown to the index (their first messages were never
        // indexed) are found from the metadata; the rest costs a comparison per queue.
        let parents = self.meta.index().lite_topics();
        for (parent, queues) in &parents {
            if let Err(f) = self.lite_catch_up(parent, *queues).await {
                tracing::warn!(topic = %parent, error = %f.message, "lite catch-up failed");
            }
        }
        let Ok(store) = self.store() else {
            return;
        };
        let index = Arc::clone(&self.lite);
        let ttl_ms = duration_ms(self.cfg.lite_topic_ttl);
        let now = now_ms();
        let swept = blocking(move || {
            let expired = index.expire(&store, now, ttl_ms);
            index.maintain(MIN_COMPACT_BYTES);
            expired
        })
        .await;
        let expired = match swept {
            Ok(v) => v,
            Err(f) => {
                tracing::warn!(error = %f.message, "lite sweep failed");
                return;
            }
        };
        if !expired.is_empty() {
            let keys: std::collections::HashSet<String> =
                expired.iter().map(|e| e.key.clone()).collect();
            let slots = self.consumers.remove_topics(&keys);
            let pairs: Vec<(String, String)> = expired
                .iter()
                .map(|e| (e.parent.clone(), e.lite.clone()))
                .collect();
            let woken = self.lite_subs.drop_topics(&pairs);
            for parent in &woken {
                self.hub.notify(parent);
            }
            tracing::info!(
                expired = expired.len(),
                consumer_slots = slots,
                notified_parents = woken.len(),
                "lite topics expired"
            );
        }
        let forgotten = self.lite_subs.expire_clients(now);
        if forgotten > 0 {
            tracing::info!(clients = forgotten, "silent lite clients forgotten");
        }
    }
}

/// Index-log size below which it is never compacted.
const MIN_COMPACT_BYTES: u64 = 64 << 20;

/// The first logical offset in `[min, max)` whose message was stored at or after `ms`
/// (`max` when none), by binary search over store times (blocking).
fn first_at_or_after(
    index: &LiteIndex,
    store: &comet_store::MessageStore,
    key: &str,
    min: i64,
    max: i64,
    ms: i64,
) -> i64 {
    let stored = |o: i64| {
        index
            .entry(store, key, o)
            .and_then(|e| store.read(e.physical_offset).ok())
            .map_or(i64::MIN, |m| m.store_timestamp)
    };
    let (mut lo, mut hi) = (min, max);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if stored(mid) >= ms {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_lite_topic_when_placed_should_always_get_the_same_queue() {
        let q = lite_queue("session-42", 8);
        assert!((0..8).contains(&q));
        assert_eq!(lite_queue("session-42", 8), q);
        assert_eq!(lite_queue("x", 1), 0);
    }
}
