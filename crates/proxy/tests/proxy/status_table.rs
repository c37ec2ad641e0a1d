//! The status table: RPC × cause → in-body code, for a client of any language and for a Rust
//! 5.0.0 client (which gets the nearest code its enum knows). Rows follow apache/rocketmq-apis
//! `StatusCode.md` and the Apache proxy where the table is silent; a change that breaks one
//! row fails this test with the row's name.

use comet_proto::apache::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, ChangeInvisibleDurationRequest, ClientType, Code,
    EndTransactionRequest, FilterExpression, FilterType, ForwardMessageToDeadLetterQueueRequest,
    GetOffsetRequest, HeartbeatRequest, Message, NotifyClientTerminationRequest,
    PullMessageRequest, QueryAssignmentRequest, QueryRouteRequest, ReceiveMessageRequest,
    SendMessageRequest, Status, TransactionResolution, TransactionSource, pull_message_response,
    receive_message_response,
};

use super::harness::{CLIENT_ID, Harness, res};
use super::message;
use super::messaging::{queue, receive_request};

/// One request of the table.
enum Call {
    Route(QueryRouteRequest),
    Heartbeat(HeartbeatRequest),
    Send(SendMessageRequest),
    Assignment(QueryAssignmentRequest),
    Receive(ReceiveMessageRequest),
    Ack(AckMessageRequest),
    Dlq(ForwardMessageToDeadLetterQueueRequest),
    End(EndTransactionRequest),
    Terminate(NotifyClientTerminationRequest),
    Change(ChangeInvisibleDurationRequest),
    Pull(PullMessageRequest),
    GetOffset(GetOffsetRequest),
}

/// The status of one call, made with (or without) the client id, in `language`.
async fn run(h: &Harness, call: Call, client_id: bool, language: &str) -> Status {
    fn request<T>(m: T, client_id: bool, language: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        if client_id {
            r.metadata_mut()
                .insert("x-mq-client-id", CLIENT_ID.parse().unwrap());
        }
        r.metadata_mut()
            .insert("x-mq-language", language.parse().unwrap());
        r
    }
    let mut c = h.client().await;
    match call {
        Call::Route(m) => {
            c.query_route(request(m, client_id, language))
                .await
                .unwrap()
                .into_inner()
                .status
        }
        Call::Heartbeat(m) => {
            c.heartbeat(request(m, client_id, language))
                .await
                .unwrap()
                .into_inner()
                .status
        }
        Call::Send(m) => {
            c.send_message(request(m, client_id, language))
                .await
                .unwrap()
                .into_inner()
                .status
        }
        Call::Assignment(m) => {
            c.query_assignment(request(m, client_id, language))
                .await
                .unwrap()
                .into_inner()
                .status
        }
        Call::Receive(m) => {
            let mut stream = c
                .receive_message(request(m, client_id, language))
                .await
                .unwrap()
                .into_inner();
            let first = stream.message().await.unwrap().unwrap();
            match first.content {
                Some(receive_message_response::Content::Status(s)) => Some(s),
                other => panic!("status frame first, got {other:?}"),
            }
        }
        Call::Ack(m) => {
            c.ack_message(request(m, client_id, language))
                .await
                .unwrap()
                .into_inner()
                .status
        }
        Call::Dlq(m) => {
            let response = c
                .forward_message_to_dead_letter_queue(request(m, client_id, language))
                .await;
            response.unwrap().into_inner().status
        }
        Call::End(m) => {
            c.end_transaction(request(m, client_id, language))
                .await
                .unwrap()
                .into_inner()
                .status
        }
        Call::Terminate(m) => {
            let response = c
                .notify_client_termination(request(m, client_id, language))
                .await;
            response.unwrap().into_inner().status
        }
        Call::Change(m) => {
            let response = c
                .change_invisible_duration(request(m, client_id, language))
                .await;
            response.unwrap().into_inner().status
        }
        Call::Pull(m) => {
            let mut stream = c
                .pull_message(request(m, client_id, language))
                .await
                .unwrap()
                .into_inner();
            let first = stream.message().await.unwrap().unwrap();
            match first.content {
                Some(pull_message_response::Content::Status(s)) => Some(s),
                other => panic!("status frame first, got {other:?}"),
            }
        }
        Call::GetOffset(m) => {
            c.get_offset(request(m, client_id, language))
                .await
                .unwrap()
                .into_inner()
                .status
        }
    }
    .expect("every answer carries a status")
}

