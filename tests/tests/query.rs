//! Raw `apache.rocketmq.v2` calls for SQL92 filters, PullMessage and the offset RPCs, and the
//! admin operations (reset by time, message queries, backlog), in standalone and cluster mode.

use std::time::{Duration, Instant};

use comet::admin::TopicType;
use comet_proto::apache::rocketmq::v2 as pb;
use comet_tests::raw::{self, resource as res};
use comet_tests::{Mode, TestCluster, now_ms, uuid_like};
use pb::messaging_service_client::MessagingServiceClient;
use pb::pull_message_response::Content as PullContent;
use pb::receive_message_response::Content as ReceiveContent;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(15);

fn with_client<T>(msg: T) -> tonic::Request<T> {
    raw::request("query-test@1#1", msg)
}

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn ms(d: &prost_types::Timestamp) -> i64 {
    d.seconds * 1000 + i64::from(d.nanos) / 1_000_000
}

fn dur(ms: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

fn message(topic: &str, id: &str, tag: Option<&str>, props: &[(&str, &str)]) -> pb::Message {
    pb::Message {
        topic: res(topic),
        user_properties: props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        system_properties: Some(pb::SystemProperties {
            tag: tag.map(str::to_owned),
            keys: vec![format!("key-{id}")],
            message_id: id.to_owned(),
            message_type: pb::MessageType::Normal as i32,
            body_encoding: pb::Encoding::Identity as i32,
            born_host: "tester".to_owned(),
            born_timestamp: Some(ts(now_ms())),
            ..Default::default()
        }),
        body: format!("body-{id}").into_bytes().into(),
    }
}

async fn send(c: &mut MessagingServiceClient<Channel>, messages: Vec<pb::Message>) {
    let n = messages.len();
    let r = c
        .send_message(with_client(pb::SendMessageRequest { messages }))
        .await
        .expect("gRPC OK")
        .into_inner();
    let s = r.status.expect("status");
    assert_eq!(s.code, pb::Code::Ok as i32, "{}", s.message);
    assert_eq!(r.entries.len(), n);
}

/// The topic's only queue as QueryRoute shows it.
async fn route_queue(c: &mut MessagingServiceClient<Channel>, topic: &str) -> pb::MessageQueue {
    let r = c
        .query_route(with_client(pb::QueryRouteRequest {
            topic: res(topic),
            endpoints: None,
        }))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(r.message_queues.len(), 1, "one queue");
    r.message_queues[0].clone()
}

async fn query_offset(
    c: &mut MessagingServiceClient<Channel>,
    mq: &pb::MessageQueue,
    policy: pb::QueryOffsetPolicy,
    at: Option<i64>,
) -> (i32, i64) {
    let r = c
        .query_offset(with_client(pb::QueryOffsetRequest {
            message_queue: Some(mq.clone()),
            query_offset_policy: policy as i32,
            timestamp: at.map(ts),
        }))
        .await
        .expect("gRPC OK")
        .into_inner();
    (r.status.expect("status").code, r.offset)
}

/// Waits (bounded) until the queue holds `n` messages. Between looks it long-polls
/// PullMessage at the queue's end, which the broker answers as soon as it dispatches the next
/// message there.
async fn stored(c: &mut MessagingServiceClient<Channel>, mq: &pb::MessageQueue, n: i64) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let (code, end) = query_offset(c, mq, pb::QueryOffsetPolicy::End, None).await;
        assert_eq!(code, pb::Code::Ok as i32);
        if end >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {end} of {n} messages stored"
        );
        pull(c, mq, end, 1, None).await;
    }
}

