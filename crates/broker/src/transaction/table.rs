//! The transaction table: unresolved half messages, their resolutions and the check-back of
//! unresolved transactions.
//!
//! ```text
//!  send(TRANSACTION) ─► RMQ_SYS_TRANS_HALF_TOPIC/0  (record keeps the real topic + queue)
//!                    ◄─ transaction id "<broker_set>~<base64url>"
//!  EndTransaction COMMIT   ─► append_batch[ copy to <topic>/<queue>, op COMMIT ]   (atomic)
//!                 ROLLBACK ─► append op ROLLBACK
//!  check task: unresolved for transaction_timeout ─► op CHECK n ─► TransactionCheck to every
//!              watching proxy ─► RecoverOrphanedTransactionCommand ─► EndTransaction(SERVER_CHECK)
//!              after transaction_max_checks checks ─► append_batch[ copy to
//!              TRANS_CHECK_MAX_TIME_TOPIC, op DISCARD ]  (+ WARN log, `discarded` counter)
//! ```
//!
//! Every resolution is an op record in `RMQ_SYS_TRANS_OP_HALF_TOPIC/0` naming the half
//! message's queue offset, so the state is rebuilt from the commitlog alone: recovery reads the
//! half queue from the checkpointed low-water mark (every half message below it is resolved)
//! and the op queue from the store time of the first half message it reads (minus
//! [`OP_SCAN_SLACK_MS`] against clock steps), and keeps the half messages without a final op.
//! CHECK ops carry the check count, so the limit holds across restarts.
//!
//! A commit appends the visible copy and its op in one batch, which the store keeps or drops
//! as a whole: a commit is applied exactly once even if the broker dies in the middle.
//!
//! # Replicas and failover
//! Half messages and ops are ordinary records of the replicated commitlog. A replica applies
//! them as its log grows ([`Transactions::follow`]: the op queue first, then the half queue,
//! which then holds every half message those ops name), so its pending set and check counts
//! follow the master's. Its checkpoint is the oldest half message it holds pending, or the
//! first one it has not read: it never claims resolved a half message whose final op it has
//! not read. A promoted replica recovers from that checkpoint like any restart and checks
//! every unresolved half message on the usual schedule (the next check is due one interval
//! after the last CHECK op, or `transaction_timeout` after the send), with its count.
//!
//! Transaction ids are in the `id` module; the records in `record`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use comet_store::{Message, MessageStore, StoreError, StoredMessage};
use comet_vocab::system;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::error::BrokerError;
use crate::meta::MetaIndex;
use crate::outcome::{Code, Failure, store_failure};
use crate::sys;
use crate::transaction::id::TxId;
use crate::transaction::pending::{CheckPolicy, OpsRead, Pending, Table, first_delay};
use crate::transaction::record::{
    Op, Resolution, committed_copy, discarded_copy, op_record, real_message,
};

/// Recovery reads ops stored up to this long before the first unresolved half message, in case
/// the wall clock stepped back between the two appends.
pub const OP_SCAN_SLACK_MS: i64 = 10 * 60 * 1000;
/// Checks queued towards one proxy before new ones are dropped (they are re-issued later).
const WATCH_BUFFER: usize = 1024;
pub(crate) const CHECKPOINT: &str = "checkpoint";

/// What a producer decided for a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Make the message visible.
    Commit,
    /// Drop the message.
    Rollback,
    /// Not decided yet: the transaction stays pending and is checked again.
    Unknown,
}

/// A check of an unresolved transaction, for a proxy to ask the producer about.
#[derive(Debug, Clone, PartialEq)]
pub struct OrphanCheck {
    /// The topic the message was sent to.
    pub topic: String,
    /// The half message as the producer sent it (real topic and queue).
    pub message: StoredMessage,
    /// The transaction id.
    pub transaction_id: String,
}

/// Counters of transactional messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionStats {
    /// Half messages waiting for a resolution.
    pub pending: u64,
    /// Committed since the broker opened.
    pub committed: u64,
    /// Rolled back since the broker opened.
    pub rolled_back: u64,
    /// Discarded after `transaction_max_checks` checks since the broker opened (each is logged
    /// at WARN and kept in `TRANS_CHECK_MAX_TIME_TOPIC`).
    pub discarded: u64,
    /// Checks sent to proxies since the broker opened.
    pub checks: u64,
}