fn send_one(f: impl FnOnce(&mut Message)) -> Call {
    let mut m = message(res("normal"), b"body");
    f(&mut m);
    Call::Send(SendMessageRequest { messages: vec![m] })
}

fn sys(m: &mut Message) -> &mut comet_proto::apache::rocketmq::v2::SystemProperties {
    m.system_properties.as_mut().unwrap()
}

fn secs(s: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: s,
        nanos: 0,
    }
}

fn change(handle: &str, invisible: i64, group: &str) -> Call {
    Call::Change(ChangeInvisibleDurationRequest {
        group: res(group),
        topic: res("normal"),
        receipt_handle: handle.into(),
        invisible_duration: Some(secs(invisible)),
        message_id: "id".into(),
        ..ChangeInvisibleDurationRequest::default()
    })
}

fn ack(handle: &str, group: &str, topic: &str) -> Call {
    Call::Ack(AckMessageRequest {
        group: res(group),
        topic: res(topic),
        entries: vec![AckMessageEntry {
            message_id: "id".into(),
            receipt_handle: handle.into(),
            lite_topic: None,
        }],
    })
}

fn end(topic: &str, transaction_id: &str) -> Call {
    Call::End(EndTransactionRequest {
        topic: res(topic),
        message_id: "id".into(),
        transaction_id: transaction_id.into(),
        resolution: TransactionResolution::Commit as i32,
        source: TransactionSource::SourceClient as i32,
        trace_context: String::new(),
    })
}

fn pull(topic: &str, offset: i64) -> Call {
    Call::Pull(PullMessageRequest {
        group: res("pull-group"),
        message_queue: queue(res(topic), "a", 0),
        offset,
        batch_size: 1,
        filter_expression: None,
        long_polling_timeout: Some(secs(0)),
    })
}

