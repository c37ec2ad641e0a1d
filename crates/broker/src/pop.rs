//! Pop (POP-style receive): per (group, topic, queue) the broker keeps a pop offset and the
//! set of messages in flight. A pop first redelivers in-flight messages whose invisible
//! deadline passed (`delivery_attempt + 1`), then hands out new messages in queue order,
//! filtered by tag or SQL92; queue id -1 visits every queue of the topic here round-robin
//! (a PRIORITY topic: highest queue, that is highest priority, first, for the group's
//! `priority_percent` of pops).
//! With nothing to hand out it long-polls on the topic's arrival channel until the request's
//! long-polling timeout.
//!
//! A pop of one queue runs in three phases under the queue's pop lock: choose (redeliveries
//! and the range of new messages, under the state lock), read (from the store, on the calling
//! thread when the data is hot, else on the blocking pool), commit (under the state lock:
//! entries still current are handed out with a new generation each). FIFO groups hold a new
//! message while an earlier one of its message group is out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use comet_store::{CqEntry, MessageStore, StoreError, StoredMessage};
use comet_vocab::{NameKind, duration, names, system};

use crate::clock::{duration_ms, now_ms};
use crate::config::ConsumeFrom;
use crate::engine::Inner;
use crate::filter::Filter;
use crate::handle::ReceiptHandle;
use crate::lite::{LiteIndex, arrival_topic};
use crate::meta::Access;
use crate::outcome::{Code, Failure, blocking, store_failure};
use crate::state::{InFlight, QueueKey, QueueSlot, REMOVED, group_hash};
use crate::sys;

/// How far behind the end of the commitlog a pop may read on the calling thread: data
/// written this recently is in the page cache (it was written through it moments ago), so
/// reading it cannot wait for the disk. Like RocketMQ's in-memory window
/// (`accessMessageInMemoryMaxRatio`), but a fixed size far below any broker's memory.
const HOT_READ_BYTES: i64 = 256 << 20;

/// Where a pop reads a slot's queue from.
#[derive(Clone)]
pub(crate) enum Source {
    /// The store's consume queue named by the slot's (topic, queue id).
    Store,
    /// A lite topic (the slot's topic is its `"<parent>+<lite>"` key): its logical queue in
    /// the lite index. The whole lite topic is one FIFO message group.
    Lite(Arc<LiteIndex>),
}

impl Source {
    fn min(&self, store: &MessageStore, key: &QueueKey) -> i64 {
        match self {
            Source::Store => store.min_offset(&key.topic, key.queue_id),
            Source::Lite(ix) => ix.bounds(&key.topic).map_or(0, |b| b.0),
        }
    }

    fn max(&self, store: &MessageStore, key: &QueueKey) -> i64 {
        match self {
            Source::Store => store.max_offset(&key.topic, key.queue_id),
            Source::Lite(ix) => ix.bounds(&key.topic).map_or(0, |b| b.1),
        }
    }

    fn entry(&self, store: &MessageStore, key: &QueueKey, offset: i64) -> Option<CqEntry> {
        match self {
            Source::Store => store.queue_entry(&key.topic, key.queue_id, offset),
            Source::Lite(ix) => ix.entry(store, &key.topic, offset),
        }
    }

    fn entries(&self, store: &MessageStore, key: &QueueKey, from: i64, max: usize) -> Vec<CqEntry> {
        match self {
            Source::Store => store.read_queue(&key.topic, key.queue_id, from, max),
            Source::Lite(ix) => ix.entries(store, &key.topic, from, max),
        }
    }
}

/// A message read for delivery.
enum Read {
    Found(Box<StoredMessage>),
    /// Deleted by retention or unreadable: it can never be delivered.
    Gone,
}

/// What one pop of one queue read from the store.
struct QueueRead {
    redelivered: Vec<(i64, u64, Read)>,
    fresh: Vec<StoredMessage>,
    next_offset: i64,
}

