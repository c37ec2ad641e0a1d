//! Lite topics (RIP-83) on one broker: a LITE parent topic, lite topics created by their first
//! send, subscriptions per client with quota, in-order delivery within a lite topic, ack and
//! redelivery by lite topic, expiry with the unsubscribe notice, 10,000 lite topics, and
//! recovery of the lite index across a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use comet_broker::BrokerConfig;
use comet_proto::apache::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, Code, FilterExpression, FilterType, LiteSubscriptionAction,
    Message, MessageQueue, MessageType, OffsetOption, ReceiveMessageRequest,
    SyncLiteSubscriptionRequest, offset_option,
};
use comet_proto::comet::v1::broker_service_server::BrokerService;
use comet_proto::comet::v1::{
    ClusterMetadata, PopMessageResponse, SyncLiteRequest, TopicMessageType,
};
use common::*;

const LIMIT: Duration = Duration::from_secs(20);
const PARENT: &str = "chat";

/// `chat` (LITE, 4 queues), `plain` (MIXED, 1 queue), group `g`.
fn lite_metadata() -> ClusterMetadata {
    let mut md = metadata(&[(PARENT, 4), ("plain", 1)], &[("g", 2)]);
    md.topics[0].message_type = TopicMessageType::Lite as i32;
    md
}

fn lite_msg(lite: &str, id: &str) -> Message {
    let mut m = msg(PARENT, 0, id, None, &format!("body-{id}"));
    let sp = m.system_properties.as_mut().unwrap();
    sp.message_type = MessageType::Lite as i32;
    sp.lite_topic = Some(lite.into());
    m
}

fn with_client<T>(client: &str, t: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(t);
    r.metadata_mut()
        .insert(comet_broker::CLIENT_ID_HEADER, client.parse().unwrap());
    r
}

async fn sync(
    n: &Node,
    client: &str,
    action: LiteSubscriptionAction,
    lites: &[&str],
    quota: i32,
    offset: Option<offset_option::OffsetType>,
) -> (Code, String) {
    let req = SyncLiteRequest {
        request: Some(SyncLiteSubscriptionRequest {
            action: action as i32,
            topic: res(PARENT),
            group: res("g"),
            lite_topic_set: lites.iter().map(|s| (*s).to_owned()).collect(),
            version: None,
            offset_option: offset.map(|o| OffsetOption {
                offset_type: Some(o),
            }),
        }),
        quota,
    };
    let r = n
        .svc
        .sync_lite_subscription(with_client(client, req))
        .await
        .unwrap()
        .into_inner();
    let s = r.status.unwrap();
    (Code::try_from(s.code).unwrap(), s.message)
}

async fn lite_pop(n: &Node, client: &str, batch: i32, long_poll_ms: u64) -> PopMessageResponse {
    let req = ReceiveMessageRequest {
        group: res("g"),
        message_queue: Some(MessageQueue {
            topic: res(PARENT),
            id: 0,
            ..Default::default()
        }),
        filter_expression: Some(FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: batch,
        invisible_duration: secs(30_000),
        auto_renew: false,
        long_polling_timeout: secs(long_poll_ms),
        attempt_id: None,
    };
    n.svc
        .pop_message(with_client(client, req))
        .await
        .unwrap()
        .into_inner()
}

/// Pops until `want` messages arrived (bounded by [`LIMIT`]).
async fn pop_until(n: &Node, client: &str, want: usize, batch: i32) -> Vec<Message> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < want && start.elapsed() < LIMIT {
        out.extend(lite_pop(n, client, batch, 1000).await.messages);
    }
    out
}

