//! The broker: opening, the request operations over the store and the consumer state, the
//! background tasks (revive/dead-letter and state persistence) and shutdown.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{
    self as v2, AckMessageRequest, AckMessageResponse, AckMessageResultEntry,
    ChangeInvisibleDurationRequest, ChangeInvisibleDurationResponse, Code, EndTransactionRequest,
    EndTransactionResponse, ForwardMessageToDeadLetterQueueRequest,
    ForwardMessageToDeadLetterQueueResponse, ReceiveMessageRequest, SendMessageRequest,
    SendMessageResponse, SendResultEntry, Status, TransactionResolution,
};
use comet_proto::comet::v1::{ClusterMetadata, PopMessageResponse};
use comet_store::{
    AppendResult, Arrival, ArrivalListener, MessageStore, StoreConfig, StoreError, StoredMessage,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::config::{BrokerConfig, ConsumeFrom, RedeliveryDelay};
use crate::convert::{self, Delivery, now_ms};
use crate::delay::{self, Delays, TimerStats};
use crate::error::BrokerError;
use crate::filter::Filter;
use crate::ha::tracker::Tracker;
use crate::handle::{self, ReceiptHandle};
use crate::long_poll::ArrivalHub;
use crate::meta::{Access, DLQ_PREFIX, MetaIndex, MetaView};
use crate::persist::StateFiles;
use crate::service::BrokerGrpc;
use crate::state::{Consumers, InFlight, QueueKey, QueueRecord, QueueSlot, Timer, group_hash};
use crate::transaction::{self, CheckPolicy, EndPlan, TransactionStats, Transactions};

/// An in-body outcome: code and message.
pub(crate) type Outcome = (Code, String);

pub(crate) fn status(code: Code, message: impl Into<String>) -> Status {
    Status {
        code: code as i32,
        message: message.into(),
    }
}

pub(crate) fn ok() -> Status {
    status(Code::Ok, "OK")
}

/// The overall status of per-entry results: the common code if all agree, else
/// MULTIPLE_RESULTS.
fn overall(entries: &[&Status]) -> Status {
    match entries.first() {
        None => ok(),
        Some(first) if entries.iter().all(|s| s.code == first.code) => {
            if first.code == Code::Ok as i32 {
                ok()
            } else {
                (*first).clone()
            }
        }
        Some(_) => status(
            Code::MultipleResults,
            "entries have different results; see each entry's status",
        ),
    }
}

/// Why a call found the store closed. HA_NOT_AVAILABLE: retryable, like every answer of a
/// broker between two instances or two masters.
const SHUTTING_DOWN: &str = "the broker is shutting down or changing its role; retry";

/// How a store failure reads to a client.
pub(crate) fn store_outcome(e: &StoreError) -> Outcome {
    match e {
        StoreError::FlushTimeout { .. } => (Code::MasterPersistenceTimeout, e.to_string()),
        StoreError::MessageTooLarge { .. } => (Code::MessageBodyTooLarge, e.to_string()),
        StoreError::InvalidMessage(_) => (Code::BadRequest, e.to_string()),
        // Closed under the call: the instance is being replaced (role change) or stopped; a
        // retry reaches the next instance or the set's next master.
        StoreError::Closed => (Code::HaNotAvailable, SHUTTING_DOWN.into()),
        StoreError::NotWritable(reason) => (Code::HaNotAvailable, reason.clone()),
        _ => (Code::InternalServerError, e.to_string()),
    }
}

/// How far behind the end of the commitlog a pop may read on the calling thread: data
/// written this recently is in the page cache (it was written through it moments ago), so
/// reading it cannot wait for the disk. Like RocketMQ's in-memory window
/// (`accessMessageInMemoryMaxRatio`), but a fixed size far below any broker's memory.
const HOT_READ_BYTES: i64 = 256 << 20;

/// Runs blocking store work on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Outcome> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "blocking broker task failed");
        (
            Code::InternalServerError,
            format!("internal task failed: {e}"),
        )
    })
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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

/// One in-flight message chosen for the dead-letter queue.
struct DlqItem {
    slot: Arc<QueueSlot>,
    offset: i64,
    generation: u64,
    attempts: u32,
}

/// What a broker instance is in its broker set. Fixed for the life of the instance: a role
/// change replaces the instance (see [`crate::ha`]).
#[derive(Clone)]
pub(crate) enum EngineRole {
    /// No replication (standalone, single broker): always writable.
    Standalone,
    /// The master of a replicated set at one epoch; SYNC sends wait on the tracker.
    Master {
        tracker: Arc<Tracker>,
        /// Wait for the in-sync replicas before answering a send.
        sync: bool,
        /// Longest such wait.
        timeout: Duration,
    },
    /// A replica (or a member of a set without a master): serves reads, never writes.
    Replica,
}

/// Wakes replication streams waiting for new log data; costs one atomic load per append
/// while nobody waits.
#[derive(Default)]
pub(crate) struct AppendWake {
    waiters: AtomicUsize,
    notify: Notify,
}

impl AppendWake {
    fn notify(&self) {
        // With the fence in `wait`: the appender sees the waiter, or the waiter sees the
        // append (the log end was published before this call).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Waits until an append happens after this call began, `ready()` holds, or `timeout`
    /// passes. Returns whether it was woken (or ready) before the timeout.
    pub(crate) async fn wait(&self, timeout: Duration, ready: impl Fn() -> bool) -> bool {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiters);
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        std::sync::atomic::fence(Ordering::SeqCst);
        if ready() {
            return true;
        }
        tokio::time::timeout(timeout, notified).await.is_ok()
    }
}

/// How the store is prepared before it opens (replicas joining a new master).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorePrep {
    /// Open as it is.
    Keep,
    /// Cut the log before the first record that ends beyond this offset.
    Truncate(i64),
    /// Delete the log and start an empty one at this offset (a segment start).
    Wipe(i64),
}

/// Shared state of a running broker.
pub(crate) struct Inner {
    pub cfg: BrokerConfig,
    pub(crate) role: EngineRole,
    /// Woken by every local append (replication streams wait on it).
    pub(crate) append_wake: Arc<AppendWake>,
    store: RwLock<Option<Arc<MessageStore>>>,
    pub(crate) meta: MetaView,
    pub(crate) consumers: Consumers,
    pub(crate) hub: Arc<ArrivalHub>,
    pub(crate) closing: AtomicBool,
    pub(crate) shutdown_tx: watch::Sender<bool>,
    active: AtomicUsize,
    drained: Notify,
    round_robin: AtomicUsize,
    files: Mutex<Option<StateFiles>>,
    /// Highest consumer-state change sequence written to the state log.
    written: watch::Sender<u64>,
    /// The timer wheel of delayed messages.
    pub(crate) delays: Arc<Delays>,
    /// Half messages and their resolutions.
    pub(crate) transactions: Arc<Transactions>,
}

/// Longest an ack or invisible-time change waits for its state to be written.
const STATE_WRITE_WAIT: Duration = Duration::from_secs(5);

