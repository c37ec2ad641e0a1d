//! Priority messages (RIP-80) on a PRIORITY topic: a message's queue is its priority, pops
//! of every queue take the highest first; the group's `priority_percent` disables it; bad
//! priorities are refused with the proxy's codes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{Code, Message, MessageType};
use comet_proto::comet::v1::{ClusterMetadata, TopicMessageType};
use common::*;

const LIMIT: Duration = Duration::from_secs(20);

/// Topic `t` (PRIORITY, 4 queues here), group `g` with `percent` (None: the default).
fn priority_metadata(percent: Option<u32>) -> ClusterMetadata {
    let mut md = metadata(&[("t", 4)], &[("g", 16)]);
    md.topics[0].message_type = TopicMessageType::Priority as i32;
    md.groups[0].priority_percent = percent;
    md
}

fn prioritized(id: &str, priority: i32) -> Message {
    let mut m = msg("t", 0, id, None, &format!("body-{id}"));
    let sp = m.system_properties.as_mut().unwrap();
    sp.message_type = MessageType::Priority as i32;
    sp.priority = Some(priority);
    m
}

/// Sends messages of priorities 0, 1, 2, 5 (5 shares the top queue with 3), lowest first.
async fn send_backlog(n: &Node) {
    let msgs = [("p0", 0), ("p1", 1), ("p2", 2), ("p5", 5), ("p3", 3)]
        .into_iter()
        .map(|(id, p)| prioritized(id, p))
        .collect();
    let r = send(&n.svc, msgs).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
}

/// Pops one message at a time until `n` arrived; their ids in order.
async fn pop_one_by_one(node: &Node, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let got = pop_n(
            &node.svc,
            &Pop {
                batch: 1,
                ..Default::default()
            },
            1,
            LIMIT,
        )
        .await;
        assert_eq!(got.len(), 1, "after {ids:?}");
        ids.push(sp(&got[0]).message_id.clone());
    }
    ids
}

#[tokio::test]
async fn given_a_backlog_of_priorities_when_popped_should_hand_out_the_highest_first() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), priority_metadata(None)).await;
    send_backlog(&n).await;
    let ids = pop_one_by_one(&n, 5).await;
    // Queue 3 holds p5 and p3 in send order; then 2, 1, 0.
    assert_eq!(ids, ["p5", "p3", "p2", "p1", "p0"]);
    // A batch is filled in the same order, and a message carries its priority and queue.
    let r = send(&n.svc, vec![prioritized("b0", 0), prioritized("b2", 2)]).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    let got = pop_n(&n.svc, &Pop::default(), 2, LIMIT).await;
    let seen: Vec<(String, Option<i32>, i32)> = got
        .iter()
        .map(|m| (sp(m).message_id.clone(), sp(m).priority, sp(m).queue_id))
        .collect();
    assert_eq!(
        seen,
        [("b2".to_owned(), Some(2), 2), ("b0".to_owned(), Some(0), 0)]
    );
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_a_group_with_priority_disabled_when_popped_should_go_round_robin() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), priority_metadata(Some(0))).await;
    send_backlog(&n).await;
    let ids = pop_one_by_one(&n, 5).await;
    assert_ne!(ids[0], "p5", "priority is off for the group: {ids:?}");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ["p0", "p1", "p2", "p3", "p5"]);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_bad_priorities_when_sent_should_be_refused_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), priority_metadata(None)).await;
    let negative = prioritized("neg", -1);
    let mut grouped = prioritized("grouped", 1);
    grouped.system_properties.as_mut().unwrap().message_group = Some("mg".into());
    let mut delayed = prioritized("delayed", 1);
    delayed
        .system_properties
        .as_mut()
        .unwrap()
        .delivery_timestamp = Some(prost_types::Timestamp {
        seconds: now_ms() / 1000 + 60,
        nanos: 0,
    });
    let mut missing = prioritized("missing", 1);
    missing.system_properties.as_mut().unwrap().priority = None;
    let r = send(&n.svc, vec![negative, grouped, delayed, missing]).await;
    let got: Vec<(Code, String)> = r
        .entries
        .iter()
        .map(|e| (code(&e.status), e.status.as_ref().unwrap().message.clone()))
        .collect();
    assert_eq!(got[0].0, Code::BadRequest, "{got:?}");
    assert!(got[0].1.contains("negative"), "{got:?}");
    assert_eq!(got[1].0, Code::MessagePropertyConflictWithType);
    assert!(got[1].1.contains("message group"), "{got:?}");
    assert_eq!(got[2].0, Code::MessagePropertyConflictWithType);
    assert!(got[2].1.contains("delivery timestamp"), "{got:?}");
    assert_eq!(got[3].0, Code::MessagePropertyConflictWithType);
    assert!(got[3].1.contains("needs a priority"), "{got:?}");
    n.broker.shutdown().await.unwrap();
}