/// What an EndTransaction does after validation.
pub(crate) enum EndPlan {
    /// Nothing to write: the same resolution was already applied, or "unknown" was answered.
    Done(String),
    /// Write the resolution of the half message at `half_offset`.
    Write {
        half_offset: i64,
        physical_offset: i64,
        transaction_id: String,
        resolution: Resolution,
    },
}

/// One due check or discard.
pub(crate) struct DueCheck {
    half_offset: i64,
    physical_offset: i64,
    transaction_id: String,
    /// `Some(n)`: send check number n; `None`: discard.
    check: Option<u32>,
}

/// What executing a [`DueCheck`] produced.
pub(crate) enum CheckOutcome {
    Sent(Box<OrphanCheck>),
    Discarded,
    /// The half message is no longer stored.
    Gone,
    Failed(StoreError),
}

/// The sending side of one proxy's check stream.
type CheckSender = mpsc::Sender<OrphanCheck>;

/// Half messages, resolutions, checks and the proxies watching for checks.
pub(crate) struct Transactions {
    broker_set: String,
    policy: CheckPolicy,
    checkpoint: PathBuf,
    table: Mutex<Table>,
    /// (proxy id, its check stream).
    watchers: Mutex<Vec<(String, CheckSender)>>,
    /// Woken when a half message is due before `next_wake` (the check task re-plans its sleep).
    pub wake: Notify,
    /// When the check task plans to look again (ms since the epoch).
    next_wake: AtomicI64,
    committed: AtomicU64,
    rolled_back: AtomicU64,
    discarded: AtomicU64,
    checks: AtomicU64,
}

/// Counts a half-message append in progress; dropping it ends the count.
pub(crate) struct AppendTicket<'a>(&'a Transactions);

impl Drop for AppendTicket<'_> {
    fn drop(&mut self) {
        self.0.table.lock().appending -= 1;
    }
}

impl Transactions {
    /// Rebuilds the unresolved half messages from the store (blocking; see the module docs).
    pub fn recover(
        store: &MessageStore,
        dir: &Path,
        broker_set: &str,
        policy: CheckPolicy,
        now_ms: i64,
    ) -> Result<Transactions, BrokerError> {
        std::fs::create_dir_all(dir).map_err(BrokerError::state_io("create", dir))?;
        let checkpoint = dir.join(CHECKPOINT);
        let half_low =
            read_checkpoint(&checkpoint).max(store.min_offset(system::TRANS_HALF_TOPIC, 0));
        let mut table = Table::default();
        // The store time of the first half message at or after the low-water mark bounds the
        // ops that can matter.
        let first_ts = store
            .read_queue(system::TRANS_HALF_TOPIC, 0, half_low, 1)
            .first()
            .and_then(|e| store.read(e.physical_offset).ok())
            .map(|m| m.store_timestamp);
        let (ops, op_next) = match first_ts {
            Some(ts) => OpsRead::read(
                store,
                store.offset_by_time(
                    system::TRANS_OP_HALF_TOPIC,
                    0,
                    ts.saturating_sub(OP_SCAN_SLACK_MS),
                ),
                half_low,
            ),
            // No half message to resolve: every op stored so far is about older ones.
            None => (
                OpsRead::default(),
                store.max_offset(system::TRANS_OP_HALF_TOPIC, 0),
            ),
        };
        let half_next = table.apply(store, half_low, &ops, &policy, now_ms);
        table.half_next = half_next;
        table.op_next = op_next;
        tracing::info!(
            broker_set,
            pending = table.pending.len(),
            half_low,
            "transactions recovered"
        );
        Ok(Transactions {
            broker_set: broker_set.to_owned(),
            policy,
            checkpoint,
            table: Mutex::new(table),
            watchers: Mutex::new(Vec::new()),
            wake: Notify::new(),
            next_wake: AtomicI64::new(i64::MIN),
            committed: AtomicU64::new(0),
            rolled_back: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            checks: AtomicU64::new(0),
        })
    }

    /// A replica's step (blocking): applies the half messages and op records its log gained
    /// since the last step, so its pending set and checkpoint follow the master's. Only the
    /// replica's own thread calls it (a replica appends nothing itself). Returns how many half
    /// messages are pending.
    pub fn follow(&self, store: &MessageStore, now_ms: i64) -> usize {
        let (half_from, op_from) = {
            let t = self.table.lock();
            (t.half_next, t.op_next)
        };
        // Ops first: the half queue read after them holds every half message they name.
        let (ops, op_next) = OpsRead::read(store, op_from, 0);
        let mut t = self.table.lock();
        let half_next = t.apply(store, half_from, &ops, &self.policy, now_ms);
        t.half_next = half_next;
        t.op_next = op_next;
        t.pending.len()
    }

