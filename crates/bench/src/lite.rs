//! `--lite-topics N`: lite topics (RIP-83) at scale on a `--spawn standalone` node.
//!
//! 1. Creates the LITE parent topic [`PARENT`] (8 queues) with `comet topic create`.
//! 2. Sends one message to each of `N` lite topics (`l0`..), `--producers` tasks sending
//!    batches of [`BATCH`]: the send rate, and the node's memory growth per lite topic
//!    (`VmRSS` and `RssAnon` of `/proc/<pid>/status` before and after; `RssAnon` leaves out
//!    the memory-mapped commitlog, so it is the index and consumer state).
//! 3. One client subscribes to the first `min(N, 10,000)` of them (the proxy's default
//!    `lite_subscription_quota`) and receives and acknowledges their messages: the receive
//!    rate.
//! 4. Another client subscribes to one more lite topic; [`PROBES`] times, with its receive
//!    waiting, one message is sent to that lite topic: the time from the send to the delivery,
//!    with `N` lite topics on the broker.
//!
//! Prints a [`LiteReport`] as JSON (and writes it to `--json`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use comet_proto::apache::rocketmq::v2 as pb;
use pb::messaging_service_client::MessagingServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::args::BenchArgs;
use crate::servers::{Servers, SpawnMode, default_comet_bin};

/// The LITE parent topic the run creates.
pub(crate) const PARENT: &str = "lite-bench";
const GROUP: &str = "lite-bench-group";
/// Messages per SendMessage request of the send phase.
const BATCH: usize = 64;
/// Lite topics the receiving client subscribes to at most (the proxy's default quota).
const SUBSCRIBED_MAX: usize = 10_000;
/// Deliveries timed in step 4.
const PROBES: usize = 20;
/// Bound of the receive phase and of each wait.
const LIMIT: Duration = Duration::from_secs(300);

/// What `--lite-topics` measured.
#[derive(Serialize, Debug, Clone)]
pub struct LiteReport {
    /// Lite topics created (one message each).
    pub lite_topics: usize,
    /// Body size of every message.
    pub message_size: u64,
    /// Messages per second of the send phase.
    pub send_msgs_per_s: f64,
    /// Growth of the node's resident memory per lite topic, in bytes (`VmRSS`, mapped
    /// commitlog pages included).
    pub rss_bytes_per_lite_topic: f64,
    /// Growth of its anonymous memory per lite topic, in bytes (`RssAnon`: heap, so the index).
    pub anon_bytes_per_lite_topic: f64,
    /// Lite topics the receiving client subscribed to.
    pub subscribed: usize,
    /// Time of that SyncLiteSubscription, in ms.
    pub subscribe_ms: f64,
    /// Messages per second received and acknowledged from the subscribed lite topics.
    pub receive_msgs_per_s: f64,
    /// Send-to-delivery time of a message to one lite topic among `lite_topics`, in ms.
    pub deliver_one_ms_p50: f64,
    /// The slowest of those deliveries, in ms.
    pub deliver_one_ms_max: f64,
}

fn request<T>(client: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = client.parse() {
        r.metadata_mut().insert("x-mq-client-id", v);
    }
    r
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    })
}

fn lite_message(lite: &str, body: &bytes::Bytes) -> pb::Message {
    pb::Message {
        topic: resource(PARENT),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            message_id: uuid::Uuid::new_v4().simple().to_string(),
            message_type: pb::MessageType::Lite as i32,
            lite_topic: Some(lite.to_owned()),
            body_encoding: pb::Encoding::Identity as i32,
            born_host: "comet-bench".to_owned(),
            ..Default::default()
        }),
        body: body.clone(),
    }
}

fn ok(s: Option<&pb::Status>) -> bool {
    s.is_some_and(|s| s.code == pb::Code::Ok as i32)
}

/// `VmRSS` and `RssAnon` of a process, in bytes.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (needs Linux)"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| anyhow!("/proc/{pid}/status has no {name}"))
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?))
}

