//! Consumer state across broker restarts.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::Code;
use comet_proto::comet::v1::ClusterMetadata;
use common::*;

const LIMIT: Duration = Duration::from_secs(15);

/// A broker over `dir` with topic `t` (one queue) whose periodic persist never runs during a
/// test: only what calls write themselves (or `persist_state`) reaches the state log.
async fn open_without_periodic_persist(
    dir: &std::path::Path,
) -> (Node, comet_broker::BrokerConfig, ClusterMetadata) {
    let md = metadata(&[("t", 1)], &[]);
    let mut cfg = config(dir);
    cfg.state_persist_interval = Duration::from_secs(10);
    (open_with(cfg.clone(), md.clone()).await, cfg, md)
}

/// Stops `n` the way a crash would: no final snapshot, flush or checkpoint.
async fn crash(n: Node) {
    let Node { broker, svc, meta } = n;
    drop(svc);
    drop(meta);
    broker.abandon().await;
}

#[tokio::test]
async fn given_restart_when_popped_again_should_not_redeliver_acked_and_keep_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let md = metadata(&[("t", 1)], &[]);
    let n = open(dir.path(), md.clone()).await;
    for i in 0..4 {
        send_one(&n.svc, "t", 0, &format!("m{i}"), None).await;
    }
    let got = pop_n(&n.svc, &Pop::default(), 4, LIMIT).await;
    assert_eq!(got.len(), 4);
    assert_eq!(ack(&n.svc, "g", "t", &handle(&got[0])).await, Code::Ok);
    assert_eq!(ack(&n.svc, "g", "t", &handle(&got[2])).await, Code::Ok);
    n.broker.shutdown().await.unwrap();

    let n = open(dir.path(), md).await;
    let p = n.broker.consumer_progress("g", "t", 0).unwrap();
    assert_eq!((p.ack_offset, p.pop_offset, p.inflight), (1, 4, 2));
    // Still invisible (30 s): nothing to pop, and nothing acked comes back.
    let r = pop(&n.svc, &Pop::default()).await;
    assert_eq!(code(&r.status), Code::MessageNotFound);
    // Handles issued before the restart still work.
    assert_eq!(
        ack(&n.svc, "g", "t", &handle(&got[2])).await,
        Code::InvalidReceiptHandle,
        "already acked"
    );
    let r = change(&n.svc, "g", "t", &handle(&got[1]), 0).await;
    assert_eq!(code(&r.status), Code::Ok);
    assert_eq!(ack(&n.svc, "g", "t", &handle(&got[3])).await, Code::Ok);
    let again = pop_n(&n.svc, &Pop::default(), 1, LIMIT).await;
    assert_eq!(again.len(), 1);
    assert_eq!(sp(&again[0]).message_id, "m1");
    assert_eq!(sp(&again[0]).delivery_attempt, Some(2));
    assert_eq!(ack(&n.svc, "g", "t", &handle(&again[0])).await, Code::Ok);
    let p = n.broker.consumer_progress("g", "t", 0).unwrap();
    assert_eq!((p.ack_offset, p.inflight), (4, 0));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_inflight_at_restart_when_deadline_passes_should_redeliver() {
    let dir = tempfile::tempdir().unwrap();
    let md = metadata(&[("t", 1)], &[]);
    let n = open(dir.path(), md.clone()).await;
    send_one(&n.svc, "t", 0, "m", None).await;
    let got = pop_n(
        &n.svc,
        &Pop {
            invisible_ms: 1500,
            ..Default::default()
        },
        1,
        LIMIT,
    )
    .await;
    assert_eq!(got.len(), 1);
    n.broker.shutdown().await.unwrap();

    let n = open(dir.path(), md).await;
    let again = pop_n(&n.svc, &Pop::default(), 1, LIMIT).await;
    assert_eq!(again.len(), 1);
    assert_eq!(sp(&again[0]).message_id, "m");
    assert_eq!(sp(&again[0]).delivery_attempt, Some(2));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_broker_abandoned_without_shutdown_when_reopened_should_keep_persisted_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (n, cfg, md) = open_without_periodic_persist(dir.path()).await;
    for i in 0..3 {
        send_one(&n.svc, "t", 0, &format!("m{i}"), None).await;
    }
    let got = pop_n(&n.svc, &Pop::default(), 3, LIMIT).await;
    for m in &got {
        assert_eq!(ack(&n.svc, "g", "t", &handle(m)).await, Code::Ok);
    }
    // Make sure the acks are on disk, then stop without shutdown.
    n.broker.persist_state().await.unwrap();
    crash(n).await;
    let n = open_with(cfg.clone(), md.clone()).await;
    let p = n.broker.consumer_progress("g", "t", 0).unwrap();
    assert_eq!((p.ack_offset, p.inflight), (3, 0));
    let r = pop(&n.svc, &Pop::default()).await;
    assert_eq!(code(&r.status), Code::MessageNotFound);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_acks_answered_when_the_broker_crashes_before_any_periodic_persist_should_keep_them()
{
    let dir = tempfile::tempdir().unwrap();
    // No periodic persist during the test: an answered ack must already be in the state log.
    let (n, cfg, md) = open_without_periodic_persist(dir.path()).await;
    for i in 0..4 {
        send_one(&n.svc, "t", 0, &format!("m{i}"), None).await;
    }
    let got = pop_n(&n.svc, &Pop::default(), 4, LIMIT).await;
    for m in &got[..3] {
        assert_eq!(ack(&n.svc, "g", "t", &handle(m)).await, Code::Ok);
    }
    crash(n).await;
    let n = open_with(cfg.clone(), md.clone()).await;
    let p = n.broker.consumer_progress("g", "t", 0).unwrap();
    assert_eq!(
        (p.ack_offset, p.inflight),
        (3, 1),
        "three acks kept, the fourth message still in flight"
    );
    n.broker.shutdown().await.unwrap();
}
