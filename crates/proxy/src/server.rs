//! [`Proxy`]: the gRPC routes (MessagingService, reflection, health) and the serve loop with
//! graceful shutdown; [`serve`] builds a proxy and runs it on a bound listener.
//!
//! Lifecycle: the caller's `CancellationToken` stops the accept loop; the proxy's own token
//! (`Inner::shutdown`) then ends long polls and telemetry streams, and its `TaskTracker`
//! (`Inner::tasks`) holds every task the proxy spawned (telemetry, transaction checks, the
//! lanes' timer keepers), which the drain waits for within `shutdown_grace`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use comet_proto::apache::rocketmq::v2::ClientType;
use comet_proto::apache::rocketmq::v2::messaging_service_server::MessagingServiceServer;
use comet_proto::comet::v1::ClusterMetadata;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::brokers::BrokerDirectory;
use crate::config::{MAX_OUTBOUND_FRAME_BYTES, ProxyConfig};
use crate::creator::TopicCreator;
use crate::error::ProxyError;
use crate::service::{Inner, Service};
use crate::session::{ClientInfo, ClientsView};
use comet_auth::{Acceptor, MaybeTls};
use comet_coalesce::CoalescedIo;
use comet_observe::rpc::RpcLayer;

/// gRPC name of the public service, as reported by health checks.
pub const MESSAGING_SERVICE_NAME: &str = <MessagingServiceServer<Service> as NamedService>::NAME;

/// The Comet proxy: the public `apache.rocketmq.v2.MessagingService` over the internal
/// BrokerService, plus gRPC reflection (v1 and v1alpha) and `grpc.health.v1`.
///
/// A proxy serves once: after [`Proxy::serve`] returned, its long polls and telemetry streams
/// stay cancelled.
pub struct Proxy {
    inner: Arc<Inner>,
    health: HealthReporter,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("advertised_endpoint", &self.inner.cfg.advertised_endpoint)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds a proxy over a metadata watch and a broker directory. `creator` is used for
    /// topic auto-creation when `cfg.auto_create_topics` is on.
    ///
    /// The configuration is checked by [`Proxy::serve`] (and by [`ProxyConfig::validate`]); a
    /// proxy whose advertised endpoint is invalid answers routes with INTERNAL_SERVER_ERROR.
    pub fn new(
        cfg: ProxyConfig,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        brokers: Arc<dyn BrokerDirectory>,
        creator: Option<Arc<dyn TopicCreator>>,
    ) -> Proxy {
        let health = HealthReporter::new();
        // NOT_SERVING until `serve` runs. The reporter's lock is uncontended here (nothing
        // else holds the reporter yet), so this completes at once on any executor.
        futures::executor::block_on(async {
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_service_status(MESSAGING_SERVICE_NAME, ServingStatus::NotServing)
                .await;
        });
        let inner = Arc::new(Inner::new(cfg, metadata, brokers, creator));
        let weak = Arc::downgrade(&inner);
        inner.metrics.register(Arc::new(move || {
            let Some(inner) = weak.upgrade() else {
                return (0, 0);
            };
            let clients = inner.sessions.snapshot();
            let producers = clients
                .iter()
                .filter(|c| c.client_type == ClientType::Producer)
                .count();
            let consumers = clients
                .iter()
                .filter(|c| {
                    !matches!(
                        c.client_type,
                        ClientType::Producer | ClientType::Unspecified
                    )
                })
                .count();
            (producers, consumers)
        }));
        Proxy { inner, health }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProxyConfig {
        &self.inner.cfg
    }

    /// Clients currently known by id (heartbeat, settings or open telemetry streams).
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.inner.sessions.snapshot()
    }

    /// A handle on the proxy's client sessions that stays usable while the proxy serves (for
    /// a reporter of the connected clients).
    pub fn clients_view(&self) -> ClientsView {
        ClientsView(Arc::clone(&self.inner.sessions))
    }

