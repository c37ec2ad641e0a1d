//! `comet-bench --spawn`: a short run starts its own servers (Cluster mode: controller, broker
//! and proxy processes; and standalone), completes, and reports every figure, the CPU time
//! per message of each server process among them; `--metrics-overhead` runs a round against
//! servers with metrics on and off and reports both. Assertions are on the report's
//! structure, never on speed.
//!
//! The servers are child processes of this test binary: run with a server role as its first
//! argument (`controller`, `broker`, `proxy`, `standalone`), it acts as the `comet` binary
//! (`comet::server::run`), so `--comet-bin` points at the test binary itself. Hence
//! `harness = false`: `main` decides which of the two it is.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use comet::args::{Cli, Command};
use comet::server::{self, Role};
use comet_bench::{
    BenchArgs, BenchReport, ByteSize, ClientKind, SpawnMode, overhead_with, run_with,
};

/// Messages one run schedules: `RATE` for one second.
const RATE: u64 = 200;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if matches!(
        argv.get(1).map(String::as_str),
        Some("standalone" | "controller" | "broker" | "proxy")
    ) {
        return serve_as_comet(&argv);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for mode in [SpawnMode::Cluster, SpawnMode::Standalone] {
        println!("--- bench --spawn {}", mode.name());
        rt.block_on(given_spawn_when_a_short_run_ends_should_report_every_figure(mode));
    }
    println!("--- bench --spawn standalone --metrics-overhead 1");
    rt.block_on(given_metrics_overhead_when_a_round_ends_should_report_both_sides());
    println!("spawn: 3 runs passed");
    ExitCode::SUCCESS
}

/// The child side: this binary as `comet <role> ...`.
fn serve_as_comet(argv: &[String]) -> ExitCode {
    let cli = Cli::parse_from(std::iter::once("comet").chain(argv[1..].iter().map(String::as_str)));
    let outcome = match cli.command {
        Command::Standalone(a) => server::run(Role::Standalone, &a),
        Command::Controller(a) => server::run(Role::Controller, &a),
        Command::Broker(a) => server::run(Role::Broker, &a),
        Command::Proxy(a) => server::run(Role::Proxy, &a),
        _ => Err(anyhow::anyhow!("only server roles are served here")),
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

fn args(mode: SpawnMode) -> BenchArgs {
    BenchArgs {
        endpoint: "127.0.0.1:1".to_owned(),
        topic: "spawned".to_owned(),
        group: "spawned-group".to_owned(),
        client: ClientKind::Raw,
        compare: false,
        producers: 2,
        consumers: 1,
        backlog: false,
        message_size: ByteSize(512),
        rate: RATE,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(500),
        batch: 1,
        inflight: 4,
        threads: 1,
        no_progress: true,
        json: None,
        spawn: Some(mode),
        comet_bin: Some(std::env::current_exe().expect("the test binary's path")),
        metrics_overhead: None,
        server_set: vec![
            "broker.segment_size=8MiB".to_owned(),
            "log.level=warn".to_owned(),
            // The test machine's disk is shared and often fuller than the default 90% refuse
            // mark; this test is about the report, not about disk-full handling.
            "broker.disk_high_watermark=0.98".to_owned(),
            "broker.disk_refuse_watermark=0.99".to_owned(),
        ],
        access_key: None,
        secret_key: None,
        auth_compare: false,
        auth_rounds: 1,
        lite_topics: None,
    }
}

async fn given_spawn_when_a_short_run_ends_should_report_every_figure(mode: SpawnMode) {
    let mut out = Vec::new();
    let report: BenchReport = run_with(args(mode), &mut out)
        .await
        .expect("the run completes");
    assert_eq!(report.sent.count, RATE, "{report:#?}");
    assert!(report.sent.errors.is_empty(), "{report:#?}");
    assert_eq!(report.received.count, RATE, "{report:#?}");
    assert!(report.send_latency_ms.is_some() && report.e2e_latency_ms.is_some());
    assert_ne!(
        report.config.endpoint, "127.0.0.1:1",
        "the run targets the started proxy"
    );

    let servers = report
        .servers
        .as_ref()
        .expect("a --spawn run reports its servers");
    assert_eq!(servers.mode, mode);
    let roles: Vec<&str> = servers.roles.iter().map(|r| r.role.as_str()).collect();
    let expected: &[&str] = match mode {
        SpawnMode::Cluster => &["controller", "broker", "proxy"],
        SpawnMode::Standalone => &["standalone"],
    };
    assert_eq!(roles, expected, "{servers:#?}");
    for r in &servers.roles {
        assert!(
            r.pid > 0 && r.cpu_s >= 0.0 && r.cpu_us_per_msg >= 0.0,
            "{r:#?}"
        );
    }
    let total = servers
        .servers_cpu_us_per_msg
        .expect("servers' CPU per message");
    let sum: f64 = servers.roles.iter().map(|r| r.cpu_us_per_msg).sum();
    assert!((total - sum).abs() < 1e-6, "{servers:#?}");
    assert!(servers.bench_cpu_us_per_msg.is_some(), "{servers:#?}");
    assert!((servers.cpu_window_s - 1.0).abs() < 1e-9);

    // The printed JSON carries the same figures.
    let json: serde_json::Value = serde_json::from_slice(&out).expect("the report is JSON");
    let printed = &json["servers"];
    assert_eq!(printed["mode"], mode.name());
    assert_eq!(
        printed["roles"].as_array().map(Vec::len),
        Some(expected.len())
    );
    for key in ["role", "pid", "cpu_s", "cpu_us_per_msg"] {
        assert!(!printed["roles"][0][key].is_null(), "{key} in {printed}");
    }
    assert!(printed["servers_cpu_us_per_msg"].is_number(), "{printed}");
    assert!(printed["bench_cpu_us_per_msg"].is_number(), "{printed}");
}

async fn given_metrics_overhead_when_a_round_ends_should_report_both_sides() {
    let mut a = args(SpawnMode::Standalone);
    a.metrics_overhead = Some(1);
    a.consumers = 0;
    let mut out = Vec::new();
    let report = overhead_with(a, &mut out)
        .await
        .expect("the comparison completes");
    let sides: Vec<(u32, bool, u64)> = report
        .runs
        .iter()
        .map(|r| (r.round, r.metrics, r.sent))
        .collect();
    assert_eq!(
        sides,
        vec![(1, true, RATE), (1, false, RATE)],
        "{report:#?}"
    );
    assert_eq!(
        (report.metrics_on.sent, report.metrics_off.sent),
        (RATE, RATE)
    );
    for r in &report.runs {
        assert!(r.servers_cpu_s.is_some_and(|c| c >= 0.0), "{r:#?}");
    }
    let rate = report.rate_ratio.expect("a rate ratio");
    assert!(rate > 0.0, "{report:#?}");
    let table = String::from_utf8(out).expect("UTF-8 table");
    assert!(table.contains("on / off: rate"), "{table}");
}
