//! Message types end to end: delay/timer, retry policy, FIFO, transactions and lite topics
//! (the Rust client has no lite API; Python 5.1.2 has a LitePushConsumer), with the
//! official Rust client `rocketmq` 5.0.0 where it supports the feature and raw
//! `apache.rocketmq.v2` calls where it does not; each test runs in Local and Cluster mode.

use std::time::Duration;

use comet::admin::TopicType;
use comet_proto::apache::rocketmq::v2 as pb;
use comet_tests::client::{self, receive_n, receive_rounds, tag};
use comet_tests::{Mode, TestCluster, now_ms, uuid_like};
use rocketmq::Producer;
use rocketmq::conf::ProducerOption;
use rocketmq::model::message::{MessageBuilder, MessageView};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;

/// Bound of every wait in these tests.
const LIMIT: Duration = Duration::from_secs(40);

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
    let p = client::producer(&cluster.access_url(), &topic).await;
    let c = client::consumer(&cluster.access_url(), &group, &topic).await;
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
    // The timer's precision shows in the first arrival. The client receives from one queue
    // at a time, so the rest may take another receive: they get a looser bound.
    let due = due_s * 1000;
    let mut got = Vec::new();
    let mut first = None;
    let limit = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 3 {
        assert!(
            tokio::time::Instant::now() < limit,
            "received {} of 3",
            got.len()
        );
        let batch = c
            .receive_with(topic.as_str(), &tag("*"), 32, Duration::from_secs(30))
            .await
            .expect("receive");
        if !batch.is_empty() {
            first.get_or_insert_with(now_ms);
        }
        got.extend(batch);
    }
    let (first, all) = (first.expect("a first arrival"), now_ms());
    assert!(first >= due, "arrived {} ms early", due - first);
    assert!(first - due <= 100, "first arrived {} ms late", first - due);
    assert!(all - due <= 1000, "the last arrived {} ms late", all - due);
    for m in &got {
        assert_eq!(m.delivery_timestamp(), Some(due_s));
        c.ack(m).await.expect("ack");
    }
    p.shutdown().await.expect("producer shutdown");
    c.shutdown().await.expect("consumer shutdown");
    cluster.stop().await;
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

// ------------------------------------------------------------------------------ telemetry

/// A raw telemetry stream: settings go out, server commands come in.
struct RawTelemetry {
    /// Keeps the client half of the stream open while the test reads.
    _outbound: tokio::sync::mpsc::Sender<pb::TelemetryCommand>,
    inbound: tonic::Streaming<pb::TelemetryCommand>,
}

impl RawTelemetry {
    /// Opens a stream for `client_id` and sends `settings`; returns it with the echo.
    async fn open(
        v2: &mut pb::messaging_service_client::MessagingServiceClient<tonic::transport::Channel>,
        client_id: &str,
        settings: pb::Settings,
    ) -> (RawTelemetry, pb::Settings) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(pb::TelemetryCommand {
            status: None,
            command: Some(pb::telemetry_command::Command::Settings(settings)),
        })
        .await
        .expect("queue settings");
        let inbound = v2
            .telemetry(raw_request(ReceiverStream::new(rx), client_id))
            .await
            .expect("telemetry opens")
            .into_inner();
        let mut t = RawTelemetry {
            _outbound: tx,
            inbound,
        };
        let echo = t.next().await;
        assert_eq!(code_of(&echo.status), pb::Code::Ok, "{echo:?}");
        let Some(pb::telemetry_command::Command::Settings(s)) = echo.command else {
            panic!("expected the settings echo, got {echo:?}");
        };
        (t, s)
    }

    /// The next server command (bounded wait).
    async fn next(&mut self) -> pb::TelemetryCommand {
        tokio::time::timeout(LIMIT, self.inbound.message())
            .await
            .expect("telemetry command in time")
            .expect("telemetry stream healthy")
            .expect("telemetry stream open")
    }
}

