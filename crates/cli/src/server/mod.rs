//! The server roles: `comet standalone`, `comet controller`, `comet broker`, `comet proxy`.
//! Wiring only: configuration → bound listeners → each crate's server
//! ([`ControllerServer`], [`BrokerNode`], [`comet_proxy::serve`]); SIGINT/SIGTERM → stop.
//!
//! - **standalone** runs a single-node controller, one broker and the proxy in one process.
//!   The proxy calls the broker's service in process ("Local mode", no TCP on the data path)
//!   and auto-creates topics through the in-process controller; the controller and the broker
//!   also listen, so that admin commands, and extra proxies or brokers, can join. The broker
//!   registers with the local controller over TCP like any other. Data lives under
//!   `data_dir/{controller,broker}`.
//! - **controller**, **broker** and **proxy** run one role each ("Cluster mode"): brokers and
//!   proxies find the controllers through `controllers`, watch the metadata stream
//!   ([`comet_broker::node::watch_metadata`]), and the proxy reaches brokers over the internal
//!   gRPC API and auto-creates topics through the controller cluster.
//!
//! Every listener is bound before anything is advertised, so `:0` ports work (tests use them),
//! and each prints one line `<role> listening on <addr>` on stdout; `comet <role> ready` follows
//! once the process serves. The binary and the tests start nodes the same way, through
//! [`Node::start_with`].
//!
//! # Lifecycle
//! Each role runs under its own `CancellationToken`; [`Node::shutdown`] cancels them in order
//! and waits for each role to finish before the next: the proxy (stop accepting, end long
//! polls, drain), then the broker (drain, flush, checkpoint), then the controller (end metadata
//! watches, stop Raft), and last the node's own tasks (the metadata watch of cluster mode).
//! [`Node::abort`] is the in-process `kill -9` of the fault tests: the kill token severs every
//! accepted connection at once ([`crate::kill::Killable`]), nothing drains or flushes.
//!
//! # Layout
//! - this file: [`Role`], [`run`], [`Node`];
//! - `args`: [`ServerArgs`], the flags over the config layers;
//! - `configs`: the config mapped onto each crate's config type;
//! - `creators`: topic auto-creation through the local or remote controller.

mod args;
mod client_report;
mod configs;
mod creators;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use comet_broker::node::watch_metadata;
use comet_broker::{BrokerNode, ControllerClient, NodeConfig};
use comet_controller::{Controller, ControllerListeners, ControllerServer};
use comet_observe::{Metrics, MetricsSetup, Observer, Readiness};
use comet_proto::comet::v1::ClusterMetadata;
use comet_proxy::TopicCreator;
use comet_proxy::{BrokerDirectory, DynBroker, LocalBrokers, ProxyError, RemoteBrokers};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;

pub use args::ServerArgs;
use creators::{LocalCreator, RemoteCreator};

use crate::config::{Config, DEFAULT_METRICS_LISTEN};
use crate::kill::Killable;
use crate::logging;

/// How long a cluster-mode process waits for a first metadata snapshot before it serves anyway.
const FIRST_METADATA_WAIT: Duration = Duration::from_secs(10);

/// How long standalone waits for its broker to register before the proxy starts.
const REGISTRATION_WAIT: Duration = Duration::from_secs(15);

/// Which role a server command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Controller,
    Broker,
    Proxy,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Controller => "controller",
            Role::Broker => "broker",
            Role::Proxy => "proxy",
        }
    }
}

/// Entry point of the server subcommands: load config, log, run until a signal.
pub fn run(role: Role, args: &ServerArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.load()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("comet")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        logging::init_server(&cfg, &format!("comet-{}", role.name()))?;
        let signal = shutdown_signal()?;
        let node = Node::start(role, &cfg).await?;
        println!("comet {} ready", role.name());
        signal.await;
        tracing::info!("shutting down");
        node.shutdown().await?;
        if let Some(h) = comet_observe::logging::handle() {
            // The span exporter's flush blocks until its batch is sent.
            let _ = tokio::task::spawn_blocking(|| h.flush_traces()).await;
        }
        println!("comet {} stopped", role.name());
        Ok(ExitCode::SUCCESS)
    })
}

/// Installs the SIGTERM and SIGINT handlers (so a signal that arrives while the node starts is
/// not lost) and returns a future that resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
        }
    })
}

