//! Raw `apache.rocketmq.v2` calls against a whole node (standalone and cluster mode): what a
//! grpcurl user or the Python/Node clients send, and the codes and messages of bad requests.
//! (Every validation rule is also tested against a fake broker in `crates/proxy/tests`.)

use comet::admin::TopicType;
use comet_proto::apache::rocketmq::v2 as pb;
use std::time::Duration;

use comet_tests::raw::{self, resource as res};
use comet_tests::{Mode, TestCluster, uuid_like};
use pb::receive_message_response::Content;

fn with_client<T>(msg: T) -> tonic::Request<T> {
    raw::request("api-test@1#1", msg)
}

fn message(topic: &str, id: &str, body: Vec<u8>) -> pb::Message {
    pb::Message {
        topic: res(topic),
        user_properties: [("k".to_owned(), "v".to_owned())].into(),
        system_properties: Some(pb::SystemProperties {
            tag: Some("grpcurl".to_owned()),
            keys: vec!["key-1".to_owned()],
            message_id: id.to_owned(),
            message_type: pb::MessageType::Normal as i32,
            body_encoding: pb::Encoding::Identity as i32,
            born_host: "tester".to_owned(),
            born_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }),
        body: body.into(),
    }
}

async fn send(cluster: &TestCluster, msg: pb::Message) -> pb::SendMessageResponse {
    cluster
        .v2()
        .await
        .send_message(with_client(pb::SendMessageRequest {
            messages: vec![msg],
        }))
        .await
        .expect("gRPC OK")
        .into_inner()
}

fn code(s: &Option<pb::Status>) -> (i32, String) {
    let s = s.as_ref().expect("status present");
    (s.code, s.message.clone())
}

async fn adhoc_send_and_receive(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("adhoc-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    let reply = send(
        &cluster,
        message(&topic, "ID-0001", b"hello comet".to_vec()),
    )
    .await;
    assert_eq!(code(&reply.status).0, pb::Code::Ok as i32);
    assert_eq!(reply.entries.len(), 1);
    assert_eq!(reply.entries[0].message_id, "ID-0001");
    assert_eq!(reply.entries[0].offset, 0);

    let frames = raw::receive_frames(
        &mut cluster.v2().await,
        with_client(raw::receive_request(
            "adhoc-group",
            raw::queue(&topic, 0, None),
            16,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )),
    )
    .await;
    // Status first, then the message.
    let Some(Content::Status(st)) = frames.first() else {
        panic!("first frame is not a status: {frames:?}")
    };
    assert_eq!(st.code, pb::Code::Ok as i32);
    let msg = raw::messages(&frames).next().expect("a message frame");
    let sp = msg.system_properties.as_ref().expect("system properties");
    assert_eq!(msg.body.as_ref(), b"hello comet");
    assert_eq!(
        msg.topic.as_ref().map(|t| t.name.as_str()),
        Some(topic.as_str())
    );
    assert_eq!(sp.message_id, "ID-0001");
    assert_eq!(sp.tag.as_deref(), Some("grpcurl"));
    assert_eq!(sp.keys, vec!["key-1".to_owned()]);
    assert_eq!(msg.user_properties.get("k").map(String::as_str), Some("v"));
    assert_eq!(sp.delivery_attempt, Some(1));
    assert_eq!(sp.queue_offset, Some(0));
    assert_eq!(sp.body_encoding, pb::Encoding::Identity as i32);
    let digest = sp.body_digest.as_ref().expect("body digest");
    assert_eq!(digest.r#type, pb::DigestType::Md5 as i32);
    // MD5("hello comet"), uppercase hex.
    assert_eq!(digest.checksum, "30A42E239055A6FCE8EBDDC3F97B0D10");
    assert!(sp.receipt_handle.as_deref().is_some_and(|h| !h.is_empty()));
    assert!(sp.store_timestamp.is_some());
    cluster.stop().await;
}

async fn bad_requests(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("strict-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Normal).await;

    // Unknown topic.
    let r = send(&cluster, message("no-such-topic", "ID-1", b"x".to_vec())).await;
    let (c, m) = code(&r.status);
    assert_eq!(c, pb::Code::TopicNotFound as i32, "{m}");
    assert!(m.contains("no-such-topic"), "{m}");
    assert_eq!(r.entries.len(), 1, "one entry per message, even on failure");

    // A FIFO message (message group) on a NORMAL topic.
    let mut fifo = message(&topic, "ID-2", b"x".to_vec());
    if let Some(sp) = fifo.system_properties.as_mut() {
        sp.message_group = Some("g1".to_owned());
        sp.message_type = pb::MessageType::Fifo as i32;
    }
    let (c, m) = code(&send(&cluster, fifo).await.status);
    assert_eq!(c, pb::Code::MessagePropertyConflictWithType as i32, "{m}");

    // Empty body: upstream's MESSAGE_BODY_EMPTY (this call's language is HTTP; a Rust client
    // gets BAD_REQUEST, a code its 5.0.0 enum knows).
    let (c, m) = code(
        &send(&cluster, message(&topic, "ID-3", Vec::new()))
            .await
            .status,
    );
    assert_eq!(c, pb::Code::MessageBodyEmpty as i32, "{m}");
    assert!(m.contains("empty"), "{m}");

    // Oversized body.
    let (c, m) = code(
        &send(&cluster, message(&topic, "ID-4", vec![b'x'; 4 << 20]))
            .await
            .status,
    );
    assert_eq!(c, pb::Code::MessageBodyTooLarge as i32, "{m}");

    // Illegal tag.
    let mut bad_tag = message(&topic, "ID-5", b"x".to_vec());
    if let Some(sp) = bad_tag.system_properties.as_mut() {
        sp.tag = Some("a||b".to_owned());
    }
    let (c, m) = code(&send(&cluster, bad_tag).await.status);
    assert_eq!(c, pb::Code::IllegalMessageTag as i32, "{m}");

    // A receive with an invisible time below the minimum.
    let frames = raw::receive_frames(
        &mut cluster.v2().await,
        with_client(raw::receive_request(
            "strict-group",
            raw::queue(&topic, 0, None),
            16,
            // Below the 1 s minimum.
            Duration::from_millis(100),
            Duration::from_secs(1),
        )),
    )
    .await;
    let Some(Content::Status(st)) = frames.first() else {
        panic!("{frames:?}")
    };
    assert_eq!(
        st.code,
        pb::Code::IllegalInvisibleTime as i32,
        "{}",
        st.message
    );
    cluster.stop().await;
}

comet_tests::both_modes!(adhoc_send_and_receive, bad_requests);
