//! The broker engine: one broker instance's shared state ([`Inner`]) — its store, consumer
//! state, timer wheel, transaction table and metadata view — and what every operation needs
//! from it: opening, the store handle, call admission, receipt handles, retry limits.
//!
//! A broker instance has one role for its life ([`EngineRole`]); a role change replaces the
//! instance. The operations (`send`, `pop`, `ack`, ...) and the background tasks (`tasks`)
//! each add their own `impl Inner` in their module; nothing here calls them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use comet_proto::comet::v1::ClusterMetadata;
use comet_store::{Arrival, ArrivalListener, MessageStore, StoreConfig};
use comet_vocab::system;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::backoff::Backoff;
use crate::clock::{duration_ms, now_ms};
use crate::config::{BrokerConfig, RedeliveryDelay};
use crate::counters::Counters;
use crate::delay::Delays;
use crate::error::BrokerError;
use crate::ha::tracker::Tracker;
use crate::handle::{self, ReceiptHandle};
use crate::long_poll::ArrivalHub;
use crate::meta::{MetaIndex, MetaView};
use crate::outcome::{Code, Failure, Unavailable};
use crate::persist::StateFiles;
use crate::state::{Consumers, InFlight, QueueKey, QueueRecord, QueueSlot};
use crate::transaction::pending::CheckPolicy;
use crate::transaction::table::{self as transaction, Transactions};

/// What a broker instance is in its broker set. Fixed for the life of the instance: a role
/// change replaces the instance (see the `ha` module).
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
    pub(crate) fn notify(&self) {
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
    pub(crate) cfg: BrokerConfig,
    pub(crate) role: EngineRole,
    /// Woken by every local append (replication streams wait on it).
    pub(crate) append_wake: Arc<AppendWake>,
    pub(crate) store: RwLock<Option<Arc<MessageStore>>>,
    pub(crate) meta: MetaView,
    pub(crate) consumers: Consumers,
    pub(crate) hub: Arc<ArrivalHub>,
    /// Cancelled when the instance stops: new calls are refused, long polls and streams end,
    /// background tasks finish their round and return.
    pub(crate) shutdown: CancellationToken,
    /// The calls running on this instance (a stop waits for them, within its grace period).
    pub(crate) calls: TaskTracker,
    /// The background tasks and replication streams of this instance.
    pub(crate) tasks: TaskTracker,
    pub(crate) round_robin: AtomicUsize,
    pub(crate) files: Mutex<Option<StateFiles>>,
    /// Highest consumer-state change sequence written to the state log.
    pub(crate) written: watch::Sender<u64>,
    /// The timer wheel of delayed messages.
    pub(crate) delays: Arc<Delays>,
    /// Half messages and their resolutions.
    pub(crate) transactions: Arc<Transactions>,
    /// The lite-topic index (see `lite`).
    pub(crate) lite: Arc<crate::lite::LiteIndex>,
    /// Lite consumers' subscriptions (see `lite`).
    pub(crate) lite_subs: crate::lite::Subscriptions,
    /// When each broadcast client last received (see `broadcast`).
    pub(crate) broadcast_clients: crate::owner::Clients,
    /// Dead-letter and revive counts for the metrics.
    pub(crate) counters: Counters,
}

/// A running call, counted by the instance's call tracker until it drops (so a stop drains
/// it; see [`Inner::enter`]).
pub(crate) struct CallGuard {
    _call: TaskTrackerToken,
}

impl Inner {
    /// Opens a broker instance in `role`, preparing its store first (see [`StorePrep`]): runs
    /// the store's recovery, loads the consumer state (in-flight messages come back with their
    /// deadlines), the timer wheel and the pending transactions. A replicated instance opens
    /// with the store's write gate closed; a master's is opened by its supervisor once the
    /// epoch is recorded and the lease is known. Starts no task.
    pub(crate) async fn open(
        cfg: BrokerConfig,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        role: EngineRole,
        prep: StorePrep,
    ) -> Result<Arc<Inner>, BrokerError> {
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
        let lite_dir = cfg.data_dir.join("lite");
        let broker_set = cfg.broker_set.clone();
        let policy = CheckPolicy {
            timeout_ms: duration_ms(cfg.transaction_timeout),
            interval_ms: duration_ms(cfg.transaction_check_interval),
            max_checks: cfg.transaction_max_checks,
        };
        let replicated = !matches!(role, EngineRole::Standalone);
        // The LITE topics known now: their queues are indexed before the instance serves.
        let lite_parents = MetaIndex::build_for(&metadata.borrow(), &cfg.broker_set).lite_topics();
        let (store, files, loaded, delays, transactions, lite) =
            tokio::task::spawn_blocking(move || {
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
                delays.set_own_from(store.max_offset(system::TIMER_TOPIC, 0));
                let transactions =
                    Transactions::recover(&store, &tx_dir, &broker_set, policy, now_ms())?;
                let lite = crate::lite::LiteIndex::open(&lite_dir, &store)?;
                for (parent, queues) in &lite_parents {
                    for q in 0..*queues as i32 {
                        lite.catch_up(&store, parent, q);
                    }
                }
                Ok::<_, BrokerError>((store, files, loaded, delays, transactions, lite))
            })
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))??;
        let inner = Arc::new(Inner {
            role,
            append_wake,
            meta: MetaView::new(metadata, cfg.broker_set.clone()),
            consumers: Consumers::new(loaded.incarnation, loaded.queues),
            store: RwLock::new(Some(Arc::new(store))),
            hub,
            shutdown: CancellationToken::new(),
            calls: TaskTracker::new(),
            tasks: TaskTracker::new(),
            round_robin: AtomicUsize::new(0),
            files: Mutex::new(Some(files)),
            written: watch::channel(0).0,
            delays: Arc::new(delays.with_lateness(crate::delay::lateness_histogram(&cfg.observer))),
            transactions: Arc::new(transactions),
            lite: Arc::new(lite),
            lite_subs: crate::lite::Subscriptions::default(),
            broadcast_clients: crate::owner::Clients::default(),
            counters: Counters::default(),
            cfg,
        });
        Ok(inner)
    }
}

