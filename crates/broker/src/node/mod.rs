//! A broker node: one [`Broker`] (or replicated [`HaBroker`]) serving `comet.v1.BrokerService`
//! (and `ReplicationService` when replicated) on a listener, linked to the controller cluster.
//!
//! ```text
//!  BrokerNode::start(cfg, incoming, controllers, metadata, shutdown)
//!    ├─ Broker::open | HaBroker::start        the storage node (roles from the metadata)
//!    ├─ tracked: gRPC server on `incoming`    stops accepting when `shutdown` is cancelled
//!    └─ tracked: heartbeat_loop               register, heartbeat, lease (controller_link)
//!  BrokerNode::wait()       after `shutdown`: heartbeats stop, calls drain, the server ends,
//!                           then the broker flushes, checkpoints and closes its store
//!  BrokerNode::abort()      a crash: tasks dropped, the broker abandoned (no final flush)
//! ```
//!
//! # Layout
//! - this file: [`NodeConfig`], [`BrokerNode`] and [`serve`];
//! - [`controller_client`]: [`ControllerClient`], the leader-following client of the
//!   controller cluster (the only one: the `comet` binary's admin commands and cluster-mode
//!   proxy use it too), and [`watch_metadata`];
//! - `controller_link`: the heartbeat loop and the master's write lease it renews.
//!
//! # Lifecycle
//! One idiom, as in every Comet server crate: a `CancellationToken` says "stop", and a
//! `TaskTracker` holds every task the node spawned; draining is cancel, close the tracker,
//! wait for it. The node derives its own token from the caller's, so dropping a
//! [`BrokerNode`] stops its tasks too.

pub mod controller_client;
mod controller_link;

use std::sync::Arc;

use comet_coalesce::CoalescedIo;
use comet_proto::comet::v1::ClusterMetadata;
use comet_proto::comet::v1::broker_service_server::BrokerServiceServer;
use comet_proto::comet::v1::replication_service_server::ReplicationServiceServer;
use futures::{Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpIncoming};

// Only the crate's public API (its root re-exports): the node is wiring over it.
use crate::{
    Broker, BrokerConfig, BrokerError, BrokerGrpc, BrokerMetrics, HaBroker, HaConfig, HaStatus,
    ReplicationGrpc,
};
use comet_observe::Observer;
use comet_observe::rpc::RpcLayer;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use controller_client::{ControllerClient, watch_metadata};
use controller_link::{HeartbeatHooks, Registration, heartbeat_loop};

/// Largest internal gRPC message (a batch of large messages travels in one PopMessage reply).
pub const INTERNAL_MAX_MESSAGE: usize = 256 << 20;

/// What a broker node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The broker; `advertised_addr` is the address it registers with the controller.
    pub broker: BrokerConfig,
    /// `Some`: a member of a replicated broker set, its role decided by the controller
    /// (`comet broker`); `None`: a plain broker that is always its set's master (standalone).
    pub replication: Option<HaConfig>,
}

/// The broker of a node: plain or a member of a replicated broker set.
enum Engine {
    Plain(Broker),
    Replicated(HaBroker),
}

impl Engine {
    async fn shutdown(self) -> Result<(), BrokerError> {
        match self {
            Engine::Plain(b) => b.shutdown().await,
            Engine::Replicated(b) => b.shutdown().await,
        }
    }

    async fn abandon(self) {
        match self {
            Engine::Plain(b) => b.abandon().await,
            Engine::Replicated(b) => b.abandon().await,
        }
    }
}

/// A running broker node (see the module docs). Stop it with [`BrokerNode::shutdown`] (or by
/// cancelling the token it was started with, then [`BrokerNode::wait`]), or crash it with
/// [`BrokerNode::abort`].
pub struct BrokerNode {
    engine: Engine,
    service: BrokerGrpc,
    shutdown: CancellationToken,
    /// Cancels `shutdown` if the node is dropped without being stopped.
    _stop_on_drop: DropGuard,
    tasks: TaskTracker,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    heartbeat: JoinHandle<()>,
    /// `grpc.health.v1` of the broker's port: SERVING from start until the stop begins.
    health: HealthReporter,
    readiness: comet_observe::Component,
    _metrics: BrokerMetrics,
}