    pub fn stats(&self) -> TransactionStats {
        TransactionStats {
            pending: self.table.lock().pending.len() as u64,
            committed: self.committed.load(Ordering::Relaxed),
            rolled_back: self.rolled_back.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
            checks: self.checks.load(Ordering::Relaxed),
        }
    }

    /// Must be held while half messages are appended and until they are [`added`](Self::add).
    pub fn begin_append(&self) -> AppendTicket<'_> {
        self.table.lock().appending += 1;
        AppendTicket(self)
    }

    /// Registers an appended half message; returns its transaction id.
    pub fn add(
        &self,
        half_offset: i64,
        physical_offset: i64,
        rec: &Message,
        now_ms: i64,
    ) -> String {
        let id = TxId::new(half_offset, physical_offset, &rec.properties.message_id)
            .encode(&self.broker_set);
        let topic = rec
            .properties
            .system
            .get(sys::SYS_TRAN_REAL_TOPIC)
            .cloned()
            .unwrap_or_default();
        let next_check_ms = now_ms + first_delay(rec, &self.policy);
        let mut t = self.table.lock();
        t.half_next = t.half_next.max(half_offset + 1);
        t.pending.insert(
            half_offset,
            Pending {
                physical_offset,
                topic,
                message_id: rec.properties.message_id.clone(),
                checks: 0,
                next_check_ms,
                busy: false,
            },
        );
        drop(t);
        if next_check_ms < self.next_wake.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
        id
    }

    /// Validates an EndTransaction and claims the half message for writing its resolution.
    pub fn plan_end(
        &self,
        topic: &str,
        message_id: &str,
        transaction_id: &str,
        decision: Decision,
    ) -> Result<EndPlan, Failure> {
        let invalid = |m: String| Failure::new(Code::InvalidTransactionId, m);
        if transaction_id.is_empty() {
            return Err(invalid("transaction_id is empty".into()));
        }
        let id = TxId::decode(transaction_id, &self.broker_set).map_err(invalid)?;
        let wanted = match decision {
            Decision::Commit => Some(Resolution::Commit),
            Decision::Rollback => Some(Resolution::Rollback),
            Decision::Unknown => None,
        };
        let mut t = self.table.lock();
        let Some(p) = t.pending.get_mut(&id.half_offset) else {
            return match t.resolved.map.get(&id.half_offset) {
                Some(r) if Some(*r) == wanted => Ok(EndPlan::Done(format!(
                    "the transaction was already {}",
                    r.name()
                ))),
                Some(r) => Err(invalid(format!(
                    "the transaction was already {}; it cannot be {}",
                    r.name(),
                    wanted.map_or("left unknown", |w| w.name())
                ))),
                None => Err(invalid(
                    "no pending transaction has this id: it is unknown, or was resolved or \
                     discarded long ago"
                        .into(),
                )),
            };
        };
        if p.physical_offset != id.physical_offset || !id.matches_message(&p.message_id) {
            return Err(invalid("no pending transaction has this id".into()));
        }
        if !message_id.is_empty() && message_id != p.message_id {
            return Err(invalid(format!(
                "the transaction belongs to message {:?}, not {message_id:?}",
                p.message_id
            )));
        }
        if p.topic != topic {
            return Err(invalid(format!(
                "the transaction belongs to topic {:?}, not {topic:?}",
                p.topic
            )));
        }
        let Some(resolution) = wanted else {
            return Ok(EndPlan::Done(
                "resolution unknown: the transaction stays pending and is checked again".into(),
            ));
        };
        if p.busy {
            return Err(Failure::new(
                Code::TooManyRequests,
                "the transaction is being resolved by another request; retry",
            ));
        }
        p.busy = true;
        Ok(EndPlan::Write {
            half_offset: id.half_offset,
            physical_offset: p.physical_offset,
            transaction_id: transaction_id.to_owned(),
            resolution,
        })
    }

    /// Writes a planned resolution (blocking).
    pub fn write_end(
        &self,
        store: &MessageStore,
        idx: &MetaIndex,
        half_offset: i64,
        physical_offset: i64,
        transaction_id: &str,
        resolution: Resolution,
    ) -> Result<(), Failure> {
        let result = (|| {
            let op = op_record(half_offset, Op::Final(resolution), transaction_id);
            match resolution {
                Resolution::Rollback => store.append(&op).map(|_| ()),
                Resolution::Commit | Resolution::Discard => {
                    let half = store.read(physical_offset)?;
                    let copy = if resolution == Resolution::Commit {
                        committed_copy(&half.message, idx, transaction_id)
                    } else {
                        discarded_copy(&half.message, transaction_id)
                    }
                    .ok_or_else(|| {
                        StoreError::InvalidMessage("the half message lacks its real topic".into())
                    })?;
                    store.append_batch(&[copy, op]).map(|_| ())
                }
            }
        })();
        let mut t = self.table.lock();
        // A SYNC flush that timed out still wrote the records: the resolution happened (a
        // retried EndTransaction then answers "already ..."), only its durability is unknown.
        let timed_out = match &result {
            Err(e @ StoreError::FlushTimeout { .. }) => Some(store_failure(e)),
            _ => None,
        };
        let result = if timed_out.is_some() { Ok(()) } else { result };
        match result {
            Ok(()) => {
                t.pending.remove(&half_offset);
                t.resolved.insert(half_offset, resolution);
                drop(t);
                match resolution {
                    Resolution::Commit => &self.committed,
                    Resolution::Rollback => &self.rolled_back,
                    Resolution::Discard => &self.discarded,
                }
                .fetch_add(1, Ordering::Relaxed);
                timed_out.map_or(Ok(()), Err)
            }
            Err(StoreError::OffsetOutOfRange { .. }) => {
                t.pending.remove(&half_offset);
                tracing::error!(
                    half_offset,
                    "half message deleted by retention before its resolution"
                );
                Err(Failure::new(
                    Code::InvalidTransactionId,
                    "the half message is no longer stored (retention); the transaction is lost",
                ))
            }
            Err(e) => {
                if let Some(p) = t.pending.get_mut(&half_offset) {
                    p.busy = false;
                }
                tracing::error!(half_offset, error = %e, "writing a transaction resolution failed");
                Err(store_failure(&e))
            }
        }
    }

    /// Records when the check task will look again (a half message due earlier wakes it).
    pub fn set_next_wake(&self, at_ms: i64) {
        self.next_wake.store(at_ms, Ordering::Release);
    }

    /// Claims the checks due at `now_ms` (at most `max`); returns them and when the next one is
    /// due.
    pub fn take_due(&self, now_ms: i64, max: usize) -> (Vec<DueCheck>, Option<i64>) {
        let mut t = self.table.lock();
        let mut due = Vec::new();
        let mut next: Option<i64> = None;
        for (half, p) in t.pending.iter_mut() {
            if p.busy {
                continue;
            }
            if p.next_check_ms > now_ms || due.len() >= max {
                next = Some(next.map_or(p.next_check_ms, |n| n.min(p.next_check_ms)));
                continue;
            }
            p.busy = true;
            let check = (p.checks < self.policy.max_checks).then_some(p.checks + 1);
            due.push(DueCheck {
                half_offset: *half,
                physical_offset: p.physical_offset,
                transaction_id: TxId::new(*half, p.physical_offset, &p.message_id)
                    .encode(&self.broker_set),
                check,
            });
        }
        (due, next)
    }

    /// Runs one due check or discard (blocking).
    pub fn run_check(&self, store: &MessageStore, idx: &MetaIndex, d: &DueCheck) -> CheckOutcome {
        let Some(n) = d.check else {
            return match self.write_end(
                store,
                idx,
                d.half_offset,
                d.physical_offset,
                &d.transaction_id,
                Resolution::Discard,
            ) {
                Ok(()) => {
                    tracing::warn!(
                        transaction_id = %d.transaction_id,
                        half_offset = d.half_offset,
                        checks = self.policy.max_checks,
                        topic = system::TRANS_CHECK_MAX_TIME_TOPIC,
                        "transaction unresolved after the maximum number of checks; half message \
                         discarded and kept in the discard topic"
                    );
                    CheckOutcome::Discarded
                }
                Err(f) if f.code == Code::InvalidTransactionId => CheckOutcome::Gone,
                Err(f) => CheckOutcome::Failed(StoreError::InvalidMessage(f.message)),
            };
        };
        let half = match store.read(d.physical_offset) {
            Ok(m) => m,
            Err(StoreError::OffsetOutOfRange { .. }) => return CheckOutcome::Gone,
            Err(e) => return CheckOutcome::Failed(e),
        };
        if let Err(e) = store.append(&op_record(d.half_offset, Op::Check(n), &d.transaction_id)) {
            return CheckOutcome::Failed(e);
        }
        let Some(real) = real_message(&half.message) else {
            return CheckOutcome::Gone;
        };
        let topic = real.topic.clone();
        let stored = StoredMessage {
            message: real,
            ..half
        };
        CheckOutcome::Sent(Box::new(OrphanCheck {
            topic,
            message: stored,
            transaction_id: d.transaction_id.clone(),
        }))
    }

    /// Records the outcome of a check and returns the check to broadcast, if any.
    pub fn finish_check(
        &self,
        d: &DueCheck,
        outcome: CheckOutcome,
        now_ms: i64,
    ) -> Option<OrphanCheck> {
        let mut t = self.table.lock();
        match outcome {
            CheckOutcome::Discarded => None,
            CheckOutcome::Gone => {
                t.pending.remove(&d.half_offset);
                tracing::error!(transaction_id = %d.transaction_id,
                    "half message no longer stored (retention); transaction dropped");
                None
            }
            CheckOutcome::Failed(e) => {
                if let Some(p) = t.pending.get_mut(&d.half_offset) {
                    p.busy = false;
                    p.next_check_ms = now_ms + self.policy.interval_ms.min(1000);
                }
                tracing::warn!(transaction_id = %d.transaction_id, error = %e,
                    "transaction check failed; retrying");
                None
            }
            CheckOutcome::Sent(check) => {
                let p = t.pending.get_mut(&d.half_offset)?;
                p.busy = false;
                p.checks = d.check.unwrap_or(p.checks);
                p.next_check_ms = now_ms + self.policy.interval_ms;
                drop(t);
                self.checks.fetch_add(1, Ordering::Relaxed);
                Some(*check)
            }
        }
    }

    /// A new watcher (proxy): checks are sent to every watcher.
    pub fn watch(&self, proxy_id: &str) -> mpsc::Receiver<OrphanCheck> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let mut w = self.watchers.lock();
        w.retain(|(_, tx)| !tx.is_closed());
        w.push((proxy_id.to_owned(), tx));
        tracing::info!(
            proxy_id,
            watchers = w.len(),
            "proxy watches transaction checks"
        );
        rx
    }

    /// Sends a check to every watcher; returns how many took it.
    pub fn broadcast(&self, check: &OrphanCheck) -> usize {
        let mut w = self.watchers.lock();
        let mut sent = 0;
        w.retain(|(proxy, tx)| match tx.try_send(check.clone()) {
            Ok(()) => {
                sent += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(proxy = %proxy, "proxy is not keeping up with transaction checks; one dropped");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if sent == 0 {
            tracing::debug!(transaction_id = %check.transaction_id, "no proxy watches transaction checks");
        }
        sent
    }

    /// Ends every watch stream (shutdown).
    pub fn close_watchers(&self) {
        self.watchers.lock().clear();
    }

    /// Writes the low-water mark: every half message below it is resolved (blocking). Skipped
    /// while a half-message append is running. The mark is the oldest pending half message,
    /// or the first half message this table has not seen (`half_next`): a replica's table
    /// knows only what it has applied of the master's records, so the mark never claims a
    /// half message resolved whose resolution it has not read.
    pub fn write_checkpoint(&self) -> Result<(), BrokerError> {
        let low = {
            let t = self.table.lock();
            if t.appending > 0 {
                return Ok(());
            }
            t.pending.keys().next().copied().unwrap_or(t.half_next)
        };
        let tmp = self.checkpoint.with_extension("tmp");
        std::fs::write(&tmp, format!("half_low={low}\n"))
            .map_err(BrokerError::state_io("write", &tmp))?;
        std::fs::rename(&tmp, &self.checkpoint)
            .map_err(BrokerError::state_io("rename", &self.checkpoint))
    }
}

/// The low-water mark in the checkpoint file, or 0 (scan everything) when missing or damaged.
fn read_checkpoint(path: &Path) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.trim()
                .strip_prefix("half_low=")
                .and_then(|v| v.parse::<i64>().ok())
        })
        .unwrap_or(0)
        .max(0)
}