async fn receive(
    c: &mut MessagingServiceClient<Channel>,
    group: &str,
    mq: &pb::MessageQueue,
    filter: pb::FilterExpression,
) -> (pb::Status, Vec<pb::Message>) {
    let mut req = raw::receive_request(
        group,
        mq.clone(),
        32,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    req.filter_expression = Some(filter);
    let mut status = None;
    let mut messages = Vec::new();
    for frame in raw::receive_frames(c, with_client(req)).await {
        match frame {
            ReceiveContent::Status(s) => status = Some(s),
            ReceiveContent::Message(m) => messages.push(m),
            ReceiveContent::DeliveryTimestamp(_) => {}
        }
    }
    (status.expect("a status frame"), messages)
}

struct Pulled {
    status: pb::Status,
    messages: Vec<pb::Message>,
    next_offset: Option<i64>,
}

async fn pull(
    c: &mut MessagingServiceClient<Channel>,
    mq: &pb::MessageQueue,
    offset: i64,
    batch: i32,
    filter: Option<pb::FilterExpression>,
) -> Pulled {
    let mut stream = c
        .pull_message(with_client(pb::PullMessageRequest {
            group: res("pull-group"),
            message_queue: Some(mq.clone()),
            offset,
            batch_size: batch,
            filter_expression: filter,
            long_polling_timeout: dur(300),
        }))
        .await
        .expect("gRPC OK")
        .into_inner();
    let mut frames = Vec::new();
    while let Some(frame) = stream.next().await {
        frames.push(frame.expect("frame").content.expect("oneof set"));
    }
    let Some(PullContent::Status(status)) = frames.first().cloned() else {
        panic!("first frame is not a status: {frames:?}")
    };
    let messages = frames
        .iter()
        .filter_map(|f| match f {
            PullContent::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    let next_offset = match frames.last() {
        Some(PullContent::NextOffset(n)) => Some(*n),
        _ => None,
    };
    Pulled {
        status,
        messages,
        next_offset,
    }
}

fn ids(messages: &[pb::Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            m.system_properties
                .as_ref()
                .map(|s| s.message_id.clone())
                .unwrap_or_default()
        })
        .collect()
}

fn sql(expression: &str) -> pb::FilterExpression {
    pb::FilterExpression {
        r#type: pb::FilterType::Sql as i32,
        expression: expression.to_owned(),
    }
}

async fn sql_filters(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("sql-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    let mut c = cluster.v2().await;
    send(
        &mut c,
        vec![
            message(
                &topic,
                "eu-50",
                Some("red"),
                &[("region", "eu"), ("price", "50")],
            ),
            message(
                &topic,
                "eu-5",
                Some("red"),
                &[("region", "eu"), ("price", "5")],
            ),
            message(
                &topic,
                "us-70",
                Some("blue"),
                &[("region", "us"), ("price", "70")],
            ),
            message(&topic, "no-price", Some("red"), &[("region", "eu")]),
        ],
    )
    .await;
    let mq = route_queue(&mut c, &topic).await;
    stored(&mut c, &mq, 4).await;

    // Matching.
    let (st, got) = receive(&mut c, "sql-a", &mq, sql("region = 'eu' AND price >= 10")).await;
    assert_eq!(st.code, pb::Code::Ok as i32, "{}", st.message);
    assert_eq!(ids(&got), vec!["eu-50"]);
    // TAGS and a missing property: `price < 100` never matches "no-price".
    let (_, got) = receive(&mut c, "sql-b", &mq, sql("TAGS = 'red' AND price < 100")).await;
    assert_eq!(ids(&got), vec!["eu-50", "eu-5"]);
    let (_, got) = receive(&mut c, "sql-c", &mq, sql("price IS NULL")).await;
    assert_eq!(ids(&got), vec!["no-price"]);
    // Non-matching: MESSAGE_NOT_FOUND after the poll.
    let (st, got) = receive(&mut c, "sql-d", &mq, sql("region IN ('apac')")).await;
    assert_eq!(st.code, pb::Code::MessageNotFound as i32);
    assert!(got.is_empty());
    // Invalid: ILLEGAL_FILTER_EXPRESSION naming the position and what was expected.
    let (st, _) = receive(&mut c, "sql-e", &mq, sql("region = 'eu' AND")).await;
    assert_eq!(st.code, pb::Code::IllegalFilterExpression as i32);
    assert!(
        st.message
            .contains("at position 18: the expression ends too early: expected a property name"),
        "{}",
        st.message
    );
    let (st, _) = receive(&mut c, "sql-e", &mq, sql("price > 'x'")).await;
    assert_eq!(st.code, pb::Code::IllegalFilterExpression as i32);
    assert!(
        st.message.contains("'x' cannot be compared with >"),
        "{}",
        st.message
    );
    // The same filters work on PullMessage.
    let p = pull(&mut c, &mq, 0, 32, Some(sql("price BETWEEN 1 AND 60"))).await;
    assert_eq!(ids(&p.messages), vec!["eu-50", "eu-5"]);
    cluster.stop().await;
}

/// A deployment with a one-queue topic holding five messages in two batches whose store times
/// differ: `a0..a2` (offsets 0-2, stored at or before `ts1`), then `b0`, `b1` (offsets 3-4,
/// stored after `ts1`).
struct TwoBatches {
    cluster: TestCluster,
    topic: String,
    c: MessagingServiceClient<Channel>,
    mq: pb::MessageQueue,
    /// The latest store time of the first batch.
    ts1: i64,
}

impl TwoBatches {
    async fn start(mode: Mode, prefix: &str) -> TwoBatches {
        let cluster = TestCluster::start(mode).await;
        let topic = format!("{prefix}-{}", uuid_like());
        cluster.create_topic(&topic, 1, TopicType::Normal).await;
        let mut c = cluster.v2().await;
        let mq = route_queue(&mut c, &topic).await;
        let batch = |prefix: &str, n: usize| -> Vec<pb::Message> {
            (0..n)
                .map(|i| message(&topic, &format!("{prefix}{i}"), None, &[]))
                .collect()
        };
        send(&mut c, batch("a", 3)).await;
        stored(&mut c, &mq, 3).await;
        let ts1 = pull(&mut c, &mq, 0, 32, None)
            .await
            .messages
            .iter()
            .filter_map(|m| {
                m.system_properties
                    .as_ref()?
                    .store_timestamp
                    .as_ref()
                    .map(ms)
            })
            .max()
            .expect("store timestamps");
        // The one sleep of these tests, and not a wait for state: the wall clock itself must
        // pass `ts1` so that the second batch is stored strictly later (store times have
        // millisecond resolution), and nothing signals that. Bounded; 1 ms at a time (see
        // `comet_tests::wait_until`).
        let deadline = Instant::now() + LIMIT;
        while now_ms() <= ts1 {
            assert!(Instant::now() < deadline, "the clock never passed {ts1}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        send(&mut c, batch("b", 2)).await;
        stored(&mut c, &mq, 5).await;
        TwoBatches {
            cluster,
            topic,
            c,
            mq,
            ts1,
        }
    }
}

async fn pull_and_offsets(mode: Mode) {
    let TwoBatches {
        cluster,
        topic,
        mut c,
        mq,
        ts1,
    } = TwoBatches::start(mode, "pull").await;

    // QueryOffset.
    use pb::QueryOffsetPolicy as P;
    let ok = pb::Code::Ok as i32;
    assert_eq!(query_offset(&mut c, &mq, P::Beginning, None).await, (ok, 0));
    assert_eq!(query_offset(&mut c, &mq, P::End, None).await, (ok, 5));
    assert_eq!(
        query_offset(&mut c, &mq, P::Timestamp, Some(ts1 + 1)).await,
        (ok, 3)
    );
    assert_eq!(
        query_offset(&mut c, &mq, P::Timestamp, Some(0)).await,
        (ok, 0)
    );
    assert_eq!(
        query_offset(&mut c, &mq, P::Timestamp, None).await.0,
        pb::Code::BadRequest as i32
    );

    // Pull from an offset: status, messages, next offset.
    let p = pull(&mut c, &mq, 3, 32, None).await;
    assert_eq!(p.status.code, ok);
    assert_eq!(ids(&p.messages), vec!["b0", "b1"]);
    assert_eq!(p.next_offset, Some(5));
    let p = pull(&mut c, &mq, 1, 1, None).await;
    assert_eq!(
        (ids(&p.messages), p.next_offset),
        (vec!["a1".to_owned()], Some(2))
    );
    let p = pull(&mut c, &mq, 5, 32, None).await;
    assert_eq!(p.status.code, pb::Code::MessageNotFound as i32);
    assert_eq!(p.next_offset, Some(5));
    // Beyond the end and negative: ILLEGAL_OFFSET with the nearest valid offset.
    let p = pull(&mut c, &mq, 6, 32, None).await;
    assert_eq!(
        p.status.code,
        pb::Code::IllegalOffset as i32,
        "{}",
        p.status.message
    );
    assert_eq!(p.next_offset, Some(5));
    let p = pull(&mut c, &mq, -1, 32, None).await;
    assert_eq!(p.status.code, pb::Code::IllegalOffset as i32);
    assert_eq!(p.next_offset, Some(0));
    // An unknown queue of the topic.
    let mut wrong = mq.clone();
    wrong.id = 3;
    let p = pull(&mut c, &wrong, 0, 32, None).await;
    assert_eq!(p.status.code, pb::Code::BadRequest as i32);
    assert!(
        p.status.message.contains("queue id 3"),
        "{}",
        p.status.message
    );
    // Every answer closes with next_offset; a refused pull stays at the requested offset.
    assert_eq!(p.next_offset, Some(0));

    // UpdateOffset then GetOffset.
    let get = |c: &mut MessagingServiceClient<Channel>| {
        let mut c = c.clone();
        let mq = mq.clone();
        async move {
            let r = c
                .get_offset(with_client(pb::GetOffsetRequest {
                    group: res("pull-group"),
                    message_queue: Some(mq),
                }))
                .await
                .expect("gRPC OK")
                .into_inner();
            (r.status.expect("status").code, r.offset)
        }
    };
    assert_eq!(get(&mut c).await.0, pb::Code::OffsetNotFound as i32);
    let update = |c: &mut MessagingServiceClient<Channel>, offset: i64| {
        let mut c = c.clone();
        let mq = mq.clone();
        async move {
            let r = c
                .update_offset(with_client(pb::UpdateOffsetRequest {
                    group: res("pull-group"),
                    message_queue: Some(mq),
                    offset,
                }))
                .await
                .expect("gRPC OK")
                .into_inner();
            r.status.expect("status")
        }
    };
    assert_eq!(update(&mut c, 4).await.code, ok);
    assert_eq!(get(&mut c).await, (ok, 4));
    let s = update(&mut c, 9).await;
    assert_eq!(s.code, pb::Code::IllegalOffset as i32);
    assert!(s.message.contains("outside [0, 5]"), "{}", s.message);
    assert_eq!(
        get(&mut c).await,
        (ok, 4),
        "a refused update changes nothing"
    );

    // The offset survives a restart. (In cluster mode the restarted broker listens on a new
    // port; `start_in` returns once the controller lists that port and the broker serves as
    // master, so the proxy routes to it from its first metadata snapshot.)
    let dir = cluster.stop().await;
    let cluster = TestCluster::start_in(mode, dir, |_| {}).await;
    cluster.wait_routable(&topic).await;
    let mut c = cluster.v2().await;
    let mq = route_queue(&mut c, &topic).await;
    assert_eq!(query_offset(&mut c, &mq, P::End, None).await, (ok, 5));
    let r = c
        .get_offset(with_client(pb::GetOffsetRequest {
            group: res("pull-group"),
            message_queue: Some(mq.clone()),
        }))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!((r.status.expect("status").code, r.offset), (ok, 4));
    let p = pull(&mut c, &mq, 4, 32, None).await;
    assert_eq!(ids(&p.messages), vec!["b1"]);
    cluster.stop().await;
}

async fn ack(c: &mut MessagingServiceClient<Channel>, topic: &str, group: &str, m: &pb::Message) {
    let handle = m
        .system_properties
        .as_ref()
        .and_then(|s| s.receipt_handle.clone())
        .expect("receipt handle");
    let r = c
        .ack_message(with_client(pb::AckMessageRequest {
            group: res(group),
            topic: res(topic),
            entries: vec![pb::AckMessageEntry {
                message_id: String::new(),
                receipt_handle: handle,
                lite_topic: None,
            }],
        }))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(r.status.expect("status").code, pb::Code::Ok as i32);
}

async fn admin_queries(mode: Mode) {
    use comet::admin::{
        self, IdQuery, KeyQuerySpec, MessageCommand, OffsetCommand, OffsetQuerySpec, ProgressSpec,
        ResetSpec,
    };
    let TwoBatches {
        cluster,
        topic,
        mut c,
        mq,
        ts1,
    } = TwoBatches::start(mode, "admin").await;
    let target = cluster.admin();

    // Queries by id, key and queue offset.
    let v = admin::message(
        &target,
        &MessageCommand::Id(IdQuery {
            message_id: "a1".into(),
            topic: topic.clone(),
        }),
    )
    .await
    .expect("query by id");
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(v["messages"][0]["queue_offset"], 1);
    assert_eq!(v["messages"][0]["body"]["text"], "body-a1");
    // Keys stored after the first batch.
    let keyed_after_ts1 = async |key: &str| {
        admin::message(
            &target,
            &MessageCommand::Key(KeyQuerySpec {
                key: key.into(),
                topic: topic.clone(),
                begin: Some((ts1 + 1).to_string()),
                end: None,
                max: 10,
            }),
        )
        .await
        .expect("query by key")
    };
    let v = keyed_after_ts1("key-b0").await;
    assert_eq!(v["messages"][0]["message_id"], "b0", "{v}");
    let v = keyed_after_ts1("key-a0").await;
    assert_eq!(v["count"], 0, "a0 was stored before the range: {v}");
    let v = admin::message(
        &target,
        &MessageCommand::Offset(OffsetQuerySpec {
            topic: topic.clone(),
            queue: mq.id,
            offset: 4,
            broker_set: None,
        }),
    )
    .await
    .expect("query by offset");
    assert_eq!(v["messages"][0]["message_id"], "b1", "{v}");

    // Backlog of a consuming group: 5 received, 3 acknowledged.
    let group = "admin-readers";
    let (_, got) = receive(&mut c, group, &mq, pb::FilterExpression::default()).await;
    assert_eq!(got.len(), 5);
    for m in &got[..3] {
        ack(&mut c, &topic, group, m).await;
    }
    let progress_cmd = OffsetCommand::Progress(ProgressSpec {
        group: group.into(),
        topic: topic.clone(),
    });
    let v = admin::offset(&target, &progress_cmd)
        .await
        .expect("progress");
    assert_eq!(
        (v["backlog"].as_i64(), v["inflight"].as_i64()),
        (Some(2), Some(2)),
        "{v}"
    );
    assert_eq!(v["queues"][0]["consume_offset"], 3);

    // Reset by time: back to b0, the two in flight forgotten and delivered again.
    let v = admin::offset(
        &target,
        &OffsetCommand::Reset(ResetSpec {
            group: group.into(),
            topic: topic.clone(),
            timestamp: Some((ts1 + 1).to_string()),
            offset: None,
            queue: None,
            broker_set: None,
        }),
    )
    .await
    .expect("reset");
    let q = &v["broker_sets"][0]["queues"][0];
    assert_eq!(
        (q["offset"].as_i64(), q["dropped_inflight"].as_i64()),
        (Some(3), Some(2)),
        "{v}"
    );
    let (_, again) = receive(&mut c, group, &mq, pb::FilterExpression::default()).await;
    assert_eq!(ids(&again), vec!["b0", "b1"]);
    let v = admin::offset(&target, &progress_cmd)
        .await
        .expect("progress");
    assert_eq!(
        (v["backlog"].as_i64(), v["inflight"].as_i64()),
        (Some(2), Some(2)),
        "{v}"
    );
    // The reset is a committed offset too: GetOffset shows it.
    let r = c
        .get_offset(with_client(pb::GetOffsetRequest {
            group: res(group),
            message_queue: Some(mq.clone()),
        }))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(r.offset, 3);
    cluster.stop().await;
}

comet_tests::both_modes!(sql_filters, pull_and_offsets, admin_queries);
