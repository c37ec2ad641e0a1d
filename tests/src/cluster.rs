//! [`ClusterBuilder`] / [`Cluster`]: a multi-node deployment in the test process: N controllers
//! (one Raft group, each with its NameServer-compatible remoting endpoint), broker sets (one
//! broker each) and a proxy, every one a `comet::server::Node` on `127.0.0.1:0` ports talking
//! over real gRPC, exactly as `comet controller|broker|proxy` processes do.
//!
//! Faults: [`Cluster::kill_controller`] and [`Cluster::kill_broker_set`] stop a node abruptly
//! ([`Node::abort`]: connections reset, no drain, no final flush or checkpoint);
//! [`Cluster::restart_controller`] and [`Cluster::restart_broker_set`] start it again on the same
//! data directory (a controller also on the same addresses, which its peers know it by).
//! With [`ClusterBuilder::controller_relays`], [`Cluster::partition_controller`] cuts one
//! controller off from its peers and from every client (brokers, proxy, admin) in both
//! directions: each controller is known (Raft membership, clients' controller lists) by a
//! [`Relay`] in front of it, and binds its outgoing Raft connections to its own loopback
//! address (`controller.raft_source_ip` = 127.0.0.1 + node id), so the relays in front of its
//! peers can blackhole what it sends while the others keep talking. A partitioned controller
//! still runs; waits on the cluster's state ([`Cluster::wait_leader`],
//! [`Cluster::wait_metadata`], [`Cluster::metadata_now`]) leave it out until it is healed.
//!
//! Timings are short so failures are detected in about a second: Raft heartbeat 50 ms, election
//! timeout 300..600 ms, broker lease 1 s unless [`ClusterBuilder::broker_lease`] says otherwise.
//! Every wait is on state (Raft metrics, metadata watches) with the bounded [`WAIT`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use comet::admin::AdminTarget;
use comet::config::Config;
use comet::server::{Listeners, Node, Role};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1::ClusterMetadata;
use comet_proto::comet::v1::controller_service_client::ControllerServiceClient;
use pb::messaging_service_client::MessagingServiceClient;
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::relay::Relay;
use crate::test_config;

/// Upper bound of every wait on cluster state.
pub const WAIT: Duration = Duration::from_secs(20);

/// Builds a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    controllers: usize,
    broker_sets: Vec<String>,
    proxy: bool,
    broker_lease: Duration,
    controller_relays: bool,
    /// `[tls]` of every node (internal TLS when its `internal_*` keys say so).
    tls: Option<comet::config::TlsSection>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            controllers: 3,
            broker_sets: vec!["broker-a".to_owned(), "broker-b".to_owned()],
            proxy: true,
            broker_lease: Duration::from_secs(1),
            controller_relays: false,
            tls: None,
        }
    }
}

/// One controller node and what it needs to come back.
struct ControllerSlot {
    node_id: u64,
    /// The address it listens on.
    addr: SocketAddr,
    remoting: SocketAddr,
    cfg: Config,
    node: Option<Node>,
    /// The relay in front of it, whose address peers and clients know it by
    /// ([`ClusterBuilder::controller_relays`]).
    relay: Option<Relay>,
}

impl ControllerSlot {
    /// The address peers and clients reach it at.
    fn known_addr(&self) -> SocketAddr {
        self.relay.as_ref().map_or(self.addr, Relay::addr)
    }
}

/// The loopback address controller `node_id`'s outgoing Raft connections come from, with
/// relays: 127.0.0.1 + node id (127.0.0.2 for node 1), never 127.0.0.1, which every other
/// connection of the test process comes from.
fn raft_source_ip(node_id: u64) -> IpAddr {
    let last = u8::try_from(node_id + 1).expect("node ids of a test cluster are small");
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// One broker set (a single broker) and what it needs to come back.
struct BrokerSlot {
    cfg: Config,
    node: Option<Node>,
}

/// A running multi-node deployment.
pub struct Cluster {
    base: Config,
    controllers: Vec<ControllerSlot>,
    brokers: BTreeMap<String, BrokerSlot>,
    proxy: Option<Node>,
    proxy_addr: Option<SocketAddr>,
    dir: tempfile::TempDir,
    /// Controllers cut off by [`Cluster::partition_controller`], by index.
    partitioned: BTreeSet<usize>,
}

async fn bind_local() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("local addr");
    (l, a)
}

