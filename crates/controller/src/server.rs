//! [`ControllerServer`]: one controller node serving its gRPC services (ControllerService,
//! ControllerAdminService, the Raft transport) and, when enabled, the NameServer-compatible
//! remoting endpoint, from start to a clean stop; [`serve`] runs one on bound listeners.
//!
//! ```text
//!  ControllerServer::start(cfg, listeners, shutdown)
//!    ├─ Controller::start                 Raft, storage, the lease checker
//!    ├─ tracked: gRPC server              stops accepting when `shutdown` is cancelled
//!    └─ tracked: remoting server          closes its connections when `shutdown` is cancelled
//!  wait()   after `shutdown`: Controller::shutdown (ends WatchMetadata streams, so the gRPC
//!           server can finish draining; stops Raft; every acknowledged write is on disk),
//!           then the servers are joined
//!  abort()  servers dropped at once, then Raft stops
//! ```
//!
//! Connections get TCP_NODELAY in [`serve`]: without it, Nagle plus delayed ACKs add ~40 ms to
//! every reply larger than one segment (metadata snapshots, Raft appends).

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpIncoming};

use comet_observe::rpc::RpcLayer;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::error::{ControllerError, Result};
use crate::metrics::ControllerMetrics;
use crate::{Controller, ControllerConfig};

/// gRPC names of the controller's services, as reported by health checks.
const SERVICE_NAMES: [&str; 2] = [
    "comet.v1.ControllerService",
    "comet.v1.ControllerAdminService",
];

/// Where a controller node serves: `grpc` is a bound listener for [`serve`], or a stream of
/// accepted connections for [`ControllerServer::start`]; `remoting` is the NameServer-compatible
/// endpoint's listener (`None`: off).
#[derive(Debug)]
pub struct ControllerListeners<G = TcpListener> {
    /// The gRPC services (clients, brokers, proxies and peer controllers).
    pub grpc: G,
    /// The remoting endpoint (RocketMQ 4.x clients and tools).
    pub remoting: Option<TcpListener>,
}

/// A running controller node (see the module docs).
pub struct ControllerServer {
    controller: Controller,
    shutdown: CancellationToken,
    /// Cancels `shutdown` if the server is dropped without being stopped.
    _stop_on_drop: DropGuard,
    tasks: TaskTracker,
    grpc: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    remoting: Option<JoinHandle<()>>,
    /// `grpc.health.v1`: SERVING from start until the stop begins.
    health: HealthReporter,
    readiness: comet_observe::Component,
    _metrics: ControllerMetrics,
}

impl std::fmt::Debug for ControllerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerServer")
            .field("node_id", &self.controller.node_id())
            .finish_non_exhaustive()
    }
}

