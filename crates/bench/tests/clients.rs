//! `comet-bench` through each client (raw, sdk, official) against a real Comet node started
//! in process, a few hundred messages each, and `--compare` over the three.
//!
//! Every run is bounded: `--rate 300` for a 1 s window with no warmup schedules exactly 300
//! messages, and the drain ends after 5 s at most (the backlog run's after 15 s).

use std::time::Duration;

use comet::admin::TopicType;
use comet_bench::{BenchArgs, BenchReport, ByteSize, ClientKind, compare_with, run_with};
use comet_tests::{Mode, TestCluster};

/// Messages one run schedules: `RATE` for one second.
const RATE: u64 = 300;

/// A node with a NORMAL topic and a group of these names.
async fn node(topics: &[&str], group: &str) -> TestCluster {
    let cluster = TestCluster::start(Mode::Local).await;
    for topic in topics {
        cluster.create_topic(topic, 4, TopicType::Normal).await;
    }
    cluster.create_group(group, 16, None).await;
    cluster
}

fn args(cluster: &TestCluster, client: ClientKind, topic: &str, group: &str) -> BenchArgs {
    BenchArgs {
        endpoint: cluster.access_url(),
        topic: topic.to_owned(),
        group: group.to_owned(),
        client,
        compare: false,
        producers: 2,
        consumers: 1,
        backlog: false,
        message_size: ByteSize(512),
        rate: RATE,
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        batch: 1,
        inflight: 4,
        threads: 1,
        no_progress: true,
        json: None,
        spawn: None,
        comet_bin: None,
        metrics_overhead: None,
        server_set: Vec::new(),
        access_key: None,
        secret_key: None,
        auth_compare: false,
        auth_rounds: 1,
        lite_topics: None,
    }
}

/// What every run must show: every scheduled message acknowledged by the server and counted
/// once, and (with consumers) every one of them received by this run's consumers.
fn assert_consistent(report: &BenchReport, client: ClientKind, consumers: bool) {
    assert_eq!(report.config.client, client, "{report:#?}");
    assert!(report.sent.errors.is_empty(), "{report:#?}");
    assert_eq!(report.sent.count, RATE, "{report:#?}");
    assert_eq!(report.sent.total, report.sent.count, "{report:#?}");
    let send = report.send_latency_ms.as_ref().expect("send latency");
    assert_eq!(send.samples, RATE, "one sample per request: {report:#?}");
    if !consumers {
        assert_eq!(report.received.total, 0, "{report:#?}");
        return;
    }
    assert!(report.received.errors.is_empty(), "{report:#?}");
    assert_eq!(report.received.foreign, 0, "a fresh topic: {report:#?}");
    assert!(
        report.received.count >= report.sent.count,
        "every message sent is received: {report:#?}"
    );
    assert!(report.received.total >= report.sent.total, "{report:#?}");
    let e2e = report.e2e_latency_ms.as_ref().expect("e2e latency");
    assert_eq!(e2e.samples, report.received.count, "{report:#?}");
    assert!(report.received.msgs_per_s > 0.0, "{report:#?}");
}

async fn run_client(client: ClientKind) {
    let (topic, group) = ("bench-t", "bench-g");
    let cluster = node(&[topic], group).await;
    let mut out = Vec::new();
    let report = run_with(args(&cluster, client, topic, group), &mut out)
        .await
        .expect("bench run");
    assert_consistent(&report, client, true);
    let printed: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
    assert_eq!(printed["config"]["client"], client.name());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_raw_client_when_benchmarking_a_node_should_receive_every_message_sent() {
    run_client(ClientKind::Raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_sdk_when_benchmarking_a_node_should_receive_every_message_sent() {
    run_client(ClientKind::Sdk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_official_client_when_benchmarking_a_node_should_receive_every_message_sent() {
    run_client(ClientKind::Official).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_backlog_when_the_sdk_push_consumer_drains_it_should_receive_every_message() {
    let (topic, group) = ("bench-backlog", "bench-backlog-g");
    let cluster = node(&[topic], group).await;
    let mut a = args(&cluster, ClientKind::Sdk, topic, group);
    a.backlog = true;
    a.consumers = 2;
    let report = run_with(a, std::io::sink()).await.expect("bench run");
    assert!(report.config.backlog);
    assert_consistent(&report, ClientKind::Sdk, true);
    // The rate is taken over the drain, which began after the window.
    let over_drain = report.received.count as f64 / report.drain_s;
    assert!(
        (report.received.msgs_per_s - over_drain).abs() < 1e-6,
        "{report:#?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_compare_when_run_should_print_one_row_per_client_and_the_ratios() {
    let (topic, group) = ("bench-compare", "bench-compare-g");
    let cluster = node(&[topic], group).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("comparison.json");
    let mut a = args(&cluster, ClientKind::Raw, topic, group);
    a.compare = true;
    a.consumers = 0;
    a.json = Some(json.clone());
    let mut out = Vec::new();
    let comparison = compare_with(a, &mut out).await.expect("comparison");

    let kinds: Vec<ClientKind> = comparison.runs.iter().map(|r| r.config.client).collect();
    assert_eq!(kinds, ClientKind::ALL);
    for r in &comparison.runs {
        assert_consistent(r, r.config.client, false);
    }
    // Same schedule, every message sent: the producer ratios are exactly 1.
    let q = &comparison.ratios;
    assert_eq!(
        (q.sdk_vs_official_sent, q.sdk_vs_raw_sent),
        (Some(1.0), Some(1.0))
    );
    assert_eq!(
        (q.sdk_vs_official_received, q.sdk_vs_raw_received),
        (None, None)
    );
    let table = String::from_utf8(out).expect("text table");
    for name in ["raw", "sdk", "official", "sdk / official", "sdk / raw"] {
        assert!(table.contains(name), "{name} missing from:\n{table}");
    }
    let filed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("comparison file"))
            .expect("JSON comparison");
    assert_eq!(filed["runs"].as_array().map(Vec::len), Some(3));
    assert_eq!(filed["ratios"]["sdk_vs_raw_sent"], 1.0);
    cluster.stop().await;
}
