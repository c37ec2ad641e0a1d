//! Starts a proxy on 127.0.0.1:0 over fake brokers and a hand-built metadata watch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use comet_proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use comet_proto::apache::rocketmq::v2::{Permission, Resource};
use comet_proto::comet::v1::broker_service_server::BrokerServiceServer;
use comet_proto::comet::v1::{
    BrokerMember, BrokerSet, ClusterMetadata, Group, QueuePlacement, Topic, TopicMessageType,
};
use comet_proxy::link::{LinkOptions, LinkStats};
use comet_proxy::{BrokerDirectory, LocalBrokers, Proxy, ProxyConfig, RemoteBrokers, TopicCreator};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;

use super::fake_broker::FakeBroker;

pub const CLIENT_ID: &str = "test-host@1234#1";

pub fn topic(name: &str, ty: TopicMessageType, placements: &[(&str, u32)]) -> Topic {
    Topic {
        name: name.into(),
        message_type: ty as i32,
        placements: placements
            .iter()
            .map(|(s, n)| QueuePlacement {
                broker_set: (*s).into(),
                queue_count: *n,
            })
            .collect(),
        permission: Permission::ReadWrite as i32,
        attributes: HashMap::new(),
    }
}

pub fn broker_set(name: &str, alive: bool) -> BrokerSet {
    BrokerSet {
        name: name.into(),
        members: vec![BrokerMember {
            broker_set: name.into(),
            broker_id: 0,
            address: format!("{name}.internal:10911"),
            alive,
            last_heartbeat_ms: 0,
        }],
        master_broker_id: 0,
        master_epoch: 1,
        sync_state_set: vec![0],
    }
}

/// The default cluster: broker sets a and b; topics of every type; a FIFO group.
pub fn default_metadata() -> ClusterMetadata {
    ClusterMetadata {
        revision: 1,
        cluster_name: "test".into(),
        topics: vec![
            topic("normal", TopicMessageType::Normal, &[("a", 1)]),
            topic("mixed", TopicMessageType::Mixed, &[("a", 2), ("b", 2)]),
            topic("fifo", TopicMessageType::Fifo, &[("a", 4)]),
            topic("delay", TopicMessageType::Delay, &[("a", 1)]),
            topic("ns1%scoped", TopicMessageType::Normal, &[("a", 1)]),
        ],
        groups: vec![
            Group {
                name: "fifo-group".into(),
                max_retries: 3,
                retry_policy: None,
                fifo: true,
                priority_percent: None,
                ..Default::default()
            },
            Group {
                name: "ns1%g".into(),
                max_retries: 16,
                retry_policy: None,
                fifo: false,
                priority_percent: None,
                ..Default::default()
            },
        ],
        broker_sets: vec![broker_set("a", true), broker_set("b", true)],
        ..Default::default()
    }
}

/// Config suitable for tests: short polls and invisible times.
pub fn test_config() -> ProxyConfig {
    ProxyConfig {
        long_polling_min: Duration::from_millis(100),
        invisible_min: Duration::from_millis(500),
        ..ProxyConfig::default()
    }
}

pub struct Harness {
    pub addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub brokers: HashMap<String, Arc<FakeBroker>>,
    pub metadata: watch::Sender<Arc<ClusterMetadata>>,
    /// The links to the brokers (remote harnesses only).
    remote: Option<Arc<RemoteBrokers>>,
    /// Cancels the proxy's shutdown token when dropped (also when the harness is).
    shutdown: Option<DropGuard>,
    pub served: Option<JoinHandle<Result<(), comet_proxy::ProxyError>>>,
}

pub struct Builder {
    cfg: ProxyConfig,
    metadata: ClusterMetadata,
    creator: Option<Arc<dyn TopicCreator>>,
    remote: Option<LinkOptions>,
}