/// The bound addresses of a running node (absent roles are `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Addrs {
    pub proxy: Option<SocketAddr>,
    pub broker: Option<SocketAddr>,
    pub controller: Option<SocketAddr>,
    /// The controller's NameServer-compatible remoting endpoint (when enabled).
    pub remoting: Option<SocketAddr>,
    /// The metrics listener (`/metrics`, `/healthz`, `/readyz`), when it runs.
    pub metrics: Option<SocketAddr>,
    /// The controller's web console (when enabled).
    pub console: Option<SocketAddr>,
}

/// Listeners bound by the caller, used instead of binding the configured addresses (e.g. a
/// test that must know a controller's address before it starts, to list it in `peers`).
#[derive(Debug, Default)]
pub struct Listeners {
    pub proxy: Option<TcpListener>,
    pub broker: Option<TcpListener>,
    pub controller: Option<TcpListener>,
    pub remoting: Option<TcpListener>,
    pub metrics: Option<TcpListener>,
    pub console: Option<TcpListener>,
}

/// The accepted connections of an internal listener.
type Incoming =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = std::io::Result<Killable>> + Send + 'static>>;

/// The proxy of a node: its stop token and the task serving it.
struct ProxyTask {
    shutdown: CancellationToken,
    served: JoinHandle<Result<(), ProxyError>>,
}

/// A running node of any role; [`Node::shutdown`] stops it in order (see the module docs).
pub struct Node {
    /// Caller-bound listeners not used yet (see [`Node::start_with`]).
    preset: Listeners,
    addrs: Addrs,
    /// Cancelled only in [`Node::abort`]: every accepted connection fails at once.
    kill: CancellationToken,
    /// The node's own tasks (the proxy's server, the cluster-mode metadata watch), stopped
    /// after every role by `links`.
    tasks: TaskTracker,
    links: CancellationToken,
    proxy: Option<ProxyTask>,
    broker: Option<BrokerNode>,
    controller: Option<ControllerServer>,
    /// Stops the web console (before the controller stops).
    console: Option<CancellationToken>,
    /// The metadata this node serves from (the controller's own, or its watch of one).
    metadata: Option<watch::Receiver<Arc<ClusterMetadata>>>,
    /// The node's metrics pipeline and readiness, shared by its roles.
    observer: Observer,
    /// Mutual TLS of the internal listeners and clients (`tls.internal_*`); `None`: plaintext.
    internal: Option<comet_auth::InternalTls>,
}

impl Node {
    /// Starts `role` with `cfg`; returns once every listener is bound and serving.
    pub async fn start(role: Role, cfg: &Config) -> anyhow::Result<Node> {
        Self::start_with(role, cfg, Listeners::default()).await
    }

    /// Like [`Node::start`], serving on the given already-bound listeners where present (the
    /// configured address of that listener is then not used).
    pub async fn start_with(
        role: Role,
        cfg: &Config,
        listeners: Listeners,
    ) -> anyhow::Result<Node> {
        let internal = cfg.internal_tls()?;
        let enforcing = internal
            .as_ref()
            .is_some_and(|t| t.mode() == comet_auth::TlsMode::Enforcing);
        if cfg.auth.enabled && !enforcing && role != Role::Standalone {
            tracing::warn!(
                role = role.name(),
                "auth is on but tls.internal_mode is not enforcing: internal calls (broker \
                 registration, the metadata watch, broker data and admin calls) are not \
                 authenticated; keep the internal ports on a private network"
            );
        }
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
        let metrics = if cfg.metrics.enabled {
            Metrics::start(&MetricsSetup {
                prometheus: true,
                otlp_endpoint: (!cfg.metrics.otlp_endpoint.is_empty())
                    .then(|| cfg.metrics.otlp_endpoint.clone()),
                otlp_interval: cfg.metrics.otlp_interval.0,
                service_name: format!("comet-{}", role.name()),
            })
            .context("setting up metrics (metrics.*)")?
        } else {
            Metrics::disabled()
        };
        let mut node = Node {
            preset: listeners,
            addrs: Addrs::default(),
            kill: CancellationToken::new(),
            tasks: TaskTracker::new(),
            links: CancellationToken::new(),
            proxy: None,
            broker: None,
            controller: None,
            console: None,
            metadata: None,
            observer: Observer::new(metrics, Readiness::default()),
            internal,
        };
        let started = match node.start_metrics_listener(cfg).await {
            Ok(()) => node.start_role(role, cfg).await,
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            // Leave nothing half-running (locks on data dirs, listeners).
            if let Err(stop_err) = node.shutdown().await {
                tracing::warn!(error = %format!("{stop_err:#}"), "cleanup after a failed start");
            }
            return Err(e);
        }
        Ok(node)
    }

