//! Send: validates each message of a batch against the watched metadata (the topic must be
//! placed on this broker set with `queue_count > queue_id`, writable) and appends it where its
//! type says — its queue now, the timer wheel (a delivery time in the future), or the half
//! topic (a transaction) — then, with SYNC replication, waits for the in-sync replicas.
//!
//! Appends whose flush policy is ASYNC copy into the mapped segment on the calling thread;
//! SYNC appends wait for an fdatasync and run on the blocking pool.

use std::sync::Arc;

use comet_proto::apache::rocketmq::v2::{
    self as v2, Code, SendMessageRequest, SendMessageResponse, SendResultEntry,
};
use comet_store::{AppendResult, MessageStore, StoreError};

use crate::clock::{duration_ms, now_ms};
use crate::convert;
use crate::delay;
use crate::engine::Inner;
use crate::meta::{Access, MetaIndex};
use crate::outcome::{Outcome, SHUTTING_DOWN, blocking, ok, overall, status, store_outcome};
use crate::transaction::record as txrec;

impl Inner {
    // ----------------------------------------------------------------------------- send

    pub async fn send(
        &self,
        req: SendMessageRequest,
    ) -> Result<SendMessageResponse, tonic::Status> {
        if req.messages.is_empty() {
            return Ok(SendMessageResponse {
                status: Some(status(Code::BadRequest, "the request carries no messages")),
                entries: Vec::new(),
            });
        }
        let idx = self.meta.index();
        let now = now_ms();
        let mut results: Vec<Result<SendOk, Outcome>> = Vec::with_capacity(req.messages.len());
        let mut now_records = (Vec::new(), Vec::new());
        let mut delayed = (Vec::new(), Vec::new());
        let mut halves = (Vec::new(), Vec::new());
        for (i, m) in req.messages.iter().enumerate() {
            results.push(Err((
                Code::InternalServerError,
                "message was not stored".into(),
            )));
            match self.check_send(&idx, m, now) {
                Ok(Checked::Now(rec)) => {
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
            let store = self.store_or_unavailable()?;
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
                transaction_id: String::new(),
                end: a.physical_offset + i64::from(a.size),
            })?;
        }
        if !delayed.0.is_empty() {
            let appended = self.append_delayed(delayed.0, now).await;
            Self::fill(&mut results, &delayed.1, appended, |a| SendOk {
                offset: a.queue_offset,
                transaction_id: String::new(),
                end: a.physical_offset + i64::from(a.size),
            })?;
        }
        if !halves.0.is_empty() {
            let appended = self.append_halves(halves.0).await;
            Self::fill(&mut results, &halves.1, appended, |x| x)?;
        }
        self.await_replicas(&mut results).await;
        let entries: Vec<SendResultEntry> = req
            .messages
            .iter()
            .zip(results)
            .map(|(m, r)| {
                let message_id = m
                    .system_properties
                    .as_ref()
                    .map(|s| s.message_id.clone())
                    .unwrap_or_default();
                match r {
                    Ok(ok_) => SendResultEntry {
                        status: Some(ok()),
                        message_id,
                        transaction_id: ok_.transaction_id,
                        offset: ok_.offset,
                        recall_handle: String::new(),
                    },
                    Err((code, msg)) => SendResultEntry {
                        status: Some(status(code, msg)),
                        message_id,
                        ..Default::default()
                    },
                }
            })
            .collect();
        let st = overall(
            &entries
                .iter()
                .filter_map(|e| e.status.as_ref())
                .collect::<Vec<_>>(),
        );
        Ok(SendMessageResponse {
            status: Some(st),
            entries,
        })
    }