/// (RPC and cause, request, with client id, code for every client, code for Rust 5.0.0).
fn table() -> Vec<(&'static str, Call, bool, Code, Code)> {
    use Code as C;
    let same = |name, call, id, code| (name, call, id, code, code);
    let receive = |f: fn(&mut ReceiveMessageRequest)| {
        let mut r = receive_request(res("normal"), "g1", 100);
        f(&mut r);
        Call::Receive(r)
    };
    vec![
        // QueryRoute
        same(
            "QueryRoute ok",
            Call::Route(QueryRouteRequest {
                topic: res("normal"),
                endpoints: None,
            }),
            true,
            C::Ok,
        ),
        same(
            "QueryRoute without client id",
            Call::Route(QueryRouteRequest {
                topic: res("normal"),
                endpoints: None,
            }),
            false,
            C::ClientIdRequired,
        ),
        same(
            "QueryRoute illegal topic",
            Call::Route(QueryRouteRequest {
                topic: res("bad topic"),
                endpoints: None,
            }),
            true,
            C::IllegalTopic,
        ),
        same(
            "QueryRoute unknown topic",
            Call::Route(QueryRouteRequest {
                topic: res("missing"),
                endpoints: None,
            }),
            true,
            C::TopicNotFound,
        ),
        // Heartbeat
        same(
            "Heartbeat producer",
            Call::Heartbeat(HeartbeatRequest {
                group: None,
                client_type: ClientType::Producer as i32,
            }),
            true,
            C::Ok,
        ),
        same(
            "Heartbeat without client id",
            Call::Heartbeat(HeartbeatRequest {
                group: None,
                client_type: ClientType::Producer as i32,
            }),
            false,
            C::ClientIdRequired,
        ),
        same(
            "Heartbeat without settings or client type",
            Call::Heartbeat(HeartbeatRequest {
                group: None,
                client_type: 0,
            }),
            true,
            C::UnrecognizedClientType,
        ),
        same(
            "Heartbeat lite consumer without group",
            Call::Heartbeat(HeartbeatRequest {
                group: None,
                client_type: ClientType::LiteSimpleConsumer as i32,
            }),
            true,
            C::IllegalConsumerGroup,
        ),
        same(
            "Heartbeat consumer without group",
            Call::Heartbeat(HeartbeatRequest {
                group: None,
                client_type: ClientType::SimpleConsumer as i32,
            }),
            true,
            C::IllegalConsumerGroup,
        ),
        // SendMessage
        same("SendMessage ok", send_one(|_| {}), true, C::Ok),
        same(
            "SendMessage without client id",
            send_one(|_| {}),
            false,
            C::ClientIdRequired,
        ),
        same(
            "SendMessage no messages",
            Call::Send(SendMessageRequest { messages: vec![] }),
            true,
            C::MessageCorrupted,
        ),
        same(
            "SendMessage mixed topics",
            Call::Send(SendMessageRequest {
                messages: vec![message(res("normal"), b"a"), message(res("mixed"), b"b")],
            }),
            true,
            C::MessageCorrupted,
        ),
        (
            "SendMessage empty body",
            send_one(|m| m.body = bytes::Bytes::new()),
            true,
            C::MessageBodyEmpty,
            C::BadRequest,
        ),
        same(
            "SendMessage body too large",
            send_one(|m| m.body = bytes::Bytes::from(vec![0u8; 5 << 20])),
            true,
            C::MessageBodyTooLarge,
        ),
        same(
            "SendMessage illegal topic",
            send_one(|m| m.topic = res("bad topic")),
            true,
            C::IllegalTopic,
        ),
        same(
            "SendMessage unknown topic",
            send_one(|m| m.topic = res("missing")),
            true,
            C::TopicNotFound,
        ),
        same(
            "SendMessage illegal tag",
            send_one(|m| sys(m).tag = Some("a|b".into())),
            true,
            C::IllegalMessageTag,
        ),
        same(
            "SendMessage illegal key",
            send_one(|m| sys(m).keys = vec![" ".into()]),
            true,
            C::IllegalMessageKey,
        ),
        same(
            "SendMessage illegal message group",
            send_one(|m| {
                m.topic = res("fifo");
                sys(m).message_group = Some("g".repeat(65));
            }),
            true,
            C::IllegalMessageGroup,
        ),
        same(
            "SendMessage reserved property key",
            send_one(|m| {
                m.user_properties.insert("TAGS".into(), "x".into());
            }),
            true,
            C::IllegalMessagePropertyKey,
        ),
        same(
            "SendMessage property value with control character",
            send_one(|m| {
                m.user_properties.insert("k".into(), "a\u{1}".into());
            }),
            true,
            C::IllegalMessagePropertyKey,
        ),
        same(
            "SendMessage blank message id",
            send_one(|m| sys(m).message_id = " ".into()),
            true,
            C::IllegalMessageId,
        ),
        same(
            "SendMessage delivery too far",
            send_one(|m| {
                m.topic = res("delay");
                sys(m).delivery_timestamp = Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                });
            }),
            true,
            C::IllegalDeliveryTime,
        ),
        same(
            "SendMessage type conflicting with topic",
            send_one(|m| m.topic = res("fifo")),
            true,
            C::MessagePropertyConflictWithType,
        ),
        same(
            "SendMessage too many properties",
            send_one(|m| {
                for i in 0..129 {
                    m.user_properties.insert(format!("k{i}"), "v".into());
                }
            }),
            true,
            C::MessagePropertiesTooLarge,
        ),
        // QueryAssignment
        same(
            "QueryAssignment ok",
            Call::Assignment(QueryAssignmentRequest {
                topic: res("normal"),
                group: res("g1"),
                endpoints: None,
            }),
            true,
            C::Ok,
        ),
        same(
            "QueryAssignment without client id",
            Call::Assignment(QueryAssignmentRequest {
                topic: res("normal"),
                group: res("g1"),
                endpoints: None,
            }),
            false,
            C::ClientIdRequired,
        ),
        same(
            "QueryAssignment illegal group",
            Call::Assignment(QueryAssignmentRequest {
                topic: res("normal"),
                group: res(""),
                endpoints: None,
            }),
            true,
            C::IllegalConsumerGroup,
        ),
        same(
            "QueryAssignment unknown topic",
            Call::Assignment(QueryAssignmentRequest {
                topic: res("missing"),
                group: res("g1"),
                endpoints: None,
            }),
            true,
            C::TopicNotFound,
        ),
        // ReceiveMessage
        same(
            "ReceiveMessage nothing found",
            receive(|r| r.message_queue = queue(res("delay"), "a", 0)),
            true,
            C::MessageNotFound,
        ),
        same(
            "ReceiveMessage without client id",
            receive(|_| {}),
            false,
            C::ClientIdRequired,
        ),
        same(
            "ReceiveMessage illegal group",
            receive(|r| r.group = res("bad group")),
            true,
            C::IllegalConsumerGroup,
        ),
        same(
            "ReceiveMessage illegal topic",
            receive(|r| r.message_queue = queue(res("bad topic"), "a", 0)),
            true,
            C::IllegalTopic,
        ),
        same(
            "ReceiveMessage unknown topic",
            receive(|r| r.message_queue = queue(res("missing"), "a", 0)),
            true,
            C::TopicNotFound,
        ),
        same(
            "ReceiveMessage illegal filter",
            receive(|r| {
                r.filter_expression = Some(FilterExpression {
                    r#type: FilterType::Sql as i32,
                    expression: " ".into(),
                })
            }),
            true,
            C::IllegalFilterExpression,
        ),
        same(
            "ReceiveMessage invisible time too small",
            receive(|r| r.invisible_duration = Some(secs(0))),
            true,
            C::IllegalInvisibleTime,
        ),
        same(
            "ReceiveMessage negative polling time",
            receive(|r| r.long_polling_timeout = Some(secs(-1))),
            true,
            C::IllegalPollingTime,
        ),
        // AckMessage
        same(
            "AckMessage without client id",
            ack("a~1", "g1", "normal"),
            false,
            C::ClientIdRequired,
        ),
        same(
            "AckMessage unknown receipt handle",
            ack("a~1", "g1", "normal"),
            true,
            C::InvalidReceiptHandle,
        ),
        same(
            "AckMessage malformed receipt handle",
            ack("nope", "g1", "normal"),
            true,
            C::InvalidReceiptHandle,
        ),
        same(
            "AckMessage illegal topic",
            ack("a~1", "g1", "bad topic"),
            true,
            C::IllegalTopic,
        ),
        same(
            "AckMessage illegal group",
            ack("a~1", "", "normal"),
            true,
            C::IllegalConsumerGroup,
        ),
        // ForwardMessageToDeadLetterQueue
        same(
            "ForwardToDLQ malformed receipt handle",
            Call::Dlq(ForwardMessageToDeadLetterQueueRequest {
                group: res("g1"),
                topic: res("normal"),
                receipt_handle: "nope".into(),
                message_id: "id".into(),
                delivery_attempt: 1,
                max_delivery_attempts: 1,
                lite_topic: None,
            }),
            true,
            C::InvalidReceiptHandle,
        ),
        same(
            "ForwardToDLQ illegal group",
            Call::Dlq(ForwardMessageToDeadLetterQueueRequest {
                group: res(""),
                topic: res("normal"),
                receipt_handle: "a~1".into(),
                message_id: "id".into(),
                delivery_attempt: 1,
                max_delivery_attempts: 1,
                lite_topic: None,
            }),
            true,
            C::IllegalConsumerGroup,
        ),
        // EndTransaction
        same(
            "EndTransaction without client id",
            end("mixed", "a~x"),
            false,
            C::ClientIdRequired,
        ),
        same(
            "EndTransaction blank transaction id",
            end("mixed", " "),
            true,
            C::InvalidTransactionId,
        ),
        same(
            "EndTransaction illegal topic",
            end("bad topic", "a~x"),
            true,
            C::IllegalTopic,
        ),
        // NotifyClientTermination
        same(
            "NotifyClientTermination without client id",
            Call::Terminate(NotifyClientTerminationRequest { group: None }),
            false,
            C::ClientIdRequired,
        ),
        // ChangeInvisibleDuration
        same(
            "ChangeInvisibleDuration negative duration",
            change("a~1", -1, "g1"),
            true,
            C::IllegalInvisibleTime,
        ),
        same(
            "ChangeInvisibleDuration above the maximum",
            change("a~1", 43_201, "g1"),
            true,
            C::IllegalInvisibleTime,
        ),
        same(
            "ChangeInvisibleDuration unknown receipt handle",
            change("a~1", 5, "g1"),
            true,
            C::InvalidReceiptHandle,
        ),
        same(
            "ChangeInvisibleDuration illegal group",
            change("a~1", 5, ""),
            true,
            C::IllegalConsumerGroup,
        ),
        same(
            "ChangeInvisibleDuration without client id",
            change("a~1", 5, "g1"),
            false,
            C::ClientIdRequired,
        ),
        // PullMessage and offsets
        same(
            "PullMessage without client id",
            pull("normal", 0),
            false,
            C::ClientIdRequired,
        ),
        same(
            "PullMessage unknown topic",
            pull("missing", 0),
            true,
            C::TopicNotFound,
        ),
        (
            "PullMessage illegal offset",
            pull("normal", 9),
            true,
            C::IllegalOffset,
            C::BadRequest,
        ),
        (
            "GetOffset no committed offset",
            Call::GetOffset(GetOffsetRequest {
                group: res("g1"),
                message_queue: queue(res("normal"), "a", 0),
            }),
            true,
            C::OffsetNotFound,
            C::NotFound,
        ),
    ]
}

