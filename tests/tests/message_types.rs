//! Message types end to end: delay/timer, retry policy, FIFO and transactions, with the
//! official Rust client `rocketmq` 5.0.0 where it supports the feature and raw
//! `apache.rocketmq.v2` calls where it does not; each test runs in Local and Cluster mode.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comet::admin::TopicType;
use comet_proto::apache::rocketmq::v2 as pb;
use comet_tests::{Mode, TestCluster, uuid_like};
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::{MessageBuilder, MessageView};
use rocketmq::{Producer, SimpleConsumer};
use tonic::Request;

/// Long polling the client asks for.
const CLIENT_LONG_POLL: Duration = Duration::from_secs(2);
/// Bound of every wait in these tests.
const LIMIT: Duration = Duration::from_secs(40);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn client_option(cluster: &TestCluster) -> ClientOption {
    client_option_at(&cluster.access_url())
}

fn client_option_at(access_url: &str) -> ClientOption {
    let mut o = ClientOption::default();
    o.set_access_url(access_url);
    o.set_timeout(Duration::from_secs(5));
    o.set_long_polling_timeout(CLIENT_LONG_POLL);
    o
}

async fn producer(cluster: &TestCluster, topic: &str) -> Producer {
    let mut opt = ProducerOption::default();
    opt.set_topics(vec![topic]);
    let mut p = Producer::new(opt, client_option(cluster)).expect("producer");
    p.start().await.expect("producer starts");
    p
}

async fn consumer(cluster: &TestCluster, group: &str, topic: &str) -> SimpleConsumer {
    let mut opt = SimpleConsumerOption::default();
    opt.set_consumer_group(group);
    opt.set_topics(vec![topic]);
    let mut c = SimpleConsumer::new(opt, client_option(cluster)).expect("consumer");
    c.start().await.expect("consumer starts");
    c
}

fn all() -> FilterExpression {
    FilterExpression::new(FilterType::Tag, "*")
}

/// Receives until `expected` messages arrived (bounded), without acking.
async fn receive_n(
    c: &SimpleConsumer,
    topic: &str,
    expected: usize,
    invisible: Duration,
) -> Vec<MessageView> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut got = Vec::new();
    while got.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "received {} of {expected} messages before the deadline",
            got.len()
        );
        got.extend(
            c.receive_with(topic, &all(), 32, invisible)
                .await
                .expect("receive"),
        );
    }
    got
}

fn res(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    })
}

fn raw_request<T>(message: T, client_id: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("x-mq-client-id", client_id.parse().expect("ascii id"));
    r
}

fn raw_message(topic: &str, id: &str, sys: pb::SystemProperties) -> pb::Message {
    pb::Message {
        topic: res(topic),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            message_id: id.to_owned(),
            body_encoding: pb::Encoding::Identity as i32,
            ..sys
        }),
        body: format!("body-{id}").into_bytes().into(),
    }
}

fn code_of(s: &Option<pb::Status>) -> pb::Code {
    pb::Code::try_from(s.as_ref().expect("status").code).expect("known code")
}

// ------------------------------------------------------------------------------------ delay

async fn delay_messages_arrive_on_time(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("delay-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster.create_topic(&topic, 2, TopicType::Delay).await;
    let p = producer(&cluster, &topic).await;
    let c = consumer(&cluster, &group, &topic).await;
    // The Rust client sends whole seconds: the next second boundary at least 2 s away.
    let due_s = now_ms() / 1000 + 3;
    for i in 0..3 {
        let m = MessageBuilder::delay_message_builder(
            &topic,
            format!("delayed-{i}").into_bytes(),
            due_s,
        )
        .build()
        .expect("message");
        p.send(m).await.expect("send");
    }
    let got = receive_n(&c, &topic, 3, Duration::from_secs(30)).await;
    let arrived = now_ms();
    let due = due_s * 1000;
    assert!(arrived >= due, "arrived {} ms early", due - arrived);
    assert!(arrived - due <= 100, "arrived {} ms late", arrived - due);
    for m in &got {
        assert_eq!(m.delivery_timestamp(), Some(due_s));
        c.ack(m).await.expect("ack");
    }
    p.shutdown().await.expect("producer shutdown");
    c.shutdown().await.expect("consumer shutdown");
    cluster.stop().await;
}

#[tokio::test]
async fn delay_messages_arrive_on_time_local() {
    delay_messages_arrive_on_time(Mode::Local).await;
}

#[tokio::test]
async fn delay_messages_arrive_on_time_cluster() {
    delay_messages_arrive_on_time(Mode::Cluster).await;
}

async fn delay_validation(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("delay-{}", uuid_like());
    let normal = format!("normal-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Delay).await;
    cluster.create_topic(&normal, 1, TopicType::Normal).await;
    let mut v2 = cluster.v2().await;
    let ts = |ms: i64| prost_types::Timestamp {
        seconds: ms / 1000,
        nanos: 0,
    };
    let cases: Vec<(&str, pb::SystemProperties, pb::Code, &str)> = vec![
        (
            &topic,
            pb::SystemProperties {
                message_type: pb::MessageType::Delay as i32,
                delivery_timestamp: Some(ts(now_ms() + 41 * 86_400_000)),
                ..Default::default()
            },
            pb::Code::IllegalDeliveryTime,
            "more than the limit of 3456000s (40 days)",
        ),
        (
            &topic,
            pb::SystemProperties {
                message_type: pb::MessageType::Delay as i32,
                ..Default::default()
            },
            pb::Code::MessagePropertyConflictWithType,
            "needs a delivery timestamp",
        ),
        (
            &normal,
            pb::SystemProperties {
                message_type: pb::MessageType::Delay as i32,
                delivery_timestamp: Some(ts(now_ms() + 10_000)),
                ..Default::default()
            },
            pb::Code::MessagePropertyConflictWithType,
            "accepts NORMAL messages, not DELAY",
        ),
        (
            &topic,
            pb::SystemProperties {
                message_type: pb::MessageType::Delay as i32,
                delivery_timestamp: Some(ts(now_ms() + 10_000)),
                message_group: Some("g1".into()),
                ..Default::default()
            },
            pb::Code::MessagePropertyConflictWithType,
            "must not carry a message group",
        ),
    ];
    for (t, sys, want, text) in cases {
        let r = v2
            .send_message(raw_request(
                pb::SendMessageRequest {
                    messages: vec![raw_message(t, &uuid_like(), sys)],
                },
                "validation-client",
            ))
            .await
            .expect("send answered")
            .into_inner();
        assert_eq!(code_of(&r.status), want, "{r:?}");
        let msg = &r.status.as_ref().expect("status").message;
        assert!(msg.contains(text), "{msg:?} should mention {text:?}");
    }
    cluster.stop().await;
}

#[tokio::test]
async fn delay_validation_local() {
    delay_validation(Mode::Local).await;
}

#[tokio::test]
async fn delay_validation_cluster() {
    delay_validation(Mode::Cluster).await;
}
