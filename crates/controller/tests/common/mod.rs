//! Shared harness: controllers served on 127.0.0.1:0 listeners.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use comet_controller::{Controller, ControllerConfig};
use comet_proto::comet::v1 as pb;
use comet_proto::comet::v1::controller_service_client::ControllerServiceClient;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;

/// Upper bound for any wait on cluster state in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Fast Raft timings for tests.
pub fn test_config(node_id: u64, dir: &Path, addr: SocketAddr) -> ControllerConfig {
    ControllerConfig {
        node_id,
        data_dir: dir.to_owned(),
        advertised_addr: addr.to_string(),
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        ..Default::default()
    }
}

/// A controller plus the tonic server serving its routes.
pub struct Node {
    pub ctrl: Controller,
    pub addr: SocketAddr,
    pub stop: oneshot::Sender<()>,
    pub server: tokio::task::JoinHandle<()>,
}

pub async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

pub async fn start(cfg: ControllerConfig, listener: TcpListener) -> Node {
    let addr = listener.local_addr().unwrap();
    let ctrl = Controller::start(cfg).await.unwrap();
    let routes = ctrl.routes();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
    });
    Node {
        ctrl,
        addr,
        stop,
        server,
    }
}

impl Node {
    pub async fn client(&self) -> ControllerServiceClient<Channel> {
        ControllerServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Shuts the controller down (ending watch streams), then the server.
    pub async fn stop(self) {
        self.ctrl.shutdown().await.unwrap();
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.server)
            .await
            .unwrap()
            .unwrap();
    }

    pub fn is_leader(&self) -> bool {
        let m = self.ctrl.raft().metrics();
        let m = m.borrow();
        m.current_leader == Some(self.ctrl.node_id()) && m.state == openraft::ServerState::Leader
    }
}

/// Waits until `pred` holds for the applied metadata.
pub async fn wait_metadata(
    rx: &mut watch::Receiver<Arc<pb::ClusterMetadata>>,
    what: &str,
    pred: impl FnMut(&Arc<pb::ClusterMetadata>) -> bool,
) -> Arc<pb::ClusterMetadata> {
    let got = match tokio::time::timeout(WAIT, rx.wait_for(pred)).await {
        Ok(Ok(m)) => Some(m.clone()),
        Ok(Err(_)) => panic!("metadata channel closed while waiting for {what}"),
        Err(_) => None,
    };
    match got {
        Some(m) => m,
        None => panic!("timed out waiting for {what}; last: {:?}", rx.borrow()),
    }
}

/// Waits until this node is the leader.
pub async fn wait_leader(ctrl: &Controller) {
    ctrl.raft()
        .wait(Some(WAIT))
        .state(openraft::ServerState::Leader, "leader")
        .await
        .unwrap();
}

pub fn topic(name: &str, broker_set: &str, queues: u32) -> pb::Topic {
    pb::Topic {
        name: name.to_owned(),
        message_type: pb::TopicMessageType::Normal as i32,
        placements: vec![pb::QueuePlacement {
            broker_set: broker_set.to_owned(),
            queue_count: queues,
        }],
        permission: 0,
        attributes: Default::default(),
    }
}

pub fn register(broker_set: &str, id: u64, address: &str) -> pb::RegisterBrokerRequest {
    pb::RegisterBrokerRequest {
        broker_set: broker_set.to_owned(),
        broker_id: id,
        address: address.to_owned(),
    }
}