fn consumer_settings(group: &str) -> pb::Settings {
    pb::Settings {
        client_type: Some(pb::ClientType::SimpleConsumer as i32),
        pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
            group: res(group),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn secs_f(d: &Option<prost_types::Duration>) -> f64 {
    let d = d.as_ref().expect("duration");
    d.seconds as f64 + f64::from(d.nanos) / 1e9
}

// ----------------------------------------------------------------------------- retry policy

async fn retry_policy_is_echoed_to_consumers(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let exp = format!("exp-{}", uuid_like());
    let custom = format!("custom-{}", uuid_like());
    let fifo = format!("fifo-{}", uuid_like());
    cluster
        .create_group_with(&exp, 2, false, Some("exponential:250ms:10s:3"))
        .await;
    cluster
        .create_group_with(&custom, 5, false, Some("customized:1s,3s,7s"))
        .await;
    cluster.create_group_with(&fifo, 16, true, None).await;
    let mut v2 = cluster.v2().await;

    let (_t, echo) = RawTelemetry::open(&mut v2, "retry-client-1", consumer_settings(&exp)).await;
    let b = echo.backoff_policy.expect("backoff policy");
    assert_eq!(b.max_attempts, 3, "max_retries + 1");
    let Some(pb::retry_policy::Strategy::ExponentialBackoff(e)) = b.strategy else {
        panic!("exponential expected: {b:?}");
    };
    assert_eq!(secs_f(&e.initial), 0.25);
    assert_eq!(secs_f(&e.max), 10.0);
    assert_eq!(e.multiplier, 3.0);
    let Some(pb::settings::PubSub::Subscription(sub)) = echo.pub_sub else {
        panic!("subscription expected");
    };
    assert_eq!(sub.fifo, Some(false));

    let (_t, echo) =
        RawTelemetry::open(&mut v2, "retry-client-2", consumer_settings(&custom)).await;
    let b = echo.backoff_policy.expect("backoff policy");
    assert_eq!(b.max_attempts, 6);
    let Some(pb::retry_policy::Strategy::CustomizedBackoff(c)) = b.strategy else {
        panic!("customized expected: {b:?}");
    };
    let next: Vec<f64> = c.next.iter().map(|d| secs_f(&Some(*d))).collect();
    assert_eq!(next, vec![1.0, 3.0, 7.0]);

    let (_t, echo) = RawTelemetry::open(&mut v2, "retry-client-3", consumer_settings(&fifo)).await;
    let Some(pb::settings::PubSub::Subscription(sub)) = echo.pub_sub else {
        panic!("subscription expected");
    };
    assert_eq!(sub.fifo, Some(true), "FIFO groups are echoed as fifo");
    let b = echo.backoff_policy.expect("backoff policy");
    assert_eq!(b.max_attempts, 17);
    assert!(matches!(
        b.strategy,
        Some(pb::retry_policy::Strategy::CustomizedBackoff(ref c)) if c.next.len() == 18
    ));
    cluster.stop().await;
}

/// The broker redelivers at the invisible deadline plus the group's backoff for that attempt,
/// and dead-letters after max_retries + 1 deliveries.
async fn redelivery_follows_the_group_backoff(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("retry-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    cluster
        .create_group_with(&group, 2, false, Some("exponential:1s:10s:2"))
        .await;
    let p = client::producer(&cluster.access_url(), &topic).await;
    let c = client::consumer(&cluster.access_url(), &group, &topic).await;
    let m = MessageBuilder::builder()
        .set_topic(&topic)
        .set_body(b"fails".to_vec())
        .build()
        .expect("message");
    let id = p.send(m).await.expect("send").message_id().to_owned();
    let invisible = Duration::from_secs(1);
    let mut last = None;
    // Deliveries 1..=3: after delivery n the wait is invisible (1 s) + 2^(n-1) s.
    for attempt in 1..=3 {
        let got = receive_n(&c, &topic, &tag("*"), 1, invisible).await;
        let at = tokio::time::Instant::now();
        assert_eq!(got[0].message_id(), id);
        assert_eq!(got[0].delivery_attempt(), attempt);
        if let Some(prev) = last {
            let waited = at.duration_since(prev);
            let backoff = Duration::from_secs(1 << (attempt - 2));
            let least = invisible + backoff - Duration::from_millis(50);
            assert!(
                waited >= least,
                "attempt {attempt} after {waited:?}, before {least:?}"
            );
            assert!(
                waited < least + Duration::from_secs(3),
                "attempt {attempt} after {waited:?}"
            );
        }
        last = Some(at);
    }
    // Three deliveries = max_retries + 1: the next expiry dead-letters it.
    let dead = client::dead_letter(&cluster, &group).await;
    assert_eq!(dead.message_id(), id);
    cluster.stop().await;
}

// ------------------------------------------------------------------------------------- FIFO

/// Three producers publish their own message groups concurrently; a FIFO consumer leaves some
/// deliveries un-acked. Per message group the consumer must see the messages in send order,
/// at most one of a group per receive, and an un-acked message again before its successor.
async fn fifo_order_per_message_group(mode: Mode) {
    const PRODUCERS: usize = 3;
    const GROUPS_PER_PRODUCER: usize = 4;
    const PER_GROUP: usize = 8;
    let cluster = TestCluster::start(mode).await;
    let topic = format!("fifo-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster.create_topic(&topic, 4, TopicType::Fifo).await;
    cluster
        .create_group_with(&group, 16, true, Some("customized:100ms"))
        .await;
    let mut sends = Vec::new();
    for p in 0..PRODUCERS {
        let producer = client::producer(&cluster.access_url(), &topic).await;
        let topic = topic.clone();
        sends.push(tokio::spawn(async move {
            for seq in 0..PER_GROUP {
                for g in 0..GROUPS_PER_PRODUCER {
                    let m = MessageBuilder::fifo_message_builder(
                        &topic,
                        format!("{seq}").into_bytes(),
                        format!("p{p}-g{g}"),
                    )
                    .build()
                    .expect("message");
                    producer.send(m).await.expect("send");
                }
            }
            producer.shutdown().await.expect("producer shutdown");
        }));
    }
    for s in sends {
        s.await.expect("producer task");
    }
    let c = client::consumer(&cluster.access_url(), &group, &topic).await;
    let total = PRODUCERS * GROUPS_PER_PRODUCER * PER_GROUP;
    let mut next: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut done = 0usize;
    let mut deliveries = 0usize;
    let mut nacked = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while done < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumed {done} of {total} in time"
        );
        let batch = c
            .receive_with(&topic, &tag("*"), 32, Duration::from_secs(1))
            .await
            .expect("receive");
        let mut in_batch = std::collections::HashSet::new();
        for m in &batch {
            deliveries += 1;
            let g = m.message_group().expect("message group").to_owned();
            assert!(
                in_batch.insert(g.clone()),
                "two messages of {g} out at once"
            );
            let seq: usize = std::str::from_utf8(m.body())
                .expect("utf8")
                .parse()
                .expect("seq");
            let want = next.entry(g.clone()).or_insert(0);
            assert_eq!(seq, *want, "group {g}: got {seq}, expected {want}");
            // Every fifth first delivery is left un-acked: it must come back before seq + 1.
            if m.delivery_attempt() == 1 && deliveries.is_multiple_of(5) {
                nacked += 1;
                continue;
            }
            c.ack(m).await.expect("ack");
            *want += 1;
            done += 1;
        }
    }
    assert!(nacked > 0, "some messages were left un-acked");
    assert_eq!(next.len(), PRODUCERS * GROUPS_PER_PRODUCER);
    assert!(next.values().all(|n| *n == PER_GROUP));
    c.shutdown().await.expect("consumer shutdown");
    cluster.stop().await;
}

/// Raw v2: QueryAssignment lists every queue for a FIFO group (one "any queue" entry for
/// others), and ForwardMessageToDeadLetterQueue releases the next message of the group.
async fn fifo_assignment_and_dead_letter(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("fifo-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    let plain = format!("plain-{}", uuid_like());
    cluster.create_topic(&topic, 3, TopicType::Fifo).await;
    cluster.create_group_with(&group, 16, true, None).await;
    cluster.create_group_with(&plain, 16, false, None).await;
    let mut v2 = cluster.v2().await;
    let client = "fifo-raw-client";
    let assignment = |g: &str| pb::QueryAssignmentRequest {
        topic: res(&topic),
        group: res(g),
        endpoints: None,
    };
    let a = v2
        .query_assignment(raw_request(assignment(&group), client))
        .await
        .expect("assignment")
        .into_inner();
    assert_eq!(code_of(&a.status), pb::Code::Ok);
    let mut ids: Vec<i32> = a
        .assignments
        .iter()
        .map(|x| x.message_queue.as_ref().expect("queue").id)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2]);
    let a = v2
        .query_assignment(raw_request(assignment(&plain), client))
        .await
        .expect("assignment")
        .into_inner();
    let ids: Vec<i32> = a
        .assignments
        .iter()
        .map(|x| x.message_queue.as_ref().expect("queue").id)
        .collect();
    assert_eq!(ids, vec![-1]);

    // Two messages of one group.
    for i in 0..2 {
        let r = v2
            .send_message(raw_request(
                pb::SendMessageRequest {
                    messages: vec![raw_message(
                        &topic,
                        &format!("m{i}-{}", uuid_like()),
                        pb::SystemProperties {
                            message_type: pb::MessageType::Fifo as i32,
                            message_group: Some("orders-1".into()),
                            ..Default::default()
                        },
                    )],
                },
                client,
            ))
            .await
            .expect("send")
            .into_inner();
        assert_eq!(code_of(&r.status), pb::Code::Ok, "{r:?}");
    }
    let first = raw_receive(&mut v2, client, &topic, &group, 1).await;
    assert_eq!(first.len(), 1);
    let sys = first[0]
        .system_properties
        .clone()
        .expect("system properties");
    assert!(
        raw_receive_once(&mut v2, client, &topic, &group, Duration::from_millis(500))
            .await
            .is_empty(),
        "the group is blocked"
    );
    let r = v2
        .forward_message_to_dead_letter_queue(raw_request(
            pb::ForwardMessageToDeadLetterQueueRequest {
                group: res(&group),
                topic: res(&topic),
                receipt_handle: sys.receipt_handle.clone().expect("handle"),
                message_id: sys.message_id.clone(),
                delivery_attempt: 1,
                max_delivery_attempts: 1,
                lite_topic: None,
            },
            client,
        ))
        .await
        .expect("forward")
        .into_inner();
    assert_eq!(code_of(&r.status), pb::Code::Ok, "{r:?}");
    let second = raw_receive(&mut v2, client, &topic, &group, 1).await;
    assert_ne!(
        second[0]
            .system_properties
            .as_ref()
            .expect("sys")
            .message_id,
        sys.message_id
    );
    cluster.stop().await;
}

/// One raw ReceiveMessage (any queue of the topic's first broker set); the messages it returned.
async fn raw_receive_once(
    v2: &mut pb::messaging_service_client::MessagingServiceClient<tonic::transport::Channel>,
    client: &str,
    topic: &str,
    group: &str,
    long_poll: Duration,
) -> Vec<pb::Message> {
    let mut stream = v2
        .receive_message(raw_request(
            pb::ReceiveMessageRequest {
                group: res(group),
                message_queue: Some(pb::MessageQueue {
                    topic: res(topic),
                    id: -1,
                    ..Default::default()
                }),
                filter_expression: Some(pb::FilterExpression {
                    r#type: pb::FilterType::Tag as i32,
                    expression: "*".into(),
                }),
                batch_size: 32,
                invisible_duration: Some(prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                auto_renew: false,
                long_polling_timeout: Some(
                    prost_types::Duration::try_from(long_poll).expect("duration"),
                ),
                attempt_id: None,
            },
            client,
        ))
        .await
        .expect("receive")
        .into_inner();
    let mut out = Vec::new();
    while let Some(frame) = stream.message().await.expect("receive stream") {
        if let Some(pb::receive_message_response::Content::Message(m)) = frame.content {
            out.push(m);
        }
    }
    out
}

/// Raw receives until `n` messages arrived (bounded).
async fn raw_receive(
    v2: &mut pb::messaging_service_client::MessagingServiceClient<tonic::transport::Channel>,
    client: &str,
    topic: &str,
    group: &str,
    n: usize,
) -> Vec<pb::Message> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "received {} of {n}",
            out.len()
        );
        out.extend(raw_receive_once(v2, client, topic, group, Duration::from_secs(2)).await);
    }
    out
}

