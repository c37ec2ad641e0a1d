//! Observability of whole nodes: the Prometheus scrape after known traffic (exact counts and
//! labels), every metric the Grafana dashboard and the alert rules query present in that
//! scrape, `/healthz`, and `/readyz` flipping while a node starts (controllers not answering
//! yet) and while it drains; `grpc.health.v1` on the broker's port.

use std::collections::BTreeSet;
use std::time::Duration;

use comet::admin::TopicType;
use comet::server::{Listeners, Node, Role};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_tests::http::get;
use comet_tests::raw::{self, resource as res};
use comet_tests::{Mode, TestCluster, test_config, uuid_like, wait_until};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Bound of every wait in this file.
const LIMIT: Duration = Duration::from_secs(20);

fn with_client<T>(msg: T) -> tonic::Request<T> {
    raw::request("observe-test@1#1", msg)
}

/// The value of the one series of `name` whose labels include every `labels` pair.
fn value(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matches: Vec<f64> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, val)| rest.contains(&format!("{k}=\"{val}\""))))
            .then(|| v.parse().ok())
            .flatten()
        })
        .collect();
    assert!(
        matches.len() <= 1,
        "{name} {labels:?} matches {} series",
        matches.len()
    );
    matches.first().copied()
}

fn message(topic: &str, id: &str, body: Vec<u8>) -> pb::Message {
    pb::Message {
        topic: res(topic),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            message_id: id.to_owned(),
            message_type: pb::MessageType::Normal as i32,
            body_encoding: pb::Encoding::Identity as i32,
            born_host: "tester".to_owned(),
            ..Default::default()
        }),
        body: body.into(),
    }
}

/// Every `rocketmq_*` / `comet_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (rest.starts_with("rocketmq_") || rest.starts_with("comet_")) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.insert(rest[..end].to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

