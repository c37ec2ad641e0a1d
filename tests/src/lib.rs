//! Comet's cluster-level tests: whole nodes on 127.0.0.1 ports driven by the official
//! RocketMQ 5 clients and by raw `apache.rocketmq.v2` calls. The storage engine's own crash and
//! model tests live in `crates/store/tests`.
//!
//! # Layout
//! - this library: the harness. [`TestCluster`] starts Comet in one of two [`Mode`]s inside the
//!   test process, on `127.0.0.1:0` ports and a temporary data directory:
//!   - [`Mode::Local`]: `comet standalone` (controller + broker + proxy in one node; the proxy
//!     calls the broker in process),
//!   - [`Mode::Cluster`]: a controller node, a broker node and a proxy node that talk over the
//!     internal gRPC API, exactly as `comet controller|broker|proxy` processes do.
//! - [`client`]: the official Rust client as the tests use it (options, producer, consumer,
//!   bounded receive loops).
//! - [`raw`]: raw `apache.rocketmq.v2` requests as grpcurl or a hand-written client sends them
//!   (caller headers, resources, ReceiveMessage).
//! - [`cluster`]: [`ClusterBuilder`] / [`Cluster`], a multi-node deployment (3 controllers, 2
//!   broker sets, a proxy by default) with abrupt kills and restarts of controllers and brokers.
//! - [`ha`]: [`ha::HaDeployment`], one replicated broker set of real broker processes.
//! - [`scripted`]: the official Python and Node clients as child processes running the
//!   scenario scripts of `tests/clients/` (installed by `tests/clients/install.sh`).
//! - [`procs`]: brokers as real child processes (SIGKILL, SIGSTOP/SIGCONT) behind
//!   [`relay::Relay`]s, controllable TCP relays for network partitions.
//! - `tests/ha.rs` (own harness): replicated broker sets under faults, with a chaos checker.
//! - `tests/official_client.rs`: the official Rust client `rocketmq` 5.0.0, in both modes.
//! - `tests/clients.rs`: the official Python 5.1.2 and Node 1.0.8 clients (producers, simple
//!   and push consumers), one test per scenario and client.
//! - `tests/api.rs`: raw v2 calls for what the official client cannot express (validation
//!   codes and messages, reflection, health).
//! - `tests/restart.rs` (own harness): a real `standalone` child process killed with SIGKILL.
//! - `tests/cluster.rs`: controller failover, broker loss, queues over several broker sets, the
//!   NameServer-compatible remoting endpoint, against a [`Cluster`].
//!
//! # Invariants
//! Tests never sleep to wait: they wait on state (metadata and role watches, long polls,
//! channels the test's own tasks bump) with bounded deadlines. State that only another process
//! holds and that no call can wait on is polled through [`wait_until`] (or its [`Retry`]), the
//! one retry pause of the suite. The only other pauses are a client's backoff after a failed call and the
//! "clock-past" waits for the wall clock to pass a store timestamp (see [`wait_until`]).
#![forbid(unsafe_code)]

pub mod client;
pub mod cluster;
pub mod ha;
pub mod http;
pub mod procs;
pub mod raw;
pub mod relay;
pub mod scripted;

pub use cluster::{Cluster, ClusterBuilder};