impl std::fmt::Debug for BrokerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerNode")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl BrokerNode {
    /// Opens the broker, serves it on `incoming` and starts registering with `controllers`;
    /// returns once it serves. `metadata` is the cluster metadata the broker follows (the
    /// in-process controller's, or a [`watch_metadata`] of a remote one).
    ///
    /// `incoming` is any stream of accepted connections (a [`TcpIncoming`] with TCP_NODELAY
    /// in [`serve`]; a caller may wrap connections, e.g. to sever them all at once).
    ///
    /// # Errors
    /// The errors of [`Broker::open`] and [`HaBroker::start`]; nothing is left running.
    pub async fn start<I, IO, IE>(
        cfg: NodeConfig,
        incoming: I,
        controllers: ControllerClient,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        shutdown: CancellationToken,
    ) -> Result<BrokerNode, BrokerError>
    where
        I: Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let NodeConfig {
            broker: broker_cfg,
            replication,
        } = cfg;
        let observer = broker_cfg.observer.clone();
        let readiness = observer.readiness().register("broker");
        let me = Registration {
            broker_set: broker_cfg.broker_set.clone(),
            broker_id: broker_cfg.broker_id,
            address: broker_cfg.advertised_addr.clone(),
        };
        let (engine, replication, hooks) = match replication {
            Some(ha) => {
                let (lease_tx, lease_rx) = watch::channel(None);
                let broker = HaBroker::start(
                    broker_cfg,
                    ha,
                    metadata,
                    lease_rx,
                    Arc::new(controllers.clone()),
                )
                .await?;
                let hooks = HeartbeatHooks {
                    log_report: Arc::new(broker.log_reporter()),
                    lease: lease_tx,
                };
                let replication = broker.replication_service();
                (Engine::Replicated(broker), Some(replication), Some(hooks))
            }
            None => (
                Engine::Plain(Broker::open(broker_cfg, metadata).await?),
                None,
                None,
            ),
        };
        let service = match &engine {
            Engine::Plain(b) => b.service(),
            Engine::Replicated(b) => b.service(),
        };
        let shutdown = shutdown.child_token();
        let tasks = TaskTracker::new();
        let metrics = BrokerMetrics::register(&observer, service.api().clone());
        let health = HealthReporter::new();
        health
            .set_service_status(BROKER_SERVICE_NAME, ServingStatus::Serving)
            .await;
        health.set_service_status("", ServingStatus::Serving).await;
        let server = tasks.spawn(serve_grpc(
            service.clone(),
            replication,
            incoming,
            Served {
                health: health.clone(),
                observer,
            },
            shutdown.clone(),
        ));
        // The store is recovered and dispatched once `open` returned.
        readiness.set_ready();
        let heartbeat = tasks.spawn(heartbeat_loop(controllers, me, hooks, shutdown.clone()));
        tasks.close();
        Ok(BrokerNode {
            engine,
            service,
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            tasks,
            server,
            heartbeat,
            health,
            readiness,
            _metrics: metrics,
        })
    }

    /// The `comet.v1.BrokerService` of this node, to call in process (it follows role
    /// changes of a replicated broker).
    pub fn service(&self) -> BrokerGrpc {
        self.service.clone()
    }

    /// The role of a replicated broker (`None` for a plain one).
    pub fn ha_status(&self) -> Option<watch::Receiver<HaStatus>> {
        match &self.engine {
            Engine::Replicated(b) => Some(b.status()),
            Engine::Plain(_) => None,
        }
    }

    /// Waits until the token the node was started with is cancelled, then stops in order:
    /// heartbeats stop, the server stops accepting and drains its calls, then the broker
    /// persists its consumer state and flushes, checkpoints and closes its store.
    ///
    /// # Errors
    /// [`BrokerError::Transport`] when the server failed; the errors of
    /// [`Broker::shutdown`] (the broker is closed either way).
    pub async fn wait(self) -> Result<(), BrokerError> {
        self.shutdown.cancelled().await;
        self.stop().await
    }

    /// Cancels this node's token and stops as [`BrokerNode::wait`] does.
    ///
    /// # Errors
    /// As for [`BrokerNode::wait`].
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        self.shutdown.cancel();
        self.stop().await
    }

    async fn stop(self) -> Result<(), BrokerError> {
        let BrokerNode {
            engine,
            tasks,
            server,
            heartbeat,
            health,
            readiness,
            ..
        } = self;
        readiness.set_not_ready("draining");
        health
            .set_service_status(BROKER_SERVICE_NAME, ServingStatus::NotServing)
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        if let Err(e) = heartbeat.await {
            tracing::warn!(error = %e, "broker heartbeat task failed");
        }
        let served = match server.await {
            Ok(result) => result.map_err(BrokerError::from),
            Err(e) => Err(BrokerError::Task(format!("broker gRPC server: {e}"))),
        };
        tasks.wait().await;
        let closed = engine.shutdown().await;
        served?;
        closed
    }

    /// Stops as a crash would: the server and heartbeat tasks are dropped (connections they
    /// already accepted end only if their transport fails them: see [`BrokerNode::start`]'s
    /// `incoming`), and the broker is abandoned without a final flush or checkpoint. Returns
    /// once the data directory can be opened again.
    pub async fn abort(self) {
        let BrokerNode {
            engine,
            shutdown,
            tasks,
            server,
            heartbeat,
            readiness,
            ..
        } = self;
        readiness.set_not_ready("stopped");
        server.abort();
        heartbeat.abort();
        shutdown.cancel();
        tasks.wait().await;
        engine.abandon().await;
    }
}

