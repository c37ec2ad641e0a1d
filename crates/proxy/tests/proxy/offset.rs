//! PullMessage, UpdateOffset, GetOffset and QueryOffset: routing to the named queue, frame
//! shape, validation, and the offset codes per client language.

use comet_proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use comet_proto::apache::rocketmq::v2::{
    Code, FilterExpression, FilterType, GetOffsetRequest, MessageQueue, PullMessageRequest,
    PullMessageResponse, QueryOffsetPolicy, QueryOffsetRequest, Status, UpdateOffsetRequest,
    pull_message_response::Content,
};
use tonic::transport::Channel;

use super::harness::{Harness, bare, req, res};
use super::message;
use super::messaging::{queue, send};

fn ms(n: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (n / 1000) as i64,
        nanos: ((n % 1000) * 1_000_000) as i32,
    }
}

fn pull_request(mq: Option<MessageQueue>, offset: i64, batch: i32) -> PullMessageRequest {
    PullMessageRequest {
        group: res("pull-group"),
        message_queue: mq,
        offset,
        batch_size: batch,
        filter_expression: None,
        long_polling_timeout: Some(ms(100)),
    }
}

fn with_language<T>(message: T, language: &str) -> tonic::Request<T> {
    let mut r = req(message);
    r.metadata_mut()
        .insert("x-mq-language", language.parse().unwrap());
    r
}

async fn pull(
    c: &mut MessagingServiceClient<Channel>,
    request: tonic::Request<PullMessageRequest>,
) -> Vec<Content> {
    let mut stream = c.pull_message(request).await.unwrap().into_inner();
    let mut frames = vec![];
    while let Some(PullMessageResponse { content }) = stream.message().await.unwrap() {
        frames.push(content.expect("every frame sets its oneof"));
    }
    frames
}

fn status_of(frames: &[Content]) -> Status {
    match frames.first() {
        Some(Content::Status(s)) => s.clone(),
        other => panic!("first frame must be the status, got {other:?}"),
    }
}

fn code_of(s: &Option<Status>) -> i32 {
    s.as_ref().expect("status present").code
}

#[tokio::test]
async fn given_stored_messages_when_pulled_should_stream_status_messages_then_next_offset() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let sent = send(
        &mut c,
        (0..3)
            .map(|i| message(res("normal"), &[b'a' + i]))
            .collect(),
    )
    .await;
    assert_eq!(code_of(&sent.status), Code::Ok as i32);

    let frames = pull(
        &mut c,
        req(pull_request(queue(res("normal"), "a", 0), 0, 2)),
    )
    .await;
    assert_eq!(status_of(&frames).code, Code::Ok as i32);
    assert_eq!(frames.len(), 4, "{frames:?}");
    let bodies: Vec<&[u8]> = frames[1..3]
        .iter()
        .map(|f| match f {
            Content::Message(m) => m.body.as_ref(),
            other => panic!("expected a message, got {other:?}"),
        })
        .collect();
    assert_eq!(bodies, vec![b"a".as_slice(), b"b".as_slice()]);
    assert!(
        matches!(frames[3], Content::NextOffset(2)),
        "{:?}",
        frames[3]
    );

    // What reached the broker: the exact queue, a TAG "*" filter, a clamped poll.
    let forwarded = h.broker("a").pulls();
    let f = forwarded.last().unwrap();
    let mq = f.message_queue.as_ref().unwrap();
    assert_eq!(mq.topic.as_ref().unwrap().name, "normal");
    assert_eq!((mq.id, mq.broker.as_ref().unwrap().name.as_str()), (0, "a"));
    assert_eq!(f.group.as_ref().unwrap().name, "pull-group");
    assert_eq!((f.offset, f.batch_size), (0, 2));
    let filter = f.filter_expression.as_ref().unwrap();
    assert_eq!(
        (filter.r#type, filter.expression.as_str()),
        (FilterType::Tag as i32, "*")
    );
    assert!(h.broker("b").pulls().is_empty());

    // At the end: MESSAGE_NOT_FOUND after the poll, still with the next offset.
    let frames = pull(
        &mut c,
        req(pull_request(queue(res("normal"), "a", 0), 3, 2)),
    )
    .await;
    assert_eq!(status_of(&frames).code, Code::MessageNotFound as i32);
    assert!(
        matches!(frames[..], [_, Content::NextOffset(3)]),
        "{frames:?}"
    );

    // The broker name may be omitted when the topic lives on one broker set.
    let mut mq = queue(res("normal"), "a", 0);
    if let Some(q) = mq.as_mut() {
        q.broker = None;
    }
    let frames = pull(&mut c, req(pull_request(mq, 1, 32))).await;
    assert_eq!(status_of(&frames).code, Code::Ok as i32);
    assert_eq!(frames.len(), 4);
}