async fn create_parent(bin: &Path, admin: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(bin)
        .args(["topic", "create", PARENT, "--type", "lite", "--queues", "8"])
        .args(["--controller", admin])
        .output()
        .await
        .with_context(|| format!("running `{} topic create`", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`comet topic create {PARENT} --type lite` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

async fn sync(
    c: &mut MessagingServiceClient<Channel>,
    client: &str,
    action: pb::LiteSubscriptionAction,
    lites: Vec<String>,
) -> anyhow::Result<()> {
    let r = c
        .sync_lite_subscription(request(
            client,
            pb::SyncLiteSubscriptionRequest {
                action: action as i32,
                topic: resource(PARENT),
                group: resource(GROUP),
                lite_topic_set: lites,
                version: None,
                offset_option: None,
            },
        ))
        .await?
        .into_inner();
    if !ok(r.status.as_ref()) {
        bail!("SyncLiteSubscription refused: {:?}", r.status);
    }
    Ok(())
}

/// One receive of `client` (batch 32); acknowledges what it got; returns how many.
async fn receive_and_ack(
    c: &mut MessagingServiceClient<Channel>,
    client: &str,
    long_poll: Duration,
) -> anyhow::Result<usize> {
    let mut stream = c
        .receive_message(request(
            client,
            pb::ReceiveMessageRequest {
                group: resource(GROUP),
                message_queue: Some(pb::MessageQueue {
                    topic: resource(PARENT),
                    id: -1,
                    ..Default::default()
                }),
                filter_expression: Some(pb::FilterExpression {
                    r#type: pb::FilterType::Tag as i32,
                    expression: "*".to_owned(),
                }),
                batch_size: 32,
                invisible_duration: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                auto_renew: false,
                long_polling_timeout: Some(long_poll.try_into()?),
                attempt_id: None,
            },
        ))
        .await?
        .into_inner();
    let mut entries = Vec::new();
    while let Some(frame) = stream.message().await? {
        if let Some(pb::receive_message_response::Content::Message(m)) = frame.content {
            let sys = m.system_properties.unwrap_or_default();
            entries.push(pb::AckMessageEntry {
                message_id: sys.message_id,
                receipt_handle: sys.receipt_handle.unwrap_or_default(),
                lite_topic: sys.lite_topic,
            });
        }
    }
    let n = entries.len();
    if n > 0 {
        let r = c
            .ack_message(request(
                client,
                pb::AckMessageRequest {
                    group: resource(GROUP),
                    topic: resource(PARENT),
                    entries,
                },
            ))
            .await?
            .into_inner();
        if !ok(r.status.as_ref()) {
            bail!("AckMessage refused: {:?}", r.status);
        }
    }
    Ok(n)
}

/// Runs `--lite-topics` (see the module docs) and prints its report.
///
/// # Errors
/// Without `--spawn standalone`, or when a server or call fails.
pub async fn lite_with(
    args: BenchArgs,
    lite_topics: usize,
    mut out: impl std::io::Write,
) -> anyhow::Result<LiteReport> {
    if args.spawn != Some(SpawnMode::Standalone) {
        bail!("--lite-topics needs --spawn standalone: it reads the node's memory from /proc");
    }
    let bin = args.comet_bin.clone().unwrap_or_else(default_comet_bin);
    let servers = Servers::start(SpawnMode::Standalone, &bin, &args.server_set).await?;
    let result = measure(&args, lite_topics, &bin, &servers).await;
    servers.stop().await;
    let report = result?;
    let json = serde_json::to_string_pretty(&report)?;
    writeln!(out, "{json}")?;
    if let Some(path) = &args.json {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

async fn measure(
    args: &BenchArgs,
    n: usize,
    bin: &Path,
    servers: &Servers,
) -> anyhow::Result<LiteReport> {
    let admin = servers.controller.clone();
    if admin.is_empty() {
        return Err(anyhow!("the node announced no controller address"));
    }
    let pid = servers
        .pid("standalone")
        .ok_or_else(|| anyhow!("no standalone process"))?;
    create_parent(bin, &admin).await?;
    let channel = Channel::from_shared(format!("http://{}", servers.endpoint))?
        .connect()
        .await
        .context("connecting to the proxy")?;
    let client = MessagingServiceClient::new(channel)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    let body = bytes::Bytes::from(vec![b'x'; usize::try_from(args.message_size.0)?]);
    // The topic reaches the proxy's metadata shortly after its creation.
    let started = Instant::now();
    loop {
        let r = client
            .clone()
            .send_message(request(
                "lite-bench-producer",
                pb::SendMessageRequest {
                    messages: vec![lite_message("warm-up", &body)],
                },
            ))
            .await?
            .into_inner();
        if ok(r.status.as_ref()) {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the LITE topic did not become usable: {:?}", r.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (rss0, anon0) = memory(pid)?;

    // 2. One message to each of n lite topics.
    let next = Arc::new(AtomicUsize::new(0));
    let send_start = Instant::now();
    let tasks: Vec<_> = (0..args.producers.max(1))
        .map(|p| {
            let (mut c, next, body) = (client.clone(), Arc::clone(&next), body.clone());
            tokio::spawn(async move {
                let id = format!("lite-bench-producer-{p}");
                loop {
                    let from = next.fetch_add(BATCH, Ordering::Relaxed);
                    if from >= n {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let messages = (from..(from + BATCH).min(n))
                        .map(|i| lite_message(&format!("l{i}"), &body))
                        .collect();
                    let r = c
                        .send_message(request(&id, pb::SendMessageRequest { messages }))
                        .await?
                        .into_inner();
                    if !ok(r.status.as_ref()) {
                        bail!("send refused: {:?}", r.status);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let send_s = send_start.elapsed().as_secs_f64();
    let (rss1, anon1) = memory(pid)?;
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / n.max(1) as f64;

    // 3. Subscribe to up to 10,000 of them; receive and acknowledge.
    let subscribed = n.min(SUBSCRIBED_MAX);
    let mut c = client.clone();
    let sub_start = Instant::now();
    let names: Vec<String> = (0..subscribed).map(|i| format!("l{i}")).collect();
    sync(
        &mut c,
        "lite-bench-consumer",
        pb::LiteSubscriptionAction::CompleteAdd,
        names,
    )
    .await?;
    let subscribe_ms = sub_start.elapsed().as_secs_f64() * 1e3;
    let recv_start = Instant::now();
    let mut received = 0;
    while received < subscribed {
        if recv_start.elapsed() > LIMIT {
            bail!("received {received} of {subscribed} within {LIMIT:?}");
        }
        received += receive_and_ack(&mut c, "lite-bench-consumer", Duration::from_secs(1)).await?;
    }
    let receive_s = recv_start.elapsed().as_secs_f64();

    // 4. One lite topic among n: send → delivery.
    let probe = "lite-bench-probe";
    let mut pc = client.clone();
    sync(
        &mut pc,
        probe,
        pb::LiteSubscriptionAction::PartialAdd,
        vec!["probe".to_owned()],
    )
    .await?;
    let mut times = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        let mut rc = client.clone();
        let waiting = tokio::spawn(async move {
            let mut got = 0;
            let start = Instant::now();
            while got == 0 && start.elapsed() < LIMIT {
                got = receive_and_ack(&mut rc, probe, Duration::from_secs(10)).await?;
            }
            Ok::<Instant, anyhow::Error>(Instant::now())
        });
        // Let the receive reach the broker and wait there.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = Instant::now();
        let r = pc
            .send_message(request(
                "lite-bench-producer",
                pb::SendMessageRequest {
                    messages: vec![lite_message("probe", &body)],
                },
            ))
            .await?
            .into_inner();
        if !ok(r.status.as_ref()) {
            bail!("probe send refused: {:?}", r.status);
        }
        let delivered = waiting.await??;
        times.push(delivered.duration_since(sent).as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(LiteReport {
        lite_topics: n,
        message_size: args.message_size.0,
        send_msgs_per_s: n as f64 / send_s.max(1e-9),
        rss_bytes_per_lite_topic: per(rss0, rss1),
        anon_bytes_per_lite_topic: per(anon0, anon1),
        subscribed,
        subscribe_ms,
        receive_msgs_per_s: subscribed as f64 / receive_s.max(1e-9),
        deliver_one_ms_p50: times[times.len() / 2],
        deliver_one_ms_max: times.last().copied().unwrap_or(0.0),
    })
}
