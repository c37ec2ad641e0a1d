//! High availability: a broker set is one master and N replicas; the controller elects the
//! master, the broker follows.
//!
//! ```text
//!  metadata watch ─► decide_role ─► supervisor ─┬─ Master(epoch): broker instance + Tracker,
//!  lease watch   ─► write gate                  │    ReplicationGrpc streams the log,
//!                                               │    sync-state-set manager ─► controller
//!                                               ├─ Replica(master): broker instance (read-only)
//!                                               │    + follower ─► append_raw
//!                                               └─ Waiting: read-only instance, no follower
//! ```
//!
//! - **Roles come from the controller** (`role::decide_role`): `BrokerSet.master_broker_id`
//!   at `master_epoch`. The broker id is only an identity.
//! - **One instance per role.** A role change closes the broker instance (drains calls,
//!   persists state, closes the store) and opens a new one in the new role, so promotion is
//!   plain recovery: transactions, consumer state and queue offsets are rebuilt from disk as
//!   after a restart. [`HaBroker::service`] always points at the current instance. Every
//!   stop — a role change, [`HaBroker::shutdown`], [`HaBroker::abandon`] — goes through the
//!   supervisor, which aborts *and joins* the old role's follower and manager before it closes
//!   (or abandons) the instance and waits for the store to let go of the data directory, so
//!   nothing of the old role still holds the store when the next open takes its lock.
//! - **Fencing.** A replica's store refuses local appends. A master's store accepts them only
//!   until its lease deadline (from the last heartbeat the controller answered, shorter than
//!   the controller's lease), so a master cut off from the controller stops accepting writes
//!   before another can be elected. A master records `(epoch, log end)` in its epoch history
//!   before opening its store to writes.
//! - **Replication** (`service`, `follower`): replicas handshake (epoch histories), cut a
//!   divergent tail or start over (`role::start_action`), then stream raw log bytes that
//!   their store verifies record by record and dispatches. They confirm every chunk; the
//!   master's `tracker::Tracker` turns confirmations into the SYNC watermark and into
//!   sync-state-set changes, which it asks the controller for (`AlterSyncStateSet`, fenced
//!   by epoch). Replicas also adopt the master's consumer state (pop positions and entries in
//!   flight) every `consumer_offsets_interval` (`consumer_sync`).
//! - **Ack contract.** ASYNC: a send is acknowledged once the master wrote it (per its flush
//!   policy); a failover may lose what the replicas had not copied yet. SYNC: a send is
//!   acknowledged only once every member of the sync-state set holds it, and elections pick
//!   only from that set, so a failover loses no acknowledged message. With fewer than
//!   `min_in_sync_replicas` members SYNC sends fail with HA_NOT_AVAILABLE; when the members do
//!   not confirm within `sync_timeout`, with SLAVE_PERSISTENCE_TIMEOUT (the message is stored
//!   on the master and may still replicate: outcome unknown, a retry may duplicate it).

mod config;
mod consumer_sync;
mod follower;
mod lease;
pub(crate) mod role;
mod service;
pub(crate) mod tracker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use comet_proto::comet::v1::ClusterMetadata;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::BrokerApi;
use crate::broker::{Broker, STORE_RELEASE_LIMIT};
use crate::config::BrokerConfig;
use crate::engine::{EngineRole, StorePrep};
use crate::error::BrokerError;
use crate::service::BrokerGrpc;
pub use config::{HaConfig, ReplicationMode};
pub use lease::ControllerLink;
use lease::master_gate;
use role::Role;
pub use service::ReplicationGrpc;
use tracker::{LagLimits, Tracker};

/// A replicated broker's role, as [`HaStatus`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaRole {
    /// Accepts writes (while its lease holds) and streams its log to replicas.
    Master,
    /// Follows the master; serves reads.
    Replica,
    /// Its set has no master; serves reads.
    Waiting,
}

/// What a replicated broker is doing (for logs, tools and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaStatus {
    /// The role of the current instance.
    pub role: HaRole,
    /// The master epoch it serves or follows (0 while waiting).
    pub epoch: u64,
    /// The master it follows (its own id as master).
    pub master_id: u64,
}

