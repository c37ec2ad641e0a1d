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
//! - `tests/official_client.rs`: the official Rust client `rocketmq` 5.0.0, in both modes.
//! - `tests/api.rs`: raw v2 calls for what the official client cannot express (validation
//!   codes and messages, reflection, health).
//! - `tests/restart.rs` (own harness): a real `standalone` child process killed with SIGKILL.
//!
//! # Invariants
//! Tests never sleep to wait: they wait on state (metadata, long polls) with bounded deadlines.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use comet::admin::{
    self, AdminTarget, GroupCommand, GroupSpec, TopicCommand, TopicSpec, TopicType,
};
use comet::config::Config;
use comet::server::{Node, Role};
use comet_proto::apache::rocketmq::v2 as pb;
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
    cfg.broker.segment_size = comet::size::ByteSize(4 << 20);
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
                nodes.push(node);
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
                nodes.push(ctl);
                cfg.controllers = vec![ctl_addr.to_string()];
                let broker = Node::start(Role::Broker, &cfg)
                    .await
                    .expect("broker starts");
                nodes.push(broker);
                wait_for_broker(ctl_addr, &cfg.broker.broker_set).await;
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
        }
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
        admin::group(
            &self.admin(),
            &GroupCommand::Create(GroupSpec {
                name: name.to_owned(),
                max_retries,
                fifo: false,
                backoff: backoff.map(str::to_owned),
            }),
        )
        .await
        .expect("group created");
        // Group settings reach the proxy and broker through the same metadata stream as
        // topics; a topic created afterwards being routable proves the group arrived too.
        let marker = format!("marker-{}", uuid_like());
        self.create_topic(&marker, 1, TopicType::Normal).await;
    }

    /// Waits (bounded) until QueryRoute for `topic` succeeds at the proxy.
    pub async fn wait_routable(&self, topic: &str) {
        let mut client = self.v2().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut req = tonic::Request::new(pb::QueryRouteRequest {
                topic: Some(pb::Resource {
                    resource_namespace: String::new(),
                    name: topic.to_owned(),
                }),
                endpoints: None,
            });
            req.metadata_mut()
                .insert("x-mq-client-id", "harness".parse().expect("ascii"));
            if let Ok(resp) = client.query_route(req).await {
                let resp = resp.into_inner();
                if resp.status.as_ref().map(|s| s.code) == Some(pb::Code::Ok as i32) {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "topic {topic} never became routable"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A raw v2 client to the proxy.
    pub async fn v2(&self) -> MessagingServiceClient<Channel> {
        MessagingServiceClient::connect(format!("http://{}", self.proxy))
            .await
            .expect("connect to proxy")
    }

    /// Stops every node in order (proxy, broker, controller) and returns the data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        while let Some(node) = self.nodes.pop() {
            node.shutdown().await.expect("clean shutdown");
        }
        self.dir
    }
}

async fn wait_for_broker(ctl: SocketAddr, broker_set: &str) {
    let client =
        comet::controller_client::ControllerClient::new(vec![ctl.to_string()]).expect("client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let meta = client
            .call(|mut c| async move {
                c.get_metadata(comet_proto::comet::v1::GetMetadataRequest {})
                    .await
            })
            .await;
        if let Ok(m) = meta
            && m.broker_sets
                .iter()
                .any(|b| b.name == broker_set && b.members.iter().any(|m| m.alive))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker set {broker_set} never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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
