//! `comet bench`: a load generator for any RocketMQ 5 gRPC proxy (Comet's or Apache's),
//! speaking `apache.rocketmq.v2` the way the official clients do.
//!
//! # What a run does
//! 1. Opens `ceil((producers + consumers) / 4)` HTTP/2 connections to `--endpoint` and shares
//!    them among the bench clients, so one connection is not the bottleneck; the producers'
//!    SendMessage calls go on `ceil(producers / 4)` connections of their own.
//! 2. QueryRoute for `--topic`; a missing topic fails at once with the command to create it.
//! 3. Starts one session per bench client, like an official client's start: a Telemetry
//!    stream whose first command is the client's Settings (PRODUCER publishing the topic, or
//!    SIMPLE_CONSUMER of `--group` subscribed to the topic with `*`), the server's echo awaited,
//!    then a Heartbeat (repeated every 30 s). Every call carries `x-mq-client-id` (unique per
//!    bench client), `x-mq-language: RUST`, `x-mq-protocol-version: 2.0.0`,
//!    `x-mq-client-version` and `x-mq-date-time`.
//! 4. Producers send NORMAL messages (unique message id, born timestamp and host, queue ids
//!    round-robin over the writable queues, `--batch` messages per SendMessage, up to
//!    `--inflight` requests in flight each). Consumers ReceiveMessage (batch 32, invisible
//!    30 s, long polling 5 s) and acknowledge each batch in one AckMessage.
//! 5. After `--warmup` (not measured) comes the `--duration` window. When it ends the
//!    producers stop, the consumers drain (up to 5 s, or until they have received every
//!    message sent in the window), and every session ends with NotifyClientTermination and a
//!    half-close of its telemetry stream.
//! 6. The report ([`BenchReport`]) is printed as JSON on stdout (and written to `--json`).
//!
//! # How latency is measured (and coordinated omission avoided)
//! With `--rate`, requests follow a fixed timeline (see `schedule`): request `j` is *due* at
//! `j * batch / rate` seconds, computed from `j`, so the schedule never drifts. Send latency
//! is measured from the due time, not from when the request actually left, and every body
//! carries its due time (first 8 bytes, nanoseconds since the run's epoch) so end-to-end
//! latency is measured from it too. A stalled server therefore shows up as the stall's full
//! cost on every request that should have gone out during it, instead of as one slow sample
//! (the "coordinated omission" of closed-loop load generators). Without `--rate` (0) each
//! producer sends as fast as its in-flight limit allows and a request is due when issued.
//!
//! # What is counted
//! A message belongs to the window when its due time does: `sent` counts those sent
//! successfully, `received` those delivered (whenever they arrive, the drain included).
//! Failures are counted by code (`TOO_MANY_REQUESTS`, `grpc:UNAVAILABLE`, ...), not fatal;
//! but if no send at all succeeds during the warmup (or the whole run), the run fails with
//! the codes seen. Consumers recognise this run's messages by the `comet-bench-run` user
//! property; anything else (leftovers of earlier runs) is acknowledged and counted as
//! `foreign`.
//!
//! # Modules
//! - `client`: endpoint parsing, connections, headers, QueryRoute, sessions (telemetry).
//! - `transport`: the HTTP/2 connections (hyper, called without a buffer task).
//! - `unary`: the producers' SendMessage calls, on `h2` directly.
//! - `schedule`: the rate-limited send timeline.
//! - `producer`, `consumer`: the two task loops.
//! - `stats`: counters, histograms and the serializable report.
//! - `progress`: the progress bar on stderr.

mod client;
mod consumer;
mod producer;
mod progress;
mod schedule;
mod stats;
mod transport;
mod unary;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use comet_proto::apache::rocketmq::v2::{
    ClientType, FilterExpression, FilterType, Language, Publishing, Resource, Settings,
    Subscription, SubscriptionEntry, Ua, settings::PubSub,
};
use comet_vocab::NameKind;
use comet_vocab::names;
use hdrhistogram::Histogram;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::size::ByteSize;
use client::{Session, Target};
use stats::{Live, TaskStats};

