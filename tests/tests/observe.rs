//! Observability of whole nodes: the Prometheus scrape after known traffic (exact counts and
//! labels), every delivery path counted once in `rocketmq_messages_out_total` (POP, retry,
//! pull, FIFO, long-poll wake, broadcast, dead-letter resend) and the delay timer's lateness, a replicated
//! master's lag per replica (exact bytes, growing time), every metric the Grafana dashboard
//! and the alert rules query present in a scrape, `/healthz`, and `/readyz` flipping while a
//! node starts (controllers not answering yet) and while it drains; `grpc.health.v1` on the
//! broker's port.

use std::collections::BTreeSet;
use std::time::Duration;

use comet::admin::{TopicCommand, TopicSpec, TopicType};
use comet::config::ReplicationModeKey;
use comet::server::{Listeners, Node, Role};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1::broker_service_client::BrokerServiceClient;
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

/// `POST path` with a JSON `body` on `addr`: the status code.
async fn post(addr: std::net::SocketAddr, path: &str, body: &serde_json::Value) -> u16 {
    let payload = body.to_string();
    comet_tests::http::request(addr, "POST", path, Some(&payload))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .0
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

/// Broker set of the replicated pairs these tests start.
const HA_SET: &str = "observed-ha";

/// A replicated broker set of two `comet broker` nodes (ids 0 and 1, ASYNC replication, a
/// 1 s lag limit) joined to `cluster`'s controller, data under `dir`: (master, replica, the
/// replica's id), once both are in the sync-state set.
async fn replicated_pair(cluster: &TestCluster, dir: &std::path::Path) -> (Node, Node, u64) {
    let mut nodes = Vec::new();
    for id in 0..2u64 {
        let mut cfg = test_config(&dir.join(format!("broker-{id}")));
        cfg.controllers = vec![cluster.controller.to_string()];
        cfg.broker.broker_set = HA_SET.to_owned();
        cfg.broker.broker_id = id;
        cfg.broker.replication_mode = ReplicationModeKey::Async;
        cfg.broker.replica_max_lag_time = Duration::from_millis(1000).into();
        cfg.broker.replication_heartbeat_interval = Duration::from_millis(100).into();
        nodes.push(Some(
            Node::start(Role::Broker, &cfg)
                .await
                .expect("replicated broker starts"),
        ));
    }
    let mut metadata = nodes[0]
        .as_ref()
        .and_then(Node::metadata)
        .expect("broker metadata");
    let set = tokio::time::timeout(
        LIMIT,
        metadata.wait_for(|m| {
            m.broker_sets
                .iter()
                .any(|s| s.name == HA_SET && s.master_epoch > 0 && s.sync_state_set.len() == 2)
        }),
    )
    .await
    .expect("both brokers join the sync-state set")
    .expect("metadata watch open")
    .broker_sets
    .iter()
    .find(|s| s.name == HA_SET)
    .cloned()
    .expect("the broker set");
    let master = usize::try_from(set.master_broker_id).expect("small id");
    let replica = 1 - master;
    let (m, r) = (nodes[master].take(), nodes[replica].take());
    (
        m.expect("master node"),
        r.expect("replica node"),
        replica as u64,
    )
}

/// The master's view of replica `id` of [`HA_SET`]: (lag bytes, lag time in ms).
fn replica_lag(scrape: &str, id: u64) -> (Option<f64>, Option<f64>) {
    let id = id.to_string();
    let labels = [
        ("node_type", "broker"),
        ("broker_set", HA_SET),
        ("replica_id", id.as_str()),
    ];
    (
        value(scrape, "comet_replication_lag_bytes", &labels),
        value(scrape, "comet_replication_lag_time", &labels),
    )
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

    // The broker's series come from a stats snapshot that a collection may reuse for up to
    // 500 ms: scrape until it shows the dead letter (the proxy's counters are live).
    let mut scrape = String::new();
    wait_until("a scrape taken after the dead letter", LIMIT, async || {
        let (code, body) = get(metrics, "/metrics").await;
        assert_eq!(code, 200);
        scrape = body;
        let dlq = [
            ("node_type", "broker"),
            ("topic", topic.as_str()),
            ("consumer_group", group.as_str()),
        ];
        value(&scrape, "rocketmq_send_to_dlq_messages_total", &dlq).is_some()
    })
    .await;
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

    // Every metric the dashboard and the alert rules query is in this scrape, or (the
    // replication lag, which only a master with replicas reports) in a replicated master's.
    let dir = tempfile::tempdir().expect("temp dir");
    let (master, replica, replica_id) = replicated_pair(&cluster, dir.path()).await;
    let master_metrics = master.addrs().metrics.expect("master metrics listener");
    let mut master_scrape = String::new();
    wait_until("the master reports its replica", LIMIT, async || {
        master_scrape = get(master_metrics, "/metrics").await.1;
        replica_lag(&master_scrape, replica_id).0.is_some()
    })
    .await;
    let mut scraped = metric_names(&scrape);
    scraped.extend(metric_names(&master_scrape));
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
    replica.shutdown().await.expect("replica stops");
    master.shutdown().await.expect("master stops");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_replica_that_stops_when_the_master_writes_should_report_its_lag_exactly() {
    let cluster = TestCluster::start(Mode::Local).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (master, replica, replica_id) = replicated_pair(&cluster, dir.path()).await;
    let metrics = master.addrs().metrics.expect("master metrics listener");
    let topic = format!("lagging-{}", uuid_like());
    comet::admin::topic(
        &cluster.admin(),
        &TopicCommand::Create(TopicSpec {
            name: topic.clone(),
            queues: 1,
            message_type: TopicType::Normal,
            broker_sets: vec![HA_SET.to_owned()],
            perm: comet::admin::Perm::Rw,
        }),
    )
    .await
    .expect("topic created");
    let mut on_master = master.metadata().expect("master metadata");
    tokio::time::timeout(
        LIMIT,
        on_master.wait_for(|m| m.topics.iter().any(|t| t.name == topic)),
    )
    .await
    .expect("the master sees the topic")
    .expect("metadata watch open");

    // In sync and idle: no lag, in bytes or in time.
    let mut before = String::new();
    wait_until("the replica holds the master's log", LIMIT, async || {
        before = get(metrics, "/metrics").await.1;
        replica_lag(&before, replica_id) == (Some(0.0), Some(0.0))
    })
    .await;
    let stored = |scrape: &str| {
        value(
            scrape,
            "rocketmq_storage_size",
            &[
                ("node_type", "broker"),
                ("node_id", &format!("{HA_SET}-{}", 1 - replica_id)),
            ],
        )
        .expect("the master's storage size")
    };
    let stored_before = stored(&before);

    // The replica stops; the master (ASYNC) acknowledges three messages alone.
    replica.shutdown().await.expect("replica stops");
    let master_addr = master.addrs().broker.expect("master broker address");
    let mut direct = BrokerServiceClient::connect(format!("http://{master_addr}"))
        .await
        .expect("master broker port");
    for i in 0..3 {
        let mut m = message(&topic, &format!("LAG-{i}"), vec![b'l'; 100]);
        if let Some(sp) = m.system_properties.as_mut() {
            sp.queue_id = 0;
        }
        let r = direct
            .send_message(pb::SendMessageRequest { messages: vec![m] })
            .await
            .expect("the master answers")
            .into_inner();
        let code = r
            .entries
            .first()
            .and_then(|e| e.status.as_ref())
            .map(|s| s.code);
        assert_eq!(code, Some(pb::Code::Ok as i32), "{r:?}");
    }
    // Collections within half a second share one snapshot: wait for one taken after the sends.
    let mut after = String::new();
    wait_until("the master's scrape shows the sends", LIMIT, async || {
        after = get(metrics, "/metrics").await.1;
        stored(&after) - stored_before > 300.0
    })
    .await;
    let written = stored(&after) - stored_before;
    let (bytes, time) = replica_lag(&after, replica_id);
    assert_eq!(
        bytes,
        Some(written),
        "lag is exactly what the master wrote since"
    );
    assert!(
        time.is_some_and(|t| t > 0.0),
        "lagging for some time: {time:?}"
    );
    // The lag time grows while the replica stays away.
    let first = time.unwrap_or(0.0);
    wait_until("the lag time grows", LIMIT, async || {
        let (b, t) = replica_lag(&get(metrics, "/metrics").await.1, replica_id);
        b == Some(written) && t.is_some_and(|t| t > first)
    })
    .await;
    master.shutdown().await.expect("master stops");
    cluster.stop().await;
}

/// Sends `m` and asserts that the proxy stored it.
async fn send_ok(client: &mut Client, m: pb::Message) {
    let r = client
        .send_message(with_client(pb::SendMessageRequest { messages: vec![m] }))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(r.status.map(|s| s.code), Some(pb::Code::Ok as i32));
}

type Client = pb::messaging_service_client::MessagingServiceClient<tonic::transport::Channel>;

/// One ReceiveMessage by `client_id` for `group` on queue 0 of `topic`: the messages it got.
async fn receive_as(
    client: &mut Client,
    client_id: &str,
    group: &str,
    topic: &str,
    invisible: Duration,
    long_poll: Duration,
) -> Vec<pb::Message> {
    let frames = raw::receive_frames(
        client,
        raw::request(
            client_id,
            raw::receive_request(group, raw::queue(topic, 0, None), 8, invisible, long_poll),
        ),
    )
    .await;
    raw::messages(&frames).cloned().collect()
}

/// Acknowledges `m` for `group` as `client_id` (the client it was delivered to).
async fn ack(client: &mut Client, client_id: &str, group: &str, topic: &str, m: &pb::Message) {
    let sp = m.system_properties.as_ref().expect("system properties");
    let r = client
        .ack_message(raw::request(
            client_id,
            pb::AckMessageRequest {
                group: res(group),
                topic: res(topic),
                entries: vec![pb::AckMessageEntry {
                    message_id: sp.message_id.clone(),
                    receipt_handle: sp.receipt_handle.clone().expect("receipt handle"),
                    ..Default::default()
                }],
            },
        ))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(
        r.status.as_ref().map(|s| s.code),
        Some(pb::Code::Ok as i32),
        "ack by {client_id} of {group} on {topic}: {:?}",
        r.status
    );
}

/// `rocketmq_messages_out_total` and `rocketmq_throughput_out_total` of (topic, group).
fn out_counts(scrape: &str, topic: &str, group: &str) -> (Option<f64>, Option<f64>) {
    let labels = [
        ("node_type", "proxy"),
        ("topic", topic),
        ("consumer_group", group),
    ];
    (
        value(scrape, "rocketmq_messages_out_total", &labels),
        value(scrape, "rocketmq_throughput_out_total", &labels),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_every_delivery_path_when_scraped_should_count_each_delivery_once() {
    let cluster = TestCluster::start(Mode::Local).await;
    let metrics = cluster.nodes()[0]
        .addrs()
        .metrics
        .expect("metrics listener");
    let scrape = || async move { get(metrics, "/metrics").await.1 };
    let id = uuid_like();
    let (normal, fifo, late, wide, delayed, dead) = (
        format!("paths-{id}"),
        format!("paths-fifo-{id}"),
        format!("paths-late-{id}"),
        format!("paths-wide-{id}"),
        format!("paths-delay-{id}"),
        format!("paths-dead-{id}"),
    );
    let (retrying, puller, fifo_group, waiter, everyone) = (
        format!("retrying-{id}"),
        format!("puller-{id}"),
        format!("fifo-{id}"),
        format!("waiter-{id}"),
        format!("everyone-{id}"),
    );
    for (t, kind) in [
        (&normal, TopicType::Normal),
        (&fifo, TopicType::Fifo),
        (&late, TopicType::Normal),
        (&wide, TopicType::Normal),
        (&delayed, TopicType::Delay),
        (&dead, TopicType::Normal),
    ] {
        cluster.create_topic(t, 1, kind).await;
    }
    cluster
        .create_group(&retrying, 16, Some("customized:100ms"))
        .await;
    cluster.create_group(&puller, 16, None).await;
    cluster.create_group_with(&fifo_group, 16, true, None).await;
    cluster.create_group(&waiter, 16, None).await;
    cluster.create_broadcast_group(&everyone, 16, true).await;
    let resender = format!("resender-{id}");
    cluster.create_group(&resender, 16, None).await;
    let mut client = cluster.v2().await;
    let body = |n: usize| vec![b'b'; n];

    // POP and retry: one message of 10 bytes delivered, not acknowledged, delivered again
    // after its invisible time, then acknowledged: two deliveries.
    send_ok(&mut client, message(&normal, "N-1", body(10))).await;
    let first = receive_as(
        &mut client,
        "c1",
        &retrying,
        &normal,
        Duration::from_secs(1),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(first.len(), 1);
    // Receives answering nothing (the invisible time is not over yet) count nothing.
    let mut again = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while again.is_empty() && tokio::time::Instant::now() < deadline {
        again = receive_as(
            &mut client,
            "c1",
            &retrying,
            &normal,
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
        .await;
    }
    assert_eq!(again.len(), 1, "redelivered after the invisible time");
    ack(&mut client, "c1", &retrying, &normal, &again[0]).await;

    // Pull: the same message read by offset by another group: one delivery.
    let mut pulled = client
        .pull_message(with_client(pb::PullMessageRequest {
            group: res(&puller),
            message_queue: Some(raw::queue(&normal, 0, None)),
            offset: 0,
            batch_size: 8,
            filter_expression: None,
            long_polling_timeout: Some(Duration::from_secs(1).try_into().expect("duration")),
        }))
        .await
        .expect("PullMessage answers")
        .into_inner();
    let mut pulled_messages = 0;
    while let Some(frame) = pulled.message().await.expect("pull frame") {
        if let Some(pb::pull_message_response::Content::Message(_)) = frame.content {
            pulled_messages += 1;
        }
    }
    assert_eq!(pulled_messages, 1);

    // FIFO: two messages of one message group, each delivered once, in order.
    for i in 0..2 {
        let mut m = message(&fifo, &format!("F-{i}"), body(20));
        if let Some(sp) = m.system_properties.as_mut() {
            sp.message_type = pb::MessageType::Fifo as i32;
            sp.message_group = Some("g".to_owned());
        }
        send_ok(&mut client, m).await;
    }
    let mut fifo_delivered = 0;
    for _ in 0..2 {
        let got = receive_as(
            &mut client,
            "c1",
            &fifo_group,
            &fifo,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .await;
        for m in &got {
            ack(&mut client, "c1", &fifo_group, &fifo, m).await;
        }
        fifo_delivered += got.len();
        if fifo_delivered == 2 {
            break;
        }
    }
    assert_eq!(fifo_delivered, 2);

    // Long poll woken by an arrival: the receive waits first, then one message arrives. (A
    // scrape may reuse a snapshot up to half a second old: seeing no poll waiting first makes
    // the next "one waiting" a snapshot taken after this receive started.)
    wait_until("no long poll waits", LIMIT, async || {
        value(&scrape().await, "comet_pop_long_polls_waiting", &[]) == Some(0.0)
    })
    .await;
    let waiting = {
        let mut client = cluster.v2().await;
        let (late, waiter) = (late.clone(), waiter.clone());
        tokio::spawn(async move {
            receive_as(
                &mut client,
                "c1",
                &waiter,
                &late,
                Duration::from_secs(30),
                Duration::from_secs(15),
            )
            .await
        })
    };
    wait_until("the receive long-polls", LIMIT, async || {
        value(&scrape().await, "comet_pop_long_polls_waiting", &[]).is_some_and(|n| n >= 1.0)
    })
    .await;
    send_ok(&mut client, message(&late, "L-1", body(30))).await;
    let woken = waiting.await.expect("receive task");
    assert_eq!(woken.len(), 1);

    // Broadcast: one message delivered to each of two clients of the group.
    send_ok(&mut client, message(&wide, "W-1", body(40))).await;
    for client_id in ["b1", "b2"] {
        let got = receive_as(
            &mut client,
            client_id,
            &everyone,
            &wide,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(got.len(), 1, "{client_id} gets the broadcast message");
        ack(&mut client, client_id, &everyone, &wide, &got[0]).await;
    }

    // Dead-letter resend: delivered, dead-lettered, resent from the console, delivered again.
    send_ok(&mut client, message(&dead, "DL-1", body(50))).await;
    let got = receive_as(
        &mut client,
        "c1",
        &resender,
        &dead,
        Duration::from_secs(30),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(got.len(), 1);
    let sp = got[0]
        .system_properties
        .as_ref()
        .expect("system properties");
    let forwarded = client
        .forward_message_to_dead_letter_queue(raw::request(
            "c1",
            pb::ForwardMessageToDeadLetterQueueRequest {
                group: res(&resender),
                topic: res(&dead),
                receipt_handle: sp.receipt_handle.clone().expect("receipt handle"),
                message_id: sp.message_id.clone(),
                delivery_attempt: 1,
                max_delivery_attempts: 17,
                ..Default::default()
            },
        ))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(forwarded.status.map(|s| s.code), Some(pb::Code::Ok as i32));
    let resend = serde_json::json!({"group": resender, "message_id": "DL-1"});
    wait_until("the dead letter is resent", LIMIT, async || {
        post(cluster.console(), "/api/dead-letters/resend", &resend).await == 200
    })
    .await;
    let mut resent = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while resent.is_empty() && tokio::time::Instant::now() < deadline {
        resent = receive_as(
            &mut client,
            "c1",
            &resender,
            &dead,
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
        .await;
    }
    assert_eq!(resent.len(), 1, "the resent message is delivered again");
    ack(&mut client, "c1", &resender, &dead, &resent[0]).await;

    // A delay message due in 300 ms: delivered by the timer wheel, its lateness recorded.
    let mut m = message(&delayed, "D-1", body(5));
    if let Some(sp) = m.system_properties.as_mut() {
        sp.message_type = pb::MessageType::Delay as i32;
        let due = comet_tests::now_ms() + 300;
        sp.delivery_timestamp = Some(prost_types::Timestamp {
            seconds: due / 1000,
            nanos: i32::try_from(due % 1000 * 1_000_000).expect("nanos"),
        });
    }
    send_ok(&mut client, m).await;
    let broker = [("node_type", "broker")];
    wait_until("the delay message is delivered", LIMIT, async || {
        value(
            &scrape().await,
            "comet_timer_delivered_messages_total",
            &broker,
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;

    let text = scrape().await;
    assert_eq!(
        out_counts(&text, &normal, &retrying),
        (Some(2.0), Some(20.0))
    );
    assert_eq!(out_counts(&text, &normal, &puller), (Some(1.0), Some(10.0)));
    assert_eq!(
        out_counts(&text, &fifo, &fifo_group),
        (Some(2.0), Some(40.0))
    );
    assert_eq!(out_counts(&text, &late, &waiter), (Some(1.0), Some(30.0)));
    assert_eq!(out_counts(&text, &wide, &everyone), (Some(2.0), Some(80.0)));
    assert_eq!(
        out_counts(&text, &dead, &resender),
        (Some(2.0), Some(100.0))
    );
    assert_eq!(
        value(&text, "comet_timer_delivered_messages_total", &broker),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "comet_timer_pending_messages", &broker),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "comet_timer_lateness_count", &broker),
        Some(1.0)
    );
    let late_ms = value(&text, "comet_timer_lateness_sum", &broker).expect("lateness sum");
    assert!(
        (0.0..LIMIT.as_millis() as f64).contains(&late_ms),
        "{late_ms}"
    );
    let in_60s: Vec<(&str, &str)> = broker.iter().copied().chain([("le", "60000")]).collect();
    assert_eq!(
        value(&text, "comet_timer_lateness_bucket", &in_60s),
        Some(1.0)
    );
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