/// Binds exactly `addr` again (a restarted controller keeps the address its peers know).
fn rebind(addr: SocketAddr) -> TcpListener {
    let s = TcpSocket::new_v4().expect("socket");
    s.set_reuseaddr(true).expect("SO_REUSEADDR");
    s.bind(addr)
        .unwrap_or_else(|e| panic!("rebinding {addr}: {e}"));
    s.listen(1024).expect("listen")
}

impl ClusterBuilder {
    /// 3 controllers, broker sets `broker-a` and `broker-b`, one proxy, a 1 s broker lease.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of controllers (1, 3 or 5).
    pub fn controllers(mut self, n: usize) -> Self {
        self.controllers = n;
        self
    }

    /// Names of the broker sets (one broker each).
    pub fn broker_sets(mut self, names: &[&str]) -> Self {
        self.broker_sets = names.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// The controllers' broker lease.
    pub fn broker_lease(mut self, lease: Duration) -> Self {
        self.broker_lease = lease;
        self
    }

    /// Gives every node (controllers, brokers, proxy) this `[tls]` section, e.g. mutual TLS on
    /// every internal link.
    pub fn tls(mut self, tls: comet::config::TlsSection) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Starts no proxy.
    pub fn without_proxy(mut self) -> Self {
        self.proxy = false;
        self
    }

    /// Puts a [`Relay`] in front of every controller and binds each controller's outgoing
    /// Raft connections to its own loopback address, for [`Cluster::partition_controller`].
    pub fn controller_relays(mut self) -> Self {
        self.controller_relays = true;
        self
    }

    /// Starts every node and waits until a leader is agreed, every broker set is registered and
    /// alive, and the proxy's metadata shows them.
    pub async fn start(self) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut base = test_config(dir.path());
        base.controller.broker_lease = self.broker_lease.into();
        base.controller.heartbeat_interval = Duration::from_millis(50).into();
        base.controller.election_timeout_min = Duration::from_millis(300).into();
        base.controller.election_timeout_max = Duration::from_millis(600).into();
        if let Some(tls) = self.tls {
            base.tls = tls;
        }

        let mut bound = Vec::new();
        for _ in 0..self.controllers {
            let (ctl, addr) = bind_local().await;
            let relay = if self.controller_relays {
                Some(Relay::start(Some(addr)).await)
            } else {
                None
            };
            bound.push(((ctl, addr), bind_local().await, relay));
        }
        // The address each controller is known by: its relay's, or its own.
        let known: Vec<SocketAddr> = bound
            .iter()
            .map(|((_, a), _, r)| r.as_ref().map_or(*a, Relay::addr))
            .collect();
        let peers: Vec<String> = known
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        base.controllers = known.iter().map(SocketAddr::to_string).collect();
        let mut cluster = Cluster {
            base: base.clone(),
            controllers: Vec::new(),
            brokers: BTreeMap::new(),
            proxy: None,
            proxy_addr: None,
            dir,
            partitioned: BTreeSet::new(),
        };
        for (i, ((ctl, addr), (rem, remoting), relay)) in bound.into_iter().enumerate() {
            let node_id = i as u64 + 1;
            let mut cfg = base.clone();
            cfg.data_dir = cluster.dir.path().join(format!("controller-{node_id}"));
            cfg.controller.node_id = node_id;
            cfg.controller.peers = peers.clone();
            if let Some(r) = &relay {
                cfg.controller.advertised_addr = r.addr().to_string();
                cfg.controller.raft_source_ip = raft_source_ip(node_id).to_string();
            }
            let node = start_controller(&cfg, ctl, rem).await;
            cluster.controllers.push(ControllerSlot {
                node_id,
                addr,
                remoting,
                cfg,
                node: Some(node),
                relay,
            });
        }
        cluster.wait_leader().await;
        for name in &self.broker_sets {
            cluster.add_broker_set(name).await;
        }
        if self.proxy {
            let mut cfg = base.clone();
            cfg.data_dir = cluster.dir.path().join("proxy");
            let proxy = Node::start(Role::Proxy, &cfg).await.expect("proxy starts");
            cluster.proxy_addr = proxy.addrs().proxy;
            cluster.proxy = Some(proxy);
            let sets = self.broker_sets.clone();
            cluster
                .wait_metadata("every broker set alive", move |m| {
                    sets.iter().all(|s| broker_set_alive(m, s))
                })
                .await;
        }
        cluster
    }
}