/// Counts a running call; dropping it may finish a drain (see [`Inner::enter`]).
pub(crate) struct CallGuard(Arc<Inner>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// A group's position on one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerProgress {
    /// Every offset below this is completed (acknowledged, dead-lettered or filtered out).
    pub ack_offset: i64,
    /// Next offset never handed out to the group.
    pub pop_offset: i64,
    /// Messages in flight (handed out, not completed).
    pub inflight: usize,
}

/// One storage node: the store, consumer state and background tasks. See the crate docs.
pub struct Broker {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("broker_set", &self.inner.cfg.broker_set)
            .field("broker_id", &self.inner.cfg.broker_id)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens the store (running its recovery), loads the consumer state (in-flight messages
    /// come back with their deadlines) and starts the background tasks (revive/dead-letter and
    /// state persistence).
    ///
    /// # Errors
    /// [`BrokerError::Config`] for invalid settings; store and consumer-state errors.
    pub async fn open(
        cfg: BrokerConfig,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
    ) -> Result<Broker, BrokerError> {
        Self::open_engine(cfg, metadata, EngineRole::Standalone, StorePrep::Keep).await
    }

    /// Opens a broker instance in `role`, preparing its store first (see [`StorePrep`]). A
    /// replicated instance opens with the store's write gate closed; a master's is opened by
    /// its supervisor once the epoch is recorded and the lease is known.
    pub(crate) async fn open_engine(
        cfg: BrokerConfig,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        role: EngineRole,
        prep: StorePrep,
    ) -> Result<Broker, BrokerError> {
        cfg.validate()?;
        let hub = Arc::new(ArrivalHub::default());
        let append_wake = Arc::new(AppendWake::default());
        let listener_hub = Arc::clone(&hub);
        let listener: ArrivalListener = Arc::new(move |a: &Arrival| listener_hub.notify(&a.topic));
        let mut sc = StoreConfig::new(cfg.data_dir.join("store"));
        sc.segment_size = usize::try_from(cfg.segment_size).map_err(|_| BrokerError::Config {
            key: "segment_size",
            reason: format!("{} does not fit this platform", cfg.segment_size),
        })?;
        sc.max_record_size = sc.max_record_size.min(sc.segment_size);
        sc.flush = cfg.flush;
        sc.retention = cfg.retention.clone();
        sc.store_host = cfg
            .advertised_addr
            .parse::<SocketAddr>()
            .unwrap_or(comet_store::record::UNKNOWN_HOST);
        sc.arrival_listener = Some(listener);
        if matches!(role, EngineRole::Master { .. }) {
            let wake = Arc::clone(&append_wake);
            sc.append_listener = Some(Arc::new(move |_end| wake.notify()));
        }
        let state_dir = cfg.data_dir.join("consumer");
        let timer_dir = cfg.data_dir.join("timer");
        let (slot, max_delay) = (cfg.timer_slot, cfg.max_delivery_delay);
        let tx_dir = cfg.data_dir.join("transaction");
        let broker_set = cfg.broker_set.clone();
        let policy = CheckPolicy {
            timeout_ms: duration_ms(cfg.transaction_timeout),
            interval_ms: duration_ms(cfg.transaction_check_interval),
            max_checks: cfg.transaction_max_checks,
        };
        let replicated = !matches!(role, EngineRole::Standalone);
        let (store, files, loaded, delays, transactions) = tokio::task::spawn_blocking(move || {
            let store = match prep {
                StorePrep::Keep => MessageStore::open(sc)?,
                StorePrep::Truncate(end) => {
                    // Half messages may be cut: the next recovery scans them from the start.
                    // Timers may point into the cut: the wheel is rebuilt from the log.
                    remove_if_exists(&tx_dir.join(transaction::CHECKPOINT))?;
                    remove_dir_if_exists(&timer_dir)?;
                    MessageStore::open_truncated(sc, end)?
                }
                StorePrep::Wipe(start) => {
                    remove_if_exists(&tx_dir.join(transaction::CHECKPOINT))?;
                    remove_dir_if_exists(&timer_dir)?;
                    MessageStore::wipe(&sc, start)?;
                    MessageStore::open(sc)?
                }
            };
            if replicated {
                store.set_write_gate(comet_store::WriteGate::Closed(
                    "this broker is not the master of its broker set".into(),
                ));
            }
            let (files, loaded) = StateFiles::open(&state_dir)?;
            let delays = Delays::open(&timer_dir, slot, max_delay, now_ms())?;
            // The wheel is derived from the timer queue: schedule what it lacks (nothing else
            // appends before the open returns), then later offsets are this instance's own.
            delays.catch_up(&store, now_ms())?;
            delays.set_own_from(store.max_offset(delay::TIMER_TOPIC, 0));
            let transactions =
                Transactions::recover(&store, &tx_dir, &broker_set, policy, now_ms())?;
            Ok::<_, BrokerError>((store, files, loaded, delays, transactions))
        })
        .await
        .map_err(|e| BrokerError::Task(e.to_string()))??;
        let (shutdown_tx, _) = watch::channel(false);
        let writes = !matches!(role, EngineRole::Replica);
        let inner = Arc::new(Inner {
            role,
            append_wake,
            meta: MetaView::new(metadata, cfg.broker_set.clone()),
            consumers: Consumers::new(loaded.incarnation, loaded.queues),
            store: RwLock::new(Some(Arc::new(store))),
            hub,
            closing: AtomicBool::new(false),
            shutdown_tx,
            active: AtomicUsize::new(0),
            drained: Notify::new(),
            round_robin: AtomicUsize::new(0),
            files: Mutex::new(Some(files)),
            written: watch::channel(0).0,
            delays: Arc::new(delays),
            transactions: Arc::new(transactions),
            cfg,
        });
        let mut tasks = vec![
            tokio::spawn(Arc::clone(&inner).revive_loop()),
            tokio::spawn(Arc::clone(&inner).persist_loop()),
            tokio::spawn(Arc::clone(&inner).timer_flush_loop()),
        ];
        // Delayed delivery and transaction checks write; a replica leaves them to its master
        // and follows their records in the log instead.
        if writes {
            tasks.push(tokio::spawn(Arc::clone(&inner).timer_loop()));
            tasks.push(tokio::spawn(Arc::clone(&inner).transaction_loop()));
        } else {
            tasks.push(tokio::spawn(Arc::clone(&inner).replica_state_loop()));
        }
        tracing::info!(
            broker_set = %inner.cfg.broker_set,
            broker_id = inner.cfg.broker_id,
            incarnation = inner.consumers.incarnation(),
            "broker opened"
        );
        Ok(Broker { inner, tasks })
    }

    /// The `comet.v1.BrokerService` implementation over this broker (cheap to clone).
    pub fn service(&self) -> BrokerGrpc {
        BrokerGrpc::new(Arc::clone(&self.inner))
    }

    /// The shared state (for the replication supervisor).
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Progress of `group` on (`topic`, `queue_id`), or `None` if the group never received
    /// from that queue (for admin tools and tests).
    pub fn consumer_progress(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Option<ConsumerProgress> {
        let key = QueueKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
            queue_id,
        };
        let slot = self.inner.consumers.get(&key)?;
        let st = slot.state.lock();
        st.initialized.then(|| ConsumerProgress {
            ack_offset: st.ack_offset(),
            pop_offset: st.pop_offset,
            inflight: st.inflight.len(),
        })
    }

    /// Counters of delayed delivery (pending timers, delivered, deduplicated after a restart,
    /// lost to retention).
    pub fn timer_stats(&self) -> TimerStats {
        self.inner.delays.stats()
    }

    /// Counters of transactional messages (pending, committed, rolled back, discarded after the
    /// maximum number of checks, checks sent).
    pub fn transaction_stats(&self) -> TransactionStats {
        self.inner.transactions.stats()
    }

    /// Writes the changed consumer state now (it is also written every
    /// `state_persist_interval` and at shutdown), e.g. before a planned hard stop.
    ///
    /// # Errors
    /// I/O errors of the consumer-state log.
    pub async fn persist_state(&self) -> Result<(), BrokerError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.persist_once(true))
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))?
    }

    /// Stops accepting calls (new ones fail with gRPC UNAVAILABLE), ends long polls, waits up
    /// to `shutdown_grace` for running calls, persists the consumer state, then flushes,
    /// checkpoints and closes the store.
    ///
    /// # Errors
    /// [`BrokerError::DrainTimeout`] if calls outlived the grace period (everything is still
    /// persisted and closed); I/O errors of the final persistence or store close.
    pub async fn shutdown(mut self) -> Result<(), BrokerError> {
        let inner = Arc::clone(&self.inner);
        inner.closing.store(true, Ordering::Release);
        inner.shutdown_tx.send_replace(true);
        inner.transactions.close_watchers();
        let drain = inner.drain().await;
        for t in std::mem::take(&mut self.tasks) {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "broker background task failed");
            }
        }
        // Timers scheduled and committed so far become durable.
        let delays = Arc::clone(&inner.delays);
        let timers = tokio::task::spawn_blocking(move || delays.timer.flush())
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))?;
        let tx = Arc::clone(&inner.transactions);
        let written = tokio::task::spawn_blocking(move || tx.write_checkpoint())
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))?;
        if let Err(e) = written {
            tracing::warn!(error = %e, "transaction checkpoint not written; the next start scans more");
        }
        // Final state: a full snapshot.
        let state_inner = Arc::clone(&inner);
        let persisted = tokio::task::spawn_blocking(move || state_inner.persist_final())
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))?;
        let store = inner.store.write().take();
        let closed = match store {
            None => Ok(()),
            Some(store) => tokio::task::spawn_blocking(move || match Arc::try_unwrap(store) {
                Ok(store) => store.close(),
                Err(shared) => {
                    // A blocking read of a cancelled call still holds the store: make
                    // everything durable now; the last holder's drop closes it.
                    shared.flush()?;
                    shared.checkpoint()
                }
            })
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))?
            .map_err(BrokerError::from),
        };
        tracing::info!(broker_set = %inner.cfg.broker_set, "broker shut down");
        persisted?;
        timers?;
        closed?;
        drain
    }
}