/// gRPC name of the internal broker service, as reported by health checks.
pub const BROKER_SERVICE_NAME: &str =
    <BrokerServiceServer<BrokerGrpc> as tonic::server::NamedService>::NAME;

/// What the server carries besides the services: health and the per-RPC layer.
struct Served {
    health: HealthReporter,
    observer: Observer,
}

/// Serves `service` (and `replication`) on `incoming` until `shutdown` is cancelled, then
/// drains the calls in progress.
///
/// Every accepted connection passes [`accept`], the one place where the broker's side of the
/// internal link is built.
async fn serve_grpc<I, IO, IE>(
    service: BrokerGrpc,
    replication: Option<ReplicationGrpc>,
    incoming: I,
    served: Served,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let server = BrokerServiceServer::new(service)
        .max_decoding_message_size(INTERNAL_MAX_MESSAGE)
        .max_encoding_message_size(INTERNAL_MAX_MESSAGE);
    let replication = replication.map(|r| {
        ReplicationServiceServer::new(r)
            .max_decoding_message_size(INTERNAL_MAX_MESSAGE)
            .max_encoding_message_size(INTERNAL_MAX_MESSAGE)
    });
    let incoming = incoming.map(|conn| conn.map(accept));
    let health = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(served.health),
    );
    tonic::transport::Server::builder()
        .layer(RpcLayer::new(&served.observer, "broker"))
        .add_service(server)
        .add_service(health)
        .add_optional_service(replication)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

/// An accepted connection as the broker serves it: writes gathered into one system call per
/// round of the connection's task, reads in large chunks (`comet_coalesce`). A proxy's
/// SendMessage answers, and the PopMessage answers of many long polls, that are ready
/// together leave in one write instead of one each.
fn accept<IO>(io: IO) -> CoalescedIo<IO> {
    CoalescedIo::new(io)
}

/// Runs a broker node on `listener` (TCP_NODELAY) until `shutdown` is cancelled, then stops it
/// in order (see [`BrokerNode::wait`]).
///
/// # Errors
/// As for [`BrokerNode::start`] and [`BrokerNode::wait`].
pub async fn serve(
    cfg: NodeConfig,
    listener: TcpListener,
    controllers: ControllerClient,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    BrokerNode::start(cfg, incoming, controllers, metadata, shutdown)
        .await?
        .wait()
        .await
}