/// Whether `set` has a live, elected master in `m`.
pub fn broker_set_alive(m: &ClusterMetadata, set: &str) -> bool {
    m.broker_sets.iter().any(|b| {
        b.name == set
            && b.master_epoch > 0
            && b.members
                .iter()
                .any(|x| x.broker_id == b.master_broker_id && x.alive)
    })
}

impl Cluster {
    /// Every controller's gRPC address (running or not), as clients are configured (its
    /// relay's with [`ClusterBuilder::controller_relays`]).
    pub fn controller_addrs(&self) -> Vec<String> {
        self.controllers
            .iter()
            .map(|c| c.known_addr().to_string())
            .collect()
    }

    /// The gRPC address of controller `i` (index, not node id), as clients know it.
    pub fn controller_addr(&self, i: usize) -> SocketAddr {
        self.controllers[i].known_addr()
    }

    /// The remoting (NameServer) address of controller `i`.
    pub fn remoting_addr(&self, i: usize) -> SocketAddr {
        self.controllers[i].remoting
    }

    /// Number of controllers (running or not).
    pub fn controller_count(&self) -> usize {
        self.controllers.len()
    }

    /// The running node of controller `i`.
    pub fn controller_node(&self, i: usize) -> Option<&Node> {
        self.controllers[i].node.as_ref()
    }

    /// Raft node id of controller `i`.
    pub fn controller_id(&self, i: usize) -> u64 {
        self.controllers[i].node_id
    }

    /// Admin target over every controller.
    pub fn admin(&self) -> AdminTarget {
        AdminTarget {
            controllers: self.controller_addrs(),
            config: None,
            namespace: String::new(),
            username: None,
            password: None,
        }
    }

    /// A ControllerService client of controller `i` (no leader following).
    pub async fn controller_client(&self, i: usize) -> ControllerServiceClient<Channel> {
        ControllerServiceClient::connect(format!("http://{}", self.controllers[i].known_addr()))
            .await
            .expect("connect to controller")
    }

    /// The proxy's client-facing address.
    pub fn proxy(&self) -> SocketAddr {
        self.proxy_addr.expect("the cluster has a proxy")
    }

    /// `host:port` for client options.
    pub fn access_url(&self) -> String {
        self.proxy().to_string()
    }

    /// A raw v2 client to the proxy.
    pub async fn v2(&self) -> MessagingServiceClient<Channel> {
        MessagingServiceClient::connect(format!("http://{}", self.proxy()))
            .await
            .expect("connect to proxy")
    }

    /// The advertised address of the broker of `set` (while it runs).
    pub fn broker_addr(&self, set: &str) -> Option<SocketAddr> {
        self.brokers
            .get(set)
            .and_then(|b| b.node.as_ref())
            .and_then(|n| n.addrs().broker)
    }

