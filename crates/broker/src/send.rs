//! Send: validates each message of a batch against the watched metadata (the topic must be
//! placed on this broker set with `queue_count > queue_id`, writable) and appends it where its
//! type says — its queue now, the timer wheel (a delivery time in the future), or the half
//! topic (a transaction) — then, with SYNC replication, waits for the in-sync replicas.
//!
//! Appends whose flush policy is ASYNC copy into the mapped segment on the calling thread;
//! SYNC appends wait for an fdatasync and run on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use comet_store::{AppendResult, MessageStore, StoreError};
use comet_vocab::limits;

use crate::clock::{ms_to_ts, now_ms};
use crate::delay;
use crate::engine::Inner;
use crate::meta::{Access, MetaIndex};
use crate::outcome::{Code, Failure, SHUTTING_DOWN, Unavailable, blocking, store_failure};
use crate::record::{self, NewMessage};
use crate::transaction::record as txrec;

/// Messages to store, each addressed to one queue of this broker set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendRequest {
    /// The messages, in order.
    pub messages: Vec<NewMessage>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its queue offset (a delayed message: its offset in the timer topic; a half message:
    /// in the half topic).
    pub offset: i64,
    /// A TRANSACTION message's transaction id (`"<broker_set>~..."`).
    pub transaction_id: Option<String>,
    /// A delay message's recall handle (`"<broker_set>~..."`, see `BrokerApi::recall`).
    pub recall_handle: Option<String>,
}

impl Inner {
    /// Stores each message where its type says (its queue now, the timer wheel, or the half
    /// topic) and, with SYNC replication, waits for the in-sync replicas. One result per
    /// message, in order; a message answered OK is stored per the flush policy (and
    /// replicated per the replication mode).
    ///
    /// # Errors
    /// [`Unavailable`] when the store closed under the call (the instance is being replaced
    /// or stopped: retry elsewhere); BAD_REQUEST without messages. Per message: ILLEGAL_TOPIC, TOPIC_NOT_FOUND, FORBIDDEN,
    /// BAD_REQUEST (queue id), ILLEGAL_MESSAGE_ID, UNSUPPORTED, ILLEGAL_DELIVERY_TIME,
    /// MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, the store's failures, and SYNC replication's
    /// HA_NOT_AVAILABLE / SLAVE_PERSISTENCE_TIMEOUT.
    pub(crate) async fn send(
        &self,
        req: SendRequest,
    ) -> Result<Result<Vec<Result<Sent, Failure>>, Failure>, Unavailable> {
        if req.messages.is_empty() {
            return Ok(Err(Failure::new(
                Code::BadRequest,
                "the request carries no messages",
            )));
        }
        let idx = self.meta.index();
        let now = now_ms();
        let mut results: Vec<Result<SendOk, Failure>> = Vec::with_capacity(req.messages.len());
        let mut now_records = (Vec::new(), Vec::new());
        let mut delayed = (Vec::new(), Vec::new());
        let mut halves = (Vec::new(), Vec::new());
        // Parent queues that receive lite messages: indexed right after the append.
        let mut lite_queues: Vec<(String, i32)> = Vec::new();
        for (i, m) in req.messages.into_iter().enumerate() {
            results.push(Err(Failure::new(
                Code::InternalServerError,
                "message was not stored",
            )));
            match self.check_send(&idx, m, now) {
                Ok(Checked::Now(rec)) => {
                    if rec
                        .properties
                        .system
                        .contains_key(crate::sys::SYS_LITE_TOPIC)
                    {
                        let q = (rec.topic.clone(), rec.queue_id);
                        if !lite_queues.contains(&q) {
                            lite_queues.push(q);
                        }
                    }
                    now_records.0.push(rec);
                    now_records.1.push(i);
                }
                Ok(Checked::Delayed(rec, at)) => {
                    delayed.0.push((rec, at));
                    delayed.1.push(i);
                }
                Ok(Checked::Half(rec)) => {
                    halves.0.push(rec);
                    halves.1.push(i);
                }
                Err(e) => results[i] = Err(e),
            }
        }
        if !now_records.0.is_empty() {
            let store = self
                .store()
                .map_err(|_| Unavailable(SHUTTING_DOWN.to_owned()))?;
            let records = now_records.0;
            let append = move || append_records(&store, &records);
            // ASYNC flush: an append is a copy into the mapped segment under the store's lock
            // (microseconds; the next segment is prepared and its pages populated ahead), so
            // it runs right here: a hop to the blocking pool and back would cost more than the
            // append itself. SYNC: the append waits for an fdatasync, so it must not hold a
            // runtime worker.
            let appended = match self.cfg.flush {
                comet_store::FlushPolicy::Async { .. } => Ok(append()),
                comet_store::FlushPolicy::Sync { .. } => blocking(append).await,
            };
            Self::fill(&mut results, &now_records.1, appended, |a| SendOk {
                offset: a.queue_offset,
                transaction_id: None,
                recall_handle: None,
                end: a.physical_offset + i64::from(a.size),
            })?;
            if let Ok(store) = self.store() {
                // New lite topics exist (and count against the quota) from their first send.
                for (parent, queue_id) in &lite_queues {
                    self.lite.catch_up(&store, parent, *queue_id);
                }
            }
        }
        if !delayed.0.is_empty() {
            let handles: Vec<_> = delayed
                .0
                .iter()
                .map(|(rec, at)| (rec.topic.clone(), rec.properties.message_id.clone(), *at))
                .collect();
            let appended = self.append_delayed(delayed.0, now).await;
            let appended = appended.map(|v| {
                v.into_iter()
                    .zip(handles)
                    .map(|(r, (topic, id, at))| {
                        r.map(|a| {
                            let handle = self.recall_handle(a.physical_offset, at, &topic, &id);
                            (a, handle)
                        })
                    })
                    .collect()
            });
            Self::fill(&mut results, &delayed.1, appended, |(a, handle)| SendOk {
                offset: a.queue_offset,
                transaction_id: None,
                recall_handle: Some(handle),
                end: a.physical_offset + i64::from(a.size),
            })?;
        }
        if !halves.0.is_empty() {
            let appended = self.append_halves(halves.0).await;
            Self::fill(&mut results, &halves.1, appended, |x| x)?;
        }
        self.await_replicas(&mut results).await;
        Ok(Ok(results
            .into_iter()
            .map(|r| {
                r.map(|ok| Sent {
                    offset: ok.offset,
                    transaction_id: ok.transaction_id,
                    recall_handle: ok.recall_handle,
                })
            })
            .collect()))
    }