/// A broker that is a member of a replicated broker set (see the module docs). Serve
/// [`HaBroker::service`] and [`HaBroker::replication_service`] on its internal port.
pub struct HaBroker {
    service: BrokerApi,
    replication: ReplicationGrpc,
    status: watch::Receiver<HaStatus>,
    /// Cancelled to stop following and close the current instance.
    stop: CancellationToken,
    /// Set before `stop` is cancelled when the stop is a crash ([`HaBroker::abandon`]).
    crash: Arc<AtomicBool>,
    /// The supervisor and the replication tasks it starts.
    tasks: TaskTracker,
    task: Option<JoinHandle<Result<(), BrokerError>>>,
}

impl std::fmt::Debug for HaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaBroker")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl HaBroker {
    /// Opens the broker read-only and starts following what `metadata` says: master, replica
    /// or waiting. `lease` carries the deadline until which the controller is known to
    /// consider this broker alive (`None`: not known yet); a master accepts writes only
    /// before it.
    ///
    /// # Errors
    /// [`BrokerError::Config`] for invalid settings; the errors of opening the store and the
    /// consumer state.
    pub async fn start(
        cfg: BrokerConfig,
        ha: HaConfig,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        lease: watch::Receiver<Option<std::time::Instant>>,
        link: Arc<dyn ControllerLink>,
    ) -> Result<HaBroker, BrokerError> {
        ha.validate()?;
        let engine = Broker::open_engine(
            cfg.clone(),
            metadata.clone(),
            EngineRole::Replica,
            StorePrep::Keep,
        )
        .await?;
        let service = engine.api();
        let ha = Arc::new(ha);
        let replication = ReplicationGrpc::new(service.clone(), Arc::clone(&ha));
        let (status_tx, status) = watch::channel(HaStatus {
            role: HaRole::Waiting,
            epoch: 0,
            master_id: 0,
        });
        let stop = CancellationToken::new();
        let crash = Arc::new(AtomicBool::new(false));
        let tasks = TaskTracker::new();
        let (prepare_tx, prepare_rx) = mpsc::channel(4);
        let sup = Supervisor {
            cfg,
            crash: Arc::clone(&crash),
            ha,
            metadata,
            lease,
            link,
            service: service.clone(),
            engine: Some(engine),
            role: Role::Waiting,
            tasks: tasks.clone(),
            follower: None,
            manager: None,
            prepare_tx,
            prepare_rx,
            status: status_tx,
        };
        let task = tasks.spawn(sup.run(stop.clone()));
        tasks.close();
        Ok(HaBroker {
            service,
            replication,
            status,
            stop,
            crash,
            tasks,
            task: Some(task),
        })
    }

    /// The `comet.v1.BrokerService` of the current instance (follows role changes).
    pub fn service(&self) -> BrokerGrpc {
        BrokerGrpc::new(self.service.clone())
    }

    /// The operations of the current instance as Comet's own types (follows role changes).
    pub fn api(&self) -> BrokerApi {
        self.service.clone()
    }

    /// The `comet.v1.ReplicationService` of this broker.
    pub fn replication_service(&self) -> ReplicationGrpc {
        self.replication.clone()
    }

    /// The current role; changes as the metadata does.
    pub fn status(&self) -> watch::Receiver<HaStatus> {
        self.status.clone()
    }

    /// The newest master epoch in the log and the log's end, as heartbeats report them (the
    /// controller prefers the in-sync replica with the most data).
    pub fn log_report(&self) -> (u64, i64) {
        log_report(&self.service)
    }

    /// [`HaBroker::log_report`] as a function that outlives `self` (for the heartbeat task).
    pub fn log_reporter(&self) -> impl Fn() -> (u64, i64) + Send + Sync + 'static {
        let service = self.service.clone();
        move || log_report(&service)
    }

    /// Stops following and closes the current instance cleanly (see [`Broker::shutdown`]).
    ///
    /// # Errors
    /// As for [`Broker::shutdown`].
    pub async fn shutdown(mut self) -> Result<(), BrokerError> {
        self.stop.cancel();
        let closed = match self.task.take() {
            Some(t) => t
                .await
                .map_err(|e| BrokerError::Task(format!("replication supervisor: {e}")))?,
            None => Ok(()),
        };
        // The supervisor aborted its follower and manager on the way out.
        self.tasks.wait().await;
        closed
    }

    /// Stops at once like [`Broker::abandon`] (a crash, for tests): the supervisor finishes
    /// the role change it may be in, stops and joins its follower and sync-state-set manager,
    /// then abandons the current instance. Returns once the data directory can be opened
    /// again.
    pub async fn abandon(mut self) {
        self.crash.store(true, Ordering::Release);
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.tasks.wait().await;
    }
}

