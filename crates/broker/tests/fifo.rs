//! FIFO consumer groups: one message per message group out at a time, in queue order.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{
    Code, ForwardMessageToDeadLetterQueueRequest, Message, MessageType,
};
use comet_proto::comet::v1::ClusterMetadata;
use comet_proto::comet::v1::broker_service_server::BrokerService;
use common::*;

const LIMIT: Duration = Duration::from_secs(15);

fn fifo_metadata() -> ClusterMetadata {
    let mut md = metadata(&[("t", 1)], &[("fifo", 16), ("plain", 16)]);
    md.groups[0].fifo = true;
    md
}

fn grouped(id: &str, group: Option<&str>) -> Message {
    let mut m = msg("t", 0, id, None, &format!("body-{id}"));
    let sp = m.system_properties.as_mut().unwrap();
    if let Some(g) = group {
        sp.message_group = Some(g.into());
        sp.message_type = MessageType::Fifo as i32;
    }
    m
}

fn ids(msgs: &[Message]) -> Vec<String> {
    msgs.iter().map(|m| sp(m).message_id.clone()).collect()
}

fn fifo_pop(invisible_ms: u64) -> Pop<'static> {
    Pop {
        group: "fifo",
        invisible_ms,
        ..Default::default()
    }
}

async fn send_all(svc: &comet_broker::BrokerGrpc, spec: &[(&str, Option<&str>)]) {
    let msgs = spec.iter().map(|(id, g)| grouped(id, *g)).collect();
    let r = send(svc, msgs).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
}

/// Pops once (no long poll) and returns what came.
async fn pop_now(svc: &comet_broker::BrokerGrpc, p: &Pop<'_>) -> Vec<Message> {
    pop(svc, p).await.messages
}

