//! The server roles: `comet standalone`, `comet controller`, `comet broker`, `comet proxy`.
//!
//! - **standalone** runs a single-node controller, one broker and the proxy in one process.
//!   The proxy calls the broker's service in process ("Local mode", no TCP on the data path);
//!   the controller and the broker also listen, so that admin commands, and extra proxies or
//!   brokers, can join. Data lives under `data_dir/{controller,broker}`.
//! - **controller**, **broker** and **proxy** run one role each ("Cluster mode"): brokers and
//!   proxies find the controllers through `controllers`, watch the metadata stream, and the
//!   proxy reaches brokers over the internal gRPC API.
//!
//! Every listener is bound before anything is advertised, so `:0` ports work (tests use them),
//! and each prints one line `<role> listening on <addr>` on stdout; `comet <role> ready` follows
//! once the process serves. SIGINT/SIGTERM stop it cleanly: stop accepting, drain in-flight
//! calls (long polls end early), then flush and checkpoint the store and stop Raft.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use comet_broker::{Broker, BrokerConfig, HaBroker, HaConfig, RedeliveryDelay, ReplicationMode};
use comet_controller::{Controller, ControllerConfig};
use comet_proto::comet::v1::broker_service_server::BrokerServiceServer;
use comet_proto::comet::v1::controller_service_server::ControllerService;
use comet_proto::comet::v1::replication_service_server::ReplicationServiceServer;
use comet_proto::comet::v1::{ClusterMetadata, CreateTopicRequest, Topic};
use comet_proxy::{DynBroker, LocalBrokers, Proxy, ProxyConfig, RemoteBrokers, TopicCreator};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::server::TcpIncoming;

use crate::config::{Config, FlushMode, Redelivery, ReplicationModeKey, Sources};
use crate::controller_client::{ControllerClient, HeartbeatHooks, heartbeat_loop, watch_metadata};
use crate::kill::Killable;
use crate::logging;

/// Largest internal gRPC message (a batch of large messages travels in one PopMessage reply).
const INTERNAL_MAX_MESSAGE: usize = 256 << 20;

/// Flags shared by the server roles; each maps onto a config key.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// TOML config file (default: `COMET_CONFIG`, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Root data directory (`data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Proxy listen address (`proxy.listen`), e.g. 0.0.0.0:8081.
    #[arg(long, value_name = "ADDR")]
    pub proxy_listen: Option<String>,
    /// Address clients are given in routes (`proxy.advertised_endpoint`).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_endpoint: Option<String>,
    /// Broker listen address (`broker.listen`).
    #[arg(long, value_name = "ADDR")]
    pub broker_listen: Option<String>,
    /// Controller listen address (`controller.listen`).
    #[arg(long, value_name = "ADDR")]
    pub controller_listen: Option<String>,
    /// NameServer-compatible remoting listen address (`controller.remoting_listen`), e.g.
    /// 0.0.0.0:9876; an empty value turns it off.
    #[arg(long, value_name = "ADDR")]
    pub remoting_listen: Option<String>,
    /// Controller addresses for `comet proxy` / `comet broker` (`controllers`); repeat or
    /// separate with commas.
    #[arg(long = "controller", value_name = "ADDR", value_delimiter = ',')]
    pub controllers: Vec<String>,
    /// Broker set of `comet broker` (`broker.broker_set`).
    #[arg(long, value_name = "NAME")]
    pub broker_set: Option<String>,
    /// This broker's id within its set (`broker.broker_id`): an identity only; the controller
    /// decides which member is the master.
    #[arg(long, value_name = "ID")]
    pub broker_id: Option<u64>,
    /// Any setting: `--set section.key=value` (repeatable), e.g. `--set broker.flush=sync`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ServerArgs {
    /// The configuration these flags select, over the file and environment.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut sources = Sources::from_process(self.config.clone());
        let mut push = |k: &str, v: String| sources.overrides.push((k.to_owned(), v));
        if let Some(d) = &self.data_dir {
            push("data_dir", toml_string(&d.to_string_lossy()));
        }
        for (key, value) in [
            ("proxy.listen", &self.proxy_listen),
            ("proxy.advertised_endpoint", &self.advertised_endpoint),
            ("broker.listen", &self.broker_listen),
            ("controller.listen", &self.controller_listen),
            ("controller.remoting_listen", &self.remoting_listen),
            ("broker.broker_set", &self.broker_set),
        ] {
            if let Some(v) = value {
                push(key, toml_string(v));
            }
        }
        if let Some(id) = self.broker_id {
            push("broker.broker_id", id.to_string());
        }
        if !self.controllers.is_empty() {
            let list: Vec<String> = self.controllers.iter().map(|c| toml_string(c)).collect();
            push("controllers", format!("[{}]", list.join(", ")));
        }
        for kv in &self.set {
            let Some((k, v)) = kv.split_once('=') else {
                anyhow::bail!("--set {kv:?}: expected section.key=value");
            };
            push(k.trim(), v.trim().to_owned());
        }
        Config::load(&sources)
    }
}

