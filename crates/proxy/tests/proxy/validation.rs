//! Every validation case: the in-body code AND the message, and nothing reaches a broker.

use comet_proto::apache::rocketmq::v2::{
    Code, Message, MessageType, ReceiveMessageRequest, Resource, SendMessageRequest,
};

use super::harness::{Harness, bare, req, res};
use super::message;
use super::messaging::{queue, receive, receive_request, send};

fn with(f: impl FnOnce(&mut Message)) -> Message {
    let mut m = message(res("normal"), b"body");
    f(&mut m);
    m
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn given_invalid_messages_when_sent_should_answer_the_right_code_and_message() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let max_body = h.proxy.config().max_body_size;
    let cases: Vec<(&str, Message, Code, String)> = vec![
        (
            "unknown topic",
            with(|m| m.topic = res("missing")),
            Code::TopicNotFound,
            "topic missing does not exist".into(),
        ),
        (
            "no topic",
            with(|m| m.topic = None),
            Code::IllegalTopic,
            "topic is required".into(),
        ),
        (
            "illegal topic characters",
            with(|m| m.topic = res("bad topic")),
            Code::IllegalTopic,
            "topic name \"bad topic\" contains illegal characters; allowed are [%|a-zA-Z0-9_-]"
                .into(),
        ),
        (
            "topic too long",
            with(|m| m.topic = res(&"t".repeat(128))),
            Code::IllegalTopic,
            "topic name is too long: 128 bytes, at most 127".into(),
        ),
        (
            "system topic",
            with(|m| m.topic = res("%RETRY%g")),
            Code::IllegalTopic,
            "topic %RETRY%g is a system topic; clients cannot publish to it".into(),
        ),
        (
            "empty body",
            with(|m| m.body = bytes::Bytes::new()),
            Code::BadRequest,
            "message body is empty".into(),
        ),
        (
            "oversized body",
            with(|m| m.body = bytes::Bytes::from(vec![0u8; max_body + 1])),
            Code::MessageBodyTooLarge,
            format!(
                "message body is {} bytes, more than the limit of {max_body} bytes",
                max_body + 1
            ),
        ),
        (
            "missing message id",
            with(|m| m.system_properties.as_mut().unwrap().message_id.clear()),
            Code::IllegalMessageId,
            "message id is empty".into(),
        ),
        (
            "missing system properties",
            with(|m| m.system_properties = None),
            Code::IllegalMessageId,
            "message id is empty".into(),
        ),
        (
            "blank tag",
            with(|m| m.system_properties.as_mut().unwrap().tag = Some("  ".into())),
            Code::IllegalMessageTag,
            "tag must not be blank".into(),
        ),
        (
            "tag with |",
            with(|m| m.system_properties.as_mut().unwrap().tag = Some("a|b".into())),
            Code::IllegalMessageTag,
            "tag must not contain '|'".into(),
        ),
        (
            "tag with control character",
            with(|m| m.system_properties.as_mut().unwrap().tag = Some("a\nb".into())),
            Code::IllegalMessageTag,
            "tag must not contain control characters".into(),
        ),
        (
            "blank key",
            with(|m| m.system_properties.as_mut().unwrap().keys = vec![" ".into()]),
            Code::IllegalMessageKey,
            "message key must not be empty or blank".into(),
        ),
        (
            "too many user properties",
            with(|m| {
                for i in 0..129 {
                    m.user_properties.insert(format!("k{i}"), "v".into());
                }
            }),
            Code::MessagePropertiesTooLarge,
            "message has 129 user properties, more than the limit of 128".into(),
        ),
        (
            "oversized user properties",
            with(|m| {
                m.user_properties
                    .insert("big".into(), "v".repeat(16 * 1024));
            }),
            Code::MessagePropertiesTooLarge,
            "user properties total 16387 bytes, more than the limit of 16384 bytes".into(),
        ),
        (
            "blank property key",
            with(|m| {
                m.user_properties.insert(String::new(), "v".into());
            }),
            Code::IllegalMessagePropertyKey,
            "user property key must not be empty or blank".into(),
        ),
        (
            "message group too long",
            with(|m| {
                m.topic = res("fifo");
                m.system_properties.as_mut().unwrap().message_group = Some("g".repeat(65));
            }),
            Code::IllegalMessageGroup,
            "message group is 65 bytes, more than the limit of 64 bytes".into(),
        ),
        (
            "FIFO type without group",
            with(|m| {
                m.topic = res("fifo");
                m.system_properties.as_mut().unwrap().message_type = MessageType::Fifo as i32;
            }),
            Code::MessagePropertyConflictWithType,
            "a FIFO message needs a message group".into(),
        ),
        (
            "FIFO message to a NORMAL topic",
            with(|m| {
                m.system_properties.as_mut().unwrap().message_group = Some("g".into());
            }),
            Code::MessagePropertyConflictWithType,
            "topic normal accepts NORMAL messages, not FIFO".into(),
        ),
        (
            "NORMAL message to a FIFO topic",
            with(|m| m.topic = res("fifo")),
            Code::MessagePropertyConflictWithType,
            "topic fifo accepts FIFO messages, not NORMAL".into(),
        ),
        (
            "delivery too far ahead",
            with(|m| {
                m.topic = res("delay");
                m.system_properties.as_mut().unwrap().delivery_timestamp =
                    Some(prost_types::Timestamp {
                        seconds: now_secs() + 41 * 24 * 3600 + 10,
                        nanos: 0,
                    });
            }),
            Code::IllegalDeliveryTime,
            String::new(), // message checked by prefix below
        ),
        (
            "delayed transaction message",
            with(|m| {
                m.topic = res("mixed");
                let sp = m.system_properties.as_mut().unwrap();
                sp.message_type = MessageType::Transaction as i32;
                sp.delivery_timestamp = Some(prost_types::Timestamp {
                    seconds: now_secs() + 60,
                    nanos: 0,
                });
            }),
            Code::MessagePropertyConflictWithType,
            "a TRANSACTION message must not carry a delivery timestamp".into(),
        ),
        (
            "delayed FIFO message",
            with(|m| {
                m.topic = res("mixed");
                let sp = m.system_properties.as_mut().unwrap();
                sp.message_group = Some("g".into());
                sp.delivery_timestamp = Some(prost_types::Timestamp {
                    seconds: now_secs() + 60,
                    nanos: 0,
                });
            }),
            Code::MessagePropertyConflictWithType,
            "a FIFO message must not carry a delivery timestamp; FIFO and delay do not combine"
                .into(),
        ),
    ];
    for (what, m, code, text) in cases {
        let r = send(&mut c, vec![m]).await;
        let s = r.status.clone().unwrap();
        assert_eq!(s.code, code as i32, "{what}: {}", s.message);
        if text.is_empty() {
            assert!(
                s.message.starts_with("delivery time is ")
                    && s.message.contains("limit of 3456000s (40 days)"),
                "{what}: {}",
                s.message
            );
        } else {
            assert_eq!(s.message, text, "{what}");
        }
        assert_eq!(r.entries.len(), 1, "{what}: one entry per message");
        assert_eq!(r.entries[0].status.as_ref().unwrap().code, code as i32);
    }
    assert!(h.broker("a").sends().is_empty(), "nothing reached a broker");
}