/// Receives messages of one group from one topic (POP).
#[derive(Debug, Clone, PartialEq)]
pub struct PopRequest {
    /// The consumer group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The queue, or -1 for every queue of the topic on this broker set (round-robin).
    pub queue_id: i32,
    /// Which messages the group wants.
    pub filter: Filter,
    /// Most messages to hand out (positive; capped at `max_batch_size`).
    pub batch_size: i32,
    /// How long the messages stay invisible (positive and at most `max_invisible_duration`,
    /// else ILLEGAL_INVISIBLE_TIME); `None`: `default_invisible_duration`.
    pub invisible: Option<Duration>,
    /// How long to wait for a message when there is none (capped at `max_long_polling`).
    pub long_poll: Duration,
    /// The receiving client (`x-mq-client-id`); a broadcast group keys its position by it.
    pub client_id: String,
}

/// One message handed out.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The stored message.
    pub message: StoredMessage,
    /// The handle that acknowledges it (`"<broker_set>~..."`), valid until the next delivery
    /// or invisible-time change.
    pub receipt_handle: String,
    /// This delivery's number (1 the first time).
    pub attempt: u32,
    /// How long it stays invisible.
    pub invisible: Duration,
}

impl Inner {
    /// Hands out up to `batch_size` messages (redeliveries first), long-polling when there is
    /// none; an empty answer means nothing arrived before the poll ended. Answered without
    /// waiting for the state write (a crash redelivers: at least once).
    ///
    /// # Errors
    /// ILLEGAL_CONSUMER_GROUP, ILLEGAL_TOPIC, TOPIC_NOT_FOUND, FORBIDDEN, BAD_REQUEST (batch
    /// size, queue id), ILLEGAL_INVISIBLE_TIME, the store's failures.
    pub(crate) async fn pop(&self, req: &PopRequest) -> Result<Vec<Delivery>, Failure> {
        let group = req.group.clone();
        if group.is_empty() {
            return Err(Failure::new(
                Code::IllegalConsumerGroup,
                "consumer group is empty",
            ));
        }
        // The group's dead-letter topic must be storable, or exhausted messages could never
        // leave the group.
        if let Err(e) = comet_store::record::validate_topic(&system::dlq_topic(&group)) {
            return Err(Failure::new(
                Code::IllegalConsumerGroup,
                format!(
                    "consumer group {group:?} cannot have a dead-letter topic ({e}); use at most \
                     {} characters of {}",
                    names::TOPIC_MAX_LEN - system::DLQ_PREFIX.len(),
                    NameKind::Group.allowed()
                ),
            ));
        }
        let topic = req.topic.clone();
        if topic.is_empty() {
            return Err(Failure::new(
                Code::IllegalTopic,
                "message_queue has no topic",
            ));
        }
        if req.batch_size <= 0 {
            return Err(Failure::new(
                Code::BadRequest,
                format!("batch_size must be positive, got {}", req.batch_size),
            ));
        }
        let batch = (req.batch_size as u32).min(self.cfg.max_batch_size) as usize;
        // The proxy's rule (comet_vocab), over the broker's range: refused outside it.
        let invisible = self
            .cfg
            .invisible_range()
            .for_receive(req.invisible.map(duration::to_proto).as_ref())
            .map_err(|e| Failure::new(Code::IllegalInvisibleTime, e.to_string()))?;
        let long_poll = req.long_poll.min(self.cfg.max_long_polling);
        let idx = self.meta.index();
        let queue_count = idx.queues(&topic, Access::Read)?;
        if idx.is_lite_topic(&topic) {
            // A lite consumer: its subscribed lite topics, whatever queue it names.
            drop(idx);
            return self
                .lite_pop(req, queue_count, batch, invisible, long_poll)
                .await;
        }
        let queues: Vec<i32> = match req.queue_id {
            -1 => (0..queue_count as i32).collect(),
            id if id >= 0 && (id as u32) < queue_count => vec![id],
            id => {
                return Err(Failure::new(
                    Code::BadRequest,
                    format!(
                        "queue id {id} of topic {topic:?} is outside 0..{queue_count} on broker set {}",
                        self.cfg.broker_set
                    ),
                ));
            }
        };
        // A broadcast group's client pops from its own position (`broadcast`).
        let group = self.consumer_owner(&req.group, &req.client_id)?;
        let _receiving = self.broadcast_receiving(&group);
        let filter = Arc::new(req.filter.clone());
        let deadline = tokio::time::Instant::now() + long_poll;
        let mut arrivals = self.hub.subscribe(&topic);
        loop {
            arrivals.borrow_and_update();
            let (msgs, more) = self
                .pop_once(&group, &topic, &queues, &filter, batch, invisible)
                .await?;
            if !msgs.is_empty() {
                return Ok(msgs);
            }
            if self.closing() {
                return Ok(Vec::new());
            }
            if more {
                // A selective filter skipped a whole scan window and more is stored: keep
                // scanning (each round advances the pop offset) until the poll ends.
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Vec::new());
                }
                tokio::task::yield_now().await;
                continue;
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

    async fn pop_once(
        &self,
        group: &str,
        topic: &str,
        queues: &[i32],
        filter: &Arc<Filter>,
        batch: usize,
        invisible: Duration,
    ) -> Result<(Vec<Delivery>, bool), Failure> {
        let start = self.round_robin.fetch_add(1, Ordering::Relaxed);
        let by_priority = queues.len() > 1 && {
            let idx = self.meta.index();
            idx.is_priority_topic(topic)
                && start % 100 < idx.group(group).map_or(100, |g| g.priority_percent) as usize
        };
        let mut out = Vec::new();
        let mut more = false;
        for i in 0..queues.len() {
            if out.len() >= batch {
                break;
            }
            // A PRIORITY topic's queue id is its priority: highest first (for the group's
            // `priority_percent` of pops), else round-robin.
            let queue_id = if by_priority {
                queues[queues.len() - 1 - i]
            } else {
                queues[(start + i) % queues.len()]
            };
            let key = QueueKey {
                group: group.to_owned(),
                topic: topic.to_owned(),
                queue_id,
            };
            let slot = self.consumers.get_or_create(&key);
            let (got, unexamined) = self
                .pop_queue(&slot, filter, batch - out.len(), invisible, &Source::Store)
                .await?;
            out.extend(got);
            more |= unexamined;
        }
        Ok((out, more))
    }

    pub(crate) async fn pop_queue(
        &self,
        slot: &Arc<QueueSlot>,
        filter: &Arc<Filter>,
        want: usize,
        invisible: Duration,
        source: &Source,
    ) -> Result<(Vec<Delivery>, bool), Failure> {
        let _pop = slot.pop_lock.lock().await;
        let store = self.store()?;
        let key = &slot.key;
        let idx = self.meta.index();
        let max_attempts = self.max_attempts(&idx, &key.group);
        // A lite topic is one message group: handed out in order, one at a time.
        let lite_group = match source {
            Source::Lite(_) => Some(group_hash(&key.topic)),
            Source::Store => None,
        };
        let fifo = lite_group.is_some()
            || idx
                .group(crate::owner::group_of(&key.group))
                .is_some_and(|g| g.fifo);
        let now = now_ms();
        // Phase 1: choose redeliveries and the range of new messages.
        let mut exhausted = Vec::new();
        let (redeliver, from, budget) = {
            let mut st = slot.state.lock();
            if !fifo && st.held() > 0 {
                // The group stopped being FIFO: nothing waits for its predecessor any more.
                let released = st.release_all(now);
                tracing::info!(group = %key.group, topic = %key.topic, queue_id = key.queue_id,
                    released, "group is no longer FIFO; held messages released");
            }
            if st.pop_offset == REMOVED {
                // A broadcast client's expired position, removed while this pop waited.
                return Ok((Vec::new(), false));
            }
            if !st.initialized {
                st.pop_offset = match self.start_of(&idx, &key.group) {
                    ConsumeFrom::First => source.min(&store, key),
                    ConsumeFrom::Last => source.max(&store, key),
                };
                st.initialized = true;
                self.consumers.mark_dirty(slot);
            }
            let mut redeliver = Vec::new();
            while redeliver.len() < want {
                let Some(off) = st.ready.pop_first() else {
                    break;
                };
                let Some(f) = st.inflight.get(&off) else {
                    continue;
                };
                if f.dlq_pending || f.visible_at_ms > now {
                    continue;
                }
                if f.attempts >= max_attempts {
                    // The group's max_retries shrank meanwhile: let the revive task
                    // dead-letter it.
                    exhausted.push((off, f.generation));
                    continue;
                }
                redeliver.push((off, f.generation));
            }
            let room = self
                .cfg
                .max_inflight_per_queue
                .saturating_sub(st.inflight.len());
            let budget = (want - redeliver.len()).min(room);
            (redeliver, st.pop_offset, budget)
        };
        for (off, generation) in exhausted {
            self.consumers.schedule(slot, off, generation, now);
        }
        let max_offset = source.max(&store, key);
        if redeliver.is_empty() && (budget == 0 || from >= max_offset) {
            return Ok((Vec::new(), false));
        }
        // Phase 2: read from the store. New messages near the end of the log were written
        // moments ago and are in the page cache: read them here, which costs far less than
        // a trip to the blocking pool and back. Older ones (and redeliveries) may need the
        // disk: read them off the async runtime.
        let hot = redeliver.is_empty()
            && source
                .entry(&store, key, from)
                .is_some_and(|e| store.write_offset() - e.physical_offset <= HOT_READ_BYTES);
        let read = if hot {
            read_queue(&store, source, key, redeliver, from, budget, filter)
        } else {
            let (src, k2, f2) = (source.clone(), key.clone(), Arc::clone(filter));
            let reader = Arc::clone(&store);
            blocking(move || read_queue(&reader, &src, &k2, redeliver, from, budget, &f2)).await?
        }
        .map_err(|e| {
            tracing::error!(topic = %key.topic, queue_id = key.queue_id, error = %e, "pop read failed");
            store_failure(&e)
        })?;
        // Phase 3: commit under the state lock; build protobufs after it.
        let now = now_ms();
        let deadline = now.saturating_add(duration_ms(invisible));
        let mut deliveries: Vec<(StoredMessage, ReceiptHandle, u32)> = Vec::new();
        let more;
        let mut released = false;
        {
            let mut st = slot.state.lock();
            for (off, generation, r) in read.redelivered {
                let Some(f) = st.inflight.get(&off) else {
                    continue;
                };
                if f.generation != generation || f.dlq_pending {
                    continue; // acknowledged, re-armed or dead-lettered meanwhile
                }
                let m = match r {
                    Read::Found(m) => *m,
                    Read::Gone => {
                        released |= st.complete(off, now).unwrap_or(false);
                        tracing::warn!(group = %key.group, topic = %key.topic, queue_id = key.queue_id, offset = off,
                            "in-flight message no longer stored; dropped from consumer state");
                        continue;
                    }
                };
                if !filter.matches(&m.message.properties) {
                    // The group's subscription changed: the message is filtered out now.
                    released |= st.complete(off, now).unwrap_or(false);
                    continue;
                }
                let Some(f) = st.inflight.get_mut(&off) else {
                    continue;
                };
                f.generation = self.consumers.next_generation();
                f.attempts += 1;
                f.deadline_ms = deadline;
                f.visible_at_ms =
                    deadline.saturating_add(self.extra_delay(&idx, &key.group, f.attempts));
                let (g, a, v) = (f.generation, f.attempts, f.visible_at_ms);
                self.consumers.schedule(slot, off, g, v);
                deliveries.push((m, self.handle(key, off, g), a));
            }
            if st.pop_offset == from {
                for m in read.fresh {
                    let group = if let Some(g) = lite_group {
                        g
                    } else if fifo {
                        m.message
                            .properties
                            .system
                            .get(sys::SYS_MESSAGE_GROUP)
                            .map_or(0, |g| group_hash(g))
                    } else {
                        0
                    };
                    if st.group_busy(group) {
                        // FIFO: an earlier message of its message group is still out.
                        st.insert(m.queue_offset, InFlight::held(group));
                        continue;
                    }
                    let generation = self.consumers.next_generation();
                    let visible_at = deadline.saturating_add(self.extra_delay(&idx, &key.group, 1));
                    st.insert(
                        m.queue_offset,
                        InFlight {
                            generation,
                            deadline_ms: deadline,
                            visible_at_ms: visible_at,
                            attempts: 1,
                            dlq_pending: false,
                            group,
                        },
                    );
                    self.consumers
                        .schedule(slot, m.queue_offset, generation, visible_at);
                    let h = self.handle(key, m.queue_offset, generation);
                    deliveries.push((m, h, 1));
                }
                st.pop_offset = st.pop_offset.max(read.next_offset);
            }
            more = budget > 0 && st.pop_offset < source.max(&store, key);
            self.consumers.mark_changed(slot);
        }
        // The pop is answered without waiting for its state to be written (a crash before the
        // write redelivers the messages: at least once), but the write happens now.
        self.persist_inline();
        if released {
            self.hub.notify(arrival_topic(&key.topic));
        }
        tracing::debug!(group = %key.group, topic = %key.topic, queue_id = key.queue_id,
            count = deliveries.len(), "popped");
        let broker_set = &self.cfg.broker_set;
        let messages = deliveries
            .into_iter()
            .map(|(m, h, attempt)| Delivery {
                message: m,
                receipt_handle: h.encode(broker_set),
                attempt,
                invisible,
            })
            .collect();
        Ok((messages, more))
    }
}

/// Reads redeliveries and up to `budget` new matching messages from `from` (blocking).
fn read_queue(
    store: &MessageStore,
    source: &Source,
    key: &QueueKey,
    redeliver: Vec<(i64, u64)>,
    from: i64,
    budget: usize,
    filter: &Filter,
) -> Result<QueueRead, StoreError> {
    let (topic, queue_id) = (key.topic.as_str(), key.queue_id);
    // A lite topic's messages show their offset in the lite topic (its logical queue).
    let read_one = |phys: i64, offset: i64| -> Result<Read, StoreError> {
        match store.read(phys) {
            Ok(mut m) => {
                m.queue_offset = offset;
                Ok(Read::Found(Box::new(m)))
            }
            Err(StoreError::OffsetOutOfRange { .. }) => Ok(Read::Gone),
            Err(StoreError::Corrupt { offset: at, reason }) => {
                tracing::error!(topic, queue_id, offset, physical_offset = at, %reason,
                    "corrupt record skipped");
                Ok(Read::Gone)
            }
            Err(e) => Err(e),
        }
    };
    let mut redelivered = Vec::with_capacity(redeliver.len());
    for (off, generation) in redeliver {
        let r = match source.entry(store, key, off) {
            None => Read::Gone,
            Some(e) => read_one(e.physical_offset, off)?,
        };
        redelivered.push((off, generation, r));
    }
    let mut fresh = Vec::new();
    let mut next_offset = from;
    if budget > 0 {
        let start = from.max(source.min(store, key));
        let max_before = source.max(store, key);
        let entries = source.entries(store, key, start, budget.saturating_mul(4).max(256));
        next_offset = entries
            .last()
            .map_or(start.max(max_before), |e| e.queue_offset + 1);
        for e in &entries {
            if fresh.len() >= budget {
                next_offset = e.queue_offset;
                break;
            }
            if !filter.matches_hash(e.tag_hash) {
                continue;
            }
            if let Read::Found(m) = read_one(e.physical_offset, e.queue_offset)?
                && filter.matches(&m.message.properties)
            {
                fresh.push(*m);
            }
        }
    }
    Ok(QueueRead {
        redelivered,
        fresh,
        next_offset,
    })
}