pub use stats::{BenchConfig, BenchReport, HostInfo, LatencyReport, ReceivedReport, SentReport};

/// Bench clients (producers + consumers) sharing one HTTP/2 connection.
const CLIENTS_PER_CONNECTION: usize = 4;
/// Longest the consumers may drain after the producers stop.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// Largest body the benchmark sends: the default maximum of the proxies, and the largest
/// frame the official clients accept.
const MAX_MESSAGE_SIZE: u64 = 4 << 20;
/// Largest SendMessage request (`--batch` x `--message-size`).
const MAX_REQUEST_BYTES: u64 = 64 << 20;
/// Upper bounds on the task counts: every bench client holds a telemetry stream.
const MAX_CLIENTS: usize = 4096;
const MAX_BATCH: u32 = 1024;
const MAX_INFLIGHT: usize = 4096;

/// Most runtime threads `--threads` accepts.
const MAX_THREADS: usize = 256;

/// `comet bench`: load-test a RocketMQ 5 gRPC proxy and report throughput and latency.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// gRPC address of the proxy (host:port; plain HTTP/2, no TLS).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8081")]
    pub endpoint: String,

    /// Topic to produce to and consume from; it must exist (NORMAL or MIXED).
    #[arg(long, default_value = "bench")]
    pub topic: String,

    /// Consumer group of the consumers.
    #[arg(long, default_value = "bench-group")]
    pub group: String,

    /// Producer tasks (each one bench client with its own client id).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub producers: usize,

    /// Simple-consumer tasks; 0 = produce only.
    #[arg(long, value_name = "M", default_value_t = 2)]
    pub consumers: usize,

    /// Body size of each message, e.g. 1024, 1KiB, 64KiB (at least 8 bytes, at most 4MiB).
    #[arg(long, value_name = "SIZE", default_value = "1KiB")]
    pub message_size: ByteSize,

    /// Target messages per second over all producers; 0 = as fast as possible.
    #[arg(long, value_name = "MSGS_PER_S", default_value_t = 0)]
    pub rate: u64,

    /// Length of the measured window, e.g. 30s, 2m.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Unmeasured load before the window, e.g. 2s; 0s to measure from the start.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Messages per SendMessage request.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub batch: u32,

    /// Concurrent SendMessage requests per producer.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub inflight: usize,

    /// Threads of the bench's own async runtime. One leaves the most CPU to a server on the
    /// same machine (and costs the least per message: no hand-offs between threads); raise it
    /// when the bench has a machine to itself.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,

    /// Do not draw the progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,

    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Parses a humantime duration such as `30s`, `1m 30s` or `500ms`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 30s, 2m, 500ms"))
}

/// Topic and group names the RocketMQ proxies accept: `[%|a-zA-Z0-9_-]`, bounded length.
fn check_name(flag: &str, name: &str, kind: NameKind) -> anyhow::Result<()> {
    if names::validate(kind, name).is_err() {
        bail!(
            "{flag} {name:?} is not a valid name: use 1 to {} characters from a-z A-Z 0-9 _ - % |",
            kind.max_len()
        );
    }
    Ok(())
}

impl BenchArgs {
    /// Refuses arguments the run could not honour, with the flag to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        check_name("--topic", &self.topic, NameKind::Topic)?;
        check_name("--group", &self.group, NameKind::Group)?;
        if self.producers == 0 {
            bail!("--producers must be at least 1");
        }
        if self.producers > MAX_CLIENTS || self.consumers > MAX_CLIENTS {
            bail!("--producers and --consumers are limited to {MAX_CLIENTS} each");
        }
        let size = self.message_size.0;
        if size < producer::TIMESTAMP_BYTES as u64 || size > MAX_MESSAGE_SIZE {
            bail!(
                "--message-size {} is out of range: bodies carry an 8-byte timestamp and proxies \
                 accept at most 4MiB, so use 8B..4MiB",
                self.message_size
            );
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            bail!("--batch must be between 1 and {MAX_BATCH}");
        }
        if u64::from(self.batch) * size > MAX_REQUEST_BYTES {
            bail!(
                "--batch {} x --message-size {} exceeds {} per request; lower one of them",
                self.batch,
                self.message_size,
                ByteSize(MAX_REQUEST_BYTES)
            );
        }
        if self.inflight == 0 || self.inflight > MAX_INFLIGHT {
            bail!("--inflight must be between 1 and {MAX_INFLIGHT}");
        }
        if self.duration.is_zero() {
            bail!("--duration must be longer than 0s");
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            bail!("--threads must be between 1 and {MAX_THREADS}");
        }
        Ok(())
    }
}