    /// SYNC replication: waits until the in-sync replicas hold every stored message of the
    /// call; if they do not in time (or there are too few of them) the stored messages are
    /// answered with that failure instead of OK (see [`Tracker::wait`]).
    async fn await_replicas(&self, results: &mut [Result<SendOk, Failure>]) {
        let end = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|ok| ok.end))
            .max();
        if let Some(end) = end
            && let Err(failure) = self.replicated(end).await
        {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(failure.clone());
            }
        }
    }

    /// Writes per-message append outcomes into `results` at `slots`; a store that closed
    /// under the call fails the whole call with UNAVAILABLE (the client retries elsewhere).
    fn fill<T>(
        results: &mut [Result<SendOk, Failure>],
        slots: &[usize],
        appended: Result<Vec<Result<T, AppendFail>>, Failure>,
        ok_of: impl Fn(T) -> SendOk,
    ) -> Result<(), Unavailable> {
        match appended {
            Ok(v) => {
                for (slot, r) in slots.iter().zip(v) {
                    results[*slot] = match r {
                        Ok(x) => Ok(ok_of(x)),
                        Err(AppendFail::Closed) => {
                            return Err(Unavailable(SHUTTING_DOWN.to_owned()));
                        }
                        Err(AppendFail::Failed(o)) => Err(o),
                    };
                }
            }
            Err(o) => {
                for slot in slots {
                    results[*slot] = Err(o.clone());
                }
            }
        }
        Ok(())
    }

    /// Stores delayed messages under the timer topic and schedules them (blocking pool). In
    /// SYNC mode the timer wheel is flushed before the answer, like the commitlog.
    async fn append_delayed(
        &self,
        delayed: Vec<(comet_store::Message, i64)>,
        now: i64,
    ) -> Result<Vec<Result<AppendResult, AppendFail>>, Failure> {
        let store = self.store()?;
        let delays = Arc::clone(&self.delays);
        let sync = matches!(self.cfg.flush, comet_store::FlushPolicy::Sync { .. });
        blocking(move || {
            let (records, times): (Vec<_>, Vec<_>) = delayed
                .into_iter()
                .map(|(r, at)| (delay::to_timer_record(r), at))
                .unzip();
            let mut out = append_records(&store, &records);
            for (r, at) in out.iter_mut().zip(times) {
                if let Ok(a) = r
                    && let Err(e) =
                        delays.schedule(at, a.physical_offset, a.size, a.queue_offset, now)
                {
                    tracing::error!(error = %e, "scheduling a delayed message failed");
                    *r = Err(AppendFail::Failed(store_failure(&e)));
                }
            }
            if sync
                && out.iter().any(Result::is_ok)
                && let Err(e) = delays.timer.flush()
            {
                tracing::error!(error = %e, "flushing the timer wheel failed");
                for r in out.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(AppendFail::Failed(Failure::new(
                        Code::MasterPersistenceTimeout,
                        format!("the delayed message is stored but its timer is not durable: {e}"),
                    )));
                }
            }
            out
        })
        .await
    }

    /// Stores half messages (invisible to consumers) and registers them for resolution; each
    /// answer carries the transaction id.
    async fn append_halves(
        &self,
        halves: Vec<comet_store::Message>,
    ) -> Result<Vec<Result<SendOk, AppendFail>>, Failure> {
        let store = self.store()?;
        let tx = Arc::clone(&self.transactions);
        let append = move || {
            let _ticket = tx.begin_append();
            let records: Vec<_> = halves.into_iter().map(txrec::to_half_record).collect();
            let now = now_ms();
            append_records(&store, &records)
                .into_iter()
                .zip(&records)
                .map(|(r, rec)| {
                    r.map(|a| SendOk {
                        offset: a.queue_offset,
                        transaction_id: Some(tx.add(a.queue_offset, a.physical_offset, rec, now)),
                        recall_handle: None,
                        end: a.physical_offset + i64::from(a.size),
                    })
                })
                .collect::<Vec<_>>()
        };
        match self.cfg.flush {
            comet_store::FlushPolicy::Async { .. } => Ok(append()),
            comet_store::FlushPolicy::Sync { .. } => blocking(append).await,
        }
    }

    fn check_send(&self, idx: &MetaIndex, m: NewMessage, now: i64) -> Result<Checked, Failure> {
        let topic = m.topic.as_str();
        if topic.is_empty() {
            return Err(Failure::new(Code::IllegalTopic, "message has no topic"));
        }
        comet_store::record::validate_topic(topic)
            .map_err(|e| Failure::new(Code::IllegalTopic, format!("topic {topic:?}: {e}")))?;
        let queue_count = idx.queues(topic, Access::Write)?;
        let queue_id = m.queue_id;
        if queue_id < 0 || queue_id as u32 >= queue_count {
            return Err(Failure::new(
                Code::BadRequest,
                format!(
                    "queue id {queue_id} of topic {topic:?} is outside 0..{queue_count} on broker set {}",
                    self.cfg.broker_set
                ),
            ));
        }
        let mut rec = record::to_record(m, now)?;
        self.check_lite_send(idx, &mut rec, queue_count)?;
        if idx.is_priority_topic(&rec.topic)
            && let Some(p) = record::priority(&rec)
        {
            // RIP-80: on a PRIORITY topic a message's queue here is its priority.
            rec.queue_id = limits::priority_queue(p, queue_count);
        }
        let at = delay::delivery_ms(&rec);
        if delay::is_transaction(&rec) {
            if at.is_some() {
                return Err(Failure::new(
                    Code::MessagePropertyConflictWithType,
                    "a TRANSACTION message must not carry a delivery timestamp",
                ));
            }
            return Ok(Checked::Half(rec));
        }
        let Some(at) = at else {
            return Ok(Checked::Now(rec));
        };
        // The proxy's rule (comet_vocab), in the broker's units (ms since the epoch).
        let now_since_epoch = Duration::from_millis(u64::try_from(now).unwrap_or(0));
        limits::check_delivery_time(&ms_to_ts(at), now_since_epoch, self.cfg.max_delivery_delay)
            .map_err(|e| Failure::new(Code::IllegalDeliveryTime, e.to_string()))?;
        if at > now {
            Ok(Checked::Delayed(rec, at))
        } else {
            // A delivery time in the past (or now) delivers at once.
            Ok(Checked::Now(rec))
        }
    }
}

