//! One benchmark run through one client kind (`--client`).
//!
//! # What a run does
//! 1. Checks the flags, opens the raw connections (`ceil(clients / 4)` for the raw client,
//!    one otherwise) and asks QueryRoute for `--topic`: a missing topic fails at once with
//!    the command that creates it, whichever client runs.
//! 2. Starts the bench clients: the raw client's sessions (see `raw`), one SDK `Producer` per
//!    producer (see `sdk`), or one official `Producer` per producer and one `SimpleConsumer`
//!    per consumer (see `official`). If any fails to start, the others are ended first.
//! 3. Starts the clock, then the consumers (unless `--backlog`) and the producers. Producers
//!    send `--batch` messages per request, up to `--inflight` requests in flight each, on the
//!    schedule of `--rate` (see `schedule`).
//! 4. After `--warmup` (not measured) comes the `--duration` window. When it ends the
//!    producers stop and the consumers drain: up to 5 s, or until they have received every
//!    message sent in the window. With `--backlog` the consumers start only now, and may
//!    take up to ten times the window (plus 5 s) to receive the backlog; their rate is then
//!    taken over that time.
//! 5. Every client ends the way its library ends a client (NotifyClientTermination, telemetry
//!    half-close), and the report ([`BenchReport`]) is printed as JSON (and written to
//!    `--json`).
//!
//! # How latency is measured (and coordinated omission avoided)
//! With `--rate`, requests follow a fixed timeline (see `schedule`): request `j` is *due* at
//! `j * batch / rate` seconds, computed from `j`, so the schedule never drifts. Send latency
//! is measured from the due time, not from when the request actually left, and every body
//! carries its due time (see `payload`) so end-to-end latency is measured from it too. A
//! stalled server therefore shows up as the stall's full cost on every request that should
//! have gone out during it, instead of as one slow sample (the "coordinated omission" of
//! closed-loop load generators). Without `--rate` (0) each producer sends as fast as its
//! in-flight limit allows and a request is due when issued.
//!
//! # What is counted
//! A message belongs to the window when its due time does: `sent` counts those sent
//! successfully, `received` those delivered (whenever they arrive, the drain included).
//! Failures are counted by code (`TOO_MANY_REQUESTS`, `grpc:UNAVAILABLE`, ...), not fatal;
//! but if no send at all succeeds during the warmup (or the whole run), the run fails with
//! the codes seen. Consumers recognise this run's messages by the `comet-bench-run` user
//! property; anything else (leftovers of earlier runs) is acknowledged and counted as
//! `foreign`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::args::{BenchArgs, ClientKind};
use crate::payload::body_template;
use crate::plan::{Clock, Plan};
use crate::raw;
use crate::servers::{CpuProbe, Servers, default_comet_bin};
use crate::stats::{
    self, BenchConfig, BenchReport, HostInfo, LatencyReport, Live, ReceivedReport, SentReport,
    TaskStats,
};
use crate::target::{Credentials, Target};
use crate::{official, progress, sdk};

/// Longest the consumers may drain after the producers stop.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// With `--backlog`: how many windows the consumers may take to receive the backlog (on top
/// of [`DRAIN_MAX`]).
const BACKLOG_WINDOWS: u32 = 10;

/// The started clients of a run, of one kind.
enum Fleet {
    Raw(raw::Fleet),
    Sdk(sdk::Fleet),
    Official(official::Fleet),
}