#[tokio::test]
async fn given_fifo_group_when_popped_should_hand_out_one_message_per_message_group_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), fifo_metadata()).await;
    send_all(
        &n.svc,
        &[
            ("a1", Some("A")),
            ("b1", Some("B")),
            ("a2", Some("A")),
            ("x1", None),
            ("a3", Some("A")),
            ("b2", Some("B")),
            ("x2", None),
        ],
    )
    .await;
    let p = fifo_pop(30_000);
    let first = pop_n(&n.svc, &p, 4, LIMIT).await;
    assert_eq!(ids(&first), vec!["a1", "b1", "x1", "x2"]);
    assert!(pop_now(&n.svc, &p).await.is_empty(), "A and B are blocked");
    // A plain group on the same queue is not affected.
    let plain = pop_n(
        &n.svc,
        &Pop {
            group: "plain",
            ..Default::default()
        },
        7,
        LIMIT,
    )
    .await;
    assert_eq!(plain.len(), 7);
    // Acking a1 releases a2 only.
    assert_eq!(ack(&n.svc, "fifo", "t", &handle(&first[0])).await, Code::Ok);
    let next = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(ids(&next), vec!["a2"]);
    assert_eq!(sp(&next[0]).delivery_attempt, Some(1));
    assert!(pop_now(&n.svc, &p).await.is_empty());
    assert_eq!(ack(&n.svc, "fifo", "t", &handle(&first[1])).await, Code::Ok);
    assert_eq!(ack(&n.svc, "fifo", "t", &handle(&next[0])).await, Code::Ok);
    let rest = pop_n(&n.svc, &p, 2, LIMIT).await;
    assert_eq!(ids(&rest), vec!["a3", "b2"]);
    for m in rest.iter().chain(&first[2..]) {
        assert_eq!(ack(&n.svc, "fifo", "t", &handle(m)).await, Code::Ok);
    }
    let progress = n.broker.consumer_progress("fifo", "t", 0).unwrap();
    assert_eq!((progress.ack_offset, progress.inflight), (7, 0));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_unacked_fifo_message_when_redelivered_should_keep_its_group_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), fifo_metadata()).await;
    send_all(&n.svc, &[("a1", Some("A")), ("a2", Some("A"))]).await;
    let p = fifo_pop(300);
    let first = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(ids(&first), vec!["a1"]);
    // Not acked: after the invisible time a1 comes back, never a2.
    let again = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(ids(&again), vec!["a1"]);
    assert_eq!(sp(&again[0]).delivery_attempt, Some(2));
    // A nack through ChangeInvisibleDuration keeps the order as well.
    let r = change(&n.svc, "fifo", "t", &handle(&again[0]), 0).await;
    assert_eq!(code(&r.status), Code::Ok);
    let third = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(ids(&third), vec!["a1"]);
    assert_eq!(sp(&third[0]).delivery_attempt, Some(3));
    assert_eq!(ack(&n.svc, "fifo", "t", &handle(&third[0])).await, Code::Ok);
    let next = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(ids(&next), vec!["a2"]);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_fifo_message_forwarded_to_dlq_when_popped_should_release_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), fifo_metadata()).await;
    send_all(&n.svc, &[("a1", Some("A")), ("a2", Some("A"))]).await;
    let p = fifo_pop(30_000);
    let first = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(ids(&first), vec!["a1"]);
    let r = n
        .svc
        .forward_message_to_dead_letter_queue(tonic::Request::new(
            ForwardMessageToDeadLetterQueueRequest {
                group: res("fifo"),
                topic: res("t"),
                receipt_handle: handle(&first[0]),
                message_id: "a1".into(),
                delivery_attempt: 1,
                max_delivery_attempts: 1,
                lite_topic: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::Ok);
    let next = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(ids(&next), vec!["a2"]);
    let dead = pop_n(
        &n.svc,
        &Pop {
            group: "reader",
            topic: "%DLQ%fifo",
            ..Default::default()
        },
        1,
        LIMIT,
    )
    .await;
    assert_eq!(ids(&dead), vec!["a1"]);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_exhausted_fifo_message_when_dead_lettered_automatically_should_release_successor() {
    let dir = tempfile::tempdir().unwrap();
    let mut md = fifo_metadata();
    md.groups[0].max_retries = 1;
    let n = open(dir.path(), md).await;
    send_all(&n.svc, &[("a1", Some("A")), ("a2", Some("A"))]).await;
    let p = fifo_pop(200);
    let got = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(ids(&got), vec!["a1"]);
    let got = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(
        (ids(&got), sp(&got[0]).delivery_attempt),
        (vec!["a1".to_owned()], Some(2))
    );
    // Second expiry: dead-lettered, a2 follows with attempt 1.
    let got = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(
        (ids(&got), sp(&got[0]).delivery_attempt),
        (vec!["a2".to_owned()], Some(1))
    );
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_restart_when_a_message_group_is_blocked_should_stay_blocked_until_acked() {
    let dir = tempfile::tempdir().unwrap();
    let md = fifo_metadata();
    let n = open(dir.path(), md.clone()).await;
    send_all(
        &n.svc,
        &[("a1", Some("A")), ("a2", Some("A")), ("b1", Some("B"))],
    )
    .await;
    let p = fifo_pop(30_000);
    let first = pop_n(&n.svc, &p, 2, LIMIT).await;
    assert_eq!(ids(&first), vec!["a1", "b1"]);
    // b1 is acked, a1 is not; then a crash-like stop.
    assert_eq!(ack(&n.svc, "fifo", "t", &handle(&first[1])).await, Code::Ok);
    n.broker.abandon().await;

    let n = open(dir.path(), md.clone()).await;
    let progress = n.broker.consumer_progress("fifo", "t", 0).unwrap();
    assert_eq!(
        (progress.ack_offset, progress.pop_offset, progress.inflight),
        (0, 3, 2),
        "a1 in flight, a2 held"
    );
    assert!(pop_now(&n.svc, &p).await.is_empty(), "A is still blocked");
    // The pre-restart handle still acknowledges a1, which releases a2.
    assert_eq!(ack(&n.svc, "fifo", "t", &handle(&first[0])).await, Code::Ok);
    n.broker.shutdown().await.unwrap();

    // Released but not yet delivered at the stop: a2 is delivered after the next start.
    let n = open(dir.path(), md).await;
    let next = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(ids(&next), vec!["a2"]);
    assert_eq!(sp(&next[0]).delivery_attempt, Some(1));
    assert_eq!(ack(&n.svc, "fifo", "t", &handle(&next[0])).await, Code::Ok);
    let progress = n.broker.consumer_progress("fifo", "t", 0).unwrap();
    assert_eq!((progress.ack_offset, progress.inflight), (3, 0));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_group_no_longer_fifo_when_popped_should_release_held_messages() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), fifo_metadata()).await;
    send_all(&n.svc, &[("a1", Some("A")), ("a2", Some("A"))]).await;
    let p = fifo_pop(30_000);
    assert_eq!(ids(&pop_n(&n.svc, &p, 1, LIMIT).await), vec!["a1"]);
    let mut md = fifo_metadata();
    md.groups[0].fifo = false;
    md.revision += 1;
    n.meta.send_replace(std::sync::Arc::new(md));
    assert_eq!(ids(&pop_n(&n.svc, &p, 1, LIMIT).await), vec!["a2"]);
    n.broker.shutdown().await.unwrap();
}
