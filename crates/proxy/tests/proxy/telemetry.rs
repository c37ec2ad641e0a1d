//! Telemetry: settings echo per client kind, stream lifetime, client id.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{
    ClientType, Code, Language, Publishing, Settings, Subscription, TelemetryCommand, Ua,
    retry_policy, settings, telemetry_command,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::harness::{CLIENT_ID, Harness, bare, res};
use super::wait_until;

fn settings_cmd(s: Settings) -> TelemetryCommand {
    TelemetryCommand {
        status: None,
        command: Some(telemetry_command::Command::Settings(s)),
    }
}

fn producer_settings() -> Settings {
    Settings {
        client_type: Some(ClientType::Producer as i32),
        request_timeout: Some(prost_types::Duration {
            seconds: 3,
            nanos: 0,
        }),
        pub_sub: Some(settings::PubSub::Publishing(Publishing {
            topics: vec![res("normal").unwrap()],
            max_body_size: 0,
            validate_message_type: true,
        })),
        user_agent: Some(Ua {
            language: Language::Rust as i32,
            version: "5.0.0".into(),
            platform: "linux".into(),
            hostname: "h".into(),
        }),
        ..Settings::default()
    }
}

fn consumer_settings(group: &str, language: Language) -> Settings {
    Settings {
        client_type: Some(ClientType::PushConsumer as i32),
        pub_sub: Some(settings::PubSub::Subscription(Subscription {
            group: res(group),
            subscriptions: vec![],
            fifo: Some(false),
            receive_batch_size: None,
            long_polling_timeout: Some(prost_types::Duration {
                seconds: 40,
                nanos: 0,
            }),
            ..Subscription::default()
        })),
        user_agent: Some(Ua {
            language: language as i32,
            ..Ua::default()
        }),
        ..Settings::default()
    }
}

/// Opens a telemetry stream with the client id; returns the command sender and responses.
async fn open(
    h: &Harness,
) -> (
    mpsc::Sender<TelemetryCommand>,
    tonic::Streaming<TelemetryCommand>,
) {
    let (tx, rx) = mpsc::channel(4);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("x-mq-client-id", CLIENT_ID.parse().unwrap());
    let mut c = h.client().await;
    // Response headers arrive before any client message is sent.
    let responses = tokio::time::timeout(Duration::from_secs(5), c.telemetry(request))
        .await
        .expect("telemetry headers arrive at once")
        .unwrap()
        .into_inner();
    (tx, responses)
}

async fn next(stream: &mut tonic::Streaming<TelemetryCommand>) -> Option<TelemetryCommand> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("telemetry answered in time")
        .unwrap()
}

#[tokio::test]
async fn given_producer_settings_when_sent_should_echo_server_values_and_keep_the_stream_open() {
    let h = Harness::start().await;
    let (tx, mut rx) = open(&h).await;
    tx.send(settings_cmd(producer_settings())).await.unwrap();
    let echo = next(&mut rx).await.unwrap();
    assert_eq!(echo.status.unwrap().code, Code::Ok as i32);
    let Some(telemetry_command::Command::Settings(s)) = echo.command else {
        panic!("no settings in the echo")
    };
    let Some(settings::PubSub::Publishing(p)) = &s.pub_sub else {
        panic!("pub_sub case not kept")
    };
    assert_eq!(p.max_body_size as usize, h.proxy.config().max_body_size);
    assert!(p.max_body_size > 0);
    assert!(p.validate_message_type);
    assert_eq!(p.topics, vec![res("normal").unwrap()]);
    let b = s.backoff_policy.unwrap();
    assert_eq!(b.max_attempts, 3);
    let Some(retry_policy::Strategy::ExponentialBackoff(e)) = b.strategy else {
        panic!("producer backoff must be exponential")
    };
    assert_eq!(e.initial.unwrap().nanos, 10_000_000);
    assert_eq!(e.max.unwrap().seconds, 1);
    assert_eq!(e.multiplier, 2.0);
    assert_eq!(s.metric.map(|m| m.on), Some(false));
    assert_eq!(s.request_timeout.unwrap().seconds, 3);
    assert_eq!(s.client_type, Some(ClientType::Producer as i32));

    // Still open: a second settings command (Python re-syncs) gets a second echo.
    tx.send(settings_cmd(producer_settings())).await.unwrap();
    assert!(next(&mut rx).await.is_some());
    assert!(
        wait_until(Duration::from_secs(5), || {
            h.proxy
                .clients()
                .iter()
                .any(|c| c.client_id == CLIENT_ID && c.telemetry_streams == 1 && c.has_settings)
        })
        .await
    );

    // Half-close: the server ends the stream cleanly.
    drop(tx);
    assert!(next(&mut rx).await.is_none());
    assert!(
        wait_until(Duration::from_secs(5), || {
            h.proxy.clients().iter().all(|c| c.telemetry_streams == 0)
        })
        .await
    );
}