/// The run's time line. Every `Instant` of the run is compared against these.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// Origin of the due times embedded in bodies.
    pub epoch: Instant,
    /// End of the warmup, start of the window.
    pub warm_end: Instant,
    /// End of the window: no request is due at or after it.
    pub end: Instant,
}

impl Clock {
    fn new(epoch: Instant, warmup: Duration, duration: Duration) -> Self {
        let warm_end = epoch + warmup;
        Clock {
            epoch,
            warm_end,
            end: warm_end + duration,
        }
    }

    /// Nanoseconds from the epoch to `t` (0 before it).
    pub(crate) fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a request due at `due` belongs to the window.
    pub(crate) fn measured(&self, due: Instant) -> bool {
        due >= self.warm_end && due < self.end
    }

    /// Whether a message due `due_ns` after the epoch belongs to the window.
    pub(crate) fn measured_ns(&self, due_ns: u64) -> bool {
        due_ns >= self.ns(self.warm_end) && due_ns < self.ns(self.end)
    }
}

/// What every task of a run shares.
#[derive(Debug)]
pub(crate) struct Plan {
    pub topic: Resource,
    pub group: Resource,
    pub message_size: usize,
    pub batch: u32,
    pub inflight: usize,
    pub rate: u64,
    pub producers: usize,
    /// Random id of this run, in message ids, client ids and the run property.
    pub run: u64,
    pub born_host: String,
    pub clock: Clock,
    pub live: Live,
    /// Signalled by consumers after each receive, for the drain.
    pub consumed: Notify,
    /// Empty histogram every task clones.
    pub histogram: Histogram<u64>,
}

impl Plan {
    /// The run id as 16 upper-case hex digits.
    pub(crate) fn run_hex(&self) -> String {
        format!("{:016X}", self.run)
    }
}

/// Runs the benchmark and prints the JSON report on stdout (and to `--json`).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    run_with(args, std::io::stdout()).await.map(|_| ())
}