/// A string as a TOML string literal (so flag values are never re-interpreted as numbers).
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Which role a server command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Controller,
    Broker,
    Proxy,
}

/// Entry point of the server subcommands: load config, log, run until a signal.
pub fn run(role: Role, args: &ServerArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.load()?;
    logging::init(&cfg.log.level, cfg.log.format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("comet")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let node = Node::start(role, &cfg).await?;
        println!("comet {} ready", role.name());
        wait_for_signal().await?;
        tracing::info!("shutting down");
        node.shutdown().await?;
        println!("comet {} stopped", role.name());
        Ok(ExitCode::SUCCESS)
    })
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

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
    }
    Ok(())
}

/// The bound addresses of a running node (absent roles are `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Addrs {
    pub proxy: Option<SocketAddr>,
    pub broker: Option<SocketAddr>,
    pub controller: Option<SocketAddr>,
    /// The controller's NameServer-compatible remoting endpoint (when enabled).
    pub remoting: Option<SocketAddr>,
}

/// Listeners bound by the caller, used instead of binding the configured addresses (e.g. a
/// test that must know a controller's address before it starts, to list it in `peers`).
#[derive(Debug, Default)]
pub struct Listeners {
    pub proxy: Option<TcpListener>,
    pub broker: Option<TcpListener>,
    pub controller: Option<TcpListener>,
    pub remoting: Option<TcpListener>,
}

/// The broker of a node: standalone (no replication) or a member of a replicated broker set.
enum NodeBroker {
    Plain(Broker),
    Replicated(HaBroker),
}

impl NodeBroker {
    async fn shutdown(self) -> Result<(), comet_broker::BrokerError> {
        match self {
            NodeBroker::Plain(b) => b.shutdown().await,
            NodeBroker::Replicated(b) => b.shutdown().await,
        }
    }

    async fn abandon(self) {
        match self {
            NodeBroker::Plain(b) => b.abandon().await,
            NodeBroker::Replicated(b) => b.abandon().await,
        }
    }
}

/// A running node of any role; [`Node::shutdown`] stops it in order.
pub struct Node {
    /// Caller-bound listeners not used yet (see [`Node::start_with`]).
    preset: Listeners,
    addrs: Addrs,
    stop: watch::Sender<bool>,
    /// Flips only in [`Node::abort`]: every accepted connection fails at once.
    kill: watch::Sender<bool>,
    /// Listener tasks, stopped first (proxy before broker before controller).
    servers: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    heartbeat: Option<JoinHandle<()>>,
    broker: Option<NodeBroker>,
    controller: Option<Controller>,
    /// The metadata this node serves from (the controller's own, or its watch of one).
    metadata: Option<watch::Receiver<Arc<ClusterMetadata>>>,
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
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
        let (stop, _) = watch::channel(false);
        let (kill, _) = watch::channel(false);
        let mut node = Node {
            preset: listeners,
            addrs: Addrs::default(),
            stop,
            kill,
            servers: Vec::new(),
            heartbeat: None,
            broker: None,
            controller: None,
            metadata: None,
        };
        let started = match role {
            Role::Standalone => node.start_standalone(cfg).await,
            Role::Controller => node.start_controller(cfg).await.map(|_| ()),
            Role::Broker => node.start_broker_process(cfg).await,
            Role::Proxy => node.start_proxy_process(cfg).await,
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

    /// The bound addresses.
    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// The controller this node runs, if any (Raft metrics, membership).
    pub fn controller(&self) -> Option<&Controller> {
        self.controller.as_ref()
    }

    /// The cluster metadata as this node currently sees it (a proxy's view may trail the
    /// controller's by the watch latency); tests wait on it instead of polling.
    pub fn metadata(&self) -> Option<watch::Receiver<Arc<ClusterMetadata>>> {
        self.metadata.clone()
    }

    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Accepted connections of `listener` (TCP_NODELAY), each killed by [`Node::abort`].
    fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl tokio_stream::Stream<Item = std::io::Result<Killable>> + Send + 'static {
        let kill = self.kill.subscribe();
        TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .map(move |conn| conn.map(|c| Killable::new(c, kill.clone())))
    }