    /// The running nodes, but for partitioned controllers (their view is stale by design).
    fn running(&self) -> impl Iterator<Item = &Node> {
        self.controllers
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.partitioned.contains(i))
            .filter_map(|(_, c)| c.node.as_ref())
            .chain(self.brokers.values().filter_map(|b| b.node.as_ref()))
            .chain(self.proxy.iter())
    }

    /// Index of the controller every running controller (but for partitioned ones) agrees is
    /// the leader; waits (bounded) on Raft metrics.
    pub async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let running: Vec<(usize, &comet_controller::Controller)> = self
                .controllers
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.partitioned.contains(i))
                .filter_map(|(i, c)| c.node.as_ref().and_then(Node::controller).map(|n| (i, n)))
                .collect();
            let leaders: Vec<usize> = running
                .iter()
                .filter(|(_, c)| {
                    let m = c.raft().metrics();
                    let m = m.borrow();
                    m.state == openraft::ServerState::Leader
                        && m.current_leader == Some(c.node_id())
                })
                .map(|(i, _)| *i)
                .collect();
            if let [l] = leaders.as_slice() {
                let id = self.controllers[*l].node_id;
                if running
                    .iter()
                    .all(|(_, c)| c.raft().metrics().borrow().current_leader == Some(id))
                {
                    return *l;
                }
            }
            let mut metrics: Vec<_> = running.iter().map(|(_, c)| c.raft().metrics()).collect();
            let changed = futures_select(
                metrics
                    .iter_mut()
                    .map(|m| Box::pin(async move { m.changed().await })),
            );
            assert!(
                tokio::time::timeout_at(deadline, changed).await.is_ok(),
                "no agreed controller leader within {WAIT:?}"
            );
        }
    }

    /// Waits (bounded) until `pred` holds for the metadata of every running node.
    pub async fn wait_metadata(
        &self,
        what: &str,
        pred: impl Fn(&Arc<ClusterMetadata>) -> bool,
    ) -> Arc<ClusterMetadata> {
        let mut last = None;
        for node in self.running() {
            let Some(mut rx) = node.metadata() else {
                continue;
            };
            let got = match tokio::time::timeout(WAIT, rx.wait_for(&pred)).await {
                Ok(r) => Some(r.expect("metadata watch open").clone()),
                Err(_) => None,
            };
            match got {
                Some(m) => last = Some(m),
                None => panic!(
                    "{what}: not reached within {WAIT:?}; last: {:?}",
                    rx.borrow()
                ),
            }
        }
        last.expect("a running node")
    }

    /// The metadata of the first running node right now (no waiting).
    pub fn metadata_now(&self) -> Arc<ClusterMetadata> {
        self.running()
            .find_map(|n| n.metadata())
            .map(|rx| rx.borrow().clone())
            .expect("a running node with metadata")
    }

    /// Kills controller `i` ([`Node::abort`]).
    pub async fn kill_controller(&mut self, i: usize) {
        let node = self.controllers[i].node.take().expect("controller runs");
        node.abort().await;
    }

    /// Cuts controller `i` off from its peers and its clients, both ways (see the module
    /// docs); it keeps running. Needs [`ClusterBuilder::controller_relays`].
    pub fn partition_controller(&mut self, i: usize) {
        let source = raft_source_ip(self.controllers[i].node_id);
        for (j, c) in self.controllers.iter().enumerate() {
            let relay = c
                .relay
                .as_ref()
                .expect("partitioning a controller needs ClusterBuilder::controller_relays");
            if j == i {
                relay.partition();
            } else {
                relay.partition_from(source);
            }
        }
        self.partitioned.insert(i);
    }

    /// Ends [`Cluster::partition_controller`] of controller `i`.
    pub fn heal_controller(&mut self, i: usize) {
        let source = raft_source_ip(self.controllers[i].node_id);
        for (j, c) in self.controllers.iter().enumerate() {
            let Some(relay) = &c.relay else { continue };
            if j == i {
                relay.heal();
            } else {
                relay.heal_from(source);
            }
        }
        self.partitioned.remove(&i);
    }

    /// Restarts controller `i` on its data directory and addresses.
    pub async fn restart_controller(&mut self, i: usize) {
        let slot = &mut self.controllers[i];
        assert!(slot.node.is_none(), "controller {i} still runs");
        let node = start_controller(&slot.cfg, rebind(slot.addr), rebind(slot.remoting)).await;
        slot.node = Some(node);
    }

    /// Starts a new controller with `controller.join = true` (it waits to be added with
    /// `AddController`); returns its index. Clients of this cluster list it from now on.
    pub async fn start_joining_controller(&mut self) -> usize {
        let node_id = self.controllers.len() as u64 + 1;
        let (ctl, addr) = bind_local().await;
        let (rem, remoting) = bind_local().await;
        let mut cfg = self.base.clone();
        cfg.data_dir = self.dir.path().join(format!("controller-{node_id}"));
        cfg.controller.node_id = node_id;
        cfg.controller.peers = Vec::new();
        cfg.controller.join = true;
        let node = start_controller(&cfg, ctl, rem).await;
        self.controllers.push(ControllerSlot {
            node_id,
            addr,
            remoting,
            cfg,
            node: Some(node),
            relay: None,
        });
        self.controllers.len() - 1
    }

    /// Stops controller `i` cleanly (e.g. after removing it from the membership).
    pub async fn stop_controller(&mut self, i: usize) {
        if let Some(n) = self.controllers[i].node.take() {
            n.shutdown().await.expect("controller stops");
        }
    }

    /// The configuration every node starts from (before its own data directory and role keys).
    pub fn base_config(&self) -> &Config {
        &self.base
    }

    /// Starts a broker for a new broker set `name` (no restart of anything else) and waits
    /// until the leader sees it alive.
    pub async fn add_broker_set(&mut self, name: &str) {
        let mut cfg = self.base.clone();
        cfg.data_dir = self.dir.path().join(name);
        cfg.broker.broker_set = name.to_owned();
        let node = Node::start(Role::Broker, &cfg)
            .await
            .expect("broker starts");
        // Alive in the metadata is not yet serving: the broker then swaps its read-only
        // instance for a master one, and calls in that gap are refused. Wait for the swap.
        let ctl_metadata = self
            .controllers
            .iter()
            .find_map(|c| c.node.as_ref()?.metadata())
            .expect("a running controller");
        let serving = crate::serving_broker(&node, ctl_metadata, &cfg);
        self.brokers.insert(
            name.to_owned(),
            BrokerSlot {
                cfg,
                node: Some(node),
            },
        );
        serving.await;
        let set = name.to_owned();
        self.wait_metadata(&format!("broker set {name} alive"), move |m| {
            broker_set_alive(m, &set)
        })
        .await;
    }

    /// Kills the broker of `set` ([`Node::abort`]).
    pub async fn kill_broker_set(&mut self, set: &str) {
        let node = self
            .brokers
            .get_mut(set)
            .and_then(|b| b.node.take())
            .expect("broker runs");
        node.abort().await;
    }

    /// Restarts the broker of `set` on its data directory (on a new port: it re-registers) and
    /// waits until every node sees it alive again.
    pub async fn restart_broker_set(&mut self, set: &str) {
        let slot = self.brokers.get_mut(set).expect("known broker set");
        assert!(slot.node.is_none(), "broker {set} still runs");
        let node = Node::start(Role::Broker, &slot.cfg)
            .await
            .expect("broker restarts");
        let addr = node.addrs().broker.expect("broker addr").to_string();
        slot.node = Some(node);
        let name = set.to_owned();
        self.wait_metadata(&format!("broker set {set} back"), move |m| {
            m.broker_sets
                .iter()
                .any(|b| b.name == name && b.members.iter().any(|x| x.alive && x.address == addr))
        })
        .await;
    }

    /// The data directory of the whole deployment.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Stops every running node cleanly (proxy, brokers, controllers).
    pub async fn stop(mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown().await.expect("proxy stops");
        }
        for b in self.brokers.values_mut() {
            if let Some(n) = b.node.take() {
                n.shutdown().await.expect("broker stops");
            }
        }
        for c in &mut self.controllers {
            if let Some(n) = c.node.take() {
                n.shutdown().await.expect("controller stops");
            }
        }
    }
}

/// Starts a controller node serving its Raft/admin API on `ctl` and its remoting endpoint on
/// `rem`.
async fn start_controller(cfg: &Config, ctl: TcpListener, rem: TcpListener) -> Node {
    Node::start_with(
        Role::Controller,
        cfg,
        Listeners {
            controller: Some(ctl),
            remoting: Some(rem),
            ..Listeners::default()
        },
    )
    .await
    .expect("controller starts")
}

/// Resolves when the first of `futs` does.
async fn futures_select<F: std::future::Future + Unpin>(futs: impl Iterator<Item = F>) {
    let futs: Vec<F> = futs.collect();
    if futs.is_empty() {
        std::future::pending::<()>().await;
    }
    let _ = futures::future::select_all(futs).await;
}