#[tokio::test]
async fn given_offset_outside_the_queue_when_pulled_should_answer_per_language() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    send(&mut c, vec![message(res("normal"), b"x")]).await;
    let r = || pull_request(queue(res("normal"), "a", 0), 9, 1);

    let frames = pull(&mut c, with_language(r(), "JAVA")).await;
    let s = status_of(&frames);
    assert_eq!(s.code, Code::IllegalOffset as i32, "{}", s.message);
    assert!(
        matches!(frames[..], [_, Content::NextOffset(1)]),
        "{frames:?}"
    );

    // The Rust 5.0.0 client panics on ILLEGAL_OFFSET: it gets BAD_REQUEST naming the code.
    let frames = pull(&mut c, with_language(r(), "RUST")).await;
    let s = status_of(&frames);
    assert_eq!(s.code, Code::BadRequest as i32);
    assert!(s.message.contains("40019"), "{}", s.message);
    assert!(
        matches!(frames[..], [_, Content::NextOffset(1)]),
        "{frames:?}"
    );
}

#[tokio::test]
async fn given_bad_pull_requests_when_received_should_answer_codes_without_calling_brokers() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let base = || pull_request(queue(res("normal"), "a", 0), 0, 1);
    let cases: Vec<(tonic::Request<PullMessageRequest>, Code, &str)> = vec![
        (bare(base()), Code::ClientIdRequired, "x-mq-client-id"),
        (
            req(PullMessageRequest {
                group: res(""),
                ..base()
            }),
            Code::IllegalConsumerGroup,
            "must not be empty",
        ),
        (
            req(pull_request(queue(res("nope"), "a", 0), 0, 1)),
            Code::TopicNotFound,
            "topic nope does not exist",
        ),
        (
            req(pull_request(queue(res("mixed"), "", 0), 0, 1)),
            Code::BadRequest,
            "message_queue.broker.name is required",
        ),
        (
            req(pull_request(queue(res("normal"), "zz", 0), 0, 1)),
            Code::BadRequest,
            "has no queues on broker set zz",
        ),
        (
            req(pull_request(queue(res("normal"), "a", 1), 0, 1)),
            Code::BadRequest,
            "queue id 1 is out of range",
        ),
        (
            req(pull_request(queue(res("normal"), "a", -1), 0, 1)),
            Code::BadRequest,
            "queue id -1 is out of range",
        ),
        (
            req(pull_request(None, 0, 1)),
            Code::IllegalTopic,
            "topic is required",
        ),
        (
            req(pull_request(queue(res("normal"), "a", 0), 0, 0)),
            Code::BadRequest,
            "batch size must be at least 1",
        ),
        (
            req(PullMessageRequest {
                filter_expression: Some(FilterExpression {
                    r#type: FilterType::Sql as i32,
                    expression: " ".into(),
                }),
                ..base()
            }),
            Code::IllegalFilterExpression,
            "must not be empty",
        ),
        (
            req(PullMessageRequest {
                long_polling_timeout: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..base()
            }),
            Code::IllegalPollingTime,
            "negative",
        ),
    ];
    for (request, code, text) in cases {
        let frames = pull(&mut c, request).await;
        assert!(
            matches!(frames[..], [_, Content::NextOffset(0)]),
            "errors are the status and the requested offset: {frames:?}"
        );
        let s = status_of(&frames);
        assert_eq!(s.code, code as i32, "{}", s.message);
        assert!(s.message.contains(text), "{}", s.message);
    }
    assert!(h.broker("a").pulls().is_empty());
    assert!(h.broker("b").pulls().is_empty());
}