// ----------------------------------------------------------------------------- transactions

/// Checks arrive quickly in these tests.
fn quick_checks(cfg: &mut comet::config::Config) {
    cfg.broker.transaction_timeout = Duration::from_millis(500).into();
    cfg.broker.transaction_check_interval = Duration::from_millis(700).into();
    cfg.broker.transaction_max_checks = 10;
}

/// What the test checker answers, decided by the message body; counts its calls.
fn checker(
    calls: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) -> Box<rocketmq::model::transaction::TransactionChecker> {
    use rocketmq::model::transaction::TransactionResolution as R;
    Box::new(move |transaction_id: String, m: MessageView| {
        let mut calls = calls.lock().expect("checker calls");
        let n = calls.entry(transaction_id).or_insert(0);
        *n += 1;
        match (m.body(), *n) {
            (b"commit-on-check", _) => R::COMMIT,
            (b"rollback-on-check", _) => R::ROLLBACK,
            (b"unknown-then-commit", 1) => R::UNKNOWN,
            (b"unknown-then-commit", _) => R::COMMIT,
            _ => R::UNKNOWN,
        }
    })
}

type Calls = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>;

async fn transaction_producer(access_url: &str, topic: &str, calls: Calls) -> Producer {
    let mut opt = ProducerOption::default();
    opt.set_topics(vec![topic]);
    let mut p = Producer::new_transaction_producer(opt, client::option(access_url), checker(calls))
        .expect("transaction producer");
    p.start().await.expect("producer starts");
    p
}