impl Inner {
    /// A LITE topic takes only messages with a lite topic, each in its lite topic's queue
    /// here; a lite topic elsewhere is refused; a new lite topic beyond `max_lite_topics`
    /// too.
    fn check_lite_send(
        &self,
        idx: &MetaIndex,
        rec: &mut comet_store::Message,
        queue_count: u32,
    ) -> Result<(), Failure> {
        let lite = rec.properties.system.get(crate::sys::SYS_LITE_TOPIC);
        match (idx.is_lite_topic(&rec.topic), lite) {
            (false, None) => Ok(()),
            (false, Some(_)) => Err(Failure::new(
                Code::MessagePropertyConflictWithType,
                format!(
                    "topic {:?} is not a LITE topic: a message with a lite topic needs one",
                    rec.topic
                ),
            )),
            (true, None) => Err(Failure::new(
                Code::MessagePropertyConflictWithType,
                format!(
                    "topic {:?} is a LITE topic: its messages need a lite topic (type LITE)",
                    rec.topic
                ),
            )),
            (true, Some(l)) => {
                let key = crate::lite::state_key(&rec.topic, l);
                let queue_id = match self.lite.queue_of(&key) {
                    Some(q) if (q as u32) < queue_count => q,
                    Some(_) | None => {
                        if self.lite.len() >= self.cfg.max_lite_topics && !self.lite.contains(&key)
                        {
                            return Err(Failure::new(
                                Code::LiteTopicQuotaExceeded,
                                format!(
                                    "broker set {} holds {} lite topics, its maximum \
                                     (max_lite_topics); lite topic {l:?} cannot be created",
                                    self.cfg.broker_set, self.cfg.max_lite_topics
                                ),
                            ));
                        }
                        crate::lite::lite_queue(l, queue_count)
                    }
                };
                rec.queue_id = queue_id;
                Ok(())
            }
        }
    }
}