#[tokio::test]
async fn given_offset_calls_when_forwarded_should_reach_the_named_broker_set() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let mq = || queue(res("mixed"), "b", 1);
    let r = c
        .get_offset(with_language(
            GetOffsetRequest {
                group: res("g1"),
                message_queue: mq(),
            },
            "HTTP",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code_of(&r.status), Code::OffsetNotFound as i32);
    let r = c
        .get_offset(with_language(
            GetOffsetRequest {
                group: res("g1"),
                message_queue: mq(),
            },
            "RUST",
        ))
        .await
        .unwrap()
        .into_inner();
    // OFFSET_NOT_FOUND is newer than Rust 5.0.0: it gets the class head, NOT_FOUND.
    assert_eq!(code_of(&r.status), Code::NotFound as i32);

    let r = c
        .update_offset(req(UpdateOffsetRequest {
            group: res("g1"),
            message_queue: mq(),
            offset: 7,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code_of(&r.status), Code::Ok as i32);
    let r = c
        .get_offset(req(GetOffsetRequest {
            group: res("g1"),
            message_queue: mq(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((code_of(&r.status), r.offset), (Code::Ok as i32, 7));
    assert_eq!(
        h.broker("b").offset_calls(),
        vec![
            "get g1 mixed 1",
            "get g1 mixed 1",
            "update g1 mixed 1",
            "get g1 mixed 1"
        ]
    );
    assert!(h.broker("a").offset_calls().is_empty());

    // Namespaced names reach the broker qualified.
    let mut scoped = req(UpdateOffsetRequest {
        group: res("g"),
        message_queue: queue(res("scoped"), "a", 0),
        offset: 0,
    });
    scoped
        .metadata_mut()
        .insert("x-mq-namespace", "ns1".parse().unwrap());
    let r = c.update_offset(scoped).await.unwrap().into_inner();
    assert_eq!(code_of(&r.status), Code::Ok as i32);
    assert_eq!(
        h.broker("a").offset_calls().last().unwrap(),
        "update ns1%g ns1%scoped 0"
    );

    // QueryOffset.
    send(&mut c, vec![message(res("normal"), b"x")]).await;
    let q = |policy: QueryOffsetPolicy, ts: Option<prost_types::Timestamp>| QueryOffsetRequest {
        message_queue: queue(res("normal"), "a", 0),
        query_offset_policy: policy as i32,
        timestamp: ts,
    };
    let r = c
        .query_offset(req(q(QueryOffsetPolicy::End, None)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((code_of(&r.status), r.offset), (Code::Ok as i32, 1));
    let r = c
        .query_offset(req(q(QueryOffsetPolicy::Timestamp, None)))
        .await
        .unwrap()
        .into_inner();
    let s = r.status.unwrap();
    assert_eq!(s.code, Code::BadRequest as i32);
    assert!(s.message.contains("timestamp is required"), "{}", s.message);
    let mut bad = q(QueryOffsetPolicy::End, None);
    bad.query_offset_policy = 9;
    let r = c.query_offset(req(bad)).await.unwrap().into_inner();
    assert_eq!(code_of(&r.status), Code::BadRequest as i32);
    let r = c
        .query_offset(bare(q(QueryOffsetPolicy::Beginning, None)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code_of(&r.status), Code::ClientIdRequired as i32);
}

#[tokio::test]
async fn given_remote_brokers_when_pulled_should_forward_over_grpc() {
    let h = Harness::builder().remote().start().await;
    let mut c = h.client().await;
    send(&mut c, vec![message(res("normal"), b"remote")]).await;
    let frames = pull(
        &mut c,
        req(pull_request(queue(res("normal"), "a", 0), 0, 8)),
    )
    .await;
    assert_eq!(status_of(&frames).code, Code::Ok as i32);
    assert!(matches!(frames.last(), Some(Content::NextOffset(1))));
    let r = c
        .update_offset(req(UpdateOffsetRequest {
            group: res("g"),
            message_queue: queue(res("normal"), "a", 0),
            offset: 1,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code_of(&r.status), Code::Ok as i32);
}