    /// MessagingService (inbound messages up to `max_inbound_message_bytes`, outbound frames
    /// at most 4 MiB), gRPC server reflection v1 and v1alpha, and `grpc.health.v1`.
    pub fn routes(&self) -> Routes {
        let messaging = MessagingServiceServer::new(Service(self.inner.clone()))
            .max_decoding_message_size(self.inner.cfg.max_inbound_message_bytes)
            .max_encoding_message_size(MAX_OUTBOUND_FRAME_BYTES);
        let health = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(self.health.clone()),
        );
        let mut routes = Routes::new(messaging).add_service(health);
        let public = public_descriptors();
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_file_descriptor_set(public.clone())
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        match reflection().build_v1() {
            Ok(svc) => routes = routes.add_service(svc),
            Err(e) => tracing::error!(error = %e, "gRPC reflection v1 unavailable"),
        }
        match reflection().build_v1alpha() {
            Ok(svc) => routes = routes.add_service(svc),
            Err(e) => tracing::error!(error = %e, "gRPC reflection v1alpha unavailable"),
        }
        routes
    }

    /// Serves on a bound listener until `shutdown` is cancelled. Then health turns NOT_SERVING,
    /// the server stops accepting, pending long polls end with MESSAGE_NOT_FOUND, telemetry
    /// streams close, and in-flight unary calls finish.
    ///
    /// Connections are served by [`ProxyConfig::io_threads`] threads, each running its own
    /// single-threaded runtime; this future accepts and deals new connections to them in
    /// turn, and a connection stays on its thread. On one thread, the calls of a connection
    /// that arrived together are all handled before the connection task writes, so their
    /// answers leave in one write; on a shared multi-threaded runtime each answer woke the
    /// connection task at once and went out in a write (and a TCP segment) of its own, which
    /// cost the proxy about a fifth of its CPU per message. Work a call hands to the broker
    /// (and its long-lived tasks) is unaffected: those run where they were started.
    ///
    /// # Errors
    /// [`ProxyError::InvalidConfig`] before serving; [`ProxyError::Io`] when a connection
    /// thread cannot start or accepting fails for good; [`ProxyError::Transport`] when a
    /// thread's server fails; [`ProxyError::DrainTimedOut`] when telemetry tasks outlive
    /// `shutdown_grace`.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ProxyError> {
        self.inner.cfg.validate()?;
        let local = listener.local_addr().ok();
        let threads = self.inner.cfg.resolved_io_threads();
        tracing::info!(
            local = ?local,
            advertised = %self.inner.cfg.advertised_endpoint,
            io_threads = threads,
            "proxy serving"
        );
        // Transaction checks from every broker set, forwarded to producers connected here.
        self.inner
            .tasks
            .spawn(Arc::clone(&self.inner).watch_transaction_checks());
        let readiness = self.inner.cfg.observer.readiness().register("proxy");
        let rpc_layer = RpcLayer::new(&self.inner.cfg.observer, "proxy");
        let stop = CancellationToken::new();
        let grace = self.inner.cfg.shutdown_grace;
        let mut lanes = Vec::with_capacity(threads);
        let mut ends = FuturesUnordered::new();
        // One set of routes (reflection decodes its descriptor sets once), shared by the lanes.
        let routes = self.routes();
        for index in 0..threads {
            match Lane::start(
                index,
                routes.clone(),
                rpc_layer.clone(),
                stop.clone(),
                self.inner.tasks.clone(),
                grace,
                self.inner.cfg.security.tls.clone(),
            ) {
                Ok((lane, end)) => {
                    lanes.push(lane);
                    ends.push(end);
                }
                Err(e) => {
                    stop.cancel();
                    drop(lanes);
                    while ends.next().await.is_some() {}
                    self.inner.shutdown.cancel();
                    return Err(e);
                }
            }
        }
        self.health
            .set_service_status("", ServingStatus::Serving)
            .await;
        self.health
            .set_service_status(MESSAGING_SERVICE_NAME, ServingStatus::Serving)
            .await;
        readiness.set_ready();
        // Accept until told to stop, or until a connection thread or the listener fails.
        let mut failure = None;
        tokio::select! {
            () = shutdown.cancelled() => {}
            e = accept(&listener, &lanes) => failure = Some(e),
            end = ends.next() => failure = end.and_then(|r| r.err()),
        }
        drop(listener);
        tracing::info!("proxy shutting down");
        readiness.set_not_ready("draining");
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        self.health
            .set_service_status(MESSAGING_SERVICE_NAME, ServingStatus::NotServing)
            .await;
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        stop.cancel();
        drop(lanes);
        // Every thread drains its connections and the telemetry tasks running on it.
        while let Some(end) = ends.next().await {
            if let Err(e) = end
                && failure.is_none()
            {
                failure = Some(e);
            }
        }
        let drained = tokio::time::timeout(grace, self.inner.tasks.wait()).await;
        if let Some(e) = failure {
            return Err(e);
        }
        if drained.is_err() || !self.inner.tasks.is_empty() {
            return Err(ProxyError::DrainTimedOut {
                remaining: self.inner.tasks.len(),
                grace,
            });
        }
        tracing::info!("proxy shutdown complete");
        Ok(())
    }
}