#[tokio::test]
async fn given_a_batch_with_one_bad_message_when_sent_should_send_nothing_and_report_per_entry() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let good = message(res("normal"), b"ok");
    let bad = with(|m| m.system_properties.as_mut().unwrap().tag = Some("a|b".into()));
    let r = send(&mut c, vec![good, bad]).await;
    let s = r.status.unwrap();
    assert_eq!(s.code, Code::IllegalMessageTag as i32);
    assert_eq!(s.message, "message 1: tag must not contain '|'");
    assert_eq!(r.entries.len(), 2);
    let e0 = r.entries[0].status.as_ref().unwrap();
    assert_eq!(e0.code, Code::PreconditionFailed as i32);
    assert_eq!(
        e0.message,
        "not sent: message 1 of this batch is invalid, so none was sent"
    );
    assert_eq!(
        r.entries[1].status.as_ref().unwrap().code,
        Code::IllegalMessageTag as i32
    );
    assert!(h.broker("a").sends().is_empty());
}

#[tokio::test]
async fn given_an_empty_send_when_sent_should_answer_bad_request() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let r = send(&mut c, vec![]).await;
    let s = r.status.unwrap();
    assert_eq!(s.code, Code::BadRequest as i32);
    assert_eq!(s.message, "SendMessage carries no messages");
}