async fn lite_ack(n: &Node, m: &Message) -> Code {
    let r = n
        .svc
        .ack_message(with_client(
            "c1",
            AckMessageRequest {
                group: res("g"),
                topic: res(PARENT),
                entries: vec![AckMessageEntry {
                    message_id: sp(m).message_id.clone(),
                    receipt_handle: handle(m),
                    lite_topic: sp(m).lite_topic.clone(),
                }],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    code(&r.entries[0].status)
}

fn ids(ms: &[Message]) -> Vec<String> {
    ms.iter().map(|m| sp(m).message_id.clone()).collect()
}

async fn send_ok(n: &Node, msgs: Vec<Message>) {
    let r = send(&n.svc, msgs).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
}

#[tokio::test]
async fn given_lite_messages_when_a_client_subscribes_should_deliver_in_order_per_lite_topic() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), lite_metadata()).await;
    send_ok(
        &n,
        vec![
            lite_msg("a", "a0"),
            lite_msg("b", "b0"),
            lite_msg("a", "a1"),
        ],
    )
    .await;
    send_ok(&n, vec![lite_msg("a", "a2"), lite_msg("c", "c0")]).await;
    // Not subscribed yet: nothing.
    assert!(lite_pop(&n, "c1", 32, 0).await.messages.is_empty());
    let (c, m) = sync(
        &n,
        "c1",
        LiteSubscriptionAction::PartialAdd,
        &["a", "b"],
        10,
        None,
    )
    .await;
    assert_eq!(c, Code::Ok, "{m}");
    // One message per lite topic at a time, each the oldest of its lite topic.
    let first = pop_until(&n, "c1", 2, 32).await;
    let mut got = ids(&first);
    got.sort();
    assert_eq!(got, ["a0", "b0"]);
    assert!(
        lite_pop(&n, "c1", 32, 0).await.messages.is_empty(),
        "a1 waits for a0"
    );
    let a0 = first.iter().find(|m| sp(m).message_id == "a0").unwrap();
    assert_eq!(sp(a0).lite_topic.as_deref(), Some("a"));
    assert_eq!(sp(a0).queue_offset, Some(0), "offset in the lite topic");
    // An ack without the lite topic names another consumer state: refused.
    let plain = ack(&n.svc, "g", PARENT, &handle(a0)).await;
    assert_eq!(plain, Code::InvalidReceiptHandle);
    assert_eq!(lite_ack(&n, a0).await, Code::Ok);
    let next = pop_until(&n, "c1", 1, 32).await;
    assert_eq!(ids(&next), ["a1"]);
    assert_eq!(sp(&next[0]).queue_offset, Some(1));
    assert_eq!(lite_ack(&n, &next[0]).await, Code::Ok);
    let next = pop_until(&n, "c1", 1, 32).await;
    assert_eq!(ids(&next), ["a2"]);
    // c is not subscribed: never delivered to this client.
    assert!(lite_pop(&n, "c1", 32, 0).await.messages.is_empty());
    // Removing b: its pending message is no longer handed to the client; adding c is.
    let (c, _) = sync(
        &n,
        "c1",
        LiteSubscriptionAction::CompleteAdd,
        &["c"],
        10,
        None,
    )
    .await;
    assert_eq!(c, Code::Ok);
    let got = pop_until(&n, "c1", 1, 32).await;
    assert_eq!(ids(&got), ["c0"]);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_an_unacked_lite_message_when_its_invisible_time_passes_should_redeliver_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), lite_metadata()).await;
    send_ok(&n, vec![lite_msg("a", "a0"), lite_msg("a", "a1")]).await;
    sync(
        &n,
        "c1",
        LiteSubscriptionAction::PartialAdd,
        &["a"],
        10,
        None,
    )
    .await;
    let got = pop_until(&n, "c1", 1, 32).await;
    assert_eq!(ids(&got), ["a0"]);
    // Visible again at once (a nack): redelivered before a1, attempt 2.
    let r = n
        .svc
        .change_invisible_duration(with_client(
            "c1",
            comet_proto::apache::rocketmq::v2::ChangeInvisibleDurationRequest {
                group: res("g"),
                topic: res(PARENT),
                receipt_handle: handle(&got[0]),
                invisible_duration: secs(0),
                message_id: "a0".into(),
                lite_topic: Some("a".into()),
                suspend: Some(true),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    let again = pop_until(&n, "c1", 1, 32).await;
    assert_eq!(ids(&again), ["a0"]);
    assert_eq!(sp(&again[0]).delivery_attempt, Some(2));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_a_quota_when_a_client_subscribes_beyond_it_should_refuse_with_the_quota_code() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), lite_metadata()).await;
    let (c, _) = sync(
        &n,
        "c1",
        LiteSubscriptionAction::PartialAdd,
        &["a", "b"],
        2,
        None,
    )
    .await;
    assert_eq!(c, Code::Ok);
    let (c, m) = sync(
        &n,
        "c1",
        LiteSubscriptionAction::PartialAdd,
        &["c"],
        2,
        None,
    )
    .await;
    assert_eq!(c, Code::LiteSubscriptionQuotaExceeded);
    assert!(m.contains("quota is 2"), "{m}");
    // Unsubscribing frees room.
    let (c, _) = sync(
        &n,
        "c1",
        LiteSubscriptionAction::PartialRemove,
        &["a"],
        2,
        None,
    )
    .await;
    assert_eq!(c, Code::Ok);
    let (c, _) = sync(
        &n,
        "c1",
        LiteSubscriptionAction::PartialAdd,
        &["c"],
        2,
        None,
    )
    .await;
    assert_eq!(c, Code::Ok);
    // Bad names and a non-LITE topic are refused.
    let (c, _) = sync(
        &n,
        "c1",
        LiteSubscriptionAction::PartialAdd,
        &["bad name"],
        9,
        None,
    )
    .await;
    assert_eq!(c, Code::IllegalLiteTopic);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_lite_rules_when_sending_should_refuse_what_breaks_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_lite_topics = 2;
    let n = open_with(cfg, lite_metadata()).await;
    send_ok(&n, vec![lite_msg("a", "a0"), lite_msg("b", "b0")]).await;
    let refused =
        |r: comet_proto::apache::rocketmq::v2::SendMessageResponse| code(&r.entries[0].status);
    // A third lite topic: over the broker's quota; an existing one still takes messages.
    let r = send(&n.svc, vec![lite_msg("c", "c0")]).await;
    assert_eq!(refused(r), Code::LiteTopicQuotaExceeded);
    send_ok(&n, vec![lite_msg("a", "a1")]).await;
    // A lite topic on a non-LITE topic, a plain message on a LITE topic.
    let mut m = lite_msg("a", "x");
    m.topic = res("plain");
    assert_eq!(
        refused(send(&n.svc, vec![m]).await),
        Code::MessagePropertyConflictWithType
    );
    let plain = msg(PARENT, 0, "y", None, "b");
    assert_eq!(
        refused(send(&n.svc, vec![plain]).await),
        Code::MessagePropertyConflictWithType
    );
    // A lite message with a message group; an empty or malformed lite topic.
    let mut m = lite_msg("a", "z");
    m.system_properties.as_mut().unwrap().message_group = Some("g".into());
    assert_eq!(
        refused(send(&n.svc, vec![m]).await),
        Code::MessagePropertyConflictWithType
    );
    assert_eq!(
        refused(send(&n.svc, vec![lite_msg("a b", "w")]).await),
        Code::IllegalLiteTopic
    );
    let mut m = lite_msg("", "v");
    m.system_properties.as_mut().unwrap().lite_topic = None;
    assert_eq!(refused(send(&n.svc, vec![m]).await), Code::IllegalLiteTopic);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_a_lite_topic_without_writes_when_its_ttl_passes_should_remove_it_and_notify() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: BrokerConfig = config(dir.path());
    cfg.lite_topic_ttl = Duration::from_secs(3);
    let n = open_with(cfg, lite_metadata()).await;
    send_ok(&n, vec![lite_msg("a", "a0")]).await;
    sync(
        &n,
        "c1",
        LiteSubscriptionAction::PartialAdd,
        &["a"],
        10,
        None,
    )
    .await;
    let got = pop_until(&n, "c1", 1, 32).await;
    assert_eq!(ids(&got), ["a0"]);
    assert_eq!(n.broker.api().stats().lite_topics, 1);
    // The expiry wakes the client's long poll, which answers with the notice.
    let start = Instant::now();
    let mut notices = Vec::new();
    while notices.is_empty() && start.elapsed() < LIMIT {
        notices = lite_pop(&n, "c1", 32, 5_000).await.unsubscribed_lite_topics;
    }
    assert_eq!(notices, ["a"]);
    assert_eq!(n.broker.api().stats().lite_topics, 0);
    assert_eq!(n.broker.api().stats().lite_subscriptions, 0);
    // The in-flight message's handle died with the lite topic.
    assert_eq!(lite_ack(&n, &got[0]).await, Code::InvalidReceiptHandle);
    // A new message creates the lite topic afresh, from offset 0.
    send_ok(&n, vec![lite_msg("a", "a1")]).await;
    sync(
        &n,
        "c1",
        LiteSubscriptionAction::PartialAdd,
        &["a"],
        10,
        None,
    )
    .await;
    let got = pop_until(&n, "c1", 1, 32).await;
    assert_eq!(ids(&got), ["a1"]);
    assert_eq!(sp(&got[0]).queue_offset, Some(0));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_ten_thousand_lite_topics_when_subscribed_should_deliver_each_one_once() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), lite_metadata()).await;
    let names: Vec<String> = (0..N).map(|i| format!("s{i}")).collect();
    for chunk in names.chunks(500) {
        let msgs = chunk
            .iter()
            .map(|l| lite_msg(l, &format!("m-{l}")))
            .collect();
        send_ok(&n, msgs).await;
    }
    assert_eq!(n.broker.api().stats().lite_topics, N as u64);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (c, m) = sync(
        &n,
        "c1",
        LiteSubscriptionAction::CompleteAdd,
        &refs,
        N as i32,
        None,
    )
    .await;
    assert_eq!(c, Code::Ok, "{m}");
    assert_eq!(n.broker.api().stats().lite_subscriptions, N as u64);
    let start = Instant::now();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < N && start.elapsed() < Duration::from_secs(120) {
        for m in lite_pop(&n, "c1", 32, 1000).await.messages {
            assert!(seen.insert(sp(&m).message_id.clone()), "twice: {m:?}");
        }
    }
    assert_eq!(seen.len(), N);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_lite_topics_and_positions_when_the_broker_restarts_should_recover_both() {
    let dir = tempfile::tempdir().unwrap();
    let md = lite_metadata();
    let n = open(dir.path(), md.clone()).await;
    send_ok(
        &n,
        vec![
            lite_msg("a", "a0"),
            lite_msg("a", "a1"),
            lite_msg("b", "b0"),
        ],
    )
    .await;
    sync(
        &n,
        "c1",
        LiteSubscriptionAction::PartialAdd,
        &["a"],
        10,
        None,
    )
    .await;
    let got = pop_until(&n, "c1", 1, 32).await;
    assert_eq!(lite_ack(&n, &got[0]).await, Code::Ok);
    n.broker.shutdown().await.unwrap();
    // The index log loses its tail (a crash before it was written): the store fills it in.
    let log = dir.path().join("lite").join("index.log");
    let len = std::fs::metadata(&log).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let n = open(dir.path(), md).await;
    assert_eq!(n.broker.api().stats().lite_topics, 2);
    // Subscriptions are soft state: the client syncs again; the group resumes after a0.
    sync(
        &n,
        "c1",
        LiteSubscriptionAction::CompleteAdd,
        &["a", "b"],
        10,
        None,
    )
    .await;
    let got = pop_until(&n, "c1", 2, 32).await;
    let mut seen = ids(&got);
    seen.sort();
    assert_eq!(seen, ["a1", "b0"]);
    // A new message after the restart continues the lite topic's offsets.
    let b0 = got.iter().find(|m| sp(m).message_id == "b0").unwrap();
    assert_eq!(lite_ack(&n, b0).await, Code::Ok);
    send_ok(&n, vec![lite_msg("b", "b1")]).await;
    let b1 = pop_until(&n, "c1", 1, 32).await;
    assert_eq!(ids(&b1), ["b1"]);
    assert_eq!(sp(&b1[0]).queue_offset, Some(1));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_an_offset_option_when_subscribing_should_start_where_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), lite_metadata()).await;
    send_ok(
        &n,
        (0..5).map(|i| lite_msg("a", &format!("a{i}"))).collect(),
    )
    .await;
    let tail = Some(offset_option::OffsetType::TailN(2));
    let (c, _) = sync(
        &n,
        "c1",
        LiteSubscriptionAction::PartialAdd,
        &["a"],
        10,
        tail,
    )
    .await;
    assert_eq!(c, Code::Ok);
    let got = pop_until(&n, "c1", 1, 32).await;
    assert_eq!(ids(&got), ["a3"]);
    let bad = Some(offset_option::OffsetType::Offset(99));
    let (c, m) = sync(
        &n,
        "c2",
        LiteSubscriptionAction::PartialAdd,
        &["a"],
        10,
        bad,
    )
    .await;
    assert_eq!(c, Code::IllegalOffset, "{m}");
    let max = Some(offset_option::OffsetType::Policy(
        offset_option::Policy::Max as i32,
    ));
    sync(
        &n,
        "c3",
        LiteSubscriptionAction::PartialAdd,
        &["a"],
        10,
        max,
    )
    .await;
    assert!(lite_pop(&n, "c3", 32, 0).await.messages.is_empty());
    n.broker.shutdown().await.unwrap();
}