/// Builds a [`Proxy`] over `metadata` and `brokers` (auto-creating topics through `creator`)
/// and serves it on `listener` until `shutdown` is cancelled; see [`Proxy::serve`].
///
/// # Errors
/// As for [`Proxy::serve`].
pub async fn serve(
    cfg: ProxyConfig,
    listener: tokio::net::TcpListener,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
    brokers: Arc<dyn BrokerDirectory>,
    creator: Option<Arc<dyn TopicCreator>>,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    Proxy::new(cfg, metadata, brokers, creator)
        .serve(listener, shutdown)
        .await
}

/// The descriptors of the public API: every file of the generated set except Comet's internal
/// `comet.*` packages, and of the services only the one served here: reflection lists
/// MessagingService, health and reflection, nothing the client port does not serve.
fn public_descriptors() -> prost_types::FileDescriptorSet {
    use prost::Message as _;
    let mut set = prost_types::FileDescriptorSet::decode(comet_proto::FILE_DESCRIPTOR_SET)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "the built-in descriptor set does not decode");
            prost_types::FileDescriptorSet::default()
        });
    set.file.retain(|f| {
        !f.package
            .as_deref()
            .unwrap_or_default()
            .starts_with("comet.")
    });
    // Of the public services only MessagingService is served (not apache.rocketmq.v2.Admin).
    for f in &mut set.file {
        f.service
            .retain(|s| MESSAGING_SERVICE_NAME.ends_with(&format!(".{}", s.name())));
    }
    set
}

/// Most accepted connections waiting for their thread to pick them up.
const LANE_BACKLOG: usize = 64;

/// Pause after an accept error other than a connection that failed before it was accepted
/// (out of file descriptors or memory), so a persistent one does not spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Period of the timer that keeps a lane's next wake-up near (see `serve_lane`).
const TIMER_KEEPER_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

/// One connection thread: its own single-threaded runtime running a tonic server over the
/// connections dealt to it.
struct Lane {
    connections: mpsc::Sender<std::net::TcpStream>,
}

/// How a lane ended.
type LaneEnd = Pin<Box<dyn Future<Output = Result<(), ProxyError>> + Send>>;

impl Lane {
    /// Starts thread `index`. Its server stops (gracefully: in-flight calls finish) when
    /// `stop` is cancelled; then it keeps running the tasks started on it until `tasks` is
    /// empty, for at most `grace`.
    fn start(
        index: usize,
        routes: Routes,
        rpc_layer: RpcLayer,
        stop: CancellationToken,
        tasks: TaskTracker,
        grace: std::time::Duration,
        tls: Option<Acceptor>,
    ) -> Result<(Lane, LaneEnd), ProxyError> {
        let (connections, incoming) = mpsc::channel(LANE_BACKLOG);
        let (done, end) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ProxyError::Io {
                what: "runtime start",
                source,
            })?;
        std::thread::Builder::new()
            .name(format!("comet-proxy-{index}"))
            .spawn(move || {
                let result = runtime.block_on(serve_lane(
                    routes, rpc_layer, incoming, stop, tasks, grace, tls,
                ));
                let _ = done.send(result);
            })
            .map_err(|source| ProxyError::Io {
                what: "connection thread start",
                source,
            })?;
        let end =
            Box::pin(async move { end.await.unwrap_or(Err(ProxyError::LanePanicked(index))) });
        Ok((Lane { connections }, end))
    }
}

