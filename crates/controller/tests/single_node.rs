//! A single-node controller, as `comet standalone` runs it: writes, status
//! codes, restart from disk, watch streams and broker leases.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::time::Duration;

use comet_controller::{Controller, ControllerConfig, ControllerError};
use comet_proto::comet::v1 as pb;
use common::*;
use futures::StreamExt;

#[tokio::test]
async fn given_a_created_topic_when_restarted_from_the_same_dir_should_still_serve_it() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = bind().await;
    let node = start(test_config(1, dir.path(), addr), listener).await;
    wait_leader(&node.ctrl).await;
    let mut client = node.client().await;

    let reg = client
        .register_broker(register("broker-a", 0, "127.0.0.1:10911"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reg.broker_set.unwrap().members[0].address,
        "127.0.0.1:10911"
    );
    let created = client
        .create_topic(pb::CreateTopicRequest {
            topic: Some(topic("ns%orders", "broker-a", 8)),
        })
        .await
        .unwrap()
        .into_inner();
    let t = created.topic.unwrap();
    assert_eq!(
        t.permission, 4,
        "UNSPECIFIED permission is stored as READ_WRITE"
    );
    let group = client
        .create_group(pb::CreateGroupRequest {
            group: Some(pb::Group {
                name: "ns%g".to_owned(),
                max_retries: 0,
                retry_policy: None,
                fifo: true,
                priority_percent: None,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(group.group.unwrap().max_retries, 16);
    assert!(group.revision > created.revision);
    let before = client
        .get_metadata(pb::GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(before.revision >= group.revision);
    assert_eq!(before.cluster_name, "DefaultCluster");
    drop(client);
    node.stop().await;

    // Same directory, new port: everything is read back from disk.
    let (listener, addr) = bind().await;
    let node = start(test_config(1, dir.path(), addr), listener).await;
    let mut rx = node.ctrl.metadata();
    let restored = wait_metadata(&mut rx, "restored topic", |m| {
        m.topics.iter().any(|t| t.name == "ns%orders")
    })
    .await;
    assert_eq!(restored.groups.len(), 1);
    assert_eq!(restored.broker_sets.len(), 1);
    wait_leader(&node.ctrl).await;
    let mut client = node.client().await;
    let after = client
        .get_metadata(pb::GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.groups, before.groups);
    assert!(after.revision >= before.revision, "revisions never go back");
    assert_eq!(after.broker_sets, before.broker_sets);
    drop(client);
    node.stop().await;
}

#[tokio::test]
async fn given_a_running_controller_when_another_opens_its_dir_should_fail_with_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (_l, addr) = bind().await;
    let first = Controller::start(test_config(1, dir.path(), addr))
        .await
        .unwrap();
    match Controller::start(test_config(1, dir.path(), addr)).await {
        Err(ControllerError::Locked { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("two controllers must not share a data directory"),
    }
    first.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_bad_config_when_starting_should_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ControllerConfig {
        data_dir: dir.path().to_owned(),
        election_timeout_min: Duration::from_millis(100),
        heartbeat_interval: Duration::from_millis(200),
        ..Default::default()
    };
    match Controller::start(cfg).await {
        Err(ControllerError::Config { key, .. }) => assert_eq!(key, "election_timeout_min"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("accepted a bad config"),
    }
}

#[tokio::test]
async fn given_invalid_requests_should_return_the_documented_status_codes() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = bind().await;
    let node = start(test_config(1, dir.path(), addr), listener).await;
    wait_leader(&node.ctrl).await;
    let mut c = node.client().await;
    c.register_broker(register("broker-a", 0, "127.0.0.1:10911"))
        .await
        .unwrap();

    let create = |t: pb::Topic| pb::CreateTopicRequest { topic: Some(t) };
    let code = |r: Result<tonic::Response<pb::TopicResponse>, tonic::Status>| match r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };

    let r = c.create_topic(create(topic("t1", "nope", 4))).await;
    let status = r.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("broker set nope is not registered"),
        "{}",
        status.message()
    );

    assert_eq!(
        code(c.create_topic(create(topic("t1", "broker-a", 4))).await),
        tonic::Code::Ok
    );
    assert_eq!(
        code(c.create_topic(create(topic("t1", "broker-a", 4))).await),
        tonic::Code::AlreadyExists
    );
    assert_eq!(
        code(
            c.create_topic(create(topic("%RETRY%g", "broker-a", 4)))
                .await
        ),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(c.create_topic(create(topic("t2", "broker-a", 0))).await),
        tonic::Code::InvalidArgument
    );
    let mut unspecified = topic("t3", "broker-a", 1);
    unspecified.message_type = 0;
    assert_eq!(
        code(c.create_topic(create(unspecified)).await),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.update_topic(pb::UpdateTopicRequest {
                topic: Some(topic("missing", "broker-a", 4))
            })
            .await
        ),
        tonic::Code::NotFound
    );
    let shrink = c
        .update_topic(pb::UpdateTopicRequest {
            topic: Some(topic("t1", "broker-a", 2)),
        })
        .await
        .unwrap_err();
    assert_eq!(shrink.code(), tonic::Code::InvalidArgument);
    assert!(shrink.message().contains("shrink"), "{}", shrink.message());
    let grown = c
        .update_topic(pb::UpdateTopicRequest {
            topic: Some(topic("t1", "broker-a", 16)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.topic.unwrap().placements[0].queue_count, 16);
    let del = c
        .delete_topic(pb::DeleteTopicRequest {
            name: "t1".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(del.revision > grown.revision);
    assert_eq!(
        c.delete_topic(pb::DeleteTopicRequest {
            name: "t1".to_owned()
        })
        .await
        .unwrap_err()
        .code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        c.delete_group(pb::DeleteGroupRequest {
            name: "nope".to_owned()
        })
        .await
        .unwrap_err()
        .code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        c.register_broker(register("broker-a", 1, "no-port"))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        c.broker_heartbeat(pb::BrokerHeartbeatRequest {
            broker_set: "broker-a".to_owned(),
            broker_id: 99,
            ..Default::default()
        })
        .await
        .unwrap_err()
        .code(),
        tonic::Code::NotFound
    );
    drop(c);
    node.stop().await;
}

#[tokio::test]
async fn given_a_watch_stream_when_a_topic_is_created_should_yield_the_current_then_the_new_snapshot()
 {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = bind().await;
    let node = start(test_config(1, dir.path(), addr), listener).await;
    wait_leader(&node.ctrl).await;
    let mut c = node.client().await;
    c.register_broker(register("broker-a", 0, "127.0.0.1:10911"))
        .await
        .unwrap();

    let mut stream = c
        .watch_metadata(pb::WatchMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first.broker_sets.len(),
        1,
        "the current snapshot comes first"
    );
    assert!(first.topics.is_empty());

    let created = c
        .create_topic(pb::CreateTopicRequest {
            topic: Some(topic("orders", "broker-a", 4)),
        })
        .await
        .unwrap()
        .into_inner();
    let mut last_revision = first.revision;
    let seen = tokio::time::timeout(WAIT, async {
        while let Some(m) = stream.next().await {
            let m = m.unwrap();
            assert!(m.revision > last_revision, "snapshots only move forward");
            last_revision = m.revision;
            if m.topics.iter().any(|t| t.name == "orders") {
                return m;
            }
        }
        panic!("stream ended before the topic appeared");
    })
    .await
    .unwrap();
    assert_eq!(seen.revision, created.revision);

    // Shutdown ends the stream instead of hanging the server.
    let Node {
        ctrl, stop, server, ..
    } = node;
    ctrl.shutdown().await.unwrap();
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert!(end.is_none() || matches!(end, Some(Err(_))));
    drop(stream);
    drop(c);
    let _ = stop.send(());
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn given_a_short_lease_when_a_broker_stops_heartbeating_should_mark_it_dead_then_revive_it() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = bind().await;
    let mut cfg = test_config(1, dir.path(), addr);
    cfg.broker_lease = Duration::from_millis(300);
    let node = start(cfg, listener).await;
    wait_leader(&node.ctrl).await;
    let mut c = node.client().await;
    let mut rx = node.ctrl.metadata();

    let reg = c
        .register_broker(register("broker-a", 0, "127.0.0.1:10911"))
        .await
        .unwrap()
        .into_inner();
    let hb = c
        .broker_heartbeat(pb::BrokerHeartbeatRequest {
            broker_set: "broker-a".to_owned(),
            broker_id: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.lease_ms, 300);

    // Idempotent registration writes no entry.
    let again = c
        .register_broker(register("broker-a", 0, "127.0.0.1:10911"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revision, reg.revision);

    let dead = wait_metadata(&mut rx, "broker marked dead", |m| {
        m.broker_sets
            .iter()
            .flat_map(|s| &s.members)
            .any(|b| b.broker_id == 0 && !b.alive)
    })
    .await;
    assert!(dead.revision > reg.revision);

    c.broker_heartbeat(pb::BrokerHeartbeatRequest {
        broker_set: "broker-a".to_owned(),
        broker_id: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let alive = node.ctrl.metadata().borrow().clone();
    assert!(
        alive.broker_sets[0].members[0].alive,
        "a heartbeat from a dead broker revives it before it returns"
    );

    // An address change is a new entry.
    let moved = c
        .register_broker(register("broker-a", 0, "127.0.0.1:20911"))
        .await
        .unwrap()
        .into_inner();
    assert!(moved.revision > alive.revision);
    assert_eq!(
        moved.broker_set.unwrap().members[0].address,
        "127.0.0.1:20911"
    );
    drop(c);
    node.stop().await;
}

#[tokio::test]
async fn given_a_snapshot_and_a_purged_log_when_restarted_should_rebuild_from_snapshot_plus_log() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = bind().await;
    let node = start(test_config(1, dir.path(), addr), listener).await;
    wait_leader(&node.ctrl).await;
    let mut c = node.client().await;
    c.register_broker(register("broker-a", 0, "127.0.0.1:10911"))
        .await
        .unwrap();
    for i in 0..5 {
        c.create_topic(pb::CreateTopicRequest {
            topic: Some(topic(&format!("before-{i}"), "broker-a", 1)),
        })
        .await
        .unwrap();
    }
    let raft = node.ctrl.raft().clone();
    raft.trigger().snapshot().await.unwrap();
    let m = raft
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some(), "snapshot built")
        .await
        .unwrap();
    let snap = m.snapshot.unwrap();
    raft.trigger().purge_log(snap.index).await.unwrap();
    raft.wait(Some(WAIT))
        .metrics(|m| m.purged == Some(snap), "log purged")
        .await
        .unwrap();
    // Entries after the snapshot live only in the log.
    c.create_topic(pb::CreateTopicRequest {
        topic: Some(topic("after", "broker-a", 1)),
    })
    .await
    .unwrap();
    let before = node.ctrl.metadata().borrow().clone();
    drop(c);
    node.stop().await;

    let (listener, addr) = bind().await;
    let node = start(test_config(1, dir.path(), addr), listener).await;
    let mut rx = node.ctrl.metadata();
    let restored = wait_metadata(&mut rx, "snapshot + log replay", |m| {
        m.revision >= before.revision
    })
    .await;
    assert_eq!(restored.topics, before.topics);
    assert_eq!(restored.topics.len(), 6);
    assert!(dir.path().join("state/snapshot.json").exists());
    node.stop().await;
}

#[tokio::test]
async fn given_a_lapsed_master_when_a_replica_is_in_sync_should_elect_it_with_the_next_epoch() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = bind().await;
    let mut cfg = test_config(1, dir.path(), addr);
    cfg.broker_lease = Duration::from_millis(400);
    let node = start(cfg, listener).await;
    wait_leader(&node.ctrl).await;
    let mut c = node.client().await;
    let mut rx = node.ctrl.metadata();

    // The first member of a new set is elected at once.
    let first = c
        .register_broker(register("ha", 0, "127.0.0.1:10911"))
        .await
        .unwrap()
        .into_inner()
        .broker_set
        .unwrap();
    assert_eq!((first.master_broker_id, first.master_epoch), (0, 1));
    assert_eq!(first.sync_state_set, vec![0]);
    c.register_broker(register("ha", 1, "127.0.0.1:10912"))
        .await
        .unwrap();
    let alter = |master: u64, epoch: u64, sss: Vec<u64>| pb::AlterSyncStateSetRequest {
        broker_set: "ha".to_owned(),
        master_broker_id: master,
        master_epoch: epoch,
        sync_state_set: sss,
    };
    let err = c
        .alter_sync_state_set(alter(1, 1, vec![0, 1]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let set = c
        .alter_sync_state_set(alter(0, 1, vec![0, 1]))
        .await
        .unwrap()
        .into_inner()
        .broker_set
        .unwrap();
    assert_eq!(set.sync_state_set, vec![0, 1]);

    // Only broker 1 keeps heartbeating: broker 0's lease lapses and 1 takes over.
    let hb = |id: u64| pb::BrokerHeartbeatRequest {
        broker_set: "ha".to_owned(),
        broker_id: id,
        log_epoch: 1,
        log_end_offset: 100,
    };
    let elected = {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            c.broker_heartbeat(hb(1)).await.unwrap();
            let m = rx.borrow_and_update().clone();
            let set = m
                .broker_sets
                .iter()
                .find(|s| s.name == "ha")
                .cloned()
                .unwrap();
            if set.master_epoch == 2 {
                break set;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no election: {set:?}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    };
    assert_eq!(elected.master_broker_id, 1);
    assert_eq!(elected.sync_state_set, vec![1]);
    // The old master's epoch is fenced off.
    let err = c
        .alter_sync_state_set(alter(0, 1, vec![0]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    node.stop().await;
}