impl Broker {
    /// Tells when this instance's store has let go of its data directory (its last user,
    /// e.g. the blocking read of a cancelled call, may outlive [`Broker::shutdown`]). `None`
    /// if the store is already closed.
    pub(crate) fn store_released(&self) -> Option<comet_store::Released> {
        self.inner.store.read().as_ref().map(|s| s.released())
    }

    /// A crash-like stop for tests and tools: background tasks end and the files are
    /// released (locks included), but nothing is persisted, flushed or checkpointed beyond
    /// what already was, exactly as if the process had been killed after the last write.
    /// Returns once the data directory can be opened again.
    pub async fn abandon(mut self) {
        let inner = Arc::clone(&self.inner);
        inner.closing.store(true, Ordering::Release);
        inner.shutdown_tx.send_replace(true);
        inner.transactions.close_watchers();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        drop(inner.files.lock().take());
        let store = inner.store.write().take();
        if let Some(store) = store {
            let _ = tokio::task::spawn_blocking(move || {
                if let Ok(store) = Arc::try_unwrap(store) {
                    store.abandon();
                }
            })
            .await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Background tasks end with the broker even without an explicit shutdown.
        self.inner.shutdown_tx.send_replace(true);
    }
}

impl Inner {
    /// Registers a call (counted until the guard drops, so shutdown drains it); refused once
    /// shutdown began.
    pub(crate) fn enter(self: &Arc<Self>) -> Result<CallGuard, tonic::Status> {
        self.active.fetch_add(1, Ordering::AcqRel);
        let guard = CallGuard(Arc::clone(self));
        if self.closing.load(Ordering::Acquire) {
            return Err(tonic::Status::unavailable(format!(
                "broker {} is shutting down",
                self.cfg.broker_set
            )));
        }
        Ok(guard)
    }

    /// Ends a call registered by `enter`.
    fn leave(&self) {
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }

    async fn drain(&self) -> Result<(), BrokerError> {
        let grace = self.cfg.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let n = self.active.load(Ordering::Acquire);
            if n == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let calls = self.active.load(Ordering::Acquire);
                if calls == 0 {
                    return Ok(());
                }
                tracing::warn!(calls, ?grace, "calls still running at shutdown");
                return Err(BrokerError::DrainTimeout { calls, grace });
            }
        }
    }

    /// Takes the store out (an abandoned instance releases its directory).
    pub(crate) fn take_store(&self) -> Option<Arc<MessageStore>> {
        self.store.write().take()
    }

    pub(crate) fn store(&self) -> Result<Arc<MessageStore>, Outcome> {
        self.store
            .read()
            .clone()
            .ok_or((Code::HaNotAvailable, SHUTTING_DOWN.to_owned()))
    }

    fn max_attempts(&self, idx: &MetaIndex, group: &str) -> u32 {
        idx.group(group)
            .map_or(self.cfg.default_max_retries, |g| g.max_retries)
            .saturating_add(1)
    }

    fn extra_delay(&self, idx: &MetaIndex, group: &str, attempts: u32) -> i64 {
        match self.cfg.redelivery {
            RedeliveryDelay::InvisibleTime => 0,
            RedeliveryDelay::DeadlinePlusGroupBackoff => {
                let d = idx.group(group).map_or_else(
                    || Backoff::default().delay(attempts),
                    |g| g.backoff.delay(attempts),
                );
                duration_ms(d)
            }
        }
    }

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

    /// Waits until the in-sync replicas hold the log below `end` (SYNC replication only).
    pub(crate) async fn replicated(&self, end: i64) -> Result<(), Outcome> {
        match &self.role {
            EngineRole::Master {
                tracker,
                sync: true,
                timeout,
            } => tracker.wait(end, *timeout).await,
            _ => Ok(()),
        }
    }

    /// A replica instance whose broker the metadata already names master: its supervisor is
    /// about to install the master instance.
    pub(crate) fn awaits_promotion(&self) -> bool {
        matches!(self.role, EngineRole::Replica)
            && matches!(
                crate::ha::role::decide_role(
                    &self.meta.current(),
                    &self.cfg.broker_set,
                    self.cfg.broker_id
                ),
                crate::ha::role::Role::Master { .. }
            )
    }

    /// Every group's state on every queue (for replicas; see `ha::consumer_sync`).
    pub(crate) fn consumer_records(&self) -> Vec<QueueRecord> {
        self.consumers
            .all()
            .iter()
            .filter_map(|slot| slot.record())
            .collect()
    }

    /// Adopts the master's consumer state (a replica): each queue takes the master's pop
    /// position and entries in flight as they are. The replica arms no visibility timers for
    /// them: the master redelivers its own messages, and a promoted replica reopens its
    /// instance, which arms them from the persisted state. Returns how many queues changed.
    pub(crate) fn adopt_consumer_state(&self, records: Vec<QueueRecord>) -> usize {
        let mut changed = 0;
        for r in records {
            let slot = self.consumers.get_or_create(&r.key);
            {
                let mut st = slot.state.lock();
                let same = st.initialized
                    && st.pop_offset == r.pop_offset
                    && st.inflight.len() == r.inflight.len()
                    && st
                        .inflight
                        .iter()
                        .zip(&r.inflight)
                        .all(|((o, f), (ro, rf))| {
                            o == ro
                                && InFlight {
                                    dlq_pending: false,
                                    ..*f
                                } == *rf
                        });
                if same {
                    continue;
                }
                let mut fresh = crate::state::QueueState::starting_at(r.pop_offset);
                for (offset, f) in r.inflight {
                    fresh.insert(offset, f);
                }
                *st = fresh;
            }
            self.consumers.mark_dirty(&slot);
            changed += 1;
        }
        changed
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
            let records: Vec<_> = halves
                .into_iter()
                .map(transaction::to_half_record)
                .collect();
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

    // ---------------------------------------------------------------------- transactions

    pub async fn end_transaction(&self, req: EndTransactionRequest) -> EndTransactionResponse {
        let reply = |code: Code, msg: String| EndTransactionResponse {
            status: Some(status(code, msg)),
        };
        let topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("");
        if topic.is_empty() {
            return reply(Code::IllegalTopic, "EndTransaction names no topic".into());
        }
        let resolution = TransactionResolution::try_from(req.resolution)
            .unwrap_or(TransactionResolution::Unspecified);
        let plan = match self.transactions.plan_end(
            topic,
            &req.message_id,
            &req.transaction_id,
            resolution,
        ) {
            Ok(p) => p,
            Err((code, msg)) => return reply(code, msg),
        };
        let (half_offset, physical_offset, transaction_id, resolution) = match plan {
            EndPlan::Done(msg) => return reply(Code::Ok, msg),
            EndPlan::Write {
                half_offset,
                physical_offset,
                transaction_id,
                resolution,
            } => (half_offset, physical_offset, transaction_id, resolution),
        };
        let store = match self.store() {
            Ok(s) => s,
            Err((code, msg)) => return reply(code, msg),
        };
        let (tx, idx) = (Arc::clone(&self.transactions), self.meta.index());
        let id = transaction_id.clone();
        let write =
            move || tx.write_end(&store, &idx, half_offset, physical_offset, &id, resolution);
        let written = match self.cfg.flush {
            comet_store::FlushPolicy::Async { .. } => write(),
            comet_store::FlushPolicy::Sync { .. } => blocking(write).await.and_then(|r| r),
        };
        let written = match written {
            Ok(()) => match self.store() {
                Ok(store) => self.replicated(store.write_offset()).await,
                Err(o) => Err(o),
            },
            Err(o) => Err(o),
        };
        match written {
            Ok(()) => {
                tracing::debug!(transaction_id = %transaction_id, ?resolution, source = req.source,
                    "transaction resolved");
                reply(Code::Ok, "OK".into())
            }
            Err((code, msg)) => reply(code, msg),
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

    // ------------------------------------------------------------------------------ pop

    pub async fn pop(&self, req: ReceiveMessageRequest) -> PopMessageResponse {
        match self.pop_inner(req).await {
            Ok(messages) if !messages.is_empty() => PopMessageResponse {
                status: Some(ok()),
                messages,
            },
            Ok(_) => PopMessageResponse {
                status: Some(status(Code::MessageNotFound, "no new message")),
                messages: Vec::new(),
            },
            Err((code, msg)) => PopMessageResponse {
                status: Some(status(code, msg)),
                messages: Vec::new(),
            },
        }
    }

    async fn pop_inner(&self, req: ReceiveMessageRequest) -> Result<Vec<v2::Message>, Outcome> {
        let group = req
            .group
            .as_ref()
            .map(|g| g.name.clone())
            .unwrap_or_default();
        if group.is_empty() {
            return Err((Code::IllegalConsumerGroup, "consumer group is empty".into()));
        }
        // The group's dead-letter topic must be storable, or exhausted messages could never
        // leave the group.
        if let Err(e) = comet_store::record::validate_topic(&format!("{DLQ_PREFIX}{group}")) {
            return Err((
                Code::IllegalConsumerGroup,
                format!(
                    "consumer group {group:?} cannot have a dead-letter topic ({e}); use at most \
                     122 characters of letters, digits and % | _ -"
                ),
            ));
        }
        let (mq, topic) = crate::pull::queue_topic(req.message_queue.as_ref())?;
        let filter = Filter::from_request(req.filter_expression.as_ref())
            .map_err(|e| (Code::IllegalFilterExpression, e.to_string()))?;
        if req.batch_size <= 0 {
            return Err((
                Code::BadRequest,
                format!("batch_size must be positive, got {}", req.batch_size),
            ));
        }
        let batch = (req.batch_size as u32).min(self.cfg.max_batch_size) as usize;
        let invisible = match req.invisible_duration.as_ref() {
            None => self.cfg.default_invisible_duration,
            Some(d) => match convert::to_duration(d) {
                Some(d) if !d.is_zero() => d.min(self.cfg.max_invisible_duration),
                _ => {
                    return Err((
                        Code::IllegalInvisibleTime,
                        format!(
                            "invisible_duration must be positive, got {}s {}ns",
                            d.seconds, d.nanos
                        ),
                    ));
                }
            },
        };
        let long_poll = req
            .long_polling_timeout
            .as_ref()
            .and_then(convert::to_duration)
            .unwrap_or(Duration::ZERO)
            .min(self.cfg.max_long_polling);
        let idx = self.meta.index();
        let queue_count = idx.queues(&topic, Access::Read)?;
        let queues: Vec<i32> = match mq.id {
            -1 => (0..queue_count as i32).collect(),
            id if id >= 0 && (id as u32) < queue_count => vec![id],
            id => {
                return Err((
                    Code::BadRequest,
                    format!(
                        "queue id {id} of topic {topic:?} is outside 0..{queue_count} on broker set {}",
                        self.cfg.broker_set
                    ),
                ));
            }
        };
        let filter = Arc::new(filter);
        let deadline = tokio::time::Instant::now() + long_poll;
        let mut arrivals = self.hub.subscribe(&topic);
        let mut shutdown = self.shutdown_tx.subscribe();
        loop {
            arrivals.borrow_and_update();
            let (msgs, more) = self
                .pop_once(&group, &topic, &queues, &filter, batch, invisible)
                .await?;
            if !msgs.is_empty() {
                return Ok(msgs);
            }
            if self.closing.load(Ordering::Acquire) {
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
                _ = shutdown.wait_for(|v| *v) => return Ok(Vec::new()),
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
    ) -> Result<(Vec<v2::Message>, bool), Outcome> {
        let start = self.round_robin.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        let mut more = false;
        for i in 0..queues.len() {
            if out.len() >= batch {
                break;
            }
            let queue_id = queues[(start + i) % queues.len()];
            let key = QueueKey {
                group: group.to_owned(),
                topic: topic.to_owned(),
                queue_id,
            };
            let slot = self.consumers.get_or_create(&key);
            let (got, unexamined) = self
                .pop_queue(&slot, filter, batch - out.len(), invisible)
                .await?;
            out.extend(got);
            more |= unexamined;
        }
        Ok((out, more))
    }

    async fn pop_queue(
        &self,
        slot: &Arc<QueueSlot>,
        filter: &Arc<Filter>,
        want: usize,
        invisible: Duration,
    ) -> Result<(Vec<v2::Message>, bool), Outcome> {
        let _pop = slot.pop_lock.lock().await;
        let store = self.store()?;
        let key = &slot.key;
        let idx = self.meta.index();
        let max_attempts = self.max_attempts(&idx, &key.group);
        let fifo = idx.group(&key.group).is_some_and(|g| g.fifo);
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
            if !st.initialized {
                st.pop_offset = match self.cfg.consume_from {
                    ConsumeFrom::First => store.min_offset(&key.topic, key.queue_id),
                    ConsumeFrom::Last => store.max_offset(&key.topic, key.queue_id),
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
        let max_offset = store.max_offset(&key.topic, key.queue_id);
        if redeliver.is_empty() && (budget == 0 || from >= max_offset) {
            return Ok((Vec::new(), false));
        }
        // Phase 2: read from the store. New messages near the end of the log were written
        // moments ago and are in the page cache: read them here, which costs far less than
        // a trip to the blocking pool and back. Older ones (and redeliveries) may need the
        // disk: read them off the async runtime.
        let hot = redeliver.is_empty()
            && store
                .queue_entry(&key.topic, key.queue_id, from)
                .is_some_and(|e| store.write_offset() - e.physical_offset <= HOT_READ_BYTES);
        let read = if hot {
            read_queue(&store, &key.topic, key.queue_id, redeliver, from, budget, filter)
        } else {
            let (topic, queue_id, f2) = (key.topic.clone(), key.queue_id, Arc::clone(filter));
            let reader = Arc::clone(&store);
            blocking(move || read_queue(&reader, &topic, queue_id, redeliver, from, budget, &f2))
                .await?
        }
        .map_err(|e| {
            tracing::error!(topic = %key.topic, queue_id = key.queue_id, error = %e, "pop read failed");
            store_outcome(&e)
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
                    let group = if fifo {
                        m.message
                            .properties
                            .system
                            .get(convert::SYS_MESSAGE_GROUP)
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
            more = budget > 0 && st.pop_offset < store_max(&store, key);
            self.consumers.mark_changed(slot);
        }
        // The pop is answered without waiting for its state to be written (a crash before the
        // write redelivers the messages: at least once), but the write happens now.
        self.persist_inline();
        if released {
            self.hub.notify(&key.topic);
        }
        tracing::debug!(group = %key.group, topic = %key.topic, queue_id = key.queue_id,
            count = deliveries.len(), "popped");
        let broker_set = &self.cfg.broker_set;
        let messages = deliveries
            .into_iter()
            .map(|(m, h, attempt)| {
                convert::to_proto(
                    &m,
                    Delivery {
                        receipt_handle: h.encode(broker_set),
                        attempt,
                        invisible,
                        advertised_addr: &self.cfg.advertised_addr,
                    },
                )
            })
            .collect();
        Ok((messages, more))
    }

    fn handle(&self, key: &QueueKey, offset: i64, generation: u64) -> ReceiptHandle {
        ReceiptHandle {
            queue_id: key.queue_id,
            offset,
            generation,
            scope: handle::scope(&key.group, &key.topic),
        }
    }

    /// Finds the in-flight entry a receipt handle names, if the handle is current.
    fn resolve(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
    ) -> Result<(Arc<QueueSlot>, ReceiptHandle), Outcome> {
        if group.is_empty() {
            return Err((Code::IllegalConsumerGroup, "consumer group is empty".into()));
        }
        let h = ReceiptHandle::decode(receipt_handle, &self.cfg.broker_set, group, topic)
            .map_err(|e| (Code::InvalidReceiptHandle, e.to_string()))?;
        let key = QueueKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
            queue_id: h.queue_id,
        };
        let stale = || {
            (
                Code::InvalidReceiptHandle,
                format!(
                    "receipt handle of {topic:?} queue {} offset {} is stale: the message was \
                     already acknowledged, dead-lettered, re-armed or redelivered with a newer handle",
                    h.queue_id, h.offset
                ),
            )
        };
        let slot = self.consumers.get(&key).ok_or_else(stale)?;
        let current = slot
            .state
            .lock()
            .inflight
            .get(&h.offset)
            .is_some_and(|f| f.generation == h.generation);
        if !current {
            return Err(stale());
        }
        Ok((slot, h))
    }

    // ------------------------------------------------------------------------------ ack

    pub fn ack(&self, req: AckMessageRequest) -> AckMessageResponse {
        let group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or("");
        let topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("");
        if req.entries.is_empty() {
            return AckMessageResponse {
                status: Some(status(Code::BadRequest, "the request carries no entries")),
                entries: Vec::new(),
            };
        }
        let entries: Vec<AckMessageResultEntry> = req
            .entries
            .iter()
            .map(|e| {
                let st = match self.ack_one(group, topic, &e.receipt_handle) {
                    Ok(()) => ok(),
                    Err((code, msg)) => status(code, msg),
                };
                AckMessageResultEntry {
                    message_id: e.message_id.clone(),
                    receipt_handle: e.receipt_handle.clone(),
                    status: Some(st),
                }
            })
            .collect();
        let st = overall(
            &entries
                .iter()
                .filter_map(|e| e.status.as_ref())
                .collect::<Vec<_>>(),
        );
        AckMessageResponse {
            status: Some(st),
            entries,
        }
    }

    fn ack_one(&self, group: &str, topic: &str, receipt_handle: &str) -> Result<(), Outcome> {
        let (slot, h) = self.resolve(group, topic, receipt_handle)?;
        let mut st = slot.state.lock();
        let was_full = st.inflight.len() >= self.cfg.max_inflight_per_queue;
        let released = match st.inflight.get(&h.offset) {
            Some(f) if f.generation == h.generation => {
                st.complete(h.offset, now_ms()).unwrap_or(false)
            }
            _ => {
                return Err((
                    Code::InvalidReceiptHandle,
                    "receipt handle became stale while being acknowledged".into(),
                ));
            }
        };
        drop(st);
        // Written by the caller's `state_written` (or the next periodic persist).
        self.consumers.mark_changed(&slot);
        if was_full || released {
            self.hub.notify(topic);
        }
        Ok(())
    }

    // ----------------------------------------------------------------- change invisible

    pub fn change_invisible(
        &self,
        req: ChangeInvisibleDurationRequest,
    ) -> ChangeInvisibleDurationResponse {
        let reply = |st: Status, handle: String| ChangeInvisibleDurationResponse {
            status: Some(st),
            receipt_handle: handle,
        };
        let group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or("");
        let topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("");
        let Some(d) = req.invisible_duration.as_ref() else {
            return reply(
                status(Code::IllegalInvisibleTime, "invisible_duration is required"),
                req.receipt_handle,
            );
        };
        // Negative reads as zero (visible at once); sub-second values are honoured.
        let d = convert::to_duration(d)
            .unwrap_or(Duration::ZERO)
            .min(self.cfg.max_invisible_duration);
        let (slot, h) = match self.resolve(group, topic, &req.receipt_handle) {
            Ok(x) => x,
            Err((code, msg)) => return reply(status(code, msg), req.receipt_handle),
        };
        let now = now_ms();
        let mut st = slot.state.lock();
        let Some(f) = st
            .inflight
            .get_mut(&h.offset)
            .filter(|f| f.generation == h.generation && !f.dlq_pending)
        else {
            return reply(
                status(
                    Code::InvalidReceiptHandle,
                    "receipt handle became stale while being changed",
                ),
                req.receipt_handle,
            );
        };
        f.generation = self.consumers.next_generation();
        f.deadline_ms = now.saturating_add(duration_ms(d));
        f.visible_at_ms = f.deadline_ms;
        let (g, v) = (f.generation, f.visible_at_ms);
        st.ready.remove(&h.offset);
        drop(st);
        self.consumers.schedule(&slot, h.offset, g, v);
        // Written by the caller's `state_written` (or the next periodic persist).
        self.consumers.mark_changed(&slot);
        let new = self
            .handle(&slot.key, h.offset, g)
            .encode(&self.cfg.broker_set);
        reply(ok(), new)
    }

    // ----------------------------------------------------------------------- dead letter

    pub async fn forward_to_dlq(
        &self,
        req: ForwardMessageToDeadLetterQueueRequest,
    ) -> ForwardMessageToDeadLetterQueueResponse {
        let group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or("");
        let topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("");
        let result = async {
            let (slot, h) = self.resolve(group, topic, &req.receipt_handle)?;
            let attempts = {
                let mut st = slot.state.lock();
                let f = st
                    .inflight
                    .get_mut(&h.offset)
                    .filter(|f| f.generation == h.generation && !f.dlq_pending)
                    .ok_or((
                        Code::InvalidReceiptHandle,
                        "receipt handle became stale while being forwarded".to_owned(),
                    ))?;
                f.dlq_pending = true;
                f.attempts
            };
            let item = DlqItem {
                slot,
                offset: h.offset,
                generation: h.generation,
                attempts,
            };
            let mut results = self.dead_letter(vec![item]).await;
            results.pop().unwrap_or(Ok(()))
        }
        .await;
        ForwardMessageToDeadLetterQueueResponse {
            status: Some(match result {
                Ok(()) => ok(),
                Err((code, msg)) => status(code, msg),
            }),
        }
    }

    /// Appends each item's message to `%DLQ%<group>` and completes it. On failure the item
    /// stays in flight and is retried a little later by the revive task.
    async fn dead_letter(&self, items: Vec<DlqItem>) -> Vec<Result<(), Outcome>> {
        let store = match self.store() {
            Ok(s) => s,
            Err(o) => {
                for it in &items {
                    self.dlq_failed(it);
                }
                return items.iter().map(|_| Err(o.clone())).collect();
            }
        };
        let keys: Vec<(String, String, i32, i64, u32)> = items
            .iter()
            .map(|i| {
                (
                    i.slot.key.group.clone(),
                    i.slot.key.topic.clone(),
                    i.slot.key.queue_id,
                    i.offset,
                    i.attempts,
                )
            })
            .collect();
        let outcomes = blocking(move || {
            keys.iter()
                .map(|(group, topic, queue_id, offset, attempts)| {
                    let Some(e) = store.queue_entry(topic, *queue_id, *offset) else {
                        return Ok(false);
                    };
                    let m = match store.read(e.physical_offset) {
                        Ok(m) => m,
                        Err(StoreError::OffsetOutOfRange { .. }) => return Ok(false),
                        Err(StoreError::Corrupt { offset, reason }) => {
                            tracing::error!(topic = %topic, queue_id, offset, %reason,
                                "corrupt record cannot be dead-lettered; dropped");
                            return Ok(false);
                        }
                        Err(e) => return Err(e),
                    };
                    let dlq_topic = format!("{DLQ_PREFIX}{group}");
                    let rec = convert::to_dlq_record(&m, &dlq_topic, group, *attempts);
                    store.append(&rec).map(|_| true)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let outcomes = match outcomes {
            Ok(v) => v,
            Err(o) => {
                for it in &items {
                    self.dlq_failed(it);
                }
                return items.iter().map(|_| Err(o.clone())).collect();
            }
        };
        items
            .iter()
            .zip(outcomes)
            .map(|(it, r)| match r {
                Ok(stored) => {
                    let key = &it.slot.key;
                    if stored {
                        tracing::info!(group = %key.group, topic = %key.topic, queue_id = key.queue_id,
                            offset = it.offset, deliveries = it.attempts, "message moved to the dead-letter queue");
                    } else {
                        tracing::warn!(group = %key.group, topic = %key.topic, queue_id = key.queue_id,
                            offset = it.offset, "message to dead-letter is no longer stored; dropped");
                    }
                    let mut st = it.slot.state.lock();
                    let released = st
                        .inflight
                        .get(&it.offset)
                        .is_some_and(|f| f.generation == it.generation)
                        && st.complete(it.offset, now_ms()).unwrap_or(false);
                    drop(st);
                    self.consumers.mark_dirty(&it.slot);
                    if released {
                        self.hub.notify(&key.topic);
                    }
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(group = %it.slot.key.group, topic = %it.slot.key.topic,
                        offset = it.offset, error = %e, "dead-lettering failed; will retry");
                    self.dlq_failed(it);
                    Err(store_outcome(&e))
                }
            })
            .collect()
    }

    fn dlq_failed(&self, it: &DlqItem) {
        let retry_at = now_ms() + 5_000;
        let mut st = it.slot.state.lock();
        if let Some(f) = st.inflight.get_mut(&it.offset)
            && f.generation == it.generation
        {
            f.dlq_pending = false;
            f.visible_at_ms = f.visible_at_ms.max(retry_at);
            let v = f.visible_at_ms;
            drop(st);
            self.consumers
                .schedule(&it.slot, it.offset, it.generation, v);
        }
    }

    // -------------------------------------------------------------------- background

    /// Fires visibility timers: an expired message becomes ready for redelivery (waking long
    /// polls of its topic) or, with its deliveries used up, goes to the dead-letter queue.
    async fn revive_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown_tx.subscribe();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let purged = self.consumers.purge_stale_timers();
            if purged > 0 {
                tracing::debug!(purged, "stale visibility timers purged");
            }
            let now = now_ms();
            let due = self.consumers.take_due(now, 4096);
            if !due.is_empty() {
                self.fire(due, now).await;
                continue;
            }
            let wait = self
                .consumers
                .next_due()
                .map_or(1000, |at| (at - now).clamp(1, 1000));
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.consumers.timer_added.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            }
        }
    }

    async fn fire(&self, due: Vec<Timer>, now: i64) {
        let idx = self.meta.index();
        let mut wake: HashSet<String> = HashSet::new();
        let mut dlq = Vec::new();
        for t in due {
            let max_attempts = self.max_attempts(&idx, &t.slot.key.group);
            let mut st = t.slot.state.lock();
            let Some(f) = st.inflight.get_mut(&t.offset) else {
                continue;
            };
            if f.generation != t.generation || f.dlq_pending || f.visible_at_ms > now {
                continue;
            }
            if f.attempts >= max_attempts {
                f.dlq_pending = true;
                let attempts = f.attempts;
                drop(st);
                dlq.push(DlqItem {
                    slot: Arc::clone(&t.slot),
                    offset: t.offset,
                    generation: t.generation,
                    attempts,
                });
            } else {
                st.ready.insert(t.offset);
                wake.insert(t.slot.key.topic.clone());
            }
        }
        for topic in &wake {
            self.hub.notify(topic);
        }
        if !dlq.is_empty() {
            self.dead_letter(dlq).await;
        }
    }

    /// Delivers due delayed messages (see [`crate::delay`]).
    async fn timer_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown_tx.subscribe();
        // Longest sleep without news: no timer is due sooner, or the wheel's next slot starts.
        const IDLE_MS: i64 = 1000;
        // Pause after a failed round: short at first, since the usual cause passes quickly (a
        // new master's write gate opening just after its store did), doubling up to IDLE_MS so
        // a lasting failure (disk full) is not retried in a busy loop.
        const RETRY_FIRST_MS: i64 = 10;
        let mut retry_ms = RETRY_FIRST_MS;
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            // While a round runs every new timer wakes the next wait.
            self.delays.set_next_wake(i64::MAX);
            let Ok(store) = self.store() else { break };
            let (delays, idx, now) = (Arc::clone(&self.delays), self.meta.index(), now_ms());
            let round = blocking(move || {
                let (due, retry) = delays.take_due(now, 4096)?;
                if due.is_empty() {
                    return Ok(0);
                }
                delays.deliver(&store, &idx, due, retry)
            })
            .await;
            let mut pause = None;
            match round {
                Ok(Ok(0)) => retry_ms = RETRY_FIRST_MS,
                Ok(Ok(_)) => {
                    retry_ms = RETRY_FIRST_MS;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, retry_ms, "delayed delivery round failed; retrying");
                    pause = Some(retry_ms);
                    retry_ms = (retry_ms * 2).min(IDLE_MS);
                }
                Err((_, e)) => {
                    tracing::error!(error = %e, retry_ms, "delayed delivery task failed");
                    pause = Some(retry_ms);
                    retry_ms = (retry_ms * 2).min(IDLE_MS);
                }
            }
            let now = now_ms();
            let wait_ms = pause.unwrap_or_else(|| {
                self.delays
                    .timer
                    .next_due_ms()
                    .map_or(IDLE_MS, |at| (at - now).clamp(1, IDLE_MS))
            });
            self.delays.set_next_wake(now.saturating_add(wait_ms));
            tokio::select! {
                _ = shutdown.changed() => {}
                () = self.delays.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
            }
        }
    }

    /// A replica's copy of the master's timer and transaction state: as the log grows, new
    /// schedule records enter the wheel, due timers whose done record arrived are committed,
    /// and half messages and their ops update the transaction table and its checkpoint (see
    /// [`crate::delay`] and [`crate::transaction`]). Wakes on arrivals in the three system
    /// topics, when a timer comes due, and at least every second.
    async fn replica_state_loop(self: Arc<Self>) {
        const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
        const IDLE_MS: i64 = 1000;
        let mut shutdown = self.shutdown_tx.subscribe();
        let mut arrivals = [
            delay::TIMER_TOPIC,
            transaction::HALF_TOPIC,
            transaction::OP_TOPIC,
        ]
        .map(|t| self.hub.subscribe(t));
        let mut last_checkpoint = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            for a in &mut arrivals {
                a.borrow_and_update();
            }
            let Ok(store) = self.store() else { break };
            let (delays, tx) = (Arc::clone(&self.delays), Arc::clone(&self.transactions));
            let checkpoint = last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
            let round = blocking(move || {
                let now = now_ms();
                delays.catch_up(&store, now)?;
                delays.shadow_commit(&store, now)?;
                tx.follow(&store, now);
                if checkpoint {
                    tx.write_checkpoint()?;
                }
                Ok::<_, BrokerError>(())
            })
            .await;
            if checkpoint {
                last_checkpoint = tokio::time::Instant::now();
            }
            let pause = match round {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "following the timer and transaction records failed; retrying in 1 s");
                    Some(IDLE_MS)
                }
                Err((_, e)) => {
                    tracing::error!(error = %e, "replica state task failed");
                    Some(IDLE_MS)
                }
            };
            let now = now_ms();
            // Due timers waiting for their done record wait for the next arrival.
            let wait_ms = pause
                .or_else(|| self.delays.shadow_waiting().then_some(IDLE_MS))
                .unwrap_or_else(|| {
                    self.delays
                        .timer
                        .next_due_ms()
                        .map_or(IDLE_MS, |at| (at - now).clamp(1, IDLE_MS))
                });
            let [a, b, c] = &mut arrivals;
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = a.changed() => {}
                _ = b.changed() => {}
                _ = c.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
            }
        }
    }

    /// Flushes the timer wheel at the commitlog's flush interval (ASYNC; SYNC sends flush it
    /// themselves), apart from delivery so that a slow fdatasync never delays a due timer.
    async fn timer_flush_loop(self: Arc<Self>) {
        let every = match self.cfg.flush {
            comet_store::FlushPolicy::Async { interval } => interval,
            comet_store::FlushPolicy::Sync { .. } => Duration::from_secs(1),
        };
        let mut shutdown = self.shutdown_tx.subscribe();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|v| *v) => break,
            }
            let delays = Arc::clone(&self.delays);
            match blocking(move || delays.timer.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "flushing the timer wheel failed"),
                Err((_, e)) => tracing::error!(error = %e, "timer flush task failed"),
            }
        }
    }

    /// Checks unresolved transactions when due (broadcast to the watching proxies), discards
    /// those out of checks, and writes the transaction checkpoint every few seconds.
    async fn transaction_loop(self: Arc<Self>) {
        const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
        let mut shutdown = self.shutdown_tx.subscribe();
        let mut last_checkpoint = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let Ok(store) = self.store() else { break };
            // While a round runs, every new half message wakes the next wait.
            self.transactions.set_next_wake(i64::MAX);
            let now = now_ms();
            let (due, next) = self.transactions.take_due(now, 1024);
            if !due.is_empty() {
                let (tx, idx, st) = (
                    Arc::clone(&self.transactions),
                    self.meta.index(),
                    Arc::clone(&store),
                );
                let checks = blocking(move || {
                    let now = now_ms();
                    due.iter()
                        .filter_map(|d| {
                            let outcome = tx.run_check(&st, &idx, d);
                            tx.finish_check(d, outcome, now)
                        })
                        .collect::<Vec<_>>()
                })
                .await;
                match checks {
                    Ok(checks) => {
                        for c in &checks {
                            let proxies = self.transactions.broadcast(c);
                            tracing::debug!(transaction_id = %c.transaction_id, proxies, "transaction check sent");
                        }
                    }
                    Err((_, e)) => tracing::error!(error = %e, "transaction check task failed"),
                }
                continue;
            }
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                last_checkpoint = tokio::time::Instant::now();
                let tx = Arc::clone(&self.transactions);
                match blocking(move || tx.write_checkpoint()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "writing the transaction checkpoint failed")
                    }
                    Err((_, e)) => {
                        tracing::error!(error = %e, "transaction checkpoint task failed")
                    }
                }
            }
            let now = now_ms();
            let wait = next.map_or(1000, |at| (at - now).clamp(1, 1000));
            self.transactions.set_next_wake(now.saturating_add(wait));
            tokio::select! {
                _ = shutdown.changed() => {}
                () = self.transactions.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            }
        }
    }

    /// Writes the consumer-state changes that no call wrote itself (see
    /// [`Inner::persist_inline`]: the log was busy, or the change came from a path that does
    /// not wait for it), compacts the log when it is big, and fdatasyncs it every
    /// `state_persist_interval` (so a power loss loses at most that interval of changes).
    async fn persist_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown_tx.subscribe();
        let mut tick = tokio::time::interval(self.cfg.state_persist_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sync = tokio::select! {
                _ = tick.tick() => true,
                () = self.consumers.changed.notified() => false,
                _ = shutdown.wait_for(|v| *v) => break,
            };
            let me = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || me.persist_once(sync)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "persisting consumer state failed; will retry")
                }
                Err(e) => tracing::error!(error = %e, "consumer-state task failed"),
            }
        }
    }

    /// Appends the changed queues' state to the log (fdatasynced with `sync`), publishes the
    /// change sequence it covers, and compacts when the log is big.
    fn persist_once(&self, sync: bool) -> Result<(), BrokerError> {
        let mut guard = self.files.lock();
        let Some(files) = guard.as_mut() else {
            return Ok(());
        };
        self.write_dirty(files, sync)?;
        if files.needs_compaction(self.cfg.state_compact_bytes) {
            files.compact(|| self.all_records())?;
        }
        Ok(())
    }

    /// Writes the changed queues' state to the log on the calling thread, if nobody else is
    /// writing it: a write to the page cache takes microseconds, far less than handing the
    /// work to another thread and waiting for it to come back. Group commit: one write covers
    /// every change made so far, whoever made it. When the log is busy (a periodic fdatasync)
    /// or due for compaction, the persist task is asked instead. Never fdatasyncs.
    pub(crate) fn persist_inline(&self) {
        if *self.written.borrow() >= self.consumers.change_seq() {
            return;
        }
        let Some(mut guard) = self.files.try_lock() else {
            self.consumers.changed.notify_one();
            return;
        };
        let Some(files) = guard.as_mut() else {
            return;
        };
        if let Err(e) = self.write_dirty(files, false) {
            tracing::warn!(error = %e, "writing consumer state failed; the persist task retries");
        }
        if files.needs_compaction(self.cfg.state_compact_bytes) {
            self.consumers.changed.notify_one();
        }
    }

    /// Writes the dirty queues' records (with `sync`, fdatasyncs) and publishes the change
    /// sequence they cover. The caller holds the state files.
    fn write_dirty(&self, files: &mut StateFiles, sync: bool) -> Result<(), BrokerError> {
        // Read before taking the dirty slots: every change up to `seq` is in one of them.
        let seq = self.consumers.change_seq();
        let dirty = self.consumers.take_dirty();
        let records: Vec<_> = dirty.iter().filter_map(|s| s.record()).collect();
        if let Err(e) = files.append(&records, sync) {
            for s in &dirty {
                self.consumers.requeue_dirty(s);
            }
            return Err(e);
        }
        self.written.send_if_modified(|w| {
            let newer = seq > *w;
            if newer {
                *w = seq;
            }
            newer
        });
        Ok(())
    }

    /// Waits until every consumer-state change made so far is in the state log (bounded: a
    /// failing disk must not hang calls; the change stays in memory and is retried). Writes
    /// it on this thread when it can (see [`Inner::persist_inline`]).
    pub async fn state_written(&self) {
        let seq = self.consumers.change_seq();
        self.persist_inline();
        if *self.written.borrow() >= seq {
            return;
        }
        let mut rx = self.written.subscribe();
        let waited = tokio::time::timeout(STATE_WRITE_WAIT, rx.wait_for(|w| *w >= seq)).await;
        if waited.is_err() {
            tracing::warn!(seq, "consumer state not written in time; answering anyway");
        }
    }

    fn all_records(&self) -> Vec<crate::state::QueueRecord> {
        let mut v: Vec<_> = self
            .consumers
            .all()
            .iter()
            .filter_map(|s| s.record())
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// At shutdown: a full snapshot, then the files are closed.
    fn persist_final(&self) -> Result<(), BrokerError> {
        let seq = self.consumers.change_seq();
        let _ = self.consumers.take_dirty();
        let mut guard = self.files.lock();
        let Some(mut files) = guard.take() else {
            return Ok(());
        };
        files.compact(|| self.all_records())?;
        self.written.send_replace(seq);
        Ok(())
    }
}

