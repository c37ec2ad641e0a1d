//! Send, receive, ack, change invisible duration, DLQ, namespaces, deadlines, shutdown.

use std::time::{Duration, Instant};

use comet_proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use comet_proto::apache::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, Broker, ChangeInvisibleDurationRequest, Code, DigestType,
    Encoding, FilterExpression, FilterType, ForwardMessageToDeadLetterQueueRequest, Message,
    MessageQueue, ReceiveMessageRequest, ReceiveMessageResponse, Resource, SendMessageRequest,
    SendMessageResponse, Status, receive_message_response::Content,
};
use comet_proxy::link::{CombineLimits, LinkOptions};
use tonic::transport::Channel;

use super::harness::{Harness, req, res, res_ns};
use super::{message, wait_until};

fn ms(n: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (n / 1000) as i64,
        nanos: ((n % 1000) * 1_000_000) as i32,
    }
}

pub fn queue(topic: Option<Resource>, set: &str, id: i32) -> Option<MessageQueue> {
    Some(MessageQueue {
        topic,
        id,
        permission: 0,
        broker: Some(Broker {
            name: set.into(),
            id: 0,
            endpoints: None,
        }),
        accept_message_types: vec![],
    })
}

pub fn receive_request(topic: Option<Resource>, group: &str, lp_ms: u64) -> ReceiveMessageRequest {
    ReceiveMessageRequest {
        group: res(group),
        message_queue: queue(topic, "a", 0),
        filter_expression: Some(FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: 32,
        invisible_duration: Some(ms(15_000)),
        auto_renew: false,
        long_polling_timeout: Some(ms(lp_ms)),
        attempt_id: None,
    }
}

pub async fn send(
    c: &mut MessagingServiceClient<Channel>,
    messages: Vec<Message>,
) -> SendMessageResponse {
    c.send_message(req(SendMessageRequest { messages }))
        .await
        .unwrap()
        .into_inner()
}

/// The frames of one ReceiveMessage answer without its closing `delivery_timestamp` frame,
/// after checking the upstream shape every answer has: a status frame first, messages only
/// after an OK status, and the timestamp last (the proxy's time when the answer completed).
pub async fn receive(
    c: &mut MessagingServiceClient<Channel>,
    request: tonic::Request<ReceiveMessageRequest>,
) -> Vec<ReceiveMessageResponse> {
    let started = std::time::SystemTime::now();
    let mut stream = c.receive_message(request).await.unwrap().into_inner();
    let mut frames = vec![];
    while let Some(f) = stream.message().await.unwrap() {
        frames.push(f);
    }
    let ended = std::time::SystemTime::now();
    let Some(ReceiveMessageResponse {
        content: Some(Content::DeliveryTimestamp(ts)),
    }) = frames.pop()
    else {
        panic!("the answer must end with a delivery_timestamp frame: {frames:?}");
    };
    let at = std::time::UNIX_EPOCH + std::time::Duration::new(ts.seconds as u64, ts.nanos as u32);
    let millis = std::time::Duration::from_millis(1);
    assert!(
        at + millis >= started && at <= ended,
        "timestamp {at:?} outside the call [{started:?}, {ended:?}]"
    );
    assert_eq!(ts.nanos % 1_000_000, 0, "millisecond precision");
    let status = frame_status(frames.first().expect("a status frame first"));
    for f in &frames[1..] {
        frame_message(f);
    }
    assert!(
        frames.len() == 1 || status.code == Code::Ok as i32,
        "messages only after OK: {frames:?}"
    );
    frames
}

fn frame_status(f: &ReceiveMessageResponse) -> Status {
    match &f.content {
        Some(Content::Status(s)) => s.clone(),
        other => panic!("expected a status frame, got {other:?}"),
    }
}

fn frame_message(f: &ReceiveMessageResponse) -> Message {
    match &f.content {
        Some(Content::Message(m)) => m.clone(),
        other => panic!("expected a message frame, got {other:?}"),
    }
}

#[tokio::test]
async fn given_a_sent_message_when_received_and_acked_should_complete_the_round_trip() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let mut m = message(res("normal"), b"hello");
    m.user_properties.insert("k".into(), "v".into());
    let sys = m.system_properties.as_mut().unwrap();
    sys.tag = Some("TagA".into());
    sys.keys = vec!["key-1".into()];
    let id = sys.message_id.clone();
    let r = send(&mut c, vec![m]).await;
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.entries[0].message_id, id);
    assert_eq!(r.entries[0].status.as_ref().unwrap().code, Code::Ok as i32);

    let forwarded = &h.broker("a").sends()[0].messages[0];
    assert_eq!(forwarded.topic.as_ref().unwrap().name, "normal");
    let fsys = forwarded.system_properties.as_ref().unwrap();
    assert_eq!(fsys.queue_id, 0);
    assert_eq!(fsys.message_id, id);
    assert_eq!(fsys.born_host, "test-host");
    assert_eq!(fsys.born_timestamp.unwrap().seconds, 1_700_000_000);

    let frames = receive(&mut c, req(receive_request(res("normal"), "g1", 1000))).await;
    assert_eq!(frames.len(), 2, "status then one message");
    assert_eq!(frame_status(&frames[0]).code, Code::Ok as i32);
    let got = frame_message(&frames[1]);
    assert_eq!(got.body.as_ref(), b"hello");
    assert_eq!(got.topic, res("normal"));
    assert_eq!(got.user_properties.get("k").map(String::as_str), Some("v"));
    let gsys = got.system_properties.unwrap();
    assert_eq!(gsys.message_id, id);
    assert_eq!(gsys.tag.as_deref(), Some("TagA"));
    assert_eq!(gsys.delivery_attempt, Some(1));
    assert_eq!(gsys.body_encoding, Encoding::Identity as i32);
    assert_eq!(gsys.body_digest.unwrap().r#type, DigestType::Md5 as i32);
    let handle = gsys.receipt_handle.unwrap();
    assert!(handle.starts_with("a~"));

    // The pop carried the clamped values and the qualified names.
    let pop = &h.broker("a").pops()[0];
    assert_eq!(pop.message_queue.as_ref().unwrap().id, -1);
    assert_eq!(pop.invisible_duration.unwrap().seconds, 15);
    assert_eq!(pop.long_polling_timeout.unwrap().seconds, 1);

    let ack = c
        .ack_message(req(AckMessageRequest {
            group: res("g1"),
            topic: res("normal"),
            entries: vec![AckMessageEntry {
                message_id: id.clone(),
                receipt_handle: handle.clone(),
                lite_topic: None,
            }],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.status.unwrap().code, Code::Ok as i32);
    assert_eq!(ack.entries.len(), 1);
    assert_eq!(ack.entries[0].message_id, id);
    let forwarded = &h.broker("a").acks()[0];
    assert_eq!(forwarded.group.as_ref().unwrap().name, "g1");
    assert_eq!(forwarded.entries.len(), 1);

    // Acking twice: the entry reports the broker's INVALID_RECEIPT_HANDLE.
    let ack = c
        .ack_message(req(AckMessageRequest {
            group: res("g1"),
            topic: res("normal"),
            entries: vec![AckMessageEntry {
                message_id: id,
                receipt_handle: handle,
                lite_topic: None,
            }],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.status.unwrap().code, Code::InvalidReceiptHandle as i32);
    assert_eq!(
        ack.entries[0].status.as_ref().unwrap().code,
        Code::InvalidReceiptHandle as i32
    );
}

#[tokio::test]
async fn given_nothing_to_receive_when_polling_should_answer_message_not_found_after_the_poll() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let started = Instant::now();
    let frames = receive(&mut c, req(receive_request(res("normal"), "g1", 400))).await;
    let elapsed = started.elapsed();
    assert_eq!(frames.len(), 1);
    let s = frame_status(&frames[0]);
    assert_eq!(s.code, Code::MessageNotFound as i32);
    assert!(
        elapsed >= Duration::from_millis(380),
        "returned after {elapsed:?}"
    );
}

#[tokio::test]
async fn given_a_short_client_deadline_when_polling_long_should_answer_before_the_deadline() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let mut request = req(receive_request(res("normal"), "g1", 30_000));
    request.set_timeout(Duration::from_millis(1500));
    let started = Instant::now();
    let frames = receive(&mut c, request).await;
    let elapsed = started.elapsed();
    assert_eq!(frame_status(&frames[0]).code, Code::MessageNotFound as i32);
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    let lp = h.broker("a").pops()[0].long_polling_timeout.unwrap();
    assert_eq!(
        lp,
        ms(1125),
        "1.5 s deadline minus a quarter of it (below the 0.5 s margin)"
    );
}

#[tokio::test]
async fn given_a_long_request_poll_when_polling_should_clamp_to_the_maximum() {
    let h = Harness::builder()
        .config(|c| c.long_polling_max = std::time::Duration::from_millis(300))
        .start()
        .await;
    let mut c = h.client().await;
    let frames = receive(&mut c, req(receive_request(res("normal"), "g1", 60_000))).await;
    assert_eq!(frame_status(&frames[0]).code, Code::MessageNotFound as i32);
    assert_eq!(
        h.broker("a").pops()[0].long_polling_timeout.unwrap(),
        ms(300)
    );
}

#[tokio::test]
async fn given_a_namespace_when_sending_and_receiving_should_qualify_for_brokers_and_split_for_clients()
 {
    let h = Harness::start().await;
    let mut c = h.client().await;
    // Send with the namespace in the Resource.
    let r = send(&mut c, vec![message(res_ns("ns1", "scoped"), b"x")]).await;
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    assert_eq!(
        h.broker("a").sends()[0].messages[0]
            .topic
            .as_ref()
            .unwrap()
            .name,
        "ns1%scoped"
    );
    // Receive with the namespace only in the header (Node).
    let mut request = req(receive_request(res("scoped"), "g", 1000));
    request
        .metadata_mut()
        .insert("x-mq-namespace", "ns1".parse().unwrap());
    let frames = receive(&mut c, request).await;
    assert_eq!(frame_status(&frames[0]).code, Code::Ok as i32);
    assert_eq!(frame_message(&frames[1]).topic, res_ns("ns1", "scoped"));
    let pop = &h.broker("a").pops()[0];
    assert_eq!(pop.group.as_ref().unwrap().name, "ns1%g");
    assert_eq!(pop.group.as_ref().unwrap().resource_namespace, "");
    assert_eq!(
        pop.message_queue
            .as_ref()
            .unwrap()
            .topic
            .as_ref()
            .unwrap()
            .name,
        "ns1%scoped"
    );
}

#[tokio::test]
async fn given_a_batch_on_a_spread_topic_when_sent_should_reach_both_broker_sets_with_one_entry_each()
 {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let messages: Vec<Message> = (0..8).map(|i| message(res("mixed"), &[i])).collect();
    let ids: Vec<String> = messages
        .iter()
        .map(|m| m.system_properties.as_ref().unwrap().message_id.clone())
        .collect();
    let r = send(&mut c, messages).await;
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    let got: Vec<String> = r.entries.iter().map(|e| e.message_id.clone()).collect();
    assert_eq!(got, ids, "entries in request order");
    let a = h.broker("a").stored("mixed");
    let b = h.broker("b").stored("mixed");
    assert_eq!(a + b, 8);
    assert!(
        a > 0 && b > 0,
        "round-robin spreads over both sets: a={a} b={b}"
    );
    for s in h
        .broker("a")
        .sends()
        .iter()
        .chain(h.broker("b").sends().iter())
    {
        for m in &s.messages {
            let q = m.system_properties.as_ref().unwrap().queue_id;
            assert!((0..2).contains(&q));
        }
    }
}

#[tokio::test]
async fn given_fifo_messages_of_one_group_when_sent_should_land_on_one_queue() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let mut queues = std::collections::HashSet::new();
    for i in 0..5u8 {
        let mut m = message(res("fifo"), &[i]);
        m.system_properties.as_mut().unwrap().message_group = Some("order-42".into());
        let r = send(&mut c, vec![m]).await;
        assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    }
    for s in h.broker("a").sends() {
        let sys = s.messages[0].system_properties.clone().unwrap();
        assert_eq!(
            sys.message_type,
            comet_proto::apache::rocketmq::v2::MessageType::Fifo as i32
        );
        queues.insert(sys.queue_id);
    }
    assert_eq!(queues.len(), 1);
}

#[tokio::test]
async fn given_a_received_message_when_changing_invisible_time_below_the_minimum_should_clamp_and_return_a_handle()
 {
    let h = Harness::start().await;
    let mut c = h.client().await;
    send(&mut c, vec![message(res("normal"), b"x")]).await;
    let frames = receive(&mut c, req(receive_request(res("normal"), "g1", 1000))).await;
    let m = frame_message(&frames[1]);
    let sys = m.system_properties.unwrap();
    let handle = sys.receipt_handle.unwrap();
    let r = c
        .change_invisible_duration(req(ChangeInvisibleDurationRequest {
            group: res("g1"),
            topic: res("normal"),
            receipt_handle: handle.clone(),
            invisible_duration: Some(ms(1)),
            message_id: sys.message_id.clone(),
            lite_topic: None,
            suspend: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    assert!(!r.receipt_handle.is_empty());
    assert_ne!(
        r.receipt_handle, handle,
        "the broker's new handle is returned"
    );
    assert_eq!(
        h.broker("a").changes()[0].invisible_duration.unwrap(),
        ms(500),
        "1 ms clamped up to invisible_min"
    );

    // A handle naming no broker set: the old handle is still returned.
    let r = c
        .change_invisible_duration(req(ChangeInvisibleDurationRequest {
            group: res("g1"),
            topic: res("normal"),
            receipt_handle: "garbage".into(),
            invisible_duration: Some(ms(1000)),
            message_id: sys.message_id,
            lite_topic: None,
            suspend: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let s = r.status.unwrap();
    assert_eq!(s.code, Code::InvalidReceiptHandle as i32);
    assert_eq!(
        s.message,
        "receipt handle is malformed: it does not name a broker set"
    );
    assert_eq!(r.receipt_handle, "garbage");
}

#[tokio::test]
async fn given_a_received_message_when_its_invisible_time_lapses_should_be_redelivered() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    send(&mut c, vec![message(res("normal"), b"x")]).await;
    let mut r = receive_request(res("normal"), "g1", 1000);
    r.invisible_duration = Some(ms(500));
    let frames = receive(&mut c, req(r.clone())).await;
    assert_eq!(frames.len(), 2);
    r.long_polling_timeout = Some(ms(3000));
    let frames = receive(&mut c, req(r)).await;
    assert_eq!(frames.len(), 2, "redelivered after 500 ms");
    let sys = frame_message(&frames[1]).system_properties.unwrap();
    assert_eq!(sys.delivery_attempt, Some(2));
}

#[tokio::test]
async fn given_mixed_ack_entries_when_acking_should_answer_per_entry_and_multiple_results() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    send(&mut c, vec![message(res("normal"), b"x")]).await;
    let frames = receive(&mut c, req(receive_request(res("normal"), "g1", 1000))).await;
    let sys = frame_message(&frames[1]).system_properties.unwrap();
    let entries = vec![
        AckMessageEntry {
            message_id: sys.message_id.clone(),
            receipt_handle: sys.receipt_handle.clone().unwrap(),
            lite_topic: None,
        },
        AckMessageEntry {
            message_id: "m2".into(),
            receipt_handle: "zz~1".into(),
            lite_topic: None,
        },
        AckMessageEntry {
            message_id: "m3".into(),
            receipt_handle: String::new(),
            lite_topic: None,
        },
    ];
    let r = c
        .ack_message(req(AckMessageRequest {
            group: res("g1"),
            topic: res("normal"),
            entries,
        }))
        .await
        .unwrap()
        .into_inner();
    let s = r.status.unwrap();
    assert_eq!(s.code, Code::MultipleResults as i32);
    assert_eq!(s.message, "2 of 3 entries failed; see each entry's status");
    let codes: Vec<i32> = r
        .entries
        .iter()
        .map(|e| e.status.as_ref().unwrap().code)
        .collect();
    assert_eq!(
        codes,
        vec![
            Code::Ok as i32,
            Code::InvalidReceiptHandle as i32,
            Code::InvalidReceiptHandle as i32
        ]
    );
    assert_eq!(
        r.entries[1].status.as_ref().unwrap().message,
        "receipt handle names broker set zz, which is not in the cluster"
    );
    assert_eq!(
        r.entries[2].status.as_ref().unwrap().message,
        "receipt handle is empty"
    );
    assert_eq!(r.entries[1].message_id, "m2");
}

#[tokio::test]
async fn given_a_received_message_when_forwarded_to_dlq_should_reach_the_broker_with_qualified_names()
 {
    let h = Harness::start().await;
    let mut c = h.client().await;
    send(&mut c, vec![message(res_ns("ns1", "scoped"), b"x")]).await;
    let mut r = receive_request(res_ns("ns1", "scoped"), "g", 1000);
    r.group = res_ns("ns1", "g");
    let frames = receive(&mut c, req(r)).await;
    let sys = frame_message(&frames[1]).system_properties.unwrap();
    let resp = c
        .forward_message_to_dead_letter_queue(req(ForwardMessageToDeadLetterQueueRequest {
            group: res_ns("ns1", "g"),
            topic: res_ns("ns1", "scoped"),
            receipt_handle: sys.receipt_handle.unwrap(),
            message_id: sys.message_id,
            delivery_attempt: 3,
            max_delivery_attempts: 3,
            lite_topic: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status.unwrap().code, Code::Ok as i32);
    let fwd = &h.broker("a").dlq()[0];
    assert_eq!(fwd.group.as_ref().unwrap().name, "ns1%g");
    assert_eq!(fwd.topic.as_ref().unwrap().name, "ns1%scoped");
    assert_eq!(fwd.max_delivery_attempts, 3);
}

#[tokio::test]
async fn given_a_maximum_size_message_when_received_should_fit_one_4_mib_frame() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let cfg = h.proxy.config().clone();
    let mut m = message(res("normal"), &vec![7u8; cfg.max_body_size]);
    // Fill user properties up to their limit too.
    let value = "v".repeat(1000);
    let mut used = 0;
    let mut i = 0;
    while used + 1010 <= cfg.max_user_property_bytes {
        let k = format!("key{i:06}");
        used += k.len() + value.len();
        m.user_properties.insert(k, value.clone());
        i += 1;
    }
    let sys = m.system_properties.as_mut().unwrap();
    sys.tag = Some("t".repeat(cfg.max_tag_bytes));
    sys.keys = vec!["k".repeat(cfg.max_keys_bytes)];
    let r = send(&mut c, vec![m]).await;
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    // The default tonic client rejects inbound messages over 4 MiB, like Rust/Node clients.
    let frames = receive(&mut c, req(receive_request(res("normal"), "g1", 1000))).await;
    assert_eq!(frames.len(), 2);
    assert_eq!(frame_message(&frames[1]).body.len(), cfg.max_body_size);
}

#[tokio::test]
async fn given_a_failing_broker_when_sending_should_answer_internal_server_error_in_body() {
    let h = Harness::start().await;
    *h.broker("a").fail_with.lock() = Some(tonic::Code::Internal);
    let mut c = h.client().await;
    let r = send(&mut c, vec![message(res("normal"), b"x")]).await;
    let s = r.status.unwrap();
    assert_eq!(s.code, Code::InternalServerError as i32);
    assert!(
        s.message
            .starts_with("broker set a call failed: injected failure"),
        "{}",
        s.message
    );
    assert_eq!(r.entries.len(), 1);
    let frames = receive(&mut c, req(receive_request(res("normal"), "g1", 200))).await;
    assert_eq!(frames.len(), 1);
    assert_eq!(
        frame_status(&frames[0]).code,
        Code::InternalServerError as i32
    );
}

#[tokio::test]
async fn given_an_unreachable_broker_when_sending_should_answer_ha_not_available_in_body() {
    let h = Harness::start().await;
    *h.broker("a").fail_with.lock() = Some(tonic::Code::Unavailable);
    let mut c = h.client().await;
    let r = send(&mut c, vec![message(res("normal"), b"x")]).await;
    let s = r.status.unwrap();
    assert_eq!(s.code, Code::HaNotAvailable as i32, "{}", s.message);
    assert!(
        s.message.starts_with("broker set a call failed"),
        "{}",
        s.message
    );
    assert_eq!(r.entries.len(), 1);
    assert_eq!(
        r.entries[0].status.as_ref().unwrap().code,
        Code::HaNotAvailable as i32
    );
}

#[tokio::test]
async fn given_a_pending_long_poll_when_the_proxy_shuts_down_should_end_it_early_with_not_found() {
    let mut h = Harness::builder()
        .config(|c| c.long_polling_max = Duration::from_secs(20))
        .start()
        .await;
    let mut c = h.client().await;
    let broker = h.broker("a").clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let frames = receive(&mut c, req(receive_request(res("normal"), "g1", 20_000))).await;
        (frames, started.elapsed())
    });
    assert!(wait_until(Duration::from_secs(5), || !broker.pops().is_empty()).await);
    h.stop().await.unwrap();
    let (frames, elapsed) = poll.await.unwrap();
    assert!(elapsed < Duration::from_secs(10), "poll lasted {elapsed:?}");
    let s = frame_status(&frames[0]);
    assert_eq!(s.code, Code::MessageNotFound as i32);
    assert_eq!(s.message, "proxy is shutting down; no message was taken");
}

#[tokio::test]
async fn given_remote_brokers_when_sending_receiving_and_acking_should_work_over_grpc() {
    let h = Harness::builder().remote().start().await;
    let mut c = h.client().await;
    // A large body crosses the internal gRPC hop too (above tonic's 4 MiB default).
    let body = vec![1u8; h.proxy.config().max_body_size];
    let r = send(&mut c, vec![message(res("normal"), &body)]).await;
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    let frames = receive(&mut c, req(receive_request(res("normal"), "g1", 1000))).await;
    assert_eq!(frame_status(&frames[0]).code, Code::Ok as i32);
    let m = frame_message(&frames[1]);
    assert_eq!(m.body.len(), body.len());
    let sys = m.system_properties.unwrap();
    let ack = c
        .ack_message(req(AckMessageRequest {
            group: res("g1"),
            topic: res("normal"),
            entries: vec![AckMessageEntry {
                message_id: sys.message_id,
                receipt_handle: sys.receipt_handle.unwrap(),
                lite_topic: None,
            }],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.status.unwrap().code, Code::Ok as i32);
    // The pop carried the deadline to the broker as grpc-timeout: nothing left, NOT_FOUND.
    let frames = receive(&mut c, req(receive_request(res("normal"), "g1", 200))).await;
    assert_eq!(frame_status(&frames[0]).code, Code::MessageNotFound as i32);
}

#[tokio::test]
async fn given_a_client_that_cancels_mid_answer_when_messages_were_not_written_should_give_them_back()
 {
    let h = Harness::start().await;
    // A 64 KiB stream window: the answer's later 512 KiB messages cannot be written until
    // the client reads, and it never does.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", h.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut c = MessagingServiceClient::new(channel);
    for _ in 0..4 {
        let r = send(&mut c, vec![message(res("normal"), &[7u8; 512 * 1024])]).await;
        assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    }
    let mut stream = c
        .receive_message(req(receive_request(res("normal"), "g1", 1000)))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(frame_status(&first).code, Code::Ok as i32);
    drop(stream);

    assert!(
        wait_until(Duration::from_secs(5), || !h
            .broker("a")
            .changes()
            .is_empty())
        .await,
        "unsent messages were given back"
    );
    let popped: Vec<String> = (1..=4)
        .map(|n| comet_vocab::handle::join("a", &n.to_string()))
        .collect();
    let changes = h.broker("a").changes();
    assert!(
        changes.len() <= 3,
        "the first message was written: {changes:?}"
    );
    for change in &changes {
        assert_eq!(
            change.invisible_duration,
            Some(ms(1000)),
            "upstream's 1 s nack"
        );
        assert_eq!(change.group, res("g1"));
        assert_eq!(change.topic, res("normal"));
        assert!(popped.contains(&change.receipt_handle), "{change:?}");
        assert!(!change.message_id.is_empty());
    }
    assert!(
        changes.iter().any(|c| c.receipt_handle == "a~4"),
        "the last message never fit the window: {changes:?}"
    );
}

#[tokio::test]
async fn given_a_busy_link_when_acks_and_changes_arrive_together_should_settle_them_in_one_broker_call()
 {
    let options = LinkOptions {
        combine: CombineLimits {
            calls_in_flight: 1,
            ..CombineLimits::default()
        },
        ..LinkOptions::default()
    };
    let h = Harness::builder().remote_with(options).start().await;
    let mut c = h.client().await;
    for _ in 0..5 {
        let r = send(&mut c, vec![message(res("normal"), b"settle me")]).await;
        assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    }
    let frames = receive(&mut c, req(receive_request(res("normal"), "g1", 1000))).await;
    let handles: Vec<(String, String)> = frames[1..]
        .iter()
        .map(|f| {
            let sys = frame_message(f).system_properties.unwrap();
            (sys.message_id, sys.receipt_handle.unwrap())
        })
        .collect();
    assert_eq!(handles.len(), 5);

    let broker = h.broker("a").clone();
    broker.hold_acks();
    let ack = |(message_id, receipt_handle): (String, String)| {
        let mut c = c.clone();
        tokio::spawn(async move {
            c.ack_message(req(AckMessageRequest {
                group: res("g1"),
                topic: res("normal"),
                entries: vec![AckMessageEntry {
                    message_id,
                    receipt_handle,
                    lite_topic: None,
                }],
            }))
            .await
            .unwrap()
            .into_inner()
        })
    };
    // The first ack takes the only call slot and is held at the broker.
    let first = ack(handles[0].clone());
    assert!(wait_until(Duration::from_secs(5), || broker.held_acks() == 1).await);
    let mut acks: Vec<_> = handles[1..4].iter().cloned().map(ack).collect();
    let (change_id, change_handle) = handles[4].clone();
    let mut changer = c.clone();
    let change = tokio::spawn(async move {
        changer
            .change_invisible_duration(req(ChangeInvisibleDurationRequest {
                group: res("g1"),
                topic: res("normal"),
                receipt_handle: change_handle,
                invisible_duration: Some(ms(30_000)),
                message_id: change_id,
                ..ChangeInvisibleDurationRequest::default()
            }))
            .await
            .unwrap()
            .into_inner()
    });
    assert!(
        wait_until(Duration::from_secs(5), || h
            .link_stats("a")
            .is_some_and(|s| s.settles.queued == 4))
        .await,
        "three acks and a change wait for the slot: {:?}",
        h.link_stats("a")
    );
    broker.release_acks();
    acks.insert(0, first);
    for a in acks {
        let answer = a.await.unwrap();
        assert_eq!(answer.status.unwrap().code, Code::Ok as i32);
        assert_eq!(answer.entries.len(), 1);
    }
    let changed = change.await.unwrap();
    assert_eq!(changed.status.unwrap().code, Code::Ok as i32);
    assert!(!changed.receipt_handle.is_empty());

    let settles = broker.settles();
    assert_eq!(
        settles.len(),
        1,
        "what waited left in one call: {settles:?}"
    );
    assert_eq!(settles[0].settlements.len(), 4);
    assert!(
        settles[0]
            .settlements
            .iter()
            .all(|s| s.client_id == super::harness::CLIENT_ID),
        "each settlement names its consumer"
    );
    let stats = h.link_stats("a").unwrap().settles;
    assert_eq!((stats.calls, stats.requests, stats.queued), (2, 5, 0));
    let acked: usize = broker.acks().iter().map(|a| a.entries.len()).sum();
    assert_eq!(acked, 4);
    assert_eq!(broker.changes().len(), 1);
}
