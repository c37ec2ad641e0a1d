//! SQL92 filters on POP, PullMessage, the offset RPCs and the admin queries, against a real
//! broker in a temp dir.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comet_broker::BrokerGrpc;
use comet_proto::apache::rocketmq::v2::{
    Code, FilterExpression, FilterType, GetOffsetRequest, Message, MessageQueue,
    PullMessageRequest, QueryOffsetPolicy, QueryOffsetRequest, ReceiveMessageRequest,
    UpdateOffsetRequest,
};
use comet_proto::comet::v1::broker_service_server::BrokerService;
use comet_proto::comet::v1::{
    GetConsumerProgressRequest, KeyQuery, PullMessageResponse, QueryMessageRequest,
    QueueOffsetQuery, ResetOffsetRequest, query_message_request, reset_offset_request,
};
use common::*;

const LIMIT: Duration = Duration::from_secs(15);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A message on queue 0 of `topic` with a tag and user properties.
fn pmsg(topic: &str, id: &str, tag: Option<&str>, props: &[(&str, &str)]) -> Message {
    let mut m = msg(topic, 0, id, tag, &format!("body-{id}"));
    m.user_properties = props
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    m
}

fn mq(topic: &str, id: i32) -> Option<MessageQueue> {
    Some(MessageQueue {
        topic: res(topic),
        id,
        ..Default::default()
    })
}

fn sql(expr: &str) -> Option<FilterExpression> {
    Some(FilterExpression {
        r#type: FilterType::Sql as i32,
        expression: expr.into(),
    })
}

fn ids(msgs: &[Message]) -> Vec<String> {
    msgs.iter().map(|m| sp(m).message_id.clone()).collect()
}

async fn pull(
    svc: &BrokerGrpc,
    topic: &str,
    queue: i32,
    offset: i64,
    batch: i32,
    filter: Option<FilterExpression>,
    long_poll_ms: u64,
) -> PullMessageResponse {
    svc.pull_message(tonic::Request::new(PullMessageRequest {
        group: res("pg"),
        message_queue: mq(topic, queue),
        offset,
        batch_size: batch,
        filter_expression: filter,
        long_polling_timeout: secs(long_poll_ms),
    }))
    .await
    .unwrap()
    .into_inner()
}

async fn update(
    svc: &BrokerGrpc,
    group: &str,
    topic: &str,
    queue: i32,
    offset: i64,
) -> (Code, String) {
    let r = svc
        .update_offset(tonic::Request::new(UpdateOffsetRequest {
            group: res(group),
            message_queue: mq(topic, queue),
            offset,
        }))
        .await
        .unwrap()
        .into_inner();
    let s = r.status.unwrap();
    (Code::try_from(s.code).unwrap(), s.message)
}

async fn get(svc: &BrokerGrpc, group: &str, topic: &str, queue: i32) -> (Code, i64) {
    let r = svc
        .get_offset(tonic::Request::new(GetOffsetRequest {
            group: res(group),
            message_queue: mq(topic, queue),
        }))
        .await
        .unwrap()
        .into_inner();
    (code(&r.status), r.offset)
}