fn remove_dir_if_exists(path: &std::path::Path) -> Result<(), BrokerError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BrokerError::state_io("remove", path)(e)),
    }
}

fn remove_if_exists(path: &std::path::Path) -> Result<(), BrokerError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BrokerError::state_io("remove", path)(e)),
    }
}

fn store_max(store: &MessageStore, key: &QueueKey) -> i64 {
    store.max_offset(&key.topic, key.queue_id)
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

/// Reads redeliveries and up to `budget` new matching messages from `from` (blocking).
fn read_queue(
    store: &MessageStore,
    topic: &str,
    queue_id: i32,
    redeliver: Vec<(i64, u64)>,
    from: i64,
    budget: usize,
    filter: &Filter,
) -> Result<QueueRead, StoreError> {
    let read_one = |phys: i64, offset: i64| -> Result<Read, StoreError> {
        match store.read(phys) {
            Ok(m) => Ok(Read::Found(Box::new(m))),
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
        let r = match store.queue_entry(topic, queue_id, off) {
            None => Read::Gone,
            Some(e) => read_one(e.physical_offset, off)?,
        };
        redelivered.push((off, generation, r));
    }
    let mut fresh = Vec::new();
    let mut next_offset = from;
    if budget > 0 {
        let start = from.max(store.min_offset(topic, queue_id));
        let max_before = store.max_offset(topic, queue_id);
        let entries = store.read_queue(topic, queue_id, start, budget.saturating_mul(4).max(256));
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