/// Wall clock in ms since the epoch (store timestamps use the same clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Polls `check` until it answers `true` and returns how long that took; panics naming `what`
/// and the time waited once `limit` has passed.
///
/// This is for state that lives in another process and can only be observed by asking it
/// (a gRPC call), with no call that waits for a change: e.g. "the new master acknowledges a
/// send" after a failover among broker child processes. Where the state is in this process
/// (metadata or role watches, counters the test's own tasks bump) or the server offers a wait
/// (long polls), wait on that instead. This function and [`Retry`], which it runs on, own the
/// suite's only retry pause: it backs off from 2 ms, doubling up to 50 ms, so a quick answer is
/// seen quickly and a slow one costs few calls.
///
/// Not for the "clock-past" waits of the query tests: they wait for the wall clock itself to
/// pass a store timestamp (so that a later batch gets a strictly later one), which no process
/// can signal; they sleep 1 ms at a time against [`now_ms`] and say so where they do.
pub async fn wait_until(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> Duration {
    let mut retry = Retry::new(what, limit);
    loop {
        if check().await {
            return retry.elapsed();
        }
        retry.pause().await;
    }
}

/// The retry pause of [`wait_until`], for a retry loop written out where the check cannot be
/// handed over as an async closure: inside a spawned task (the compiler cannot prove such a
/// closure's borrowing future `Send` for every lifetime) or where each try has an outcome to
/// keep. The same rules as [`wait_until`]: only for state that another process holds and only
/// asking shows; the same backoff; the same bound.
#[derive(Debug)]
pub struct Retry {
    what: String,
    limit: Duration,
    started: tokio::time::Instant,
    pause: Duration,
}

impl Retry {
    const FIRST_PAUSE: Duration = Duration::from_millis(2);
    const MAX_PAUSE: Duration = Duration::from_millis(50);

    /// Starts the clock of a wait for `what`, bounded by `limit`.
    pub fn new(what: impl Into<String>, limit: Duration) -> Retry {
        Retry {
            what: what.into(),
            limit,
            started: tokio::time::Instant::now(),
            pause: Self::FIRST_PAUSE,
        }
    }

    /// How long the wait has lasted.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Pauses before the next try: from 2 ms, doubling up to 50 ms. Panics naming the wait
    /// once its limit has passed.
    pub async fn pause(&mut self) {
        let waited = self.started.elapsed();
        assert!(
            waited < self.limit,
            "{}: not reached within {:?} (waited {waited:?})",
            self.what,
            self.limit
        );
        tokio::time::sleep(self.pause.min(self.limit - waited)).await;
        self.pause = (self.pause * 2).min(Self::MAX_PAUSE);
    }
}

/// Declares each named `async fn(Mode)` as two tokio tests, `local::NAME` and `cluster::NAME`,
/// one per [`Mode`].
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Mode::Local).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Mode::Cluster).await;
                }
            )*
        }
    };
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use comet::admin::{
    self, AdminTarget, GroupCommand, GroupSpec, TopicCommand, TopicSpec, TopicType,
};
use comet::config::Config;
use comet::server::{Node, Role};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1::ClusterMetadata;
use pb::messaging_service_client::MessagingServiceClient;
use tonic::transport::Channel;

/// How the node(s) of a test are deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One standalone node: proxy → broker in process.
    Local,
    /// Controller, broker and proxy as separate nodes over gRPC.
    Cluster,
}

/// A running Comet deployment for one test.
pub struct TestCluster {
    pub mode: Mode,
    /// Client-facing proxy address.
    pub proxy: SocketAddr,
    /// Controller address (admin).
    pub controller: SocketAddr,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
    /// The configuration the nodes started with (for adding nodes).
    cfg: Config,
}

/// The configuration tests start from: loopback, ephemeral ports, small segments, short
/// polling so that empty receives end quickly.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut cfg = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    cfg.log.level = "warn".to_owned();
    cfg.proxy.listen = "127.0.0.1:0".to_owned();
    cfg.broker.listen = "127.0.0.1:0".to_owned();
    cfg.controller.listen = "127.0.0.1:0".to_owned();
    cfg.controller.remoting_listen = "127.0.0.1:0".to_owned();
    cfg.metrics.listen = "127.0.0.1:0".to_owned();
    cfg.console.listen = "127.0.0.1:0".to_owned();
    cfg.broker.segment_size = comet::size::ByteSize(4 << 20);
    // Tests write a few MiB; a developer disk that is nearly full must not refuse them.
    cfg.broker.disk_high_watermark = 0.995;
    cfg.broker.disk_refuse_watermark = 0.999;
    cfg.proxy.long_polling_min = Duration::from_millis(200).into();
    cfg.controller.broker_lease = Duration::from_secs(10).into();
    cfg
}

impl TestCluster {
    /// Starts a deployment with [`test_config`].
    pub async fn start(mode: Mode) -> TestCluster {
        Self::start_with(mode, |_| {}).await
    }