/// Why an append failed, as the send path needs it.
#[derive(Debug, Clone)]
pub(crate) enum AppendFail {
    Closed,
    Failed(Failure),
}

/// A stored message's answer: its queue offset and, for a half message, its transaction id.
#[derive(Debug, Clone)]
pub(crate) struct SendOk {
    pub offset: i64,
    pub transaction_id: Option<String>,
    pub recall_handle: Option<String>,
    /// End of the record in the commitlog (what replicas must hold).
    pub end: i64,
}

/// Where a checked message goes.
enum Checked {
    /// Its queue, now.
    Now(comet_store::Message),
    /// The timer wheel, until the time (ms since the epoch).
    Delayed(comet_store::Message, i64),
    /// The half-message queue, until its transaction is resolved.
    Half(comet_store::Message),
}

/// Appends records as one batch (falling back to one by one when the batch is too large as a
/// whole); one outcome per record (blocking when the flush policy is SYNC).
pub(crate) fn append_records(
    store: &MessageStore,
    records: &[comet_store::Message],
) -> Vec<Result<AppendResult, AppendFail>> {
    let fail = |e: &StoreError| {
        tracing::warn!(error = %e, "append failed");
        if matches!(e, StoreError::Closed) {
            AppendFail::Closed
        } else {
            AppendFail::Failed(store_failure(e))
        }
    };
    match store.append_batch(records) {
        Ok(v) => v.into_iter().map(Ok).collect(),
        Err(StoreError::MessageTooLarge { .. }) if records.len() > 1 => records
            .iter()
            .map(|r| store.append(r).map_err(|e| fail(&e)))
            .collect(),
        Err(e) => {
            let f = fail(&e);
            records.iter().map(|_| Err(f.clone())).collect()
        }
    }
}