#[tokio::test]
async fn given_a_send_without_client_id_should_answer_client_id_required() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let r = c
        .send_message(bare(SendMessageRequest {
            messages: vec![message(res("normal"), b"x")],
        }))
        .await
        .unwrap()
        .into_inner();
    let s = r.status.unwrap();
    assert_eq!(s.code, Code::ClientIdRequired as i32);
    assert_eq!(s.message, "the x-mq-client-id request header is required");
    assert_eq!(
        r.entries.len(),
        1,
        "one entry per message even when rejected"
    );
    assert_eq!(r.entries[0].status, Some(s));
}

async fn receive_status(h: &Harness, r: tonic::Request<ReceiveMessageRequest>) -> (i32, String) {
    let mut c = h.client().await;
    let frames = receive(&mut c, r).await;
    assert_eq!(frames.len(), 2, "status, delivery timestamp: {frames:?}");
    assert!(matches!(
        &frames[1].content,
        Some(
            comet_proto::apache::rocketmq::v2::receive_message_response::Content::DeliveryTimestamp(
                _
            )
        )
    ));
    match &frames[0].content {
        Some(comet_proto::apache::rocketmq::v2::receive_message_response::Content::Status(s)) => {
            (s.code, s.message.clone())
        }
        other => panic!("expected status, got {other:?}"),
    }
}

#[tokio::test]
async fn given_invalid_receives_should_answer_the_right_code_and_message() {
    let h = Harness::start().await;
    let base = || receive_request(res("normal"), "g1", 200);
    let d = |s: i64, n: i32| prost_types::Duration {
        seconds: s,
        nanos: n,
    };
    let cases: Vec<(&str, ReceiveMessageRequest, Code, &str)> = vec![
        (
            "invisible below min",
            ReceiveMessageRequest {
                invisible_duration: Some(d(0, 100_000_000)),
                ..base()
            },
            Code::IllegalInvisibleTime,
            "invisible duration 0s100000000ns is outside the allowed range [500ms, 43200s]",
        ),
        (
            "invisible above max",
            ReceiveMessageRequest {
                invisible_duration: Some(d(43_201, 0)),
                ..base()
            },
            Code::IllegalInvisibleTime,
            "invisible duration 43201s0ns is outside the allowed range [500ms, 43200s]",
        ),
        (
            "negative polling",
            ReceiveMessageRequest {
                long_polling_timeout: Some(d(-1, 0)),
                ..base()
            },
            Code::IllegalPollingTime,
            "long polling timeout -1s0ns is negative or malformed",
        ),
        (
            "batch size zero",
            ReceiveMessageRequest {
                batch_size: 0,
                ..base()
            },
            Code::BadRequest,
            "batch size must be at least 1, got 0",
        ),
        (
            "queue id out of range",
            ReceiveMessageRequest {
                message_queue: queue(res("normal"), "a", 5),
                ..base()
            },
            Code::BadRequest,
            "queue id 5 is out of range for topic normal on broker set a: valid are -1 (any) and 0..1",
        ),
        (
            "unknown topic",
            ReceiveMessageRequest {
                message_queue: queue(res("missing"), "a", 0),
                ..base()
            },
            Code::TopicNotFound,
            "topic missing does not exist",
        ),
        (
            "illegal group",
            ReceiveMessageRequest {
                group: Some(Resource {
                    resource_namespace: String::new(),
                    name: "bad group".into(),
                }),
                ..base()
            },
            Code::IllegalConsumerGroup,
            "consumer group name \"bad group\" contains illegal characters; allowed are [%|a-zA-Z0-9_-]",
        ),
        (
            "missing group",
            ReceiveMessageRequest {
                group: None,
                ..base()
            },
            Code::IllegalConsumerGroup,
            "consumer group is required",
        ),
    ];
    for (what, r, code, text) in cases {
        let (got, message) = receive_status(&h, req(r)).await;
        assert_eq!(got, code as i32, "{what}: {message}");
        assert_eq!(message, text, "{what}");
    }
    let (got, message) = receive_status(&h, bare(base())).await;
    assert_eq!(got, Code::ClientIdRequired as i32);
    assert_eq!(message, "the x-mq-client-id request header is required");
    assert!(h.broker("a").pops().is_empty(), "nothing reached a broker");
}