impl Builder {
    pub fn config(mut self, f: impl FnOnce(&mut ProxyConfig)) -> Self {
        f(&mut self.cfg);
        self
    }
    pub fn metadata(mut self, md: ClusterMetadata) -> Self {
        self.metadata = md;
        self
    }
    pub fn creator(mut self, c: Arc<dyn TopicCreator>) -> Self {
        self.creator = Some(c);
        self
    }

    /// Serve each fake broker over real gRPC and reach it through `RemoteBrokers`.
    pub fn remote(self) -> Self {
        self.remote_with(LinkOptions::default())
    }

    /// As [`Builder::remote`], with links of `options`.
    pub fn remote_with(mut self, options: LinkOptions) -> Self {
        self.remote = Some(options);
        self
    }

    pub async fn start(mut self) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let local = Arc::new(LocalBrokers::new());
        let mut brokers = HashMap::new();
        for set in &mut self.metadata.broker_sets {
            let b = FakeBroker::new(&set.name);
            local.insert(set.name.clone(), b.clone());
            brokers.insert(set.name.clone(), b.clone());
            if self.remote.is_some() {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                for m in &mut set.members {
                    m.address = l.local_addr().unwrap().to_string();
                }
                let svc = BrokerServiceServer::from_arc(b)
                    .max_decoding_message_size(64 * 1024 * 1024)
                    .max_encoding_message_size(64 * 1024 * 1024);
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(svc)
                        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
                );
            }
        }
        let remote = self
            .remote
            .map(|o| Arc::new(RemoteBrokers::with_options(o)));
        let directory: Arc<dyn BrokerDirectory> = match &remote {
            Some(r) => r.clone(),
            None => local,
        };
        let (tx, rx) = watch::channel(Arc::new(self.metadata));
        let mut cfg = self.cfg;
        cfg.advertised_endpoint = addr.to_string();
        let proxy = Arc::new(Proxy::new(cfg, rx, directory, self.creator));
        let stop = CancellationToken::new();
        let p = proxy.clone();
        let token = stop.clone();
        let served = tokio::spawn(async move { p.serve(listener, token).await });
        Harness {
            addr,
            proxy,
            brokers,
            metadata: tx,
            remote,
            shutdown: Some(stop.drop_guard()),
            served: Some(served),
        }
    }
}

impl Harness {
    pub fn builder() -> Builder {
        Builder {
            cfg: test_config(),
            metadata: default_metadata(),
            creator: None,
            remote: None,
        }
    }

    pub async fn start() -> Harness {
        Self::builder().start().await
    }

    pub fn broker(&self, set: &str) -> &Arc<FakeBroker> {
        &self.brokers[set]
    }

    /// Counters of the proxy's link to the broker of `set` (remote harnesses, after a call).
    pub fn link_stats(&self, set: &str) -> Option<LinkStats> {
        let md = self.metadata.borrow().clone();
        let address = md
            .broker_sets
            .iter()
            .find(|b| b.name == set)
            .and_then(|b| b.members.first())
            .map(|m| m.address.clone())?;
        self.remote.as_ref()?.link_stats(&address)
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn client(&self) -> MessagingServiceClient<Channel> {
        MessagingServiceClient::new(self.channel().await)
    }

    /// Triggers shutdown and waits for `serve` to return.
    pub async fn stop(&mut self) -> Result<(), comet_proxy::ProxyError> {
        drop(self.shutdown.take());
        match self.served.take() {
            Some(h) => tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("serve returned within 10 s")
                .unwrap(),
            None => Ok(()),
        }
    }
}

/// A request carrying the client id (and nothing else special).
pub fn req<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("x-mq-client-id", CLIENT_ID.parse().unwrap());
    r
}

/// A request without any Comet header.
pub fn bare<T>(message: T) -> tonic::Request<T> {
    tonic::Request::new(message)
}

pub fn res(name: &str) -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

pub fn res_ns(ns: &str, name: &str) -> Option<Resource> {
    Some(Resource {
        resource_namespace: ns.into(),
        name: name.into(),
    })
}