fn tx_message(topic: &str, body: &str) -> impl rocketmq::model::message::Message {
    MessageBuilder::transaction_message_builder(topic, body.as_bytes().to_vec())
        .build()
        .expect("message")
}

async fn transaction_commit_and_rollback(mode: Mode) {
    use rocketmq::model::transaction::Transaction as _;
    let cluster = TestCluster::start(mode).await;
    let topic = format!("tx-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster
        .create_topic(&topic, 2, TopicType::Transaction)
        .await;
    let calls = Calls::default();
    let p = transaction_producer(&cluster.access_url(), &topic, calls.clone()).await;
    let c = client::consumer(&cluster.access_url(), &group, &topic).await;
    let committed = p
        .send_transaction_message(tx_message(&topic, "committed"))
        .await
        .expect("send half");
    assert!(committed.transaction_id().starts_with("broker-a~"));
    let committed_id = committed.message_id().to_owned();
    let rolled = p
        .send_transaction_message(tx_message(&topic, "rolled-back"))
        .await
        .expect("send half");
    // Invisible until committed.
    assert!(receive_rounds(&c, &topic, &tag("*"), 1).await.is_empty());
    committed.commit().await.expect("commit");
    rolled.rollback().await.expect("rollback");
    let got = receive_n(&c, &topic, &tag("*"), 1, Duration::from_secs(30)).await;
    assert_eq!(got[0].message_id(), committed_id);
    assert_eq!(got[0].body(), b"committed");
    c.ack(&got[0]).await.expect("ack");
    assert!(
        receive_rounds(&c, &topic, &tag("*"), 2).await.is_empty(),
        "rolled back stays invisible"
    );
    assert!(
        calls.lock().expect("calls").is_empty(),
        "no check was needed"
    );
    p.shutdown().await.expect("producer shutdown");
    cluster.stop().await;
}

/// Unresolved transactions are checked through the producer's telemetry stream: commit on
/// check, rollback on check, unknown then commit.
async fn transaction_check_back(mode: Mode) {
    let cluster = TestCluster::start_with(mode, quick_checks).await;
    let topic = format!("tx-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster
        .create_topic(&topic, 1, TopicType::Transaction)
        .await;
    let calls = Calls::default();
    let p = transaction_producer(&cluster.access_url(), &topic, calls.clone()).await;
    let c = client::consumer(&cluster.access_url(), &group, &topic).await;
    let mut ids = std::collections::HashMap::new();
    for body in [
        "commit-on-check",
        "rollback-on-check",
        "unknown-then-commit",
    ] {
        // The transaction is dropped unresolved: only the check can settle it.
        let t = p
            .send_transaction_message(tx_message(&topic, body))
            .await
            .expect("send half");
        use rocketmq::model::transaction::Transaction as _;
        ids.insert(
            body,
            (t.transaction_id().to_owned(), t.message_id().to_owned()),
        );
    }
    let got = receive_n(&c, &topic, &tag("*"), 2, Duration::from_secs(30)).await;
    let mut bodies: Vec<&[u8]> = got.iter().map(|m| m.body()).collect();
    bodies.sort_unstable();
    assert_eq!(
        bodies,
        vec![&b"commit-on-check"[..], b"unknown-then-commit"]
    );
    for m in &got {
        c.ack(m).await.expect("ack");
    }
    assert!(receive_rounds(&c, &topic, &tag("*"), 2).await.is_empty());
    let calls = calls.lock().expect("calls").clone();
    assert_eq!(calls.get(&ids["commit-on-check"].0), Some(&1));
    assert_eq!(calls.get(&ids["rollback-on-check"].0), Some(&1));
    assert_eq!(calls.get(&ids["unknown-then-commit"].0), Some(&2));
    p.shutdown().await.expect("producer shutdown");
    cluster.stop().await;
}

/// The half message is sent through one proxy (raw v2, no telemetry there); the only producer
/// with a telemetry stream for the topic is connected to a second proxy, which gets the check
/// from the broker and relays the producer's answer.
async fn transaction_check_through_another_proxy(mode: Mode) {
    let mut cluster = TestCluster::start_with(mode, quick_checks).await;
    let topic = format!("tx-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster
        .create_topic(&topic, 1, TopicType::Transaction)
        .await;
    let second = cluster.add_proxy().await;
    let calls = Calls::default();
    let p = transaction_producer(&second.to_string(), &topic, calls.clone()).await;
    let mut v2 = cluster.v2().await;
    let id = format!("half-{}", uuid_like());
    let mut m = raw_message(
        &topic,
        &id,
        pb::SystemProperties {
            message_type: pb::MessageType::Transaction as i32,
            ..Default::default()
        },
    );
    m.body = b"commit-on-check".to_vec().into();
    let r = v2
        .send_message(raw_request(
            pb::SendMessageRequest { messages: vec![m] },
            "raw-half-sender",
        ))
        .await
        .expect("send")
        .into_inner();
    assert_eq!(code_of(&r.status), pb::Code::Ok, "{r:?}");
    let tx = r.entries[0].transaction_id.clone();
    assert!(tx.starts_with("broker-a~"), "{tx}");
    let c = client::consumer(&cluster.access_url(), &group, &topic).await;
    let got = receive_n(&c, &topic, &tag("*"), 1, Duration::from_secs(30)).await;
    assert_eq!(got[0].message_id(), id);
    c.ack(&got[0]).await.expect("ack");
    assert_eq!(calls.lock().expect("calls").get(&tx), Some(&1));
    // The resolution reached the broker: repeating it through the first proxy is idempotent.
    let r = v2
        .end_transaction(raw_request(
            pb::EndTransactionRequest {
                topic: res(&topic),
                message_id: id.clone(),
                transaction_id: tx.clone(),
                resolution: pb::TransactionResolution::Commit as i32,
                source: pb::TransactionSource::SourceClient as i32,
                trace_context: String::new(),
            },
            "raw-half-sender",
        ))
        .await
        .expect("end")
        .into_inner();
    assert_eq!(code_of(&r.status), pb::Code::Ok, "{r:?}");
    p.shutdown().await.expect("producer shutdown");
    cluster.stop().await;
}

// ------------------------------------------------------------------------------ lite topics

/// A LitePushConsumer's settings (client type 5) for `group` bound to `parent`.
fn lite_settings(group: &str, parent: &str) -> pb::Settings {
    pb::Settings {
        client_type: Some(pb::ClientType::LitePushConsumer as i32),
        pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
            group: res(group),
            subscriptions: vec![pb::SubscriptionEntry {
                topic: res(parent),
                expression: Some(pb::FilterExpression {
                    r#type: pb::FilterType::Tag as i32,
                    expression: "*".into(),
                }),
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// SyncLiteSubscription of `client`; the answer's status.
async fn sync_lite(
    v2: &mut pb::messaging_service_client::MessagingServiceClient<tonic::transport::Channel>,
    client: &str,
    (parent, group): (&str, &str),
    action: pb::LiteSubscriptionAction,
    lites: Vec<String>,
) -> pb::Status {
    let r = v2
        .sync_lite_subscription(raw_request(
            pb::SyncLiteSubscriptionRequest {
                action: action as i32,
                topic: res(parent),
                group: res(group),
                lite_topic_set: lites,
                version: None,
                offset_option: None,
            },
            client,
        ))
        .await
        .expect("SyncLiteSubscription answers")
        .into_inner();
    r.status.expect("status")
}

fn lite_message(parent: &str, lite: &str, id: &str) -> pb::Message {
    raw_message(
        parent,
        id,
        pb::SystemProperties {
            message_type: pb::MessageType::Lite as i32,
            lite_topic: Some(lite.to_owned()),
            born_host: "test".into(),
            ..Default::default()
        },
    )
}

async fn lite_topics_subscribe_receive_and_expire(mode: Mode) {
    let cluster = TestCluster::start_with(mode, |cfg| {
        cfg.broker.lite_topic_ttl = Duration::from_secs(5).into();
    })
    .await;
    let parent = format!("lite-{}", uuid_like());
    let normal = format!("normal-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster.create_topic(&parent, 2, TopicType::Lite).await;
    cluster.create_topic(&normal, 1, TopicType::Normal).await;
    let mut v2 = cluster.v2().await;
    let client = format!("lite-client-{}", uuid_like());
    // The settings echo tells the lite consumer its quotas, and that order is kept (FIFO).
    let (mut telemetry, echo) =
        RawTelemetry::open(&mut v2, &client, lite_settings(&group, &parent)).await;
    let Some(pb::settings::PubSub::Subscription(sub)) = echo.pub_sub else {
        panic!("subscription echo: {echo:?}");
    };
    assert_eq!(sub.lite_subscription_quota, Some(10_000));
    assert_eq!(sub.max_lite_topic_size, Some(64));
    assert_eq!(sub.fifo, Some(true));
    let to = (parent.as_str(), group.as_str());
    let st = sync_lite(
        &mut v2,
        &client,
        to,
        pb::LiteSubscriptionAction::PartialAdd,
        vec!["s1".into(), "s2".into()],
    )
    .await;
    assert_eq!(st.code, pb::Code::Ok as i32, "{st:?}");
    // Over the quota: refused with the quota code, nothing changes.
    let many: Vec<String> = (0..10_001).map(|i| format!("x{i}")).collect();
    let st = sync_lite(
        &mut v2,
        &client,
        to,
        pb::LiteSubscriptionAction::PartialAdd,
        many,
    )
    .await;
    assert_eq!(
        st.code,
        pb::Code::LiteSubscriptionQuotaExceeded as i32,
        "{st:?}"
    );
    let st = sync_lite(
        &mut v2,
        &client,
        to,
        pb::LiteSubscriptionAction::PartialAdd,
        vec!["a b".into()],
    )
    .await;
    assert_eq!(st.code, pb::Code::IllegalLiteTopic as i32, "{st:?}");
    // Lite messages: three of s1, one of s2, one of s3 (not subscribed).
    let msgs = vec![
        lite_message(&parent, "s1", "s1-0"),
        lite_message(&parent, "s2", "s2-0"),
        lite_message(&parent, "s1", "s1-1"),
        lite_message(&parent, "s3", "s3-0"),
        lite_message(&parent, "s1", "s1-2"),
    ];
    let r = v2
        .send_message(raw_request(
            pb::SendMessageRequest { messages: msgs },
            "lite-producer",
        ))
        .await
        .expect("send")
        .into_inner();
    assert_eq!(code_of(&r.status), pb::Code::Ok, "{r:?}");
    // The clients' rules: a lite topic on a NORMAL topic, a malformed lite topic.
    for (topic, lite, want) in [
        (
            normal.as_str(),
            "s1",
            pb::Code::MessagePropertyConflictWithType,
        ),
        (parent.as_str(), "bad lite", pb::Code::IllegalLiteTopic),
    ] {
        let r = v2
            .send_message(raw_request(
                pb::SendMessageRequest {
                    messages: vec![lite_message(topic, lite, "refused")],
                },
                "lite-producer",
            ))
            .await
            .expect("send")
            .into_inner();
        assert_eq!(code_of(&r.status), want, "{r:?}");
    }
    // Received in order within each lite topic, one at a time per lite topic, acknowledged
    // with the lite topic; s3 never comes.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut got: Vec<String> = Vec::new();
    while got.len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "received {got:?}");
        for m in raw_receive_once(&mut v2, &client, &parent, &group, Duration::from_secs(2)).await {
            let sys = m.system_properties.expect("system properties");
            let r = v2
                .ack_message(raw_request(
                    pb::AckMessageRequest {
                        group: res(&group),
                        topic: res(&parent),
                        entries: vec![pb::AckMessageEntry {
                            message_id: sys.message_id.clone(),
                            receipt_handle: sys.receipt_handle.clone().expect("handle"),
                            lite_topic: sys.lite_topic.clone(),
                        }],
                    },
                    &client,
                ))
                .await
                .expect("ack")
                .into_inner();
            assert_eq!(code_of(&r.status), pb::Code::Ok, "{r:?}");
            got.push(sys.message_id);
        }
    }
    let s1: Vec<&String> = got.iter().filter(|id| id.starts_with("s1")).collect();
    assert_eq!(s1, ["s1-0", "s1-1", "s1-2"]);
    assert!(got.contains(&"s2-0".to_owned()) && !got.iter().any(|id| id.starts_with("s3")));
    // Five seconds without writes: the broker drops s1 and s2 and the client is told on its
    // telemetry stream (with its next receive).
    let mut told = std::collections::BTreeSet::new();
    while told.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline + LIMIT,
            "told {told:?}"
        );
        let _ = raw_receive_once(&mut v2, &client, &parent, &group, Duration::from_secs(2)).await;
        while let Ok(Ok(Some(cmd))) =
            tokio::time::timeout(Duration::from_millis(100), telemetry.inbound.message()).await
        {
            if let Some(pb::telemetry_command::Command::NotifyUnsubscribeLiteCommand(n)) =
                cmd.command
            {
                told.insert(n.lite_topic);
            }
        }
    }
    assert_eq!(told.into_iter().collect::<Vec<_>>(), ["s1", "s2"]);
    cluster.stop().await;
}

comet_tests::both_modes!(
    lite_topics_subscribe_receive_and_expire,
    delay_messages_arrive_on_time,
    delay_validation,
    retry_policy_is_echoed_to_consumers,
    redelivery_follows_the_group_backoff,
    fifo_order_per_message_group,
    fifo_assignment_and_dead_letter,
    transaction_commit_and_rollback,
    transaction_check_back,
    transaction_check_through_another_proxy,
);