    /// Starts a deployment with [`test_config`] adjusted by `tweak`.
    pub async fn start_with(mode: Mode, tweak: impl Fn(&mut Config)) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(mode, dir, tweak).await
    }

    /// Starts a deployment whose data lives in `dir` (reused across restarts).
    pub async fn start_in(
        mode: Mode,
        dir: tempfile::TempDir,
        tweak: impl Fn(&mut Config),
    ) -> TestCluster {
        let mut cfg = test_config(dir.path());
        tweak(&mut cfg);
        let mut nodes = Vec::new();
        let (proxy, controller) = match mode {
            Mode::Local => {
                let node = Node::start(Role::Standalone, &cfg)
                    .await
                    .expect("standalone starts");
                let a = node.addrs();
                let registered =
                    serving_broker(&node, node.metadata().expect("controller metadata"), &cfg);
                nodes.push(node);
                registered.await;
                (
                    a.proxy.expect("proxy addr"),
                    a.controller.expect("controller addr"),
                )
            }
            Mode::Cluster => {
                let ctl = Node::start(Role::Controller, &cfg)
                    .await
                    .expect("controller starts");
                let ctl_addr = ctl.addrs().controller.expect("controller addr");
                let ctl_metadata = ctl.metadata().expect("controller metadata");
                nodes.push(ctl);
                cfg.controllers = vec![ctl_addr.to_string()];
                let broker = Node::start(Role::Broker, &cfg)
                    .await
                    .expect("broker starts");
                let registered = serving_broker(&broker, ctl_metadata, &cfg);
                nodes.push(broker);
                registered.await;
                let proxy = Node::start(Role::Proxy, &cfg).await.expect("proxy starts");
                let p = proxy.addrs().proxy.expect("proxy addr");
                nodes.push(proxy);
                (p, ctl_addr)
            }
        };
        TestCluster {
            mode,
            proxy,
            controller,
            nodes,
            dir,
            cfg,
        }
    }

    /// The running nodes, in start order (controller, broker, proxy in cluster mode).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Starts one more proxy (a `comet proxy` node on a new 127.0.0.1 port, talking to this
    /// deployment's controller and broker over gRPC) and returns its client address. It stops
    /// with the deployment, before the others.
    pub async fn add_proxy(&mut self) -> SocketAddr {
        let mut cfg = self.cfg.clone();
        cfg.controllers = vec![self.controller.to_string()];
        cfg.proxy.listen = "127.0.0.1:0".to_owned();
        cfg.proxy.advertised_endpoint = String::new();
        let node = Node::start(Role::Proxy, &cfg)
            .await
            .expect("second proxy starts");
        let addr = node.addrs().proxy.expect("proxy addr");
        if let Some(mut metadata) = node.metadata() {
            let set = cfg.broker.broker_set.clone();
            tokio::time::timeout(
                Duration::from_secs(10),
                metadata.wait_for(|m| m.broker_sets.iter().any(|b| b.name == set)),
            )
            .await
            .expect("the new proxy sees the broker set")
            .expect("metadata watch open");
        }
        self.nodes.push(node);
        addr
    }

    /// Stops the proxy listening at `addr` (one added with [`TestCluster::add_proxy`], or the
    /// first one in cluster mode) while the rest of the deployment keeps running.
    pub async fn stop_proxy(&mut self, addr: SocketAddr) {
        let i = self
            .nodes
            .iter()
            .position(|n| n.addrs().proxy == Some(addr) && n.addrs().broker.is_none())
            .unwrap_or_else(|| panic!("no proxy-only node listens at {addr}"));
        let node = self.nodes.remove(i);
        node.shutdown().await.expect("proxy stops cleanly");
    }

    /// The web console's address (the controller's, or standalone's).
    pub fn console(&self) -> SocketAddr {
        self.nodes
            .iter()
            .find_map(|n| n.addrs().console)
            .expect("a node serves the console")
    }

    /// `host:port` for client options.
    pub fn access_url(&self) -> String {
        self.proxy.to_string()
    }

    /// Admin target for this deployment's controller.
    pub fn admin(&self) -> AdminTarget {
        AdminTarget {
            controllers: vec![self.controller.to_string()],
            config: None,
            namespace: String::new(),
            username: None,
            password: None,
        }
    }

    /// Creates a topic and waits until the proxy routes it.
    pub async fn create_topic(&self, name: &str, queues: u32, message_type: TopicType) {
        admin::topic(
            &self.admin(),
            &TopicCommand::Create(TopicSpec {
                name: name.to_owned(),
                queues,
                message_type,
                broker_sets: Vec::new(),
                perm: admin::Perm::Rw,
            }),
        )
        .await
        .expect("topic created");
        self.wait_routable(name).await;
    }

    /// Creates a consumer group (and waits until the proxy sees it).
    pub async fn create_group(&self, name: &str, max_retries: u32, backoff: Option<&str>) {
        self.create_group_with(name, max_retries, false, backoff)
            .await;
    }

    /// Creates a consumer group, FIFO or not (and waits until every node sees it).
    pub async fn create_group_with(
        &self,
        name: &str,
        max_retries: u32,
        fifo: bool,
        backoff: Option<&str>,
    ) {
        admin::group(
            &self.admin(),
            &GroupCommand::Create(GroupSpec {
                name: name.to_owned(),
                max_retries,
                fifo,
                broadcast: false,
                from_start: false,
                backoff: backoff.map(str::to_owned),
                priority_percent: None,
            }),
        )
        .await
        .expect("group created");
        self.wait_metadata(&format!("group {name}"), |m| {
            m.groups.iter().any(|g| g.name == name)
        })
        .await;
    }

    /// Waits (bounded) until every node's view of the metadata has `topic` (a created topic,
    /// or a dead-letter topic `%DLQ%<group>`, which exists once any broker set does).
    pub async fn wait_routable(&self, topic: &str) {
        self.wait_metadata(&format!("topic {topic}"), |m| {
            m.topics.iter().any(|t| t.name == topic)
                || (topic.starts_with(comet_vocab::system::DLQ_PREFIX) && !m.broker_sets.is_empty())
        })
        .await;
    }

    /// Waits (bounded) until `pred` holds for the metadata every node serves from (in cluster
    /// mode the broker and the proxy each watch the controller).
    async fn wait_metadata(&self, what: &str, pred: impl Fn(&Arc<ClusterMetadata>) -> bool) {
        for node in &self.nodes {
            let Some(mut metadata) = node.metadata() else {
                continue;
            };
            tokio::time::timeout(Duration::from_secs(10), metadata.wait_for(&pred))
                .await
                .unwrap_or_else(|_| panic!("{what} never reached every node"))
                .expect("metadata watch open");
        }
    }

    /// A raw v2 client to the proxy.
    pub async fn v2(&self) -> MessagingServiceClient<Channel> {
        MessagingServiceClient::connect(format!("http://{}", self.proxy))
            .await
            .expect("connect to proxy")
    }

    /// Creates a broadcast consumer group (`comet group create NAME --broadcast
    /// [--from-start]`) and waits until every node sees it.
    pub async fn create_broadcast_group(&self, name: &str, max_retries: u32, from_start: bool) {
        admin::group(
            &self.admin(),
            &GroupCommand::Create(GroupSpec {
                name: name.to_owned(),
                max_retries,
                fifo: false,
                broadcast: true,
                from_start,
                backoff: None,
                priority_percent: None,
            }),
        )
        .await
        .expect("broadcast group created");
        self.wait_metadata(&format!("group {name}"), |m| {
            m.groups.iter().any(|g| g.name == name && g.broadcast)
        })
        .await;
    }

    /// The clients of broadcast group `group` with a position on the deployment's (first)
    /// broker, sorted.
    pub fn broadcast_clients(&self, group: &str) -> Vec<String> {
        self.nodes
            .iter()
            .find_map(Node::broker)
            .expect("the deployment runs a broker")
            .api()
            .broadcast_clients(group)
    }

    /// Stops every node in order (proxy, broker, controller) and returns the data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        while let Some(node) = self.nodes.pop() {
            node.shutdown().await.expect("clean shutdown");
        }
        self.dir
    }
}