#[tokio::test]
async fn given_each_row_of_the_status_table_when_called_should_answer_its_code_per_language() {
    let h = Harness::start().await;
    for (language, rust) in [("PYTHON", false), ("HTTP", false), ("RUST", true)] {
        for (name, call, client_id, code, rust_code) in table() {
            let want = if rust { rust_code } else { code };
            let got = run(&h, call, client_id, language).await;
            assert_eq!(
                got.code, want as i32,
                "{name} ({language}): {}",
                got.message
            );
            if rust && rust_code != code {
                assert!(
                    got.message.contains(&(code as i32).to_string()),
                    "{name}: the Rust message names upstream's code: {}",
                    got.message
                );
            }
        }
    }
}

#[tokio::test]
async fn given_failing_brokers_when_called_should_answer_the_broker_failure_codes() {
    let h = Harness::start().await;
    let rows = [
        (tonic::Code::Unavailable, Code::HaNotAvailable),
        (tonic::Code::DeadlineExceeded, Code::ProxyTimeout),
        (tonic::Code::ResourceExhausted, Code::TooManyRequests),
        (tonic::Code::Internal, Code::InternalServerError),
    ];
    for (injected, want) in rows {
        *h.broker("a").fail_with.lock() = Some(injected);
        for language in ["PYTHON", "RUST"] {
            let got = run(&h, send_one(|_| {}), true, language).await;
            assert_eq!(got.code, want as i32, "send, {injected:?}: {}", got.message);
            let got = run(
                &h,
                Call::Receive(receive_request(res("normal"), "g1", 100)),
                true,
                language,
            )
            .await;
            assert_eq!(
                got.code, want as i32,
                "receive, {injected:?}: {}",
                got.message
            );
        }
    }
}
