//! Transactional messages: half messages, EndTransaction and the check-back of unresolved
//! transactions.
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
//! # Transaction ids
//! `"<broker_set>~" + base64url(25 bytes)`: version (1), half queue offset (i64 LE), commitlog
//! offset (i64 LE), CRC32C of the message id, CRC32C of the 21 bytes before it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use comet_proto::apache::rocketmq::v2::{Code, TransactionResolution};
use comet_proto::comet::v1::TransactionCheck;
use comet_store::{Message, MessageStore, StoreError, StoredMessage};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::broker::Outcome;
use crate::convert;
use crate::error::BrokerError;
use crate::meta::{Access, MetaIndex};

/// System topic of half messages (RocketMQ's name).
pub const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// System topic of resolution records (RocketMQ's name).
pub const OP_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// Where half messages go when their checks are exhausted (RocketMQ's name).
pub const DISCARD_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
/// On committed and discarded copies: the transaction id.
pub const SYS_TRANSACTION_ID: &str = "TRANSACTION_ID";
/// On a message: the producer's `orphaned_transaction_recovery_duration`, in ms.
pub(crate) const SYS_RECOVERY_MS: &str = "TRAN_RECOVERY_MS";
const SYS_REAL_TOPIC: &str = "TRAN_REAL_TOPIC";
const SYS_REAL_QUEUE_ID: &str = "TRAN_REAL_QUEUE_ID";
const SYS_OP: &str = "TRAN_OP";
const SYS_HALF_OFFSET: &str = "TRAN_HALF_OFFSET";
const SYS_CHECKS: &str = "TRAN_CHECKS";

/// Recovery reads ops stored up to this long before the first unresolved half message, in case
/// the wall clock stepped back between the two appends.
pub const OP_SCAN_SLACK_MS: i64 = 10 * 60 * 1000;
/// Resolutions remembered for answering a repeated EndTransaction.
const RESOLVED_MEMORY: usize = 65_536;
/// Checks queued towards one proxy before new ones are dropped (they are re-issued later).
const WATCH_BUFFER: usize = 1024;
pub(crate) const CHECKPOINT: &str = "checkpoint";
const ID_VERSION: u8 = 1;
const ID_LEN: usize = 25;

/// A transaction's final outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolution {
    Commit,
    Rollback,
    Discard,
}

impl Resolution {
    fn name(self) -> &'static str {
        match self {
            Resolution::Commit => "committed",
            Resolution::Rollback => "rolled back",
            Resolution::Discard => "discarded after its maximum number of checks",
        }
    }
}

/// One resolution record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Final(Resolution),
    Check(u32),
}

impl Op {
    fn encode(self) -> (&'static str, Option<u32>) {
        match self {
            Op::Final(Resolution::Commit) => ("COMMIT", None),
            Op::Final(Resolution::Rollback) => ("ROLLBACK", None),
            Op::Final(Resolution::Discard) => ("DISCARD", None),
            Op::Check(n) => ("CHECK", Some(n)),
        }
    }

    fn decode(m: &Message) -> Option<(i64, Op)> {
        let sys = &m.properties.system;
        let half: i64 = sys.get(SYS_HALF_OFFSET)?.parse().ok()?;
        let op = match sys.get(SYS_OP)?.as_str() {
            "COMMIT" => Op::Final(Resolution::Commit),
            "ROLLBACK" => Op::Final(Resolution::Rollback),
            "DISCARD" => Op::Final(Resolution::Discard),
            "CHECK" => Op::Check(sys.get(SYS_CHECKS)?.parse().ok()?),
            _ => return None,
        };
        Some((half, op))
    }
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

/// The decoded opaque part of a transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxId {
    pub half_offset: i64,
    pub physical_offset: i64,
    id_crc: u32,
}

impl TxId {
    pub fn new(half_offset: i64, physical_offset: i64, message_id: &str) -> TxId {
        TxId {
            half_offset,
            physical_offset,
            id_crc: crc32c::crc32c(message_id.as_bytes()),
        }
    }