/// Waits (bounded) until the controller's metadata (`ctl_metadata`) lists the broker of node
/// `broker` alive at the address it listens on now and, for a replicated broker (`comet
/// broker`), until it serves as the master of its set: a proxy's first metadata snapshot then
/// already routes to it. After a restart the broker listens on a new port while the
/// controller still lists the previous one until it registers again. (This also keeps a
/// test from stopping the node while its first heartbeats are still under way.)
pub(crate) fn serving_broker(
    broker: &Node,
    mut ctl_metadata: tokio::sync::watch::Receiver<Arc<ClusterMetadata>>,
    cfg: &Config,
) -> impl Future<Output = ()> + 'static {
    let address = broker.addrs().broker.expect("broker addr").to_string();
    let status = broker.ha_status();
    let (set, id) = (cfg.broker.broker_set.clone(), cfg.broker.broker_id);
    async move {
        let epoch = tokio::time::timeout(
            REGISTER_LIMIT,
            ctl_metadata.wait_for(|m| {
                m.broker_sets.iter().any(|b| {
                    b.name == set
                        && b.master_epoch > 0
                        && b.master_broker_id == id
                        && b.members.iter().any(|x| x.alive && x.address == address)
                })
            }),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("broker set {set} never listed {address} alive within {REGISTER_LIMIT:?}")
        })
        .expect("controller metadata watch open")
        .broker_sets
        .iter()
        .find(|b| b.name == set)
        .map_or(0, |b| b.master_epoch);
        let Some(mut status) = status else {
            return;
        };
        let master = tokio::time::timeout(
            REGISTER_LIMIT,
            status.wait_for(|s| s.master_id == id && s.epoch >= epoch),
        )
        .await
        .map(|open| open.map(drop));
        match master {
            Ok(open) => open.expect("broker status watch open"),
            Err(_) => panic!(
                "broker {id} of {set} never became master at epoch {epoch}: {:?}",
                *status.borrow()
            ),
        }
    }
}

/// Longest a starting broker takes to register and take its role.
const REGISTER_LIMIT: Duration = Duration::from_secs(15);

/// A short unique suffix for resource names.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", N.fetch_add(1, Ordering::Relaxed))
}