impl Fleet {
    fn spawn_producers(
        &mut self,
        plan: &Arc<Plan>,
        stop: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<TaskStats>> {
        match self {
            Fleet::Raw(f) => f.spawn_producers(plan, stop),
            Fleet::Sdk(f) => f.spawn_producers(plan, stop),
            Fleet::Official(f) => f.spawn_producers(plan, stop),
        }
    }

    async fn spawn_consumers(
        &mut self,
        plan: &Arc<Plan>,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<JoinHandle<TaskStats>>> {
        match self {
            Fleet::Raw(f) => Ok(f.spawn_consumers(plan, stop)),
            Fleet::Sdk(f) => f.spawn_consumers(plan, stop).await,
            Fleet::Official(f) => Ok(f.spawn_consumers(plan, stop)),
        }
    }

    async fn close(self) {
        match self {
            Fleet::Raw(f) => f.close().await,
            Fleet::Sdk(f) => f.close().await,
            Fleet::Official(f) => f.close().await,
        }
    }
}

/// Runs the benchmark through `--client`, writes the JSON report to `out` (and to `--json`)
/// and returns it. With `--spawn`, starts the servers first (see `servers`), runs against
/// them and stops them.
pub async fn run_with(mut args: BenchArgs, out: impl Write) -> anyhow::Result<BenchReport> {
    args.validate()?;
    let Some(mode) = args.spawn else {
        return run_against(args, out, None).await;
    };
    let bin = args.comet_bin.clone().unwrap_or_else(default_comet_bin);
    let servers = Servers::start(mode, &bin, &args.server_set).await?;
    args.endpoint.clone_from(&servers.endpoint);
    tracing::info!(mode = mode.name(), endpoint = %servers.endpoint, "servers started");
    let probe = servers.probe();
    let report = run_against(args, out, Some(probe)).await;
    servers.stop().await;
    report
}

/// One run against `args.endpoint`; `probe` reads the CPU time of servers this run started.
pub(crate) async fn run_against(
    args: BenchArgs,
    mut out: impl Write,
    probe: Option<CpuProbe>,
) -> anyhow::Result<BenchReport> {
    let mut target = Target::parse(&args.endpoint)?;
    target.credentials = match (&args.access_key, &args.secret_key) {
        (Some(ak), Some(sk)) => Some(Credentials {
            access_key: ak.clone(),
            secret_key: sk.clone(),
        }),
        _ => None,
    };
    let host = raw::hostname();
    let run = uuid::Uuid::new_v4().as_u64_pair().0;
    let histogram = stats::new_histogram()?;

    let raw_clients = if args.client == ClientKind::Raw {
        args.producers + args.consumers
    } else {
        0
    };
    let setup = if probe.is_some() {
        // Servers just started: the broker may not have registered yet, and the proxy
        // creates the topic on the first QueryRoute that finds a live broker.
        setup_when_routable(&target, &args, &host, run, raw_clients).await?
    } else {
        raw::setup(&target, &args, &host, run, raw_clients).await?
    };
    let route = setup.route.clone();
    tracing::info!(
        endpoint = %target.authority,
        topic = %args.topic,
        client = args.client.name(),
        write_queues = route.write.len(),
        read_queues = route.read.len(),
        "route resolved; starting bench clients"
    );
    let mut connections = setup.connections();
    let mut fleet = match args.client {
        ClientKind::Raw => {
            let f = raw::Fleet::start(setup, &target, &args, &host, run).await?;
            connections = f.connections;
            Fleet::Raw(f)
        }
        // These clients open their own connections; the route check's is no longer needed.
        ClientKind::Sdk => {
            drop(setup);
            Fleet::Sdk(sdk::Fleet::start(&target, &args).await?)
        }
        ClientKind::Official => {
            drop(setup);
            Fleet::Official(official::Fleet::start(&target, &args).await?)
        }
    };

    let plan = Arc::new(Plan {
        topic: raw::resource(&args.topic),
        group: raw::resource(&args.group),
        message_size: usize::try_from(args.message_size.0).unwrap_or(usize::MAX),
        batch: args.batch,
        inflight: args.inflight,
        rate: args.rate,
        producers: args.producers,
        run_hex: format!("{run:016X}"),
        born_host: host.clone(),
        template: body_template(usize::try_from(args.message_size.0).unwrap_or(usize::MAX)),
        clock: Clock::new(Instant::now(), args.warmup, args.duration),
        live: Live::default(),
        consumed: Notify::new(),
        histogram,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // The servers' CPU time at the start and at the end of the window.
    let cpu_probe = probe.map(|probe| {
        let clock = plan.clock;
        tokio::spawn(async move {
            tokio::time::sleep_until(clock.warm_end).await;
            let start = probe.snapshot();
            tokio::time::sleep_until(clock.end).await;
            let end = probe.snapshot();
            (probe, start, end)
        })
    });

    let mut consumer_tasks = Vec::new();
    if !args.backlog {
        match fleet.spawn_consumers(&plan, &stop_rx).await {
            Ok(tasks) => consumer_tasks = tasks,
            Err(e) => {
                fleet.close().await;
                return Err(e);
            }
        }
    }
    let producer_tasks = fleet.spawn_producers(&plan, &stop_rx);
    let show_progress = !args.no_progress && std::io::stderr().is_terminal();
    let progress =
        show_progress.then(|| progress::spawn(plan.clone(), args.consumers > 0, stop_rx.clone()));

    // Nothing sent during the warmup means a misconfiguration, not a slow server.
    if !args.warmup.is_zero() {
        tokio::time::sleep_until(plan.clock.warm_end).await;
        if Live::get(&plan.live.sent_ok) == 0 {
            let _ = stop_tx.send(true);
            let (p, c) = join_tasks(producer_tasks, consumer_tasks).await?;
            finish_progress(progress).await;
            fleet.close().await;
            return Err(nothing_sent(
                &target,
                &format!("the {} warmup", humantime::format_duration(args.warmup)),
                &p,
                &c,
            ));
        }
    }

    let mut produced = TaskStats::new(&plan.histogram);
    for task in producer_tasks {
        produced.merge(task.await.context("a producer task failed")?);
    }
    let drain_start = Instant::now();
    let mut drain_max = DRAIN_MAX;
    if args.backlog {
        drain_max += args.duration.saturating_mul(BACKLOG_WINDOWS);
        match fleet.spawn_consumers(&plan, &stop_rx).await {
            Ok(tasks) => consumer_tasks = tasks,
            Err(e) => {
                let _ = stop_tx.send(true);
                finish_progress(progress).await;
                fleet.close().await;
                return Err(e);
            }
        }
    }
    if produced.total > 0 && !consumer_tasks.is_empty() {
        let deadline = drain_start + drain_max;
        loop {
            let notified = plan.consumed.notified();
            if Live::get(&plan.live.received_measured) >= Live::get(&plan.live.sent_ok_measured) {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    sent = Live::get(&plan.live.sent_ok_measured),
                    received = Live::get(&plan.live.received_measured),
                    "consumers did not receive every message within the {drain_max:?} drain"
                );
                break;
            }
        }
    }
    let drain = drain_start.elapsed();
    let _ = stop_tx.send(true);
    let mut consumed = TaskStats::new(&plan.histogram);
    for task in consumer_tasks {
        consumed.merge(task.await.context("a consumer task failed")?);
    }
    finish_progress(progress).await;
    fleet.close().await;
    if produced.total == 0 {
        return Err(nothing_sent(&target, "the run", [&produced], [&consumed]));
    }

    let window = args.duration.as_secs_f64();
    let receive_time = if args.backlog {
        drain.as_secs_f64()
    } else {
        window
    };
    let (sent_rate, sent_mb) = stats::rates(produced.measured, produced.measured_bytes, window);
    let (recv_rate, recv_mb) =
        stats::rates(consumed.measured, consumed.measured_bytes, receive_time);
    let report = BenchReport {
        config: BenchConfig {
            client: args.client,
            endpoint: target.authority.clone(),
            topic: args.topic.clone(),
            group: args.group.clone(),
            producers: args.producers,
            consumers: args.consumers,
            backlog: args.backlog,
            message_size: args.message_size.0,
            rate: args.rate,
            duration_s: window,
            warmup_s: args.warmup.as_secs_f64(),
            batch: args.batch,
            inflight: args.inflight,
            write_queues: route.write.len(),
            read_queues: route.read.len(),
            connections,
        },
        host: HostInfo {
            hostname: host,
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        duration_s: window,
        drain_s: drain.as_secs_f64(),
        sent: SentReport {
            count: produced.measured,
            msgs_per_s: sent_rate,
            mb_per_s: sent_mb,
            errors: produced.errors.clone(),
            total: produced.total,
        },
        received: ReceivedReport {
            count: consumed.measured,
            msgs_per_s: recv_rate,
            mb_per_s: recv_mb,
            errors: consumed.errors.clone(),
            total: consumed.total,
            foreign: consumed.foreign,
            redelivered: consumed.redelivered,
        },
        send_latency_ms: LatencyReport::from_histogram(&produced.latency),
        e2e_latency_ms: LatencyReport::from_histogram(&consumed.latency),
        servers: match cpu_probe {
            Some(task) => {
                let (probe, start, end) = task.await.context("the CPU probe failed")?;
                Some(probe.report(&start, &end, window, produced.measured))
            }
            None => None,
        },
    };

    let json = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
    writeln!(out, "{json}")
        .and_then(|()| out.flush())
        .context("cannot write the report")?;
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(report)
}

/// How long freshly started servers may take to route the topic.
const ROUTABLE_WAIT: Duration = Duration::from_secs(30);

/// Pause between route checks while servers start.
const ROUTE_RETRY: Duration = Duration::from_millis(200);

/// [`raw::setup`], retried until the topic has a route or [`ROUTABLE_WAIT`] has passed.
async fn setup_when_routable(
    target: &Target,
    args: &BenchArgs,
    host: &str,
    run: u64,
    clients: usize,
) -> anyhow::Result<raw::Setup> {
    let deadline = Instant::now() + ROUTABLE_WAIT;
    loop {
        match raw::setup(target, args, host, run, clients).await {
            Ok(setup) => return Ok(setup),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "the started servers did not route topic {:?} within {ROUTABLE_WAIT:?}",
                    args.topic
                )));
            }
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "topic not routable yet");
                tokio::time::sleep(ROUTE_RETRY).await;
            }
        }
    }
}

