//! Broadcast consumer groups at the broker: a position per (group, client id), across
//! restarts, and the expiry of silent clients.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use comet_broker::BrokerGrpc;
use comet_proto::apache::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, ChangeInvisibleDurationRequest, Code, FilterExpression,
    FilterType, Message, MessageQueue, ReceiveMessageRequest,
};
use comet_proto::comet::v1::ClusterMetadata;
use comet_proto::comet::v1::broker_service_server::BrokerService;
use common::*;

const LIMIT: Duration = Duration::from_secs(15);

/// Topic `t` (two queues) and the broadcast group `bg` (new clients start at the earliest
/// message when `from_start`).
fn broadcast_metadata(from_start: bool) -> ClusterMetadata {
    let mut md = metadata(&[("t", 2)], &[("bg", 16)]);
    md.groups[0].broadcast = true;
    md.groups[0].broadcast_from_start = from_start;
    md
}

fn as_client<T>(client: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if !client.is_empty() {
        r.metadata_mut()
            .insert(comet_broker::CLIENT_ID_HEADER, client.parse().unwrap());
    }
    r
}

async fn pop_as(svc: &BrokerGrpc, client: &str, invisible_ms: u64) -> (Code, Vec<Message>) {
    let r = svc
        .pop_message(as_client(
            client,
            ReceiveMessageRequest {
                group: res("bg"),
                message_queue: Some(MessageQueue {
                    topic: res("t"),
                    id: -1,
                    ..Default::default()
                }),
                filter_expression: Some(FilterExpression {
                    r#type: FilterType::Tag as i32,
                    expression: "*".into(),
                }),
                batch_size: 32,
                invisible_duration: secs(invisible_ms),
                auto_renew: false,
                long_polling_timeout: secs(0),
                attempt_id: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    (code(&r.status), r.messages)
}

/// Pops as `client` until `n` messages arrived (bounded by [`LIMIT`]).
async fn pop_n_as(svc: &BrokerGrpc, client: &str, n: usize) -> Vec<Message> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(start.elapsed() < LIMIT, "{client}: {} of {n}", out.len());
        out.extend(pop_as(svc, client, 30_000).await.1);
    }
    out
}

async fn ack_as(svc: &BrokerGrpc, client: &str, m: &Message) -> Code {
    let r = svc
        .ack_message(as_client(
            client,
            AckMessageRequest {
                group: res("bg"),
                topic: res("t"),
                entries: vec![AckMessageEntry {
                    receipt_handle: handle(m),
                    ..Default::default()
                }],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    r.entries
        .first()
        .map_or(code(&r.status), |e| code(&e.status))
}

async fn show_again_as(svc: &BrokerGrpc, client: &str, m: &Message) -> Code {
    let r = svc
        .change_invisible_duration(as_client(
            client,
            ChangeInvisibleDurationRequest {
                group: res("bg"),
                topic: res("t"),
                receipt_handle: handle(m),
                invisible_duration: secs(0),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    code(&r.status)
}

fn bodies(ms: &[Message]) -> Vec<String> {
    let mut v: Vec<String> = ms
        .iter()
        .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn given_broadcast_group_when_clients_pop_should_each_get_every_message_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let md = broadcast_metadata(true);
    let n = open(dir.path(), md.clone()).await;
    for i in 0..4 {
        send_one(&n.svc, "t", i % 2, &format!("m{i}"), None).await;
    }
    let a = pop_n_as(&n.svc, "client-a", 4).await;
    let b = pop_n_as(&n.svc, "client-b", 4).await;
    assert_eq!(bodies(&a), bodies(&b), "each client receives every message");
    assert_eq!(bodies(&a).len(), 4);
    assert_eq!(
        ack_as(&n.svc, "client-b", &a[0]).await,
        Code::InvalidReceiptHandle,
        "a handle is its client's own"
    );
    assert_eq!(
        pop_as(&n.svc, "", 1_000).await.0,
        Code::ClientIdRequired,
        "a broadcast group needs the client id"
    );
    assert_eq!(ack_as(&n.svc, "client-a", &a[0]).await, Code::Ok);
    assert_eq!(ack_as(&n.svc, "client-a", &a[1]).await, Code::Ok);
    n.broker.shutdown().await.unwrap();

    let n = open(dir.path(), md).await;
    assert_eq!(
        n.svc.api().broadcast_clients("bg"),
        vec!["client-a".to_owned(), "client-b".to_owned()]
    );
    // Still invisible (30 s): nothing for either client until one shows its messages again,
    // with the handles issued before the restart.
    assert_eq!(
        pop_as(&n.svc, "client-a", 30_000).await.0,
        Code::MessageNotFound
    );
    for m in &a[2..] {
        assert_eq!(show_again_as(&n.svc, "client-a", m).await, Code::Ok);
    }
    let again = pop_n_as(&n.svc, "client-a", 2).await;
    assert_eq!(
        bodies(&again),
        bodies(&a[2..]),
        "only the unacknowledged come back"
    );
    assert!(again.iter().all(|m| sp(m).delivery_attempt == Some(2)));
    assert_eq!(
        pop_as(&n.svc, "client-b", 30_000).await.0,
        Code::MessageNotFound
    );
    // A new client starts at the earliest message (from_start).
    assert_eq!(pop_n_as(&n.svc, "client-c", 4).await.len(), 4);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_new_client_when_group_starts_at_the_end_should_skip_older_messages() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), broadcast_metadata(false)).await;
    send_one(&n.svc, "t", 0, "old", None).await;
    assert_eq!(
        pop_as(&n.svc, "late", 30_000).await.0,
        Code::MessageNotFound
    );
    send_one(&n.svc, "t", 1, "new", None).await;
    let got = pop_n_as(&n.svc, "late", 1).await;
    assert_eq!(bodies(&got), vec!["body-new".to_owned()]);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_silent_client_when_ttl_passes_should_forget_its_position_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let md = broadcast_metadata(true);
    let mut cfg = config(dir.path());
    cfg.broadcast_client_ttl = Duration::from_millis(300);
    let n = open_with(cfg.clone(), md.clone()).await;
    send_one(&n.svc, "t", 0, "m0", None).await;
    assert_eq!(pop_n_as(&n.svc, "gone", 1).await.len(), 1);
    assert_eq!(n.svc.api().broadcast_clients("bg"), vec!["gone".to_owned()]);
    // The expiry bumps its count once the removal is persisted: wait for that.
    let mut expiries = n.svc.api().broadcast_expiries();
    // `is_ok` drops the borrow of the watch at once (the expiry task writes to it).
    let expired = tokio::time::timeout(LIMIT, expiries.wait_for(|n| *n >= 1))
        .await
        .is_ok();
    assert!(expired, "the silent client never expired");
    assert!(n.svc.api().broadcast_clients("bg").is_empty());
    n.broker.shutdown().await.unwrap();

    let n = open_with(cfg, md).await;
    assert!(
        n.svc.api().broadcast_clients("bg").is_empty(),
        "the removal survives a restart"
    );
    // Coming back it is a new client: its old message in flight is delivered afresh.
    let back = pop_n_as(&n.svc, "gone", 1).await;
    assert_eq!(sp(&back[0]).delivery_attempt, Some(1));
    n.broker.shutdown().await.unwrap();
}