#[tokio::test]
async fn given_consumer_settings_when_sent_should_echo_polling_batch_fifo_and_backoff() {
    let h = Harness::start().await;
    let (tx, mut rx) = open(&h).await;
    tx.send(settings_cmd(consumer_settings(
        "fifo-group",
        Language::Python,
    )))
    .await
    .unwrap();
    let echo = next(&mut rx).await.unwrap();
    assert_eq!(echo.status.unwrap().code, Code::Ok as i32);
    let Some(telemetry_command::Command::Settings(s)) = echo.command else {
        panic!("no settings")
    };
    let Some(settings::PubSub::Subscription(sub)) = &s.pub_sub else {
        panic!("pub_sub case not kept")
    };
    assert_eq!(sub.long_polling_timeout.unwrap().seconds, 20);
    assert_eq!(sub.receive_batch_size, Some(32));
    assert_eq!(sub.fifo, Some(true));
    assert_eq!(sub.group, res("fifo-group"));
    let b = s.backoff_policy.unwrap();
    assert_eq!(b.max_attempts, 4, "max_retries 3 + 1");
    let Some(retry_policy::Strategy::CustomizedBackoff(cb)) = b.strategy else {
        panic!("default consumer backoff is customized for non-Node clients")
    };
    assert_eq!(cb.next.len(), 18);
    assert_eq!(cb.next[0].seconds, 1);
    assert_eq!(s.metric.map(|m| m.on), Some(false));

    // Node only understands exponential backoff.
    tx.send(settings_cmd(consumer_settings("other", Language::NodeJs)))
        .await
        .unwrap();
    let echo = next(&mut rx).await.unwrap();
    let Some(telemetry_command::Command::Settings(s)) = echo.command else {
        panic!("no settings")
    };
    let b = s.backoff_policy.unwrap();
    assert_eq!(b.max_attempts, 17);
    assert!(matches!(
        b.strategy,
        Some(retry_policy::Strategy::ExponentialBackoff(_))
    ));
    let Some(settings::PubSub::Subscription(sub)) = &s.pub_sub else {
        panic!()
    };
    assert_eq!(sub.fifo, Some(false));
}

/// Sends `settings` on a fresh stream; returns the gRPC status the proxy ended it with.
async fn refused(h: &Harness, settings: Settings) -> tonic::Status {
    let (tx, mut rx) = open(h).await;
    tx.send(settings_cmd(settings)).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), rx.message())
        .await
        .expect("telemetry answered in time");
    ended.expect_err("upstream ends the stream with an error")
}

#[tokio::test]
async fn given_settings_upstream_refuses_when_sent_should_end_the_stream_with_invalid_argument() {
    let h = Harness::start().await;
    let publishing = |topics: Vec<&str>, client_type: ClientType| {
        let mut s = producer_settings();
        s.client_type = Some(client_type as i32);
        s.pub_sub = Some(settings::PubSub::Publishing(Publishing {
            topics: topics.into_iter().map(|t| res(t).unwrap()).collect(),
            ..Publishing::default()
        }));
        s
    };
    let mut no_group = consumer_settings("g", Language::Python);
    if let Some(settings::PubSub::Subscription(sub)) = no_group.pub_sub.as_mut() {
        sub.group = None;
    }
    let mut from_producer = consumer_settings("g", Language::Python);
    from_producer.client_type = Some(ClientType::Producer as i32);
    let mut lite = producer_settings();
    lite.client_type = Some(ClientType::LitePushConsumer as i32);
    let cases = [
        (
            "neither publishing nor subscription",
            Settings::default(),
            "settings carry neither publishing (producer) nor subscription (consumer)",
        ),
        (
            "illegal topic name",
            publishing(vec!["normal", "bad topic"], ClientType::Producer),
            "contains illegal characters",
        ),
        (
            "system topic",
            publishing(vec!["%DLQ%g"], ClientType::Producer),
            "system topic",
        ),
        (
            "publishing from a simple consumer",
            publishing(vec!["normal"], ClientType::SimpleConsumer),
            "not a producer",
        ),
        (
            "subscription without group",
            no_group,
            "consumer group is required",
        ),
        (
            "subscription from a producer",
            from_producer,
            "not a consumer",
        ),
        ("publishing from a lite consumer", lite, "not a producer"),
    ];
    for (what, settings, text) in cases {
        let status = refused(&h, settings).await;
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
        assert!(
            status
                .message()
                .starts_with("process client telemetryCommand failed. ")
                && status.message().contains(text),
            "{what}: {}",
            status.message()
        );
    }
    // Nothing refused was remembered: the client has no settings.
    assert!(h.proxy.clients().iter().all(|c| !c.has_settings));
}

#[tokio::test]
async fn given_no_client_id_when_opening_telemetry_should_answer_client_id_required() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let (tx, rx) = mpsc::channel::<TelemetryCommand>(1);
    let mut responses = c
        .telemetry(bare(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), responses.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let s = first.status.unwrap();
    assert_eq!(s.code, Code::ClientIdRequired as i32);
    assert_eq!(s.message, "the x-mq-client-id request header is required");
    drop(tx);
}

#[tokio::test]
async fn given_two_streams_for_one_client_when_open_should_both_echo() {
    let h = Harness::start().await;
    let (tx1, mut rx1) = open(&h).await;
    let (tx2, mut rx2) = open(&h).await;
    tx1.send(settings_cmd(producer_settings())).await.unwrap();
    tx2.send(settings_cmd(producer_settings())).await.unwrap();
    assert!(next(&mut rx1).await.is_some());
    assert!(next(&mut rx2).await.is_some());
    assert!(
        wait_until(Duration::from_secs(5), || {
            h.proxy.clients().iter().any(|c| c.telemetry_streams == 2)
        })
        .await
    );
}

#[tokio::test]
async fn given_an_open_stream_when_the_proxy_shuts_down_should_close_it() {
    let mut h = Harness::start().await;
    let (tx, mut rx) = open(&h).await;
    tx.send(settings_cmd(producer_settings())).await.unwrap();
    assert!(next(&mut rx).await.is_some());
    h.stop().await.unwrap();
    assert!(next(&mut rx).await.is_none());
}
