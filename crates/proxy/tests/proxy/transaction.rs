//! Transactions: EndTransaction routing by transaction id, and check-back forwarding from
//! brokers to producers' telemetry streams.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{
    ClientType, Code, EndTransactionRequest, Message, Publishing, Resource, Settings,
    SystemProperties, TelemetryCommand, TransactionResolution, TransactionSource, settings,
    telemetry_command,
};
use comet_proto::comet::v1::TransactionCheck;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::harness::{CLIENT_ID, Harness, res};
use super::wait_until;

fn end(
    topic: Option<Resource>,
    id: &str,
    resolution: i32,
) -> tonic::Request<EndTransactionRequest> {
    let mut r = tonic::Request::new(EndTransactionRequest {
        topic,
        message_id: "m-1".into(),
        transaction_id: id.into(),
        resolution,
        source: TransactionSource::SourceClient as i32,
        trace_context: String::new(),
    });
    r.metadata_mut()
        .insert("x-mq-client-id", CLIENT_ID.parse().unwrap());
    r
}

async fn end_code(
    h: &Harness,
    topic: Option<Resource>,
    id: &str,
    resolution: i32,
) -> (Code, String) {
    let r = h
        .client()
        .await
        .end_transaction(end(topic, id, resolution))
        .await
        .unwrap()
        .into_inner();
    let s = r.status.unwrap();
    (Code::try_from(s.code).unwrap(), s.message)
}

#[tokio::test]
async fn given_a_transaction_id_when_ending_should_forward_to_the_broker_set_it_names() {
    let h = Harness::start().await;
    let (code, _) = end_code(
        &h,
        res("mixed"),
        "b~opaque",
        TransactionResolution::Commit as i32,
    )
    .await;
    assert_eq!(code, Code::Ok);
    assert!(h.broker("a").ends().is_empty());
    let ends = h.broker("b").ends();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].topic.as_ref().unwrap().name, "mixed");
    assert_eq!(ends[0].transaction_id, "b~opaque");
    assert_eq!(ends[0].resolution, TransactionResolution::Commit as i32);
    // Namespaced topics reach the broker qualified.
    let (code, _) = end_code(
        &h,
        Some(Resource {
            resource_namespace: "ns1".into(),
            name: "scoped".into(),
        }),
        "a~x",
        TransactionResolution::Rollback as i32,
    )
    .await;
    assert_eq!(code, Code::Ok);
    assert_eq!(
        h.broker("a").ends()[0].topic.as_ref().unwrap().name,
        "ns1%scoped"
    );
}

#[tokio::test]
async fn given_bad_end_transaction_requests_when_sent_should_answer_clear_codes() {
    let h = Harness::start().await;
    let commit = TransactionResolution::Commit as i32;
    let cases = [
        (
            res("mixed"),
            "",
            commit,
            Code::InvalidTransactionId,
            "required",
        ),
        (
            res("mixed"),
            "no-prefix",
            commit,
            Code::InvalidTransactionId,
            "broker set",
        ),
        (
            res("mixed"),
            "zz~x",
            commit,
            Code::InvalidTransactionId,
            "zz",
        ),
        (
            res("mixed"),
            "  ",
            commit,
            Code::InvalidTransactionId,
            "required",
        ),
        (None, "a~x", commit, Code::IllegalTopic, "topic"),
    ];
    for (topic, id, resolution, want, text) in cases {
        let (code, msg) = end_code(&h, topic, id, resolution).await;
        assert_eq!(code, want, "{id:?}: {msg}");
        assert!(msg.contains(text), "{msg:?} should mention {text:?}");
    }
    assert!(h.broker("a").ends().is_empty());

    // As upstream, an unknown resolution means "not decided yet": forwarded as UNSPECIFIED,
    // so the broker keeps the transaction and checks it back.
    let (code, msg) = end_code(&h, res("mixed"), "a~x", 9).await;
    assert_eq!(code, Code::Ok, "{msg}");
    let ends = h.broker("a").ends();
    assert_eq!(ends.len(), 1);
    assert_eq!(
        ends[0].resolution,
        TransactionResolution::Unspecified as i32
    );
}

fn producer_settings(topics: Vec<Resource>) -> TelemetryCommand {
    TelemetryCommand {
        status: None,
        command: Some(telemetry_command::Command::Settings(Settings {
            client_type: Some(ClientType::Producer as i32),
            pub_sub: Some(settings::PubSub::Publishing(Publishing {
                topics,
                max_body_size: 0,
                validate_message_type: true,
            })),
            ..Settings::default()
        })),
    }
}

fn check(topic: &str, id: &str) -> TransactionCheck {
    TransactionCheck {
        topic: topic.into(),
        message: Some(Message {
            topic: Some(Resource {
                resource_namespace: String::new(),
                name: topic.into(),
            }),
            system_properties: Some(SystemProperties {
                message_id: "m-1".into(),
                ..SystemProperties::default()
            }),
            body: bytes::Bytes::from_static(b"half"),
            ..Message::default()
        }),
        transaction_id: id.into(),
    }
}

async fn next(s: &mut tonic::Streaming<TelemetryCommand>) -> TelemetryCommand {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("telemetry command in time")
        .unwrap()
        .unwrap()
}

async fn checks_reach_the_producer(h: Harness) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(producer_settings(vec![Resource {
        resource_namespace: "ns1".into(),
        name: "scoped".into(),
    }]))
    .await
    .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("x-mq-client-id", CLIENT_ID.parse().unwrap());
    let mut stream = h
        .client()
        .await
        .telemetry(request)
        .await
        .unwrap()
        .into_inner();
    let echo = next(&mut stream).await;
    assert!(matches!(
        echo.command,
        Some(telemetry_command::Command::Settings(_))
    ));
    let broker = h.broker("a").clone();
    assert!(
        wait_until(Duration::from_secs(10), || broker.watchers() == 1).await,
        "the proxy watches broker set a"
    );
    // No producer of "normal" is connected: that check is dropped; the next one arrives.
    assert_eq!(broker.push_check(check("normal", "a~first")), 1);
    assert_eq!(broker.push_check(check("ns1%scoped", "a~second")), 1);
    let got = next(&mut stream).await;
    let Some(telemetry_command::Command::RecoverOrphanedTransactionCommand(cmd)) = got.command
    else {
        panic!("expected a recovery command, got {got:?}");
    };
    assert_eq!(cmd.transaction_id, "a~second");
    let topic = cmd.message.unwrap().topic.unwrap();
    assert_eq!(
        (topic.resource_namespace.as_str(), topic.name.as_str()),
        ("ns1", "scoped"),
        "the topic is shown in the producer's namespace"
    );
    drop(tx);
}

#[tokio::test]
async fn given_a_producer_of_the_topic_when_a_broker_sends_a_check_should_forward_it_in_process() {
    checks_reach_the_producer(Harness::start().await).await;
}

#[tokio::test]
async fn given_a_producer_of_the_topic_when_a_broker_sends_a_check_should_forward_it_over_grpc() {
    checks_reach_the_producer(Harness::builder().remote().start().await).await;
}