/// Waits for every task (they must have been told to stop, or end by themselves).
async fn join_tasks(
    producers: Vec<JoinHandle<TaskStats>>,
    consumers: Vec<JoinHandle<TaskStats>>,
) -> anyhow::Result<(Vec<TaskStats>, Vec<TaskStats>)> {
    let mut p = Vec::with_capacity(producers.len());
    for task in producers {
        p.push(task.await.context("a producer task failed")?);
    }
    let mut c = Vec::with_capacity(consumers.len());
    for task in consumers {
        c.push(task.await.context("a consumer task failed")?);
    }
    Ok((p, c))
}

async fn finish_progress(progress: Option<JoinHandle<()>>) {
    if let Some(task) = progress {
        let _ = task.await;
    }
}

/// The error of a run in which no send succeeded, with the failures seen.
fn nothing_sent<'a>(
    target: &Target,
    when: &str,
    producers: impl IntoIterator<Item = &'a TaskStats>,
    consumers: impl IntoIterator<Item = &'a TaskStats>,
) -> anyhow::Error {
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    for s in producers.into_iter().chain(consumers) {
        for (k, n) in s.errors.iter().chain(&s.warmup_errors) {
            *errors.entry(k.clone()).or_insert(0) += n;
        }
    }
    let seen = if errors.is_empty() {
        "no response at all".to_owned()
    } else {
        errors
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    anyhow!(
        "no message could be sent to {} during {when} ({seen}); check the proxy's logs and that \
         the topic accepts NORMAL messages",
        target.authority
    )
}