impl ControllerServer {
    /// Starts the controller (see [`Controller::start`]) and serves it on `listeners`;
    /// returns once it serves. It runs until `shutdown` is cancelled (then
    /// [`ControllerServer::wait`] stops it in order).
    ///
    /// # Errors
    /// The errors of [`Controller::start`]; nothing is left running.
    pub async fn start<I, IO, IE>(
        cfg: ControllerConfig,
        listeners: ControllerListeners<I>,
        shutdown: CancellationToken,
    ) -> Result<ControllerServer>
    where
        I: Stream<Item = std::result::Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let observer = cfg.observer.clone();
        let readiness = observer.readiness().register("controller");
        let controller = Controller::start(cfg).await?;
        let metrics = ControllerMetrics::register(
            &observer,
            controller.raft().clone(),
            controller.metadata(),
        );
        let health = HealthReporter::new();
        for name in SERVICE_NAMES {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        health.set_service_status("", ServingStatus::Serving).await;
        let shutdown = shutdown.child_token();
        let tasks = TaskTracker::new();
        let routes =
            controller
                .routes()
                .add_service(tonic_health::pb::health_server::HealthServer::new(
                    tonic_health::server::HealthService::from_health_reporter(health.clone()),
                ));
        let stop = shutdown.clone();
        let layer = RpcLayer::new(&observer, "controller");
        let grpc = tasks.spawn(async move {
            tonic::transport::Server::builder()
                .layer(layer)
                .add_routes(routes)
                .serve_with_incoming_shutdown(listeners.grpc, stop.cancelled_owned())
                .await
        });
        let remoting = listeners
            .remoting
            .map(|l| tasks.spawn(controller.remoting().serve(l, shutdown.clone())));
        tasks.close();
        // Ready once Raft runs and a leader is known (this node or another).
        let ready = readiness.clone();
        let mut raft_metrics = controller.raft().metrics();
        let stopping = shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = stopping.cancelled() => {}
                led = raft_metrics.wait_for(|m| m.current_leader.is_some()) => {
                    if led.is_ok() {
                        ready.set_ready();
                    }
                }
            }
        });
        Ok(ControllerServer {
            controller,
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            tasks,
            grpc,
            remoting,
            health,
            readiness,
            _metrics: metrics,
        })
    }

    /// The controller this node runs (metadata, Raft metrics, in-process services).
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// Waits until the token the server was started with is cancelled, then stops in order:
    /// the servers stop accepting, the controller shuts down (ending `WatchMetadata` streams,
    /// stopping Raft, syncing the log), then the servers finish draining.
    ///
    /// # Errors
    /// The errors of [`Controller::shutdown`]; [`ControllerError::Transport`] when the gRPC
    /// server failed.
    pub async fn wait(self) -> Result<()> {
        self.shutdown.cancelled().await;
        self.stop().await
    }

    /// Cancels this server's token and stops as [`ControllerServer::wait`] does.
    ///
    /// # Errors
    /// As for [`ControllerServer::wait`].
    pub async fn shutdown(self) -> Result<()> {
        self.shutdown.cancel();
        self.stop().await
    }

    async fn stop(self) -> Result<()> {
        let ControllerServer {
            controller,
            tasks,
            grpc,
            remoting,
            health,
            readiness,
            ..
        } = self;
        readiness.set_not_ready("draining");
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for name in SERVICE_NAMES {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let stopped = controller.shutdown().await;
        let served = match grpc.await {
            Ok(result) => result.map_err(ControllerError::from),
            Err(e) => Err(ControllerError::Task(format!(
                "controller gRPC server: {e}"
            ))),
        };
        if let Some(remoting) = remoting
            && let Err(e) = remoting.await
        {
            tracing::warn!(error = %e, "remoting server task failed");
        }
        tasks.wait().await;
        stopped?;
        served
    }

    /// Stops at once: the servers' accept loops and the remoting connections are dropped
    /// (gRPC connections already accepted end only if their transport fails them), then Raft
    /// stops without any farewell. The data directory is unlocked afterwards.
    pub async fn abort(self) {
        let ControllerServer {
            controller,
            shutdown,
            tasks,
            grpc,
            remoting,
            readiness,
            ..
        } = self;
        readiness.set_not_ready("stopped");
        grpc.abort();
        if let Some(remoting) = remoting {
            remoting.abort();
        }
        shutdown.cancel();
        tasks.wait().await;
        if let Err(e) = controller.shutdown().await {
            tracing::warn!(error = %e, "stopping an aborted controller");
        }
    }
}

/// Runs a controller node on `listeners` (TCP_NODELAY on gRPC connections) until `shutdown`
/// is cancelled, then stops it in order (see [`ControllerServer::wait`]).
///
/// # Errors
/// As for [`ControllerServer::start`] and [`ControllerServer::wait`].
pub async fn serve(
    cfg: ControllerConfig,
    listeners: ControllerListeners,
    shutdown: CancellationToken,
) -> Result<()> {
    let listeners = ControllerListeners {
        grpc: TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)),
        remoting: listeners.remoting,
    };
    ControllerServer::start(cfg, listeners, shutdown)
        .await?
        .wait()
        .await
}