/// The PromQL expressions of the dashboard and the alert rules.
fn deploy_expressions() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/comet.json")).expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    let alerts: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(root.join("deploy/prometheus/alerts.yaml")).expect("alerts"),
    )
    .expect("alerts are YAML");
    for group in alerts["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            assert!(rule["alert"].as_str().is_some(), "every rule is an alert");
            exprs.push(rule["expr"].as_str().expect("expr").to_owned());
        }
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_known_traffic_when_scraped_should_count_it_exactly_with_rocketmq_labels() {
    let cluster = TestCluster::start(Mode::Local).await;
    let metrics = cluster.nodes()[0]
        .addrs()
        .metrics
        .expect("metrics listener");
    let topic = format!("observed-{}", uuid_like());
    let group = format!("observers-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    cluster.create_group(&group, 16, None).await;

    // Send N = 5 messages of 100 bytes, one call each.
    let mut client = cluster.v2().await;
    for i in 0..5 {
        let r = client
            .send_message(with_client(pb::SendMessageRequest {
                messages: vec![message(&topic, &format!("ID-{i}"), vec![b'x'; 100])],
            }))
            .await
            .expect("gRPC OK")
            .into_inner();
        assert_eq!(r.status.map(|s| s.code), Some(pb::Code::Ok as i32));
    }
    // Consume M = 4: ack 2, dead-letter K = 1, keep 1 in flight; 1 never delivered.
    let frames = raw::receive_frames(
        &mut client,
        with_client(raw::receive_request(
            &group,
            raw::queue(&topic, 0, None),
            4,
            Duration::from_secs(300),
            Duration::from_secs(5),
        )),
    )
    .await;
    let delivered: Vec<&pb::Message> = raw::messages(&frames).collect();
    assert_eq!(delivered.len(), 4);
    let handle = |m: &pb::Message| {
        let sp = m.system_properties.as_ref().expect("system properties");
        (
            sp.message_id.clone(),
            sp.receipt_handle.clone().expect("receipt handle"),
        )
    };
    let ack = client
        .ack_message(with_client(pb::AckMessageRequest {
            group: res(&group),
            topic: res(&topic),
            entries: delivered[..2]
                .iter()
                .map(|m| {
                    let (message_id, receipt_handle) = handle(m);
                    pb::AckMessageEntry {
                        message_id,
                        receipt_handle,
                        ..Default::default()
                    }
                })
                .collect(),
        }))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(ack.status.map(|s| s.code), Some(pb::Code::Ok as i32));
    let (message_id, receipt_handle) = handle(delivered[2]);
    let dlq = client
        .forward_message_to_dead_letter_queue(with_client(
            pb::ForwardMessageToDeadLetterQueueRequest {
                group: res(&group),
                topic: res(&topic),
                receipt_handle,
                message_id,
                delivery_attempt: 1,
                max_delivery_attempts: 17,
                ..Default::default()
            },
        ))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(dlq.status.map(|s| s.code), Some(pb::Code::Ok as i32));

    let (code, scrape) = get(metrics, "/metrics").await;
    assert_eq!(code, 200);
    let proxy_in = [
        ("cluster", "DefaultCluster"),
        ("node_type", "proxy"),
        ("topic", topic.as_str()),
        ("message_type", "normal"),
    ];
    assert_eq!(
        value(&scrape, "rocketmq_messages_in_total", &proxy_in),
        Some(5.0)
    );
    assert_eq!(
        value(&scrape, "rocketmq_throughput_in_total", &proxy_in),
        Some(500.0)
    );
    assert_eq!(
        value(&scrape, "rocketmq_message_size_count", &proxy_in),
        Some(5.0)
    );
    let bucket_1k: Vec<(&str, &str)> = proxy_in.iter().copied().chain([("le", "1024")]).collect();
    assert_eq!(
        value(&scrape, "rocketmq_message_size_bucket", &bucket_1k),
        Some(5.0)
    );
    let out = [
        ("node_type", "proxy"),
        ("topic", topic.as_str()),
        ("consumer_group", group.as_str()),
    ];
    assert_eq!(
        value(&scrape, "rocketmq_messages_out_total", &out),
        Some(4.0)
    );
    assert_eq!(
        value(&scrape, "rocketmq_throughput_out_total", &out),
        Some(400.0)
    );
    let broker = [
        ("node_type", "broker"),
        ("topic", topic.as_str()),
        ("consumer_group", group.as_str()),
    ];
    assert_eq!(
        value(&scrape, "rocketmq_send_to_dlq_messages_total", &broker),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "rocketmq_consumer_inflight_messages", &broker),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "rocketmq_consumer_ready_messages", &broker),
        Some(1.0)
    );
    let sends = [
        ("node_type", "proxy"),
        ("protocol_type", "grpc"),
        ("request_code", "send_message"),
        ("response_code", "ok"),
    ];
    assert_eq!(
        value(&scrape, "rocketmq_rpc_latency_count", &sends),
        Some(5.0)
    );
    let acks = [
        ("node_type", "proxy"),
        ("request_code", "ack_message"),
        ("response_code", "ok"),
    ];
    assert_eq!(
        value(&scrape, "rocketmq_rpc_latency_count", &acks),
        Some(1.0)
    );
    let topics = value(
        &scrape,
        "rocketmq_topic_number",
        &[("node_type", "controller")],
    );
    assert!(topics.is_some_and(|n| n >= 1.0), "topic number: {topics:?}");
    assert_eq!(
        value(
            &scrape,
            "comet_raft_has_leader",
            &[("node_type", "controller")]
        ),
        Some(1.0)
    );

    // Every metric the dashboard and the alert rules query is in this scrape.
    let scraped = metric_names(&scrape);
    let mut missing = Vec::new();
    for expr in deploy_expressions() {
        for name in metric_names(&expr) {
            if !scraped.contains(&name) {
                missing.push(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queried but never exported: {missing:?}"
    );

    assert_eq!(get(metrics, "/healthz").await.0, 200);
    let (code, body) = get(metrics, "/readyz").await;
    assert_eq!((code, body.lines().next()), (200, Some("ready")), "{body}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_broker_whose_controller_is_not_up_yet_readyz_should_flip_on_start_and_drain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = test_config(dir.path());
    let controller = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let controller_addr = controller.local_addr().expect("addr");
    cfg.controllers = vec![controller_addr.to_string()];
    let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics_addr = metrics.local_addr().expect("addr");

    // The broker starts while no controller answers: alive, not ready.
    let broker_cfg = cfg.clone();
    let starting = tokio::spawn(async move {
        Node::start_with(
            Role::Broker,
            &broker_cfg,
            Listeners {
                metrics: Some(metrics),
                ..Listeners::default()
            },
        )
        .await
        .expect("broker starts")
    });
    assert_eq!(get(metrics_addr, "/healthz").await.0, 200);
    let (code, body) = get(metrics_addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");

    // The controller comes up on the address the broker was given: the broker gets ready.
    let controller = Node::start_with(
        Role::Controller,
        &cfg,
        Listeners {
            controller: Some(controller),
            ..Listeners::default()
        },
    )
    .await
    .expect("controller starts");
    let broker = starting.await.expect("start task");
    wait_until("the broker reports ready", LIMIT, async || {
        get(metrics_addr, "/readyz").await.0 == 200
    })
    .await;
    let broker_addr = broker.addrs().broker.expect("broker address");
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{broker_addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("broker port"),
    );
    let status = health
        .check(HealthCheckRequest {
            service: "comet.v1.BrokerService".to_owned(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    // Draining: the broker reports not ready before its servers stop.
    let readiness = broker.readiness().clone();
    broker.shutdown().await.expect("broker stops");
    let report = readiness.report();
    assert!(!report.ready);
    assert!(
        report.to_text().contains("broker: not ready (draining)"),
        "{}",
        report.to_text()
    );
    controller.shutdown().await.expect("controller stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_running_node_when_setting_the_log_level_should_apply_it_or_name_the_bad_directive()
{
    use comet::log_level::{LogLevelCommand, SetArgs, TargetKind, run};
    let log = comet_observe::logging::init(&comet_observe::logging::LogSetup {
        level: "warn".to_owned(),
        ..Default::default()
    })
    .expect("subscriber installed");
    let cluster = TestCluster::start(Mode::Local).await;
    let broker = cluster.nodes()[0].addrs().broker.expect("broker address");
    let set = |level: &str, target: String, kind| {
        LogLevelCommand::Set(SetArgs {
            level: level.to_owned(),
            targets: vec![target],
            kind,
            config: None,
        })
    };

    let answer = run(&set(
        "warn,comet_observe=info",
        cluster.controller.to_string(),
        TargetKind::Controller,
    ))
    .await
    .expect("the controller applies it");
    assert_eq!(
        answer[0]["directives"],
        "warn,comet_observe=info,openraft=warn"
    );
    assert_eq!(log.level(), "warn,comet_observe=info,openraft=warn");

    let answer = run(&set("warn", broker.to_string(), TargetKind::Broker))
        .await
        .expect("the broker applies it");
    assert_eq!(answer[0]["directives"], "warn,openraft=warn");

    let refused = run(&set(
        "comet=loudest",
        cluster.controller.to_string(),
        TargetKind::Controller,
    ))
    .await
    .expect_err("a bad directive is refused");
    let text = format!("{refused:#}");
    assert!(
        text.contains("InvalidArgument") || text.contains("invalid argument"),
        "{text}"
    );
    assert!(text.contains("comet=loudest"), "{text}");
    assert_eq!(
        log.level(),
        "warn,openraft=warn",
        "the filter in force stays"
    );
    cluster.stop().await;
}