async fn query_offset(
    svc: &BrokerGrpc,
    topic: &str,
    policy: QueryOffsetPolicy,
    ts_ms: Option<i64>,
) -> (Code, i64) {
    let r = svc
        .query_offset(tonic::Request::new(QueryOffsetRequest {
            message_queue: mq(topic, 0),
            query_offset_policy: policy as i32,
            timestamp: ts_ms.map(|ms| prost_types::Timestamp {
                seconds: ms / 1000,
                nanos: ((ms % 1000) * 1_000_000) as i32,
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    (code(&r.status), r.offset)
}

/// Waits (bounded) until queue 0 of `topic` holds `n` dispatched messages.
async fn dispatched(svc: &BrokerGrpc, topic: &str, n: i64) {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let (c, end) = query_offset(svc, topic, QueryOffsetPolicy::End, None).await;
        assert_eq!(c, Code::Ok);
        if end >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {end} of {n} dispatched"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn store_ms(m: &Message) -> i64 {
    let t = sp(m).store_timestamp.unwrap();
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// Waits (bounded, polling the clock) until the wall clock is past `ms`.
async fn clock_past(ms: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while now_ms() <= ms {
        assert!(std::time::Instant::now() < deadline, "clock stuck");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn given_sql_filter_when_popped_should_deliver_only_matching_messages() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let batch = vec![
        pmsg(
            "t",
            "cheap-red",
            Some("red"),
            &[("price", "5"), ("region", "eu")],
        ),
        pmsg(
            "t",
            "dear-red",
            Some("red"),
            &[("price", "50"), ("region", "eu")],
        ),
        pmsg(
            "t",
            "dear-blue",
            Some("blue"),
            &[("price", "70"), ("region", "us")],
        ),
        pmsg("t", "no-price", Some("red"), &[("region", "eu")]),
        pmsg(
            "t",
            "dear-untagged",
            None,
            &[("price", "80"), ("region", "eu")],
        ),
    ];
    assert_eq!(code(&send(&n.svc, batch).await.status), Code::Ok);
    dispatched(&n.svc, "t", 5).await;
    let pop_sql = |expr: &str| ReceiveMessageRequest {
        group: res("sqlg"),
        message_queue: mq("t", -1),
        filter_expression: sql(expr),
        batch_size: 32,
        invisible_duration: secs(30_000),
        auto_renew: false,
        long_polling_timeout: secs(0),
        attempt_id: None,
    };
    let r = n
        .svc
        .pop_message(tonic::Request::new(pop_sql(
            "price > 10 AND region = 'eu' AND TAGS IS NOT NULL",
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::Ok);
    assert_eq!(ids(&r.messages), vec!["dear-red"]);
    // Everything else was examined and skipped: the group's position is past it.
    let p = n.broker.consumer_progress("sqlg", "t", 0).unwrap();
    assert_eq!((p.pop_offset, p.inflight), (5, 1));
    let r = n
        .svc
        .pop_message(tonic::Request::new(pop_sql("price > 10")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::MessageNotFound);

    // Another group, another expression: TAGS IN and a missing property.
    let mut req = pop_sql("TAGS IN ('blue', 'green') OR price IS NULL");
    req.group = res("sqlg2");
    let r = n
        .svc
        .pop_message(tonic::Request::new(req))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&r.messages), vec!["dear-blue", "no-price"]);

    // Invalid expressions are refused with the position and what was expected.
    for (expr, text) in [
        (
            "price >",
            "at position 8: the expression ends too early: expected a property name",
        ),
        (
            "price = NULL",
            "at position 7: NULL cannot be compared with =: use IS NULL",
        ),
        (
            "region IN 'eu'",
            "at position 11: unexpected string 'eu': expected '(' after IN",
        ),
    ] {
        let r = n
            .svc
            .pop_message(tonic::Request::new(pop_sql(expr)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&r.status), Code::IllegalFilterExpression, "{expr}");
        let m = r.status.unwrap().message;
        assert!(m.contains(text), "{expr}: {m}");
    }
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_stored_messages_when_pulled_should_honour_offset_batch_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 2)], &[])).await;
    let batch: Vec<Message> = (0..10)
        .map(|i| {
            pmsg(
                "t",
                &format!("m{i}"),
                Some(if i % 2 == 0 { "even" } else { "odd" }),
                &[("n", &i.to_string())],
            )
        })
        .collect();
    assert_eq!(code(&send(&n.svc, batch).await.status), Code::Ok);
    dispatched(&n.svc, "t", 10).await;

    let r = pull(&n.svc, "t", 0, 0, 3, None, 0).await;
    assert_eq!(code(&r.status), Code::Ok);
    assert_eq!(ids(&r.messages), vec!["m0", "m1", "m2"]);
    assert_eq!((r.next_offset, r.min_offset, r.max_offset), (3, 0, 10));
    let m = &r.messages[0];
    assert_eq!(sp(m).queue_offset, Some(0));
    assert!(
        sp(m).receipt_handle.is_none(),
        "pulled messages carry no handle"
    );
    assert!(sp(m).body_digest.is_some() && sp(m).store_timestamp.is_some());
    assert_eq!(m.body.as_ref(), b"body-m0");

    let r = pull(&n.svc, "t", 0, 7, 32, None, 0).await;
    assert_eq!(ids(&r.messages), vec!["m7", "m8", "m9"]);
    assert_eq!(r.next_offset, 10);

    // Tag and SQL filters skip non-matching messages; next_offset passes them too.
    let tag = Some(FilterExpression {
        r#type: FilterType::Tag as i32,
        expression: "odd".into(),
    });
    let r = pull(&n.svc, "t", 0, 0, 2, tag, 0).await;
    assert_eq!(ids(&r.messages), vec!["m1", "m3"]);
    assert_eq!(r.next_offset, 4);
    let r = pull(&n.svc, "t", 0, 0, 32, sql("n BETWEEN 4 AND 6"), 0).await;
    assert_eq!(ids(&r.messages), vec!["m4", "m5", "m6"]);
    assert_eq!(r.next_offset, 10);
    let r = pull(&n.svc, "t", 0, 0, 32, sql("n > 100"), 0).await;
    assert_eq!(code(&r.status), Code::MessageNotFound);
    assert_eq!(
        r.next_offset, 10,
        "the scan moved past every non-matching message"
    );

    // Out of range, negative, unknown queue, bad batch, bad filter.
    let r = pull(&n.svc, "t", 0, 11, 32, None, 0).await;
    assert_eq!(code(&r.status), Code::IllegalOffset);
    assert_eq!(r.next_offset, 10);
    assert!(
        r.status
            .unwrap()
            .message
            .contains("outside the stored range [0, 10]")
    );
    let r = pull(&n.svc, "t", 0, -5, 32, None, 0).await;
    assert_eq!(code(&r.status), Code::IllegalOffset);
    assert_eq!(r.next_offset, 0);
    let r = pull(&n.svc, "t", 2, 0, 32, None, 0).await;
    assert_eq!(code(&r.status), Code::BadRequest);
    assert!(r.status.unwrap().message.contains("queue id 2"));
    let r = pull(&n.svc, "t", -1, 0, 32, None, 0).await;
    assert_eq!(
        code(&r.status),
        Code::BadRequest,
        "pull needs a concrete queue"
    );
    let r = pull(&n.svc, "nope", 0, 0, 32, None, 0).await;
    assert_eq!(code(&r.status), Code::TopicNotFound);
    let r = pull(&n.svc, "t", 0, 0, 0, None, 0).await;
    assert_eq!(code(&r.status), Code::BadRequest);
    let r = pull(&n.svc, "t", 0, 0, 1, sql("n >"), 0).await;
    assert_eq!(code(&r.status), Code::IllegalFilterExpression);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_queue_end_when_pulled_with_long_poll_should_wake_on_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let svc = n.svc.clone();
    let waiter = tokio::spawn(async move { pull(&svc, "t", 0, 0, 32, None, 10_000).await });
    // Send once the pull is parked (or even before: either way it must return the message).
    tokio::task::yield_now().await;
    send_one(&n.svc, "t", 0, "late", None).await;
    let r = tokio::time::timeout(LIMIT, waiter).await.unwrap().unwrap();
    assert_eq!(code(&r.status), Code::Ok);
    assert_eq!(ids(&r.messages), vec!["late"]);
    assert_eq!(r.next_offset, 1);
    // Nothing arrives: MESSAGE_NOT_FOUND after the poll, with the same next offset.
    let started = std::time::Instant::now();
    let r = pull(&n.svc, "t", 0, 1, 32, None, 300).await;
    assert_eq!(code(&r.status), Code::MessageNotFound);
    assert_eq!(r.next_offset, 1);
    assert!(started.elapsed() >= Duration::from_millis(250));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_offsets_when_updated_and_queried_should_persist_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let md = metadata(&[("t", 2)], &[]);
    let n = open(dir.path(), md.clone()).await;
    for i in 0..3 {
        send_one(&n.svc, "t", 0, &format!("a{i}"), None).await;
    }
    dispatched(&n.svc, "t", 3).await;
    let ts1 = {
        let r = pull(&n.svc, "t", 0, 0, 32, None, 0).await;
        store_ms(r.messages.last().unwrap())
    };
    clock_past(ts1).await;
    for i in 0..2 {
        send_one(&n.svc, "t", 0, &format!("b{i}"), None).await;
    }
    dispatched(&n.svc, "t", 5).await;

    // QueryOffset.
    assert_eq!(
        query_offset(&n.svc, "t", QueryOffsetPolicy::Beginning, None).await,
        (Code::Ok, 0)
    );
    assert_eq!(
        query_offset(&n.svc, "t", QueryOffsetPolicy::End, None).await,
        (Code::Ok, 5)
    );
    assert_eq!(
        query_offset(&n.svc, "t", QueryOffsetPolicy::Timestamp, Some(ts1 + 1)).await,
        (Code::Ok, 3)
    );
    assert_eq!(
        query_offset(&n.svc, "t", QueryOffsetPolicy::Timestamp, Some(0)).await,
        (Code::Ok, 0)
    );
    assert_eq!(
        query_offset(
            &n.svc,
            "t",
            QueryOffsetPolicy::Timestamp,
            Some(now_ms() + 60_000)
        )
        .await,
        (Code::Ok, 5),
        "nothing stored after: the end"
    );
    assert_eq!(
        query_offset(&n.svc, "t", QueryOffsetPolicy::Timestamp, None)
            .await
            .0,
        Code::BadRequest
    );

    // GetOffset / UpdateOffset.
    assert_eq!(get(&n.svc, "pg", "t", 0).await.0, Code::OffsetNotFound);
    assert_eq!(update(&n.svc, "pg", "t", 0, 4).await.0, Code::Ok);
    assert_eq!(get(&n.svc, "pg", "t", 0).await, (Code::Ok, 4));
    assert_eq!(get(&n.svc, "pg", "t", 1).await.0, Code::OffsetNotFound);
    assert_eq!(get(&n.svc, "other", "t", 0).await.0, Code::OffsetNotFound);
    let (c, m) = update(&n.svc, "pg", "t", 0, 6).await;
    assert_eq!(c, Code::IllegalOffset);
    assert!(m.contains("outside [0, 5]"), "{m}");
    assert_eq!(
        update(&n.svc, "pg", "t", 0, -1).await.0,
        Code::IllegalOffset
    );
    assert_eq!(update(&n.svc, "pg", "t", 3, 0).await.0, Code::BadRequest);
    assert_eq!(
        update(&n.svc, "", "t", 0, 0).await.0,
        Code::IllegalConsumerGroup
    );
    assert_eq!(update(&n.svc, "pg", "t", 0, 5).await.0, Code::Ok);
    n.broker.shutdown().await.unwrap();

    // A clean restart keeps the offset.
    let n = open(dir.path(), md.clone()).await;
    assert_eq!(get(&n.svc, "pg", "t", 0).await, (Code::Ok, 5));
    assert_eq!(update(&n.svc, "pg", "t", 0, 2).await.0, Code::Ok);
    // So does a crash right after the answer (the offset was written before it).
    n.broker.abandon().await;
    let n = open(dir.path(), md).await;
    assert_eq!(get(&n.svc, "pg", "t", 0).await, (Code::Ok, 2));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_pop_group_when_reset_to_a_time_should_redeliver_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 2)], &[])).await;
    for i in 0..3 {
        send_one(&n.svc, "t", 0, &format!("a{i}"), None).await;
    }
    dispatched(&n.svc, "t", 3).await;
    let ts1 = store_ms(
        pull(&n.svc, "t", 0, 2, 1, None, 0)
            .await
            .messages
            .first()
            .unwrap(),
    );
    clock_past(ts1).await;
    for i in 0..2 {
        send_one(&n.svc, "t", 0, &format!("b{i}"), None).await;
    }
    let got = pop_n(&n.svc, &Pop::default(), 5, LIMIT).await;
    assert_eq!(got.len(), 5);
    for m in &got[..3] {
        assert_eq!(ack(&n.svc, "g", "t", &handle(m)).await, Code::Ok);
    }
    // Progress: 2 in flight, nothing left to deliver.
    let prog = n
        .svc
        .get_consumer_progress(tonic::Request::new(GetConsumerProgressRequest {
            group: res("g"),
            topic: res("t"),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&prog.status), Code::Ok);
    let q: Vec<_> = prog
        .queues
        .iter()
        .map(|q| {
            (
                q.queue_id,
                q.min_offset,
                q.max_offset,
                q.consume_offset,
                q.backlog,
                q.inflight,
            )
        })
        .collect();
    assert_eq!(q[0], (0, 0, 5, 3, 2, 2));
    // Queue 1 is empty; whether the group's pops visited it yet depends on the round-robin.
    assert!(matches!(q[1], (1, 0, 0, -1 | 0, 0, 0)), "{:?}", q[1]);

    // Reset to just after the first batch: b0, b1 come again; their old handles are void.
    let r = n
        .svc
        .reset_offset(tonic::Request::new(ResetOffsetRequest {
            group: res("g"),
            topic: res("t"),
            queue_id: -1,
            target: Some(reset_offset_request::Target::Timestamp(
                prost_types::Timestamp {
                    seconds: (ts1 + 1) / 1000,
                    nanos: (((ts1 + 1) % 1000) * 1_000_000) as i32,
                },
            )),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::Ok);
    let changes: Vec<_> = r
        .queues
        .iter()
        .map(|c| (c.queue_id, c.previous_offset, c.offset, c.dropped_inflight))
        .collect();
    assert_eq!(changes[0], (0, 3, 3, 2));
    assert!(matches!(changes[1], (1, -1 | 0, 0, 0)), "{:?}", changes[1]);
    assert_eq!(
        ack(&n.svc, "g", "t", &handle(&got[3])).await,
        Code::InvalidReceiptHandle
    );
    let again = pop_n(&n.svc, &Pop::default(), 2, LIMIT).await;
    assert_eq!(ids(&again), vec!["b0", "b1"]);

    // Reset to an offset (clamped into the queue) and to the beginning.
    let reset_to = |offset: i64, queue_id: i32| ResetOffsetRequest {
        group: res("g"),
        topic: res("t"),
        queue_id,
        target: Some(reset_offset_request::Target::Offset(offset)),
    };
    let r = n
        .svc
        .reset_offset(tonic::Request::new(reset_to(99, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.queues[0].offset, 5);
    let r = n
        .svc
        .reset_offset(tonic::Request::new(reset_to(0, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.queues[0].previous_offset, r.queues[0].dropped_inflight),
        (5, 0)
    );
    let again = pop_n(&n.svc, &Pop::default(), 5, LIMIT).await;
    assert_eq!(ids(&again), vec!["a0", "a1", "a2", "b0", "b1"]);
    // Bad requests.
    let r = n
        .svc
        .reset_offset(tonic::Request::new(reset_to(0, 9)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::BadRequest);
    let mut no_target = reset_to(0, 0);
    no_target.target = None;
    let r = n
        .svc
        .reset_offset(tonic::Request::new(no_target))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::BadRequest);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_stored_messages_when_queried_by_id_key_and_offset_should_find_them() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    for i in 0..4 {
        send_one(&n.svc, "t", 0, &format!("id-{i}"), None).await;
    }
    dispatched(&n.svc, "t", 4).await;
    let query = |q: query_message_request::Query| QueryMessageRequest {
        topic: res("t"),
        query: Some(q),
    };
    let by_id = n
        .svc
        .query_message(tonic::Request::new(query(
            query_message_request::Query::MessageId("id-2".into()),
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&by_id.status), Code::Ok);
    assert_eq!(ids(&by_id.messages), vec!["id-2"]);
    assert_eq!(sp(&by_id.messages[0]).queue_offset, Some(2));

    // Keys are "key-<id>" (see common::msg).
    let by_key = n
        .svc
        .query_message(tonic::Request::new(query(
            query_message_request::Query::Key(KeyQuery {
                key: "key-id-1".into(),
                begin: None,
                end: None,
                max: 0,
            }),
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&by_key.messages), vec!["id-1"]);
    // A time range before the messages finds nothing.
    let before = n
        .svc
        .query_message(tonic::Request::new(query(
            query_message_request::Query::Key(KeyQuery {
                key: "key-id-1".into(),
                begin: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
                end: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
                max: 10,
            }),
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&before.status), Code::MessageNotFound);

    let by_offset = n
        .svc
        .query_message(tonic::Request::new(query(
            query_message_request::Query::QueueOffset(QueueOffsetQuery {
                queue_id: 0,
                offset: 3,
            }),
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&by_offset.messages), vec!["id-3"]);
    for (q, want) in [
        (
            query_message_request::Query::QueueOffset(QueueOffsetQuery {
                queue_id: 0,
                offset: 4,
            }),
            Code::MessageNotFound,
        ),
        (
            query_message_request::Query::MessageId("nope".into()),
            Code::MessageNotFound,
        ),
        (
            query_message_request::Query::MessageId(String::new()),
            Code::IllegalMessageId,
        ),
        (
            query_message_request::Query::Key(KeyQuery {
                key: "k".into(),
                begin: None,
                end: None,
                max: 5000,
            }),
            Code::BadRequest,
        ),
    ] {
        let r = n
            .svc
            .query_message(tonic::Request::new(query(q)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&r.status), want, "{:?}", r.status);
    }
    let r = n
        .svc
        .query_message(tonic::Request::new(QueryMessageRequest {
            topic: res("bad topic"),
            query: Some(query_message_request::Query::MessageId("x".into())),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::IllegalTopic);
    n.broker.shutdown().await.unwrap();
}