/// Runs the benchmark, writes the JSON report to `out` (and to `--json`) and returns it.
pub async fn run_with(args: BenchArgs, mut out: impl Write) -> anyhow::Result<BenchReport> {
    args.validate()?;
    let target = Target::parse(&args.endpoint)?;
    let host = client::hostname();
    let run = uuid::Uuid::new_v4().as_u64_pair().0;
    let histogram = stats::new_histogram()?;

    let clients = args.producers + args.consumers;
    let connections = clients.div_ceil(CLIENTS_PER_CONNECTION);
    let channels = client::connect(&target, connections).await?;
    let channel = |i: usize| channels[i % channels.len()].clone();

    let mut setup = client::client(&target, channel(0), &client::client_id(&host, run, "route"))?;
    let route = client::query_route(&mut setup, &target, &args.topic, args.consumers > 0).await?;
    tracing::info!(
        endpoint = %target.authority,
        topic = %args.topic,
        write_queues = route.write.len(),
        read_queues = route.read.len(),
        connections,
        "route resolved; starting bench clients"
    );

    let topic = client::resource(&args.topic);
    let group = client::resource(&args.group);
    let user_agent = Ua {
        language: Language::Rust as i32,
        version: client::CLIENT_VERSION.to_owned(),
        platform: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        hostname: host.clone(),
    };
    let settings = |client_type: ClientType, pub_sub: PubSub| Settings {
        client_type: Some(client_type as i32),
        access_point: Some(target.endpoints.clone()),
        request_timeout: Some(client::pb_duration(client::REQUEST_TIMEOUT)),
        pub_sub: Some(pub_sub),
        user_agent: Some(user_agent.clone()),
        ..Settings::default()
    };
    let producer_settings = settings(
        ClientType::Producer,
        PubSub::Publishing(Publishing {
            topics: vec![topic.clone()],
            max_body_size: 0,
            validate_message_type: true,
        }),
    );
    let consumer_settings = settings(
        ClientType::SimpleConsumer,
        PubSub::Subscription(Subscription {
            group: Some(group.clone()),
            subscriptions: vec![SubscriptionEntry {
                topic: Some(topic.clone()),
                expression: Some(FilterExpression {
                    r#type: FilterType::Tag as i32,
                    expression: "*".to_owned(),
                }),
            }],
            fifo: Some(false),
            receive_batch_size: Some(consumer::RECEIVE_BATCH),
            long_polling_timeout: Some(client::pb_duration(consumer::LONG_POLLING)),
            ..Subscription::default()
        }),
    );

    // Start every bench client; if any fails, end the others before reporting it.
    let ids: Vec<String> = (0..clients)
        .map(|i| {
            let name = if i < args.producers {
                format!("p{i}")
            } else {
                format!("c{}", i - args.producers)
            };
            client::client_id(&host, run, &name)
        })
        .collect();
    let mut opens = Vec::with_capacity(clients);
    for (i, id) in ids.iter().enumerate() {
        let (settings, group) = if i < args.producers {
            (producer_settings.clone(), None)
        } else {
            (consumer_settings.clone(), Some(group.clone()))
        };
        let c = client::client(&target, channel(i), id)?;
        opens.push(Session::open(c, id.clone(), settings, group));
    }
    // The producers send on connections of their own (see `unary`), shared like the others.
    let mut senders = Vec::with_capacity(args.producers);
    let send_conns = if args.producers > 0 {
        let count = args.producers.div_ceil(CLIENTS_PER_CONNECTION);
        futures::future::try_join_all(
            (0..count).map(|_| unary::open(&target.authority, client::REQUEST_TIMEOUT)),
        )
        .await
        .with_context(|| format!("opening the producers' connections to {}", target.authority))?
    } else {
        Vec::new()
    };
    for (i, id) in ids[..args.producers].iter().enumerate() {
        senders.push(producer::Sender::new(
            send_conns[i % send_conns.len()].clone(),
            &client::Headers::new(id)?,
        )?);
    }
    let mut sessions = Vec::with_capacity(clients);
    let mut first_error = None;
    for opened in futures::future::join_all(opens).await {
        match opened {
            Ok(s) => sessions.push(s),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        close_all(sessions).await;
        return Err(e.context(format!(
            "starting the bench clients against {}",
            target.authority
        )));
    }

    let plan = Arc::new(Plan {
        topic,
        group,
        message_size: usize::try_from(args.message_size.0).unwrap_or(usize::MAX),
        batch: args.batch,
        inflight: args.inflight,
        rate: args.rate,
        producers: args.producers,
        run,
        born_host: host.clone(),
        clock: Clock::new(Instant::now(), args.warmup, args.duration),
        live: Live::default(),
        consumed: Notify::new(),
        histogram,
    });
    let write_queues = Arc::new(route.write.clone());
    let read_queues = Arc::new(route.read.clone());
    let (stop_tx, stop_rx) = watch::channel(false);

    let consumer_tasks: Vec<JoinHandle<TaskStats>> = sessions[args.producers..]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(consumer::run(
                plan.clone(),
                s.client.clone(),
                i,
                read_queues.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let producer_tasks: Vec<JoinHandle<TaskStats>> = senders
        .into_iter()
        .enumerate()
        .map(|(i, sender)| {
            tokio::spawn(producer::run(
                plan.clone(),
                sender,
                i,
                write_queues.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
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
            close_all(sessions).await;
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
    if produced.total > 0 && !consumer_tasks.is_empty() {
        let deadline = drain_start + DRAIN_MAX;
        loop {
            let notified = plan.consumed.notified();
            if Live::get(&plan.live.received_measured) >= Live::get(&plan.live.sent_ok_measured) {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    sent = Live::get(&plan.live.sent_ok_measured),
                    received = Live::get(&plan.live.received_measured),
                    "consumers did not receive every message within the {DRAIN_MAX:?} drain"
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
    close_all(sessions).await;
    if produced.total == 0 {
        return Err(nothing_sent(&target, "the run", [&produced], [&consumed]));
    }

    let window = args.duration.as_secs_f64();
    let (sent_rate, sent_mb) = stats::rates(produced.measured, produced.measured_bytes, window);
    let (recv_rate, recv_mb) = stats::rates(consumed.measured, consumed.measured_bytes, window);
    let report = BenchReport {
        config: BenchConfig {
            endpoint: target.authority.clone(),
            topic: args.topic.clone(),
            group: args.group.clone(),
            producers: args.producers,
            consumers: args.consumers,
            message_size: args.message_size.0,
            rate: args.rate,
            duration_s: window,
            warmup_s: args.warmup.as_secs_f64(),
            batch: args.batch,
            inflight: args.inflight,
            write_queues: route.write.len(),
            read_queues: route.read.len(),
            connections: connections + send_conns.len(),
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

async fn close_all(sessions: Vec<Session>) {
    futures::future::join_all(sessions.into_iter().map(Session::close)).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn given_no_flags_when_parsed_should_use_the_documented_defaults() {
        let a = parse(&[]).expect("defaults parse");
        assert_eq!(a.endpoint, "127.0.0.1:8081");
        assert_eq!(
            (a.topic.as_str(), a.group.as_str()),
            ("bench", "bench-group")
        );
        assert_eq!(
            (a.producers, a.consumers, a.batch, a.inflight),
            (4, 2, 1, 16)
        );
        assert_eq!(a.message_size, ByteSize(1024));
        assert_eq!(a.rate, 0);
        assert_eq!(a.duration, Duration::from_secs(30));
        assert_eq!(a.warmup, Duration::from_secs(2));
        assert!(!a.no_progress && a.json.is_none());
        a.validate().expect("defaults are valid");
    }

    #[test]
    fn given_flags_when_parsed_should_take_units() {
        let a = parse(&[
            "--message-size",
            "4KiB",
            "--duration",
            "1m 30s",
            "--warmup",
            "500ms",
            "--rate",
            "1000",
        ])
        .expect("flags parse");
        assert_eq!(a.message_size, ByteSize(4096));
        assert_eq!(a.duration, Duration::from_secs(90));
        assert_eq!(a.warmup, Duration::from_millis(500));
        assert!(parse(&["--duration", "soon"]).is_err());
    }

    #[test]
    fn given_bad_values_when_validated_should_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--producers", "0"], "--producers"),
            (&["--message-size", "4"], "--message-size"),
            (&["--message-size", "8MiB"], "--message-size"),
            (&["--batch", "0"], "--batch"),
            (&["--batch", "1024", "--message-size", "1MiB"], "--batch"),
            (&["--inflight", "0"], "--inflight"),
            (&["--threads", "0"], "--threads"),
            (&["--duration", "0s"], "--duration"),
            (&["--topic", "a b"], "--topic"),
            (&["--group", ""], "--group"),
        ];
        for (args, flag) in cases {
            let e = parse(args)
                .expect("parses")
                .validate()
                .expect_err("invalid")
                .to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }

    #[test]
    fn given_a_clock_when_classifying_should_measure_only_the_window() {
        let epoch = Instant::now();
        let c = Clock::new(epoch, Duration::from_secs(1), Duration::from_secs(2));
        assert!(!c.measured(epoch));
        assert!(c.measured(epoch + Duration::from_secs(1)));
        assert!(c.measured(epoch + Duration::from_millis(2999)));
        assert!(!c.measured(epoch + Duration::from_secs(3)));
        assert!(!c.measured_ns(999_999_999));
        assert!(c.measured_ns(1_000_000_000));
        assert!(!c.measured_ns(3_000_000_000));
        assert_eq!(c.ns(epoch + Duration::from_millis(5)), 5_000_000);
    }
}