    /// SYNC replication: waits until the in-sync replicas hold every stored message of the
    /// call; if they do not in time (or there are too few of them) the stored messages are
    /// answered with that failure instead of OK (see [`Tracker::wait`]).
    async fn await_replicas(&self, results: &mut [Result<SendOk, Outcome>]) {
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

    fn store_or_unavailable(&self) -> Result<Arc<MessageStore>, tonic::Status> {
        self.store()
            .map_err(|_| tonic::Status::unavailable(SHUTTING_DOWN))
    }

    /// Writes per-message append outcomes into `results` at `slots`; a store that closed
    /// under the call fails the whole call with UNAVAILABLE (the client retries elsewhere).
    fn fill<T>(
        results: &mut [Result<SendOk, Outcome>],
        slots: &[usize],
        appended: Result<Vec<Result<T, AppendFail>>, Outcome>,
        ok_of: impl Fn(T) -> SendOk,
    ) -> Result<(), tonic::Status> {
        match appended {
            Ok(v) => {
                for (slot, r) in slots.iter().zip(v) {
                    results[*slot] = match r {
                        Ok(x) => Ok(ok_of(x)),
                        Err(AppendFail::Closed) => {
                            return Err(tonic::Status::unavailable(SHUTTING_DOWN));
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
    ) -> Result<Vec<Result<AppendResult, AppendFail>>, Outcome> {
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
                    *r = Err(AppendFail::Failed(store_outcome(&e)));
                }
            }
            if sync
                && out.iter().any(Result::is_ok)
                && let Err(e) = delays.timer.flush()
            {
                tracing::error!(error = %e, "flushing the timer wheel failed");
                for r in out.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(AppendFail::Failed((
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
    ) -> Result<Vec<Result<SendOk, AppendFail>>, Outcome> {
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
                        transaction_id: tx.add(a.queue_offset, a.physical_offset, rec, now),
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

    fn check_send(&self, idx: &MetaIndex, m: &v2::Message, now: i64) -> Result<Checked, Outcome> {
        let topic = m.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("");
        if topic.is_empty() {
            return Err((Code::IllegalTopic, "message has no topic".into()));
        }
        comet_store::record::validate_topic(topic)
            .map_err(|e| (Code::IllegalTopic, format!("topic {topic:?}: {e}")))?;
        let queue_count = idx.queues(topic, Access::Write)?;
        let queue_id = m.system_properties.as_ref().map_or(0, |s| s.queue_id);
        if queue_id < 0 || queue_id as u32 >= queue_count {
            return Err((
                Code::BadRequest,
                format!(
                    "queue id {queue_id} of topic {topic:?} is outside 0..{queue_count} on broker set {}",
                    self.cfg.broker_set
                ),
            ));
        }
        let rec = convert::to_record(m, topic, now)?;
        let at = delay::delivery_ms(&rec);
        if delay::is_transaction(&rec) {
            if at.is_some() {
                return Err((
                    Code::MessagePropertyConflictWithType,
                    "a TRANSACTION message must not carry a delivery timestamp".into(),
                ));
            }
            return Ok(Checked::Half(rec));
        }
        match at {
            Some(at) if at > now => {
                let max = duration_ms(self.cfg.max_delivery_delay);
                if at - now > max {
                    return Err((
                        Code::IllegalDeliveryTime,
                        format!(
                            "delivery time is {} s in the future, more than the limit of {} s \
                             ({} days)",
                            (at - now) / 1000,
                            max / 1000,
                            max / 86_400_000
                        ),
                    ));
                }
                Ok(Checked::Delayed(rec, at))
            }
            // A delivery time in the past (or now) delivers at once.
            _ => Ok(Checked::Now(rec)),
        }
    }
}

/// Why an append failed, as the send path needs it.
#[derive(Debug, Clone)]
pub(crate) enum AppendFail {
    Closed,
    Failed(Outcome),
}

/// A stored message's answer: its queue offset and, for a half message, its transaction id.
#[derive(Debug, Clone)]
pub(crate) struct SendOk {
    pub offset: i64,
    pub transaction_id: String,
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
            AppendFail::Failed(store_outcome(e))
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