/// The server of one lane; see [`Lane::start`].
async fn serve_lane(
    routes: Routes,
    rpc_layer: RpcLayer,
    incoming: mpsc::Receiver<std::net::TcpStream>,
    stop: CancellationToken,
    tasks: TaskTracker,
    grace: std::time::Duration,
    tls: Option<Acceptor>,
) -> Result<(), ProxyError> {
    // tonic arms a timer for every call that carries a deadline (`grpc-timeout`; the official
    // clients send one with every call). A timer due before the runtime's next wake-up makes
    // the runtime write to its wake-up eventfd, which on an otherwise timer-less thread is a
    // syscall per call. A short periodic timer keeps the next wake-up near, so call deadlines
    // (seconds away) never come first.
    let keeper_stop = stop.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(TIMER_KEEPER_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = keeper_stop.cancelled() => break,
                _ = tick.tick() => {}
            }
        }
    });
    // Registering with this thread's reactor has to happen on this thread.
    let incoming: Incoming = match tls {
        None => Box::pin(ReceiverStream::new(incoming).map(|s| {
            tokio::net::TcpStream::from_std(s).map(|s| CoalescedIo::new(MaybeTls::Plain(s)))
        })),
        Some(acceptor) => {
            let (ready, handshaken) = mpsc::channel(LANE_BACKLOG);
            tasks.spawn(handshakes(
                acceptor,
                incoming,
                ready,
                stop.clone(),
                tasks.clone(),
            ));
            Box::pin(ReceiverStream::new(handshaken).map(|c| Ok(CoalescedIo::new(c))))
        }
    };
    let served = Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .layer(rpc_layer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await;
    served?;
    // Telemetry streams opened on this thread run here: keep the runtime until they end.
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        return Err(ProxyError::DrainTimedOut {
            remaining: tasks.len(),
            grace,
        });
    }
    Ok(())
}

/// The connections a lane serves.
type Incoming =
    Pin<Box<dyn futures::Stream<Item = std::io::Result<CoalescedIo<MaybeTls>>> + Send + 'static>>;

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Completes the TLS handshake (per the acceptor's mode) of each connection dealt to a lane,
/// each in its own task so that a slow client holds up no other, and hands the finished
/// connections to the lane's server. A connection whose handshake fails is dropped (mutual
/// TLS: a client without a valid certificate).
async fn handshakes(
    acceptor: Acceptor,
    mut incoming: mpsc::Receiver<std::net::TcpStream>,
    ready: mpsc::Sender<MaybeTls>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            s = incoming.recv() => match s {
                Some(s) => s,
                None => return,
            },
        };
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "dropping a connection that failed on setup");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let peer = stream.peer_addr().ok();
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
            };
            match accepted {
                Ok(Ok(conn)) => {
                    let _ = ready.send(conn).await;
                }
                Ok(Err(e)) => tracing::debug!(?peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Accepts connections and deals them to `lanes` in turn. Returns only on a failure: the
/// listener is broken, or no lane takes connections any more.
async fn accept(listener: &tokio::net::TcpListener, lanes: &[Lane]) -> ProxyError {
    let mut next = 0usize;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed; retrying shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let stream = match stream.set_nodelay(true).and_then(|()| stream.into_std()) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "dropping a connection that failed on setup");
                continue;
            }
        };
        let mut stream = Some(stream);
        for _ in 0..lanes.len() {
            let lane = &lanes[next % lanes.len()];
            next = next.wrapping_add(1);
            if let Some(s) = stream.take()
                && let Err(mpsc::error::SendError(s)) = lane.connections.send(s).await
            {
                stream = Some(s);
            }
            if stream.is_none() {
                break;
            }
        }
        if stream.is_some() {
            return ProxyError::Io {
                what: "dealing connections",
                source: std::io::Error::other("every connection thread has stopped"),
            };
        }
    }
}

/// Errors of one incoming connection (it failed before or while being accepted), not of the
/// listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