impl Inner {
    /// Registers a call (counted until the guard drops, so shutdown drains it); refused once
    /// shutdown began. The call is counted before the check, so a stop that began after the
    /// check waits for it.
    pub(crate) fn enter(&self) -> Result<CallGuard, Unavailable> {
        let call = self.calls.token();
        if self.shutdown.is_cancelled() {
            return Err(Unavailable(format!(
                "broker {} is shutting down",
                self.cfg.broker_set
            )));
        }
        Ok(CallGuard { _call: call })
    }

    /// Whether the instance is stopping (or stopped).
    pub(crate) fn closing(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Stops the instance: refuses new calls, ends long polls and streams, and tells the
    /// background tasks to return. Idempotent.
    pub(crate) fn stop(&self) {
        self.shutdown.cancel();
        self.calls.close();
        self.tasks.close();
        self.transactions.close_watchers();
    }

    /// Waits up to `shutdown_grace` for the running calls (after [`Inner::stop`]).
    pub(crate) async fn drain(&self) -> Result<(), BrokerError> {
        let grace = self.cfg.shutdown_grace;
        if tokio::time::timeout(grace, self.calls.wait()).await.is_ok() {
            return Ok(());
        }
        let calls = self.calls.len();
        if calls == 0 {
            return Ok(());
        }
        tracing::warn!(calls, ?grace, "calls still running at shutdown");
        Err(BrokerError::DrainTimeout { calls, grace })
    }

    pub(crate) fn store(&self) -> Result<Arc<MessageStore>, Failure> {
        self.store.read().clone().ok_or_else(Failure::shutting_down)
    }

    /// Deliveries before a message of `owner` (a group, or a broadcast client of one) is
    /// dead-lettered.
    pub(crate) fn max_attempts(&self, idx: &MetaIndex, owner: &str) -> u32 {
        idx.group(crate::owner::group_of(owner))
            .map_or(self.cfg.default_max_retries, |g| g.max_retries)
            .saturating_add(1)
    }

    pub(crate) fn extra_delay(&self, idx: &MetaIndex, owner: &str, attempts: u32) -> i64 {
        match self.cfg.redelivery {
            RedeliveryDelay::InvisibleTime => 0,
            RedeliveryDelay::DeadlinePlusGroupBackoff => {
                let d = idx.group(crate::owner::group_of(owner)).map_or_else(
                    || Backoff::default().delay(attempts),
                    |g| g.backoff.delay(attempts),
                );
                duration_ms(d)
            }
        }
    }

    /// Waits until the in-sync replicas hold the log below `end` (SYNC replication only).
    pub(crate) async fn replicated(&self, end: i64) -> Result<(), Failure> {
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

    /// The receipt handle of a delivery of `offset` at `generation`.
    pub(crate) fn handle(&self, key: &QueueKey, offset: i64, generation: u64) -> ReceiptHandle {
        ReceiptHandle {
            queue_id: key.queue_id,
            offset,
            generation,
            scope: handle::scope(&key.group, &key.topic),
        }
    }

    /// Finds the in-flight entry a receipt handle names, if the handle is current.
    pub(crate) fn resolve(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
    ) -> Result<(Arc<QueueSlot>, ReceiptHandle), Failure> {
        if group.is_empty() {
            return Err(Failure::new(
                Code::IllegalConsumerGroup,
                "consumer group is empty",
            ));
        }
        let h = ReceiptHandle::decode(receipt_handle, &self.cfg.broker_set, group, topic)
            .map_err(|e| Failure::new(Code::InvalidReceiptHandle, e.to_string()))?;
        let key = QueueKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
            queue_id: h.queue_id,
        };
        let stale = || {
            Failure::new(
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
