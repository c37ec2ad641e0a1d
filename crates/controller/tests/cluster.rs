//! Three controllers on loopback: election, replication, follower behaviour
//! and leader failover over the real gRPC Raft transport.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use comet_controller::LEADER_METADATA_KEY;
use comet_proto::comet::v1 as pb;
use common::*;
use futures::StreamExt;
use tokio::time::Instant;

/// Index of the single node that leads (and is agreed on by all); re-checked
/// whenever any node's Raft metrics change, within a bounded deadline.
async fn wait_for_leader(nodes: &[Option<Node>]) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut metrics: Vec<_> = nodes
        .iter()
        .flatten()
        .map(|n| n.ctrl.raft().metrics())
        .collect();
    loop {
        let leaders: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().filter(|n| n.is_leader()).map(|_| i))
            .collect();
        if let [l] = leaders.as_slice() {
            let leader_id = nodes[*l].as_ref().map(|n| n.ctrl.node_id());
            let agreed = nodes
                .iter()
                .flatten()
                .all(|n| n.ctrl.raft().metrics().borrow().current_leader == leader_id);
            if agreed {
                return *l;
            }
        }
        let changed =
            futures::future::select_all(metrics.iter_mut().map(|m| Box::pin(m.changed())));
        assert!(
            tokio::time::timeout_at(deadline, changed).await.is_ok(),
            "no single agreed leader within {WAIT:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_controllers_when_the_leader_dies_should_elect_another_and_keep_the_metadata() {
    init_tracing();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(bind().await);
    }
    let peers: Vec<(u64, String)> = listeners
        .iter()
        .enumerate()
        .map(|(i, (_, a))| (i as u64 + 1, a.to_string()))
        .collect();
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for (i, (listener, addr)) in listeners.into_iter().enumerate() {
        let mut cfg = test_config(i as u64 + 1, dirs[i].path(), addr);
        cfg.peers = peers.clone();
        nodes.push(Some(start(cfg, listener).await));
    }

    tracing::info!("--- elect a leader and write through it");
    let leader = wait_for_leader(&nodes).await;
    let leader_addr = nodes[leader].as_ref().unwrap().addr.to_string();
    let mut lc = nodes[leader].as_ref().unwrap().client().await;
    lc.register_broker(register("broker-a", 0, "127.0.0.1:10911"))
        .await
        .unwrap();
    let created = lc
        .create_topic(pb::CreateTopicRequest {
            topic: Some(topic("orders", "broker-a", 4)),
        })
        .await
        .unwrap()
        .into_inner();

    tracing::info!("--- every node applies it");
    for n in nodes.iter().flatten() {
        let mut rx = n.ctrl.metadata();
        let m = wait_metadata(&mut rx, "replicated topic", |m| {
            m.revision >= created.revision && m.topics.iter().any(|t| t.name == "orders")
        })
        .await;
        assert_eq!(m.broker_sets.len(), 1);
    }

    tracing::info!("--- a follower refuses writes and reads with a leader hint, but watches work");
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let mut fc = nodes[follower].as_ref().unwrap().client().await;
    let err = fc
        .create_topic(pb::CreateTopicRequest {
            topic: Some(topic("other", "broker-a", 4)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        err.metadata()
            .get(LEADER_METADATA_KEY)
            .map(|v| v.to_str().unwrap().to_owned()),
        Some(leader_addr.clone())
    );
    let err = fc
        .get_metadata(pb::GetMetadataRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let err = fc
        .broker_heartbeat(pb::BrokerHeartbeatRequest {
            broker_set: "broker-a".to_owned(),
            broker_id: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let mut watch = fc
        .watch_metadata(pb::WatchMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.topics.iter().any(|t| t.name == "orders"));
    drop(watch);
    drop(fc);
    drop(lc);

    tracing::info!("--- kill the leader");
    nodes[leader].take().unwrap().stop().await;
    let new_leader = wait_for_leader(&nodes).await;
    assert_ne!(new_leader, leader);

    tracing::info!("--- the new leader serves the old metadata and takes writes");
    let mut nc = nodes[new_leader].as_ref().unwrap().client().await;
    let got = nc
        .get_metadata(pb::GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(got.topics.iter().any(|t| t.name == "orders"));
    let second = nc
        .create_topic(pb::CreateTopicRequest {
            topic: Some(topic("payments", "broker-a", 2)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(second.revision > created.revision);
    for n in nodes.iter().flatten() {
        let mut rx = n.ctrl.metadata();
        wait_metadata(&mut rx, "topic written after failover", |m| {
            m.topics.iter().any(|t| t.name == "payments")
        })
        .await;
    }
    drop(nc);
    for n in nodes.into_iter().flatten() {
        n.stop().await;
    }
}

async fn admin_client(
    node: &Node,
) -> pb::controller_admin_service_client::ControllerAdminServiceClient<tonic::transport::Channel> {
    pb::controller_admin_service_client::ControllerAdminServiceClient::connect(format!(
        "http://{}",
        node.addr
    ))
    .await
    .unwrap()
}

fn voters(d: &pb::DescribeControllersResponse) -> Vec<u64> {
    d.members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.node_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_controllers_when_a_node_is_added_and_removed_should_change_the_membership() {
    init_tracing();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut listeners = Vec::new();
    for _ in 0..4 {
        listeners.push(bind().await);
    }
    let peers: Vec<(u64, String)> = listeners[..3]
        .iter()
        .enumerate()
        .map(|(i, (_, a))| (i as u64 + 1, a.to_string()))
        .collect();
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for (i, (listener, addr)) in listeners.into_iter().enumerate() {
        let mut cfg = test_config(i as u64 + 1, dirs[i].path(), addr);
        if i < 3 {
            cfg.peers = peers.clone();
        } else {
            cfg.join = true;
        }
        nodes.push(Some(start(cfg, listener).await));
    }
    let leader = wait_for_leader(&nodes[..3]).await;
    let mut lc = nodes[leader].as_ref().unwrap().client().await;
    lc.register_broker(register("broker-a", 0, "127.0.0.1:10911"))
        .await
        .unwrap();
    lc.create_topic(pb::CreateTopicRequest {
        topic: Some(topic("before-join", "broker-a", 2)),
    })
    .await
    .unwrap();
    assert!(
        !nodes[3]
            .as_ref()
            .unwrap()
            .ctrl
            .raft()
            .is_initialized()
            .await
            .unwrap(),
        "a joining node does not initialize a cluster of its own"
    );

    tracing::info!("--- describe on any node; writes on a follower are refused with a hint");
    let mut la = admin_client(nodes[leader].as_ref().unwrap()).await;
    let d = la
        .describe_controllers(pb::DescribeControllersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voters(&d), [1, 2, 3]);
    assert_eq!(d.state, "Leader");
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let mut fa = admin_client(nodes[follower].as_ref().unwrap()).await;
    let fd = fa
        .describe_controllers(pb::DescribeControllersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fd.leader_id, d.leader_id);
    assert_eq!(
        fd.leader_address,
        nodes[leader].as_ref().unwrap().addr.to_string()
    );
    let new_addr = nodes[3].as_ref().unwrap().addr.to_string();
    let err = fa
        .add_controller(pb::AddControllerRequest {
            node_id: 4,
            address: new_addr.clone(),
            learner_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.metadata().get(LEADER_METADATA_KEY).is_some());

    tracing::info!("--- bad requests");
    for (id, addr, code) in [
        (0, new_addr.as_str(), tonic::Code::InvalidArgument),
        (4, "no-port", tonic::Code::InvalidArgument),
        (1, new_addr.as_str(), tonic::Code::AlreadyExists),
    ] {
        let e = la
            .add_controller(pb::AddControllerRequest {
                node_id: id,
                address: addr.to_owned(),
                learner_only: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{id} {addr}: {}", e.message());
    }
    let e = la
        .remove_controller(pb::RemoveControllerRequest { node_id: 9 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    tracing::info!("--- add node 4: it catches up and votes");
    let d = la
        .add_controller(pb::AddControllerRequest {
            node_id: 4,
            address: new_addr.clone(),
            learner_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voters(&d), [1, 2, 3, 4]);
    let mut rx = nodes[3].as_ref().unwrap().ctrl.metadata();
    wait_metadata(&mut rx, "the new node applies the old metadata", |m| {
        m.topics.iter().any(|t| t.name == "before-join")
    })
    .await;
    let again = la
        .add_controller(pb::AddControllerRequest {
            node_id: 4,
            address: new_addr.clone(),
            learner_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        voters(&again),
        [1, 2, 3, 4],
        "adding a member again is a no-op"
    );

    tracing::info!("--- remove the leader itself: the others elect a new one");
    let leader_id = leader as u64 + 1;
    let d = la
        .remove_controller(pb::RemoveControllerRequest { node_id: leader_id })
        .await
        .unwrap()
        .into_inner();
    assert!(!voters(&d).contains(&leader_id));
    drop(la);
    drop(lc);
    let removed = nodes[leader].take().unwrap();
    let new_leader = wait_for_leader(&nodes).await;
    let mut nc = nodes[new_leader].as_ref().unwrap().client().await;
    nc.create_topic(pb::CreateTopicRequest {
        topic: Some(topic("after-remove", "broker-a", 2)),
    })
    .await
    .unwrap();
    for n in nodes.iter().flatten() {
        let mut rx = n.ctrl.metadata();
        wait_metadata(&mut rx, "write after the removal", |m| {
            m.topics.iter().any(|t| t.name == "after-remove")
        })
        .await;
    }
    drop(nc);
    removed.stop().await;
    for n in nodes.into_iter().flatten() {
        n.stop().await;
    }
}