fn log_report(service: &BrokerApi) -> (u64, i64) {
    match service.current().store() {
        Ok(store) => (
            store.epochs().last().map_or(0, |e| e.epoch),
            store.write_offset(),
        ),
        Err(_) => (0, 0),
    }
}

impl Drop for HaBroker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Supervisor {
    cfg: BrokerConfig,
    /// The stop is a crash: abandon the instance instead of closing it.
    crash: Arc<AtomicBool>,
    ha: Arc<HaConfig>,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
    lease: watch::Receiver<Option<std::time::Instant>>,
    link: Arc<dyn ControllerLink>,
    service: BrokerApi,
    engine: Option<Broker>,
    /// The role of the current instance.
    role: Role,
    /// Where the follower and the sync-state-set manager run (aborted on a role change).
    tasks: TaskTracker,
    follower: Option<JoinHandle<()>>,
    manager: Option<JoinHandle<()>>,
    prepare_tx: mpsc::Sender<StorePrep>,
    prepare_rx: mpsc::Receiver<StorePrep>,
    status: watch::Sender<HaStatus>,
}

impl Supervisor {
    async fn run(mut self, stop: CancellationToken) -> Result<(), BrokerError> {
        let mut failures = 0u32;
        loop {
            let desired = role::decide_role(
                &self.metadata.borrow_and_update(),
                &self.cfg.broker_set,
                self.cfg.broker_id,
            );
            match self.apply(desired).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    self.service.end_switch();
                    failures += 1;
                    tracing::error!(error = %e, failures, "role change failed; retrying");
                    let pause = Duration::from_millis(200 * u64::from(failures.min(10)));
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                changed = self.metadata.changed() => if changed.is_err() { break },
                changed = self.lease.changed() => {
                    if changed.is_err() { break }
                    self.refresh_gate();
                }
                Some(prep) = self.prepare_rx.recv() => {
                    // A request from a follower of a role that has since changed is stale.
                    if !matches!(self.role, Role::Replica { .. }) {
                        continue;
                    }
                    if let Err(e) = self.reopen_replica(prep).await {
                        tracing::error!(error = %e, "reopening the store for replication failed");
                        self.engine = None;
                        self.role = Role::Waiting;
                    }
                }
            }
        }
        // Nothing of this role may outlive it: the follower and the manager hold the
        // instance (and a follower its store) until they are joined.
        self.stop_tasks().await;
        match self.engine.take() {
            Some(e) if self.crash.load(Ordering::Acquire) => {
                e.abandon().await;
                Ok(())
            }
            Some(e) => e.shutdown().await,
            None => Ok(()),
        }
    }

    async fn stop_tasks(&mut self) {
        for t in [self.follower.take(), self.manager.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
            let _ = t.await;
        }
    }

    fn publish(&self) {
        let st = match &self.role {
            Role::Master { epoch, .. } => HaStatus {
                role: HaRole::Master,
                epoch: *epoch,
                master_id: self.cfg.broker_id,
            },
            Role::Replica {
                master_id, epoch, ..
            } => HaStatus {
                role: HaRole::Replica,
                epoch: *epoch,
                master_id: *master_id,
            },
            Role::Waiting => HaStatus {
                role: HaRole::Waiting,
                epoch: 0,
                master_id: 0,
            },
        };
        self.status.send_if_modified(|s| {
            let changed = *s != st;
            *s = st;
            changed
        });
    }

    /// Sets the master's write gate (see [`master_gate`]).
    fn refresh_gate(&self) {
        let (Role::Master { .. }, Some(engine)) = (&self.role, &self.engine) else {
            return;
        };
        if let EngineRole::Master { tracker, .. } = &engine.inner().role
            && let Ok(store) = engine.inner().store()
        {
            store.set_write_gate(master_gate(*self.lease.borrow(), tracker));
        }
    }

    async fn apply(&mut self, desired: Role) -> Result<(), BrokerError> {
        let same = match (&self.role, &desired) {
            (Role::Master { epoch: a, .. }, Role::Master { epoch: b, .. }) => a == b,
            (a, b) => a == b,
        };
        if same && self.engine.is_some() {
            if let (Role::Master { sync_state_set, .. }, Some(engine)) = (&desired, &self.engine)
                && let EngineRole::Master { tracker, .. } = &engine.inner().role
            {
                tracker.committed_from_metadata(sync_state_set);
                self.refresh_gate();
            }
            return Ok(());
        }
        tracing::info!(broker_set = %self.cfg.broker_set, broker_id = self.cfg.broker_id,
            from = ?self.role, to = ?desired, "role change");
        self.stop_tasks().await;
        match &desired {
            Role::Master {
                epoch,
                sync_state_set,
            } => {
                let tracker = Arc::new(Tracker::new(
                    self.cfg.broker_id,
                    *epoch,
                    sync_state_set,
                    self.ha.min_in_sync_replicas as usize,
                    LagLimits {
                        max_time: self.ha.max_lag_time,
                        max_bytes: self.ha.max_lag_bytes,
                    },
                ));
                let role = EngineRole::Master {
                    tracker: Arc::clone(&tracker),
                    sync: self.ha.mode == ReplicationMode::Sync,
                    timeout: self.ha.sync_timeout,
                };
                self.replace_engine(role, StorePrep::Keep).await?;
                let engine = self.engine.as_ref().ok_or(BrokerError::Task(
                    "no broker instance after a role change".into(),
                ))?;
                let inner = Arc::clone(engine.inner());
                let store = inner.store().map_err(|f| BrokerError::Task(f.message))?;
                let epoch = *epoch;
                let start = tokio::task::spawn_blocking(move || store.begin_epoch(epoch))
                    .await
                    .map_err(|e| BrokerError::Task(e.to_string()))??;
                tracing::info!(broker_set = %self.cfg.broker_set, epoch, start, "serving as master");
                self.role = desired.clone();
                self.refresh_gate();
                self.service.end_switch();
                self.manager = Some(self.tasks.spawn(service::manage_sync_state_set(
                    inner,
                    tracker,
                    Arc::clone(&self.link),
                    self.lease.clone(),
                )));
            }
            Role::Replica { .. } | Role::Waiting => {
                let read_only = self
                    .engine
                    .as_ref()
                    .is_some_and(|e| matches!(e.inner().role, EngineRole::Replica));
                if !read_only {
                    self.replace_engine(EngineRole::Replica, StorePrep::Keep)
                        .await?;
                    self.service.end_switch();
                }
                self.role = desired.clone();
                self.start_follower();
            }
        }
        self.publish();
        Ok(())
    }

    fn start_follower(&mut self) {
        if let Role::Replica { address, epoch, .. } = &self.role {
            let f = follower::Follow {
                brokers: self.service.clone(),
                broker_set: self.cfg.broker_set.clone(),
                broker_id: self.cfg.broker_id,
                master_address: address.clone(),
                master_epoch: *epoch,
                connector: self.ha.connector.clone(),
            };
            self.follower = Some(self.tasks.spawn(follower::run(f, self.prepare_tx.clone())));
        }
    }

    /// Closes the current instance (if any) and opens a new one in `role`.
    async fn replace_engine(
        &mut self,
        role: EngineRole,
        prep: StorePrep,
    ) -> Result<(), BrokerError> {
        self.service.begin_switch();
        if let Some(old) = self.engine.take() {
            let released = old.store_released();
            if let Err(e) = old.shutdown().await {
                tracing::warn!(error = %e, "closing the previous broker instance");
            }
            // The previous instance's store closes when its last user lets go: a blocking read
            // of a call that was cancelled may still hold it for a moment.
            if let Some(released) = released {
                let freed = tokio::task::spawn_blocking(move || released.wait(STORE_RELEASE_LIMIT))
                    .await
                    .unwrap_or(false);
                if !freed {
                    tracing::warn!(
                        limit = ?STORE_RELEASE_LIMIT,
                        "the previous broker instance still holds the store"
                    );
                }
            }
        }
        let engine =
            Broker::open_engine(self.cfg.clone(), self.metadata.clone(), role, prep).await?;
        self.service.replace(Arc::clone(engine.inner()));
        self.engine = Some(engine);
        Ok(())
    }

    /// A replica reopens its store cut or wiped (see `role::start_action`) and follows again.
    async fn reopen_replica(&mut self, prep: StorePrep) -> Result<(), BrokerError> {
        self.stop_tasks().await;
        self.replace_engine(EngineRole::Replica, prep).await?;
        self.service.end_switch();
        self.start_follower();
        Ok(())
    }
}