    pub fn encode(&self, broker_set: &str) -> String {
        let mut b = [0u8; ID_LEN];
        b[0] = ID_VERSION;
        b[1..9].copy_from_slice(&self.half_offset.to_le_bytes());
        b[9..17].copy_from_slice(&self.physical_offset.to_le_bytes());
        b[17..21].copy_from_slice(&self.id_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[..21]);
        b[21..25].copy_from_slice(&crc.to_le_bytes());
        let mut s = String::with_capacity(broker_set.len() + 35);
        s.push_str(broker_set);
        s.push('~');
        URL_SAFE_NO_PAD.encode_string(b, &mut s);
        s
    }

    /// Parses an id issued by `broker_set`; the error says why it cannot be one.
    pub fn decode(id: &str, broker_set: &str) -> Result<TxId, String> {
        let (prefix, opaque) = id
            .split_once('~')
            .ok_or("transaction id is malformed: it lacks the '<broker_set>~' prefix")?;
        if prefix != broker_set {
            return Err(format!(
                "transaction id belongs to broker set {prefix:?}, not {broker_set:?}"
            ));
        }
        if opaque.len() > 64 {
            return Err("transaction id is malformed: too long".into());
        }
        let b = URL_SAFE_NO_PAD
            .decode(opaque)
            .map_err(|_| "transaction id is malformed: not base64url".to_owned())?;
        if b.len() != ID_LEN || b[0] != ID_VERSION {
            return Err("transaction id is malformed: wrong length or version".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let i64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            i64::from_le_bytes(a)
        };
        if crc32c::crc32c(&b[..21]) != u32_at(21) {
            return Err("transaction id is malformed: checksum mismatch".into());
        }
        Ok(TxId {
            half_offset: i64_at(1),
            physical_offset: i64_at(9),
            id_crc: u32_at(17),
        })
    }

    fn matches_message(&self, message_id: &str) -> bool {
        self.id_crc == crc32c::crc32c(message_id.as_bytes())
    }
}

/// An unresolved half message.
#[derive(Debug, Clone)]
struct Pending {
    physical_offset: i64,
    topic: String,
    message_id: String,
    checks: u32,
    next_check_ms: i64,
    /// A resolution or check is being written.
    busy: bool,
}

#[derive(Debug, Default)]
struct Resolved {
    map: HashMap<i64, Resolution>,
    order: VecDeque<i64>,
}

impl Resolved {
    fn insert(&mut self, half: i64, r: Resolution) {
        if self.map.insert(half, r).is_none() {
            self.order.push_back(half);
            while self.order.len() > RESOLVED_MEMORY {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    pending: BTreeMap<i64, Pending>,
    resolved: Resolved,
    /// Half-message appends running (the checkpoint waits for none).
    appending: usize,
    /// Every half message below this queue offset is known: pending, or resolved by an op
    /// this table has applied (or below the checkpoint). The checkpoint never passes it.
    half_next: i64,
    /// Where a replica's next read of the op queue starts.
    op_next: i64,
}

/// Timing of checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckPolicy {
    pub timeout_ms: i64,
    pub interval_ms: i64,
    pub max_checks: u32,
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
    Sent(Box<TransactionCheck>),
    Discarded,
    /// The half message is no longer stored.
    Gone,
    Failed(StoreError),
}

/// The sending side of one proxy's check stream.
type CheckSender = mpsc::Sender<Result<TransactionCheck, tonic::Status>>;

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

/// Reads `topic`'s queue 0 from `from` to its end; returns the offset after the last entry
/// read (where the next read resumes).
fn read_all(
    store: &MessageStore,
    topic: &str,
    from: i64,
    mut f: impl FnMut(i64, StoredMessage),
) -> i64 {
    let mut next = from.max(store.min_offset(topic, 0));
    loop {
        let entries = store.read_queue(topic, 0, next, 4096);
        let Some(last) = entries.last() else {
            return next;
        };
        next = last.queue_offset + 1;
        for e in entries {
            match store.read(e.physical_offset) {
                Ok(m) => f(e.queue_offset, m),
                Err(err) => tracing::warn!(topic, queue_offset = e.queue_offset, error = %err,
                    "transaction record unreadable; skipped"),
            }
        }
    }
}

/// What the op records read in one pass say about the half messages they name.
#[derive(Default)]
struct OpsRead {
    finals: HashMap<i64, Resolution>,
    /// Highest check number and the store time of the latest check.
    checks: HashMap<i64, (u32, i64)>,
}

impl OpsRead {
    /// Reads the op queue from `from` to its end, keeping ops of half messages at or above
    /// `half_low`; returns them and where the next read resumes.
    fn read(store: &MessageStore, from: i64, half_low: i64) -> (OpsRead, i64) {
        let mut ops = OpsRead::default();
        let next = read_all(store, OP_TOPIC, from, |_, m| match Op::decode(&m.message) {
            Some((half, _)) if half < half_low => {}
            Some((half, Op::Final(r))) => {
                ops.finals.insert(half, r);
            }
            Some((half, Op::Check(n))) => {
                let c = ops.checks.entry(half).or_insert((0, 0));
                *c = (c.0.max(n), c.1.max(m.store_timestamp));
            }
            None => tracing::warn!(
                physical_offset = m.physical_offset,
                "unknown transaction op record; skipped"
            ),
        });
        (ops, next)
    }
}

impl Table {
    /// Applies the half messages of the half queue from `half_from` to its end and the ops
    /// read before them (every op names a half message stored before it, so the half queue,
    /// read after the ops, holds every half message they name). Half messages at or above
    /// `half_from` without a final op become pending; finals of older ones resolve them.
    /// Returns where the next read of the half queue resumes.
    fn apply(
        &mut self,
        store: &MessageStore,
        half_from: i64,
        ops: &OpsRead,
        policy: &CheckPolicy,
        now_ms: i64,
    ) -> i64 {
        for (half, r) in &ops.finals {
            if *half < half_from {
                self.pending.remove(half);
                self.resolved.insert(*half, *r);
            }
        }
        for (half, (n, at)) in &ops.checks {
            if let Some(p) = self.pending.get_mut(half)
                && *n >= p.checks
            {
                p.checks = *n;
                p.next_check_ms = (at + policy.interval_ms).max(now_ms);
            }
        }
        read_all(store, HALF_TOPIC, half_from, |offset, m| {
            if let Some(r) = ops.finals.get(&offset) {
                self.resolved.insert(offset, *r);
                return;
            }
            let Some(topic) = m.message.properties.system.get(SYS_REAL_TOPIC) else {
                tracing::warn!(
                    queue_offset = offset,
                    "half message without a real topic; skipped"
                );
                return;
            };
            let (n, last_check) = ops.checks.get(&offset).copied().unwrap_or((0, 0));
            let next_check_ms = if n == 0 {
                m.store_timestamp + first_delay(&m.message, policy)
            } else {
                last_check + policy.interval_ms
            };
            self.pending.insert(
                offset,
                Pending {
                    physical_offset: m.physical_offset,
                    topic: topic.clone(),
                    message_id: m.message.properties.message_id.clone(),
                    checks: n,
                    next_check_ms: next_check_ms.max(now_ms),
                    busy: false,
                },
            );
        })
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
        let half_low = read_checkpoint(&checkpoint).max(store.min_offset(HALF_TOPIC, 0));
        let mut table = Table::default();
        // The store time of the first half message at or after the low-water mark bounds the
        // ops that can matter.
        let first_ts = store
            .read_queue(HALF_TOPIC, 0, half_low, 1)
            .first()
            .and_then(|e| store.read(e.physical_offset).ok())
            .map(|m| m.store_timestamp);
        let (ops, op_next) = match first_ts {
            Some(ts) => OpsRead::read(
                store,
                store.offset_by_time(OP_TOPIC, 0, ts.saturating_sub(OP_SCAN_SLACK_MS)),
                half_low,
            ),
            // No half message to resolve: every op stored so far is about older ones.
            None => (OpsRead::default(), store.max_offset(OP_TOPIC, 0)),
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
            .get(SYS_REAL_TOPIC)
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
        resolution: TransactionResolution,
    ) -> Result<EndPlan, Outcome> {
        let invalid = |m: String| (Code::InvalidTransactionId, m);
        if transaction_id.is_empty() {
            return Err(invalid("transaction_id is empty".into()));
        }
        let id = TxId::decode(transaction_id, &self.broker_set).map_err(invalid)?;
        let wanted = match resolution {
            TransactionResolution::Commit => Some(Resolution::Commit),
            TransactionResolution::Rollback => Some(Resolution::Rollback),
            TransactionResolution::Unspecified => None,
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
            return Err((
                Code::TooManyRequests,
                "the transaction is being resolved by another request; retry".into(),
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
    ) -> Result<(), Outcome> {
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
            Err(e @ StoreError::FlushTimeout { .. }) => Some(crate::broker::store_outcome(e)),
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
                Err((
                    Code::InvalidTransactionId,
                    "the half message is no longer stored (retention); the transaction is lost"
                        .into(),
                ))
            }
            Err(e) => {
                if let Some(p) = t.pending.get_mut(&half_offset) {
                    p.busy = false;
                }
                tracing::error!(half_offset, error = %e, "writing a transaction resolution failed");
                Err(crate::broker::store_outcome(&e))
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
                        topic = DISCARD_TOPIC,
                        "transaction unresolved after the maximum number of checks; half message \
                         discarded and kept in the discard topic"
                    );
                    CheckOutcome::Discarded
                }
                Err((Code::InvalidTransactionId, _)) => CheckOutcome::Gone,
                Err((_, m)) => CheckOutcome::Failed(StoreError::InvalidMessage(m)),
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
        CheckOutcome::Sent(Box::new(TransactionCheck {
            topic,
            message: Some(convert::to_check_proto(&stored)),
            transaction_id: d.transaction_id.clone(),
        }))
    }

    /// Records the outcome of a check and returns the check to broadcast, if any.
    pub fn finish_check(
        &self,
        d: &DueCheck,
        outcome: CheckOutcome,
        now_ms: i64,
    ) -> Option<TransactionCheck> {
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
    pub fn watch(&self, proxy_id: &str) -> mpsc::Receiver<Result<TransactionCheck, tonic::Status>> {
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
    pub fn broadcast(&self, check: &TransactionCheck) -> usize {
        let mut w = self.watchers.lock();
        let mut sent = 0;
        w.retain(|(proxy, tx)| match tx.try_send(Ok(check.clone())) {
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

/// Delay before the first check of a half message.
fn first_delay(rec: &Message, policy: &CheckPolicy) -> i64 {
    let own = rec
        .properties
        .system
        .get(SYS_RECOVERY_MS)
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0);
    policy.timeout_ms.max(own)
}

/// The half-topic record of a transactional message (real topic and queue kept as properties).
pub(crate) fn to_half_record(mut rec: Message) -> Message {
    let sys = &mut rec.properties.system;
    sys.insert(SYS_REAL_TOPIC.to_owned(), rec.topic.clone());
    sys.insert(SYS_REAL_QUEUE_ID.to_owned(), rec.queue_id.to_string());
    rec.topic = HALF_TOPIC.to_owned();
    rec.queue_id = 0;
    rec
}

/// The message as the producer sent it (real topic and queue).
fn real_message(half: &Message) -> Option<Message> {
    let mut m = half.clone();
    let sys = &mut m.properties.system;
    m.topic = sys.remove(SYS_REAL_TOPIC)?;
    m.queue_id = sys.remove(SYS_REAL_QUEUE_ID)?.parse().ok()?;
    sys.remove(SYS_RECOVERY_MS);
    Some(m)
}

/// The visible copy of a committed half message (the queue id wraps if the topic now has fewer
/// queues here).
fn committed_copy(half: &Message, idx: &MetaIndex, transaction_id: &str) -> Option<Message> {
    let mut m = real_message(half)?;
    if let Ok(n) = idx.queues(&m.topic, Access::Write)
        && n > 0
        && m.queue_id as u32 >= n
    {
        m.queue_id = (m.queue_id as u32 % n) as i32;
    }
    m.properties
        .system
        .insert(SYS_TRANSACTION_ID.to_owned(), transaction_id.to_owned());
    Some(m)
}

/// The record kept of a discarded half message.
fn discarded_copy(half: &Message, transaction_id: &str) -> Option<Message> {
    let mut m = half.clone();
    let sys = &mut m.properties.system;
    sys.get(SYS_REAL_TOPIC)?;
    sys.insert(SYS_TRANSACTION_ID.to_owned(), transaction_id.to_owned());
    m.topic = DISCARD_TOPIC.to_owned();
    m.queue_id = 0;
    Some(m)
}

fn op_record(half_offset: i64, op: Op, transaction_id: &str) -> Message {
    let (name, checks) = op.encode();
    let mut system = std::collections::BTreeMap::new();
    system.insert(SYS_OP.to_owned(), name.to_owned());
    system.insert(SYS_HALF_OFFSET.to_owned(), half_offset.to_string());
    if let Some(n) = checks {
        system.insert(SYS_CHECKS.to_owned(), n.to_string());
    }
    Message {
        topic: OP_TOPIC.to_owned(),
        queue_id: 0,
        flags: 0,
        born_timestamp: convert::now_ms(),
        born_host: comet_store::record::UNKNOWN_HOST,
        reconsume_times: 0,
        properties: comet_store::Properties {
            message_id: transaction_id.to_owned(),
            system,
            ..Default::default()
        },
        body: bytes::Bytes::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_a_transaction_id_when_encoded_and_decoded_should_round_trip() {
        let id = TxId::new(42, 123_456, "msg-1");
        let s = id.encode("broker-a");
        assert!(s.starts_with("broker-a~"), "{s}");
        assert_eq!(TxId::decode(&s, "broker-a").unwrap(), id);
        assert!(id.matches_message("msg-1"));
        assert!(!id.matches_message("msg-2"));
        assert!(
            TxId::decode(&s, "broker-b")
                .unwrap_err()
                .contains("broker-b")
        );
        for bad in ["", "broker-a", "broker-a~", "broker-a~!!", "broker-a~AAAA"] {
            assert!(TxId::decode(bad, "broker-a").is_err(), "{bad}");
        }
        let mut tampered: Vec<char> = s.chars().collect();
        let i = tampered.len() - 8;
        tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        assert!(TxId::decode(&tampered, "broker-a").is_err());
    }

    #[test]
    fn given_ops_when_encoded_should_decode_back() {
        for op in [
            Op::Final(Resolution::Commit),
            Op::Final(Resolution::Rollback),
            Op::Final(Resolution::Discard),
            Op::Check(7),
        ] {
            assert_eq!(Op::decode(&op_record(9, op, "tx")), Some((9, op)));
        }
    }

    #[test]
    fn given_half_record_when_restored_should_get_the_real_topic_and_queue() {
        let rec = Message {
            topic: "t".into(),
            queue_id: 5,
            flags: 0,
            born_timestamp: 1,
            born_host: comet_store::record::UNKNOWN_HOST,
            reconsume_times: 0,
            properties: comet_store::Properties {
                message_id: "m".into(),
                ..Default::default()
            },
            body: bytes::Bytes::from_static(b"x"),
        };
        let half = to_half_record(rec.clone());
        assert_eq!((half.topic.as_str(), half.queue_id), (HALF_TOPIC, 0));
        assert_eq!(real_message(&half).unwrap(), rec);
        let c = committed_copy(&half, &MetaIndex::default(), "tx").unwrap();
        assert_eq!((c.topic.as_str(), c.queue_id), ("t", 5));
        assert_eq!(c.properties.system.get(SYS_TRANSACTION_ID).unwrap(), "tx");
        let d = discarded_copy(&half, "tx").unwrap();
        assert_eq!(d.topic, DISCARD_TOPIC);
    }

    #[test]
    fn given_resolved_memory_when_full_should_forget_the_oldest() {
        let mut r = Resolved::default();
        for i in 0..(RESOLVED_MEMORY as i64 + 3) {
            r.insert(i, Resolution::Commit);
        }
        assert_eq!(r.map.len(), RESOLVED_MEMORY);
        assert!(!r.map.contains_key(&0) && r.map.contains_key(&3));
    }
}