    async fn start_role(&mut self, role: Role, cfg: &Config) -> anyhow::Result<()> {
        let node = self;
        match role {
            Role::Standalone => node.start_standalone(cfg).await,
            Role::Controller => node.start_controller(cfg).await.map(|_| ()),
            Role::Broker => node.start_broker_process(cfg).await,
            Role::Proxy => node.start_proxy_process(cfg).await,
        }
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `metrics.listen` (or the preset
    /// listener) until the node's own tasks stop, i.e. after every role drained. A default
    /// address that is taken is a warning; a configured one is an error.
    async fn start_metrics_listener(&mut self, cfg: &Config) -> anyhow::Result<()> {
        let listener = match self.preset.metrics.take() {
            Some(l) => l,
            None if cfg.metrics.listen.is_empty() => return Ok(()),
            None => match TcpListener::bind(&cfg.metrics.listen).await {
                Ok(l) => l,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && cfg.metrics.listen == DEFAULT_METRICS_LISTEN =>
                {
                    tracing::warn!(
                        addr = %cfg.metrics.listen,
                        "the default metrics address is in use: this process serves no \
                         /metrics, /healthz or /readyz (set metrics.listen or --metrics-listen)"
                    );
                    return Ok(());
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "metrics: cannot listen on {} (in use? change it with \
                         --metrics-listen or --set metrics.listen=ADDR; empty turns it off)",
                        cfg.metrics.listen
                    )));
                }
            },
        };
        let local = listener.local_addr()?;
        let (metrics, readiness) = (
            self.observer.metrics().clone(),
            self.observer.readiness().clone(),
        );
        let stop = self.links.clone();
        self.tasks.spawn(async move {
            if let Err(e) = comet_observe::http::serve(listener, metrics, readiness, stop).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
        announce("metrics", local);
        self.addrs.metrics = Some(local);
        Ok(())
    }

    /// The readiness registry of this node (what `/readyz` answers from).
    pub fn readiness(&self) -> &Readiness {
        self.observer.readiness()
    }

    /// The node's metrics pipeline (tests read Prometheus text or flush OTLP through it).
    pub fn metrics(&self) -> &Metrics {
        self.observer.metrics()
    }

    /// The bound addresses.
    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// The controller this node runs, if any (Raft metrics, membership).
    pub fn controller(&self) -> Option<&Controller> {
        self.controller.as_ref().map(ControllerServer::controller)
    }

    /// The cluster metadata as this node currently sees it (a proxy's view may trail the
    /// controller's by the watch latency); tests wait on it instead of polling.
    pub fn metadata(&self) -> Option<watch::Receiver<Arc<ClusterMetadata>>> {
        self.metadata.clone()
    }

    /// The broker this node runs (`standalone`, `broker`), as its service; tests read its
    /// state through `BrokerGrpc::api`.
    pub fn broker(&self) -> Option<comet_broker::BrokerGrpc> {
        self.broker.as_ref().map(BrokerNode::service)
    }

    /// The status of this node's replicated broker (`comet broker`), if it runs one.
    pub fn ha_status(&self) -> Option<watch::Receiver<comet_broker::HaStatus>> {
        self.broker.as_ref().and_then(BrokerNode::ha_status)
    }

    /// Accepted connections of an internal `listener` (TCP_NODELAY; after their TLS
    /// handshake per `tls.internal_mode`), each severed by [`Node::abort`].
    fn incoming(&self, listener: TcpListener) -> Incoming {
        let kill = self.kill.clone();
        let tcp = TcpIncoming::from(listener).with_nodelay(Some(true));
        match &self.internal {
            None => Box::pin(tcp.map(move |conn| {
                conn.map(|c| Killable::new(comet_auth::MaybeTls::Plain(c), kill.clone()))
            })),
            Some(tls) => Box::pin(
                comet_auth::tls::handshaken(tls.acceptor(), tcp)
                    .map(move |conn| conn.map(|c| Killable::new(c, kill.clone()))),
            ),
        }
    }

    /// The connector of this node's internal clients.
    fn connector(&self) -> comet_auth::Connector {
        self.internal
            .as_ref()
            .map(comet_auth::InternalTls::connector)
            .unwrap_or_default()
    }

    /// Starts the controller (and its remoting endpoint unless turned off).
    async fn start_controller(
        &mut self,
        cfg: &Config,
    ) -> anyhow::Result<watch::Receiver<Arc<ClusterMetadata>>> {
        let listener = match self.preset.controller.take() {
            Some(l) => l,
            None => bind("controller", &cfg.controller.listen).await?,
        };
        let local = listener.local_addr()?;
        let remoting = match self.preset.remoting.take() {
            Some(l) => Some(l),
            None if cfg.controller.remoting_listen.is_empty() => None,
            None => Some(bind("remoting", &cfg.controller.remoting_listen).await?),
        };
        let remoting_local = remoting.as_ref().map(TcpListener::local_addr).transpose()?;
        let mut ctl_cfg =
            configs::controller(cfg, advertised(&cfg.controller.advertised_addr, local))?;
        ctl_cfg.connector = self.connector();
        ctl_cfg.observer = self.observer.for_role(
            &cfg.controller.cluster_name,
            "controller",
            &format!("controller-{}", cfg.controller.node_id),
        );
        let listeners = ControllerListeners {
            grpc: self.incoming(listener),
            remoting,
        };
        let server = ControllerServer::start(ctl_cfg, listeners, CancellationToken::new())
            .await
            .context("starting the controller")?;
        announce("controller", local);
        self.addrs.controller = Some(local);
        if let Some(addr) = remoting_local {
            announce("remoting", addr);
            self.addrs.remoting = Some(addr);
        }
        let console_listener = match self.preset.console.take() {
            Some(l) => Some(l),
            None if cfg.console.listen.is_empty() => None,
            None => Some(bind("console", &cfg.console.listen).await?),
        };
        if let Some(listener) = console_listener {
            let addr = listener.local_addr()?;
            let console = server
                .controller()
                .console(comet_controller::console::ConsoleConfig {
                    client_timeout: cfg.console.client_timeout.0,
                    session_timeout: cfg.console.session_timeout.0,
                    connector: self.connector(),
                    ..Default::default()
                });
            let stop = CancellationToken::new();
            let serving = stop.clone();
            self.tasks.spawn(async move {
                if let Err(e) = comet_controller::console::serve(console, listener, serving).await {
                    tracing::error!(error = %e, "the web console stopped");
                }
            });
            self.console = Some(stop);
            announce("console", addr);
            self.addrs.console = Some(addr);
        }
        let metadata = server.controller().metadata();
        self.controller = Some(server);
        self.metadata = Some(metadata.clone());
        Ok(metadata)
    }

    /// Starts the broker: a plain one in process for `standalone`, a member of a replicated
    /// broker set (roles from the controller) for `comet broker`.
    async fn start_broker(
        &mut self,
        cfg: &Config,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        controllers: ControllerClient,
        replicated: bool,
    ) -> anyhow::Result<Arc<DynBroker>> {
        let listener = match self.preset.broker.take() {
            Some(l) => l,
            None => bind("broker", &cfg.broker.listen).await?,
        };
        let local = listener.local_addr()?;
        let mut broker_cfg = configs::broker(cfg, advertised(&cfg.broker.advertised_addr, local));
        broker_cfg.observer = self.observer.for_role(
            &cfg.controller.cluster_name,
            "broker",
            &format!("{}-{}", cfg.broker.broker_set, cfg.broker.broker_id),
        );
        let node_cfg = NodeConfig {
            broker: broker_cfg,
            replication: replicated.then(|| comet_broker::HaConfig {
                connector: self.connector(),
                ..configs::replication(cfg)
            }),
        };
        let incoming = self.incoming(listener);
        let broker = BrokerNode::start(
            node_cfg,
            incoming,
            controllers,
            metadata,
            CancellationToken::new(),
        )
        .await
        .context("opening the broker")?;
        let service = broker.service();
        announce("broker", local);
        self.addrs.broker = Some(local);
        self.broker = Some(broker);
        Ok(Arc::new(service))
    }

    async fn start_proxy(
        &mut self,
        cfg: &Config,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        brokers: Arc<dyn BrokerDirectory>,
        creator: Arc<dyn TopicCreator>,
        controllers: Vec<String>,
    ) -> anyhow::Result<()> {
        let listener = match self.preset.proxy.take() {
            Some(l) => l,
            None => bind("proxy", &cfg.proxy.listen).await?,
        };
        let local = listener.local_addr()?;
        let mut proxy_cfg = configs::proxy(cfg, advertised(&cfg.proxy.advertised_endpoint, local))?;
        proxy_cfg.observer = self.observer.for_role(
            &cfg.controller.cluster_name,
            "proxy",
            &proxy_cfg.advertised_endpoint.clone(),
        );
        proxy_cfg
            .validate()
            .context("invalid proxy configuration")?;
        let shutdown = CancellationToken::new();
        let address = proxy_cfg.advertised_endpoint.clone();
        let proxy = comet_proxy::Proxy::new(proxy_cfg, metadata, brokers, Some(creator));
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let reporter = client_report::Reporter {
            view: proxy.clients_view(),
            controllers,
            proxy_id: format!("{address}#{started_ms}"),
            address,
            started_ms,
            interval: cfg.console.report_interval.0,
            metrics: self.observer.metrics().clone(),
            connector: self.connector(),
        };
        self.tasks.spawn(reporter.run(shutdown.clone()));
        let stop = shutdown.clone();
        let served = self
            .tasks
            .spawn(async move { proxy.serve(listener, stop).await });
        self.proxy = Some(ProxyTask { shutdown, served });
        announce("proxy", local);
        self.addrs.proxy = Some(local);
        Ok(())
    }

    async fn start_standalone(&mut self, cfg: &Config) -> anyhow::Result<()> {
        let metadata = self.start_controller(cfg).await?;
        let ctl_addr = self
            .addrs
            .controller
            .map(|a| a.to_string())
            .context("controller address")?;
        let controllers =
            ControllerClient::new(vec![ctl_addr.clone()])?.with_connector(self.connector());
        let broker = self
            .start_broker(cfg, metadata.clone(), controllers, false)
            .await?;
        // Admin commands right after start expect the broker set to exist.
        wait_for_broker_set(metadata.clone(), &cfg.broker.broker_set).await?;
        let brokers = LocalBrokers::new();
        brokers.insert(cfg.broker.broker_set.clone(), broker);
        let controller = self.controller().context("controller")?;
        let creator = Arc::new(LocalCreator(controller.service()));
        self.start_proxy(cfg, metadata, Arc::new(brokers), creator, vec![ctl_addr])
            .await
    }

    /// Cluster mode: a client of the configured controllers and a watch of their metadata.
    async fn remote_metadata(
        &mut self,
        cfg: &Config,
    ) -> anyhow::Result<(ControllerClient, watch::Receiver<Arc<ClusterMetadata>>)> {
        let controllers =
            ControllerClient::new(cfg.controllers.clone())?.with_connector(self.connector());
        // Not ready until the controllers answered with a first snapshot (the role is known).
        let link = self.observer.readiness().register("controllers");
        let metadata = watch_metadata(
            controllers.clone(),
            FIRST_METADATA_WAIT,
            &self.tasks,
            self.links.clone(),
        )
        .await;
        if metadata.borrow().revision == 0 {
            tracing::warn!(controllers = ?cfg.controllers, "no controller answered yet; serving and retrying");
            link.set_not_ready("no controller answered yet");
        }
        let (mut first, stop) = (metadata.clone(), self.links.clone());
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                got = first.wait_for(|m| m.revision > 0) => {
                    if got.is_ok() {
                        link.set_ready();
                    }
                }
            }
        });
        self.metadata = Some(metadata.clone());
        Ok((controllers, metadata))
    }

    async fn start_broker_process(&mut self, cfg: &Config) -> anyhow::Result<()> {
        let (controllers, metadata) = self.remote_metadata(cfg).await?;
        self.start_broker(cfg, metadata, controllers, true)
            .await
            .map(|_| ())
    }

    async fn start_proxy_process(&mut self, cfg: &Config) -> anyhow::Result<()> {
        let (controllers, metadata) = self.remote_metadata(cfg).await?;
        let brokers = Arc::new(RemoteBrokers::with_options(
            comet_proxy::link::LinkOptions {
                tls: self.connector(),
                ..cfg.proxy.link_options()
            },
        ));
        let signer = crate::admin::Signer::from_config(cfg)?;
        let creator = Arc::new(RemoteCreator(controllers, signer));
        self.start_proxy(cfg, metadata, brokers, creator, cfg.controllers.clone())
            .await
    }

    /// Stops the node as `kill -9` would, as far as a process can stop part of itself: every
    /// accepted connection of the controller and broker listeners fails at once (peers see
    /// resets, nothing is drained), the listeners and remoting connections close, the broker
    /// is abandoned without a final flush or checkpoint (its store keeps only what reached the
    /// page cache, as after a process kill), and Raft stops without any farewell. The data
    /// directories are unlocked afterwards, so a new node may start on them ("restart after a
    /// crash").
    pub async fn abort(mut self) {
        self.kill.cancel();
        if let Some(console) = self.console.take() {
            console.cancel();
        }
        if let Some(proxy) = self.proxy.take() {
            proxy.served.abort();
            proxy.shutdown.cancel();
        }
        if let Some(broker) = self.broker.take() {
            broker.abort().await;
        }
        if let Some(controller) = self.controller.take() {
            controller.abort().await;
        }
        self.links.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Stops the roles in order (proxy, broker, controller; see the module docs), each
    /// draining before the next stops; returns the first error.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let mut errors: Vec<anyhow::Error> = Vec::new();
        if let Some(proxy) = self.proxy.take() {
            proxy.shutdown.cancel();
            match proxy.served.await {
                Ok(Ok(())) => tracing::info!(server = "proxy", "stopped"),
                Ok(Err(e)) => errors.push(anyhow::Error::new(e).context("proxy gRPC server")),
                Err(e) => errors.push(anyhow::anyhow!("proxy server task: {e}")),
            }
        }
        if let Some(broker) = self.broker.take() {
            match broker.shutdown().await {
                Ok(()) => tracing::info!(server = "broker", "stopped"),
                Err(e) => errors.push(anyhow::Error::new(e).context("closing the broker")),
            }
        }
        if let Some(console) = self.console.take() {
            console.cancel();
        }
        if let Some(controller) = self.controller.take() {
            match controller.shutdown().await {
                Ok(()) => tracing::info!(server = "controller", "stopped"),
                Err(e) => errors.push(anyhow::Error::new(e).context("stopping the controller")),
            }
        }
        self.links.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        // A last OTLP push blocks until sent.
        let metrics = self.observer.metrics().clone();
        let _ = tokio::task::spawn_blocking(move || metrics.shutdown()).await;
        for e in &errors {
            tracing::warn!(error = %format!("{e:#}"), "a server ended with an error");
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Node {
    /// A node dropped without [`Node::shutdown`] stops like a killed process: whatever still
    /// runs is cancelled and its connections are severed (after a shutdown, nothing is left).
    fn drop(&mut self) {
        if let Some(proxy) = &self.proxy {
            proxy.shutdown.cancel();
        }
        if let Some(console) = &self.console {
            console.cancel();
        }
        self.links.cancel();
        self.kill.cancel();
    }
}

async fn bind(role: &str, addr: &str) -> anyhow::Result<TcpListener> {
    let key = match role {
        "remoting" => "controller.remoting_listen".to_owned(),
        "console" => "console.listen".to_owned(),
        other => format!("{other}.listen"),
    };
    TcpListener::bind(addr).await.with_context(|| {
        format!("{role}: cannot listen on {addr} (in use? change it with --{role}-listen or --set {key}=ADDR)")
    })
}

fn advertised(configured: &str, local: SocketAddr) -> String {
    if configured.is_empty() {
        local.to_string()
    } else {
        configured.to_owned()
    }
}

fn announce(role: &str, addr: SocketAddr) {
    tracing::info!(role, %addr, "listening");
    println!("{role} listening on {addr}");
}

/// Waits (bounded) until `broker_set` is registered and alive in the metadata.
pub async fn wait_for_broker_set(
    mut metadata: watch::Receiver<Arc<ClusterMetadata>>,
    broker_set: &str,
) -> anyhow::Result<()> {
    let registered = |m: &Arc<ClusterMetadata>| {
        m.broker_sets.iter().any(|b| {
            b.name == broker_set && b.master_epoch > 0 && b.members.iter().any(|m| m.alive)
        })
    };
    tokio::time::timeout(REGISTRATION_WAIT, metadata.wait_for(registered))
        .await
        .with_context(|| {
            format!(
                "broker set {broker_set} did not register with the controller within {} s",
                REGISTRATION_WAIT.as_secs()
            )
        })?
        .map(|_| ())
        .context("the controller stopped")
}