    async fn start_controller(
        &mut self,
        cfg: &Config,
    ) -> anyhow::Result<watch::Receiver<Arc<ClusterMetadata>>> {
        let listener = match self.preset.controller.take() {
            Some(l) => l,
            None => bind("controller", &cfg.controller.listen).await?,
        };
        let local = listener.local_addr()?;
        let advertised = advertised(&cfg.controller.advertised_addr, local);
        let c = &cfg.controller;
        let remoting_listener = match self.preset.remoting.take() {
            Some(l) => Some(l),
            None if c.remoting_listen.is_empty() => None,
            None => Some(bind("remoting", &c.remoting_listen).await?),
        };
        let controller = Controller::start(ControllerConfig {
            node_id: c.node_id,
            data_dir: cfg.data_dir.join("controller"),
            cluster_name: c.cluster_name.clone(),
            advertised_addr: advertised,
            broker_lease: c.broker_lease.0,
            heartbeat_interval: c.heartbeat_interval.0,
            election_timeout_min: c.election_timeout_min.0,
            election_timeout_max: c.election_timeout_max.0,
            peers: cfg.peers()?,
            join: c.join,
            enable_unclean_election: c.enable_unclean_election,
        })
        .await
        .context("starting the controller")?;
        let routes = controller.routes();
        let shutdown = self.stopped();
        let incoming = self.incoming(listener);
        self.servers.push((
            "controller",
            tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
                    .context("controller gRPC server")
            }),
        ));
        announce("controller", local);
        self.addrs.controller = Some(local);
        if let Some(listener) = remoting_listener {
            let remoting_local = listener.local_addr()?;
            let server = controller.remoting();
            let shutdown = self.stopped();
            let mut kill = self.kill.subscribe();
            self.servers.push((
                "remoting",
                tokio::spawn(async move {
                    let stop = async move {
                        tokio::select! {
                            () = shutdown => {}
                            _ = kill.wait_for(|k| *k) => {}
                        }
                    };
                    server.serve(listener, stop).await;
                    Ok(())
                }),
            ));
            announce("remoting", remoting_local);
            self.addrs.remoting = Some(remoting_local);
        }
        let metadata = controller.metadata();
        self.controller = Some(controller);
        self.metadata = Some(metadata.clone());
        Ok(metadata)
    }

    /// The status of this node's replicated broker (`comet broker`), if it runs one.
    pub fn ha_status(&self) -> Option<watch::Receiver<comet_broker::HaStatus>> {
        match &self.broker {
            Some(NodeBroker::Replicated(b)) => Some(b.status()),
            _ => None,
        }
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
        let address = advertised(&cfg.broker.advertised_addr, local);
        let b = &cfg.broker;
        let broker_cfg = BrokerConfig {
            broker_set: b.broker_set.clone(),
            broker_id: b.broker_id,
            data_dir: cfg.data_dir.join("broker"),
            advertised_addr: address.clone(),
            flush: match b.flush {
                FlushMode::Async => comet_store::FlushPolicy::Async {
                    interval: b.flush_interval.0,
                },
                FlushMode::Sync => comet_store::FlushPolicy::Sync {
                    timeout: b.sync_flush_timeout.0,
                },
            },
            segment_size: b.segment_size.0,
            retention: comet_store::RetentionConfig {
                file_reserved_time: b.file_reserved_time.0,
                disk_high_watermark: b.disk_high_watermark,
                disk_refuse_watermark: b.disk_refuse_watermark,
                ..comet_store::RetentionConfig::default()
            },
            default_max_retries: b.max_retries,
            redelivery: match b.redelivery {
                Redelivery::GroupBackoff => RedeliveryDelay::DeadlinePlusGroupBackoff,
                Redelivery::InvisibleTime => RedeliveryDelay::InvisibleTime,
            },
            max_delivery_delay: b.max_delivery_delay.0,
            timer_slot: b.timer_slot.0,
            transaction_timeout: b.transaction_timeout.0,
            transaction_check_interval: b.transaction_check_interval.0,
            transaction_max_checks: b.transaction_max_checks,
            ..BrokerConfig::default()
        };
        let (service, replication, hooks, node_broker) = if replicated {
            let ha = HaConfig {
                mode: match b.replication_mode {
                    ReplicationModeKey::Async => ReplicationMode::Async,
                    ReplicationModeKey::Sync => ReplicationMode::Sync,
                },
                min_in_sync_replicas: b.min_in_sync_replicas,
                sync_timeout: b.sync_replication_timeout.0,
                max_lag_time: b.replica_max_lag_time.0,
                max_lag_bytes: b.replica_max_lag_bytes.0,
                chunk_bytes: usize::try_from(b.replication_chunk_size.0).unwrap_or(usize::MAX),
                heartbeat_interval: b.replication_heartbeat_interval.0,
                consumer_offsets_interval: b.consumer_offsets_sync_interval.0,
            };
            let (lease_tx, lease_rx) = watch::channel(None);
            let broker = HaBroker::start(
                broker_cfg,
                ha,
                metadata,
                lease_rx,
                Arc::new(controllers.clone()),
            )
            .await
            .context("opening the broker")?;
            let hooks = HeartbeatHooks {
                log_report: Arc::new(broker.log_reporter()),
                lease: lease_tx,
            };
            (
                broker.service(),
                Some(broker.replication_service()),
                Some(hooks),
                NodeBroker::Replicated(broker),
            )
        } else {
            let broker = Broker::open(broker_cfg, metadata)
                .await
                .context("opening the broker")?;
            (broker.service(), None, None, NodeBroker::Plain(broker))
        };
        let server = BrokerServiceServer::new(service.clone())
            .max_decoding_message_size(INTERNAL_MAX_MESSAGE)
            .max_encoding_message_size(INTERNAL_MAX_MESSAGE);
        let replication = replication.map(|r| {
            ReplicationServiceServer::new(r)
                .max_decoding_message_size(INTERNAL_MAX_MESSAGE)
                .max_encoding_message_size(INTERNAL_MAX_MESSAGE)
        });
        let shutdown = self.stopped();
        let incoming = self.incoming(listener);
        self.servers.push((
            "broker",
            tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(server)
                    .add_optional_service(replication)
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
                    .context("broker gRPC server")
            }),
        ));
        self.heartbeat = Some(tokio::spawn(heartbeat_loop(
            controllers,
            b.broker_set.clone(),
            b.broker_id,
            address,
            hooks,
            self.stopped(),
        )));
        announce("broker", local);
        self.addrs.broker = Some(local);
        self.broker = Some(node_broker);
        Ok(Arc::new(service))
    }

    async fn start_proxy(
        &mut self,
        cfg: &Config,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        brokers: Arc<dyn comet_proxy::BrokerDirectory>,
        creator: Arc<dyn TopicCreator>,
    ) -> anyhow::Result<()> {
        let listener = match self.preset.proxy.take() {
            Some(l) => l,
            None => bind("proxy", &cfg.proxy.listen).await?,
        };
        let local = listener.local_addr()?;
        let p = &cfg.proxy;
        let proxy_cfg = ProxyConfig {
            advertised_endpoint: advertised(&p.advertised_endpoint, local),
            max_body_size: usize::try_from(p.max_body_size.0).unwrap_or(usize::MAX),
            max_user_properties: p.max_user_properties,
            max_user_property_bytes: usize::try_from(p.max_user_property_size.0)
                .unwrap_or(usize::MAX),
            long_polling_min: p.long_polling_min.0,
            long_polling_max: p.long_polling_max.0,
            invisible_min: p.invisible_min.0,
            invisible_max: p.invisible_max.0,
            invisible_default: p.invisible_default.0,
            auto_create_topics: p.auto_create_topics,
            default_queue_count: p.default_queue_count,
            max_delivery_delay: p.max_delivery_delay.0,
            io_threads: p.io_threads,
            ..ProxyConfig::default()
        };
        proxy_cfg
            .validate()
            .context("invalid proxy configuration")?;
        let proxy = Proxy::new(proxy_cfg, metadata, brokers, Some(creator));
        let shutdown = self.stopped();
        self.servers.insert(
            0,
            (
                "proxy",
                tokio::spawn(async move {
                    proxy
                        .serve(listener, shutdown)
                        .await
                        .context("proxy gRPC server")
                }),
            ),
        );
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
        let controllers = ControllerClient::new(vec![ctl_addr])?;
        let broker = self
            .start_broker(cfg, metadata.clone(), controllers, false)
            .await?;
        // Admin commands right after start expect the broker set to exist.
        wait_for_broker_set(metadata.clone(), &cfg.broker.broker_set).await?;
        let brokers = LocalBrokers::new();
        brokers.insert(cfg.broker.broker_set.clone(), broker);
        let brokers = Arc::new(brokers);
        let controller = self.controller.as_ref().context("controller")?;
        let creator = Arc::new(LocalCreator(controller.service()));
        self.start_proxy(cfg, metadata, brokers, creator).await
    }

    /// Cluster mode: a client of the configured controllers and a watch of their metadata.
    async fn remote_metadata(
        &mut self,
        cfg: &Config,
    ) -> anyhow::Result<(ControllerClient, watch::Receiver<Arc<ClusterMetadata>>)> {
        let controllers = ControllerClient::new(cfg.controllers.clone())?;
        let metadata = watch_metadata(controllers.clone(), Duration::from_secs(10)).await;
        if metadata.borrow().revision == 0 {
            tracing::warn!(controllers = ?cfg.controllers, "no controller answered yet; serving and retrying");
        }
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
        let brokers = Arc::new(RemoteBrokers::default());
        let creator = Arc::new(RemoteCreator(controllers));
        self.start_proxy(cfg, metadata, brokers, creator).await
    }

    /// Stops the node as `kill -9` would, as far as a process can stop part of itself: every
    /// accepted connection of the controller, remoting and broker listeners fails at once (peers
    /// see resets, nothing is drained), the listeners close, the broker is abandoned without a
    /// final flush or checkpoint (its store keeps only what reached the page cache, as after a
    /// process kill), and Raft stops without any farewell. The data directories are unlocked
    /// afterwards, so a new node may start on them ("restart after a crash").
    pub async fn abort(mut self) {
        self.kill.send_replace(true);
        for (name, task) in self.servers.drain(..) {
            task.abort();
            if let Ok(Err(e)) = task.await {
                tracing::debug!(server = name, error = %format!("{e:#}"), "aborted server");
            }
        }
        if let Some(hb) = self.heartbeat.take() {
            hb.abort();
            let _ = hb.await;
        }
        self.stop.send_replace(true);
        if let Some(broker) = self.broker.take() {
            broker.abandon().await;
        }
        if let Some(controller) = self.controller.take()
            && let Err(e) = controller.shutdown().await
        {
            tracing::warn!(error = %e, "stopping an aborted controller");
        }
    }

    /// Stops accepting everywhere and drains (proxy, then broker), closes the broker (flush,
    /// checkpoint), then stops the controller, which also ends its metadata watch streams so
    /// its server can finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        let mut errors: Vec<anyhow::Error> = Vec::new();
        let mut controller_server = None;
        for (name, task) in self.servers.drain(..) {
            if name == "controller" {
                controller_server = Some(task);
                continue;
            }
            join_server(name, task, &mut errors).await;
        }
        if let Some(hb) = self.heartbeat.take() {
            let _ = hb.await;
        }
        if let Some(broker) = self.broker.take()
            && let Err(e) = broker.shutdown().await
        {
            errors.push(anyhow::Error::new(e).context("closing the broker"));
        }
        if let Some(controller) = self.controller.take()
            && let Err(e) = controller.shutdown().await
        {
            errors.push(anyhow::Error::new(e).context("stopping the controller"));
        }
        if let Some(task) = controller_server {
            join_server("controller", task, &mut errors).await;
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

async fn join_server(
    name: &str,
    task: JoinHandle<anyhow::Result<()>>,
    errors: &mut Vec<anyhow::Error>,
) {
    match task.await {
        Ok(Ok(())) => tracing::info!(server = name, "stopped"),
        Ok(Err(e)) => {
            tracing::warn!(server = name, error = %format!("{e:#}"), "server ended with an error");
            errors.push(e);
        }
        Err(e) => errors.push(anyhow::anyhow!("{name} server task: {e}")),
    }
}

async fn bind(role: &str, addr: &str) -> anyhow::Result<TcpListener> {
    let key = match role {
        "remoting" => "controller.remoting_listen".to_owned(),
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
    tokio::time::timeout(Duration::from_secs(15), metadata.wait_for(registered))
        .await
        .with_context(|| {
            format!("broker set {broker_set} did not register with the controller within 15 s")
        })?
        .map(|_| ())
        .context("the controller stopped")
}

/// Auto-creates topics through the in-process controller.
struct LocalCreator(comet_controller::ControllerGrpc);

#[tonic::async_trait]
impl TopicCreator for LocalCreator {
    async fn create_topic(&self, topic: Topic) -> Result<(), tonic::Status> {
        match self
            .0
            .create_topic(tonic::Request::new(CreateTopicRequest {
                topic: Some(topic),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => Err(s),
        }
    }
}

/// Auto-creates topics through the controller cluster.
struct RemoteCreator(ControllerClient);

#[tonic::async_trait]
impl TopicCreator for RemoteCreator {
    async fn create_topic(&self, topic: Topic) -> Result<(), tonic::Status> {
        let result = self
            .0
            .call(|mut c| {
                let req = CreateTopicRequest {
                    topic: Some(topic.clone()),
                };
                async move { c.create_topic(req).await }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => Err(s),
        }
    }
}
