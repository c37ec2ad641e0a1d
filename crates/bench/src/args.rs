//! [`BenchArgs`]: the command line of `comet-bench`, and the checks that refuse a run it
//! could not honour (each error names the flag to change).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use comet_vocab::{NameKind, names};

use crate::payload::TIMESTAMP_BYTES;
use crate::servers::SpawnMode;
use crate::size::ByteSize;

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

/// The client library the producers and consumers of a run go through.
#[derive(clap::ValueEnum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// The bench's own `apache.rocketmq.v2` calls: SendMessage on `h2` directly, the simple
    /// consumer's ReceiveMessage and batched AckMessage.
    Raw,
    /// The Comet SDK (`comet-sdk`): `Producer::send`, and a `PushConsumer` with a no-op
    /// listener.
    Sdk,
    /// The official `rocketmq` 5.0.0 crate: its `Producer` and `SimpleConsumer` (it has no
    /// push consumer), acknowledging one message per AckMessage as that crate does.
    Official,
}

impl ClientKind {
    /// Every client, in the order `--compare` runs them.
    pub const ALL: [ClientKind; 3] = [ClientKind::Raw, ClientKind::Sdk, ClientKind::Official];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Raw => "raw",
            ClientKind::Sdk => "sdk",
            ClientKind::Official => "official",
        }
    }
}

/// Load-test a RocketMQ 5 gRPC proxy and report throughput and latency.
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

    /// Client library of the producers and consumers: the bench's raw calls, the Comet SDK
    /// (push consumer), or the official rocketmq 5.0.0 crate (simple consumer).
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    pub client: ClientKind,

    /// Run raw, sdk and official back to back with the same flags against the same endpoint
    /// and print one table with their ratios (the reports go to --json).
    #[arg(long, conflicts_with = "client")]
    pub compare: bool,

    /// Producer tasks (each one bench client with its own client id).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub producers: usize,

    /// Consumer tasks; 0 = produce only.
    #[arg(long, value_name = "M", default_value_t = 2)]
    pub consumers: usize,

    /// Consume a backlog: the consumers start when the producers' window ends and the
    /// received rate is taken over the time they need to receive it.
    #[arg(long)]
    pub backlog: bool,

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

    /// Start the servers for this run (on 127.0.0.1, random ports; topics auto-created with 8
    /// queues) instead of using --endpoint: one `comet standalone` process, or a `comet
    /// controller`, `comet broker` and `comet proxy` process each (Cluster mode). The report
    /// then carries each server's CPU time per message ("servers").
    #[arg(long, value_enum, value_name = "MODE", conflicts_with = "compare")]
    pub spawn: Option<SpawnMode>,

    /// The comet binary --spawn runs (default: `comet` beside this executable).
    #[arg(long, value_name = "FILE")]
    pub comet_bin: Option<PathBuf>,

    /// Measure what recording metrics costs the servers: start two --spawn deployments, one
    /// with `metrics.enabled=true` and one with `false`, and run ROUNDS rounds of --duration
    /// against each in turn (the order alternating); prints both send rates, their servers'
    /// CPU per message and the on/off ratios.
    #[arg(
        long,
        value_name = "ROUNDS",
        requires = "spawn",
        value_parser = clap::value_parser!(u32).range(1..=100)
    )]
    pub metrics_overhead: Option<u32>,

    /// Lite topics at scale instead of a load run (needs `--spawn standalone`): one message
    /// to each of N lite topics of a LITE topic, the node's memory per lite topic, the send
    /// and receive rates (10,000 subscribed at most) and the delivery time to one lite topic
    /// among N.
    #[arg(long, value_name = "N", requires = "spawn", conflicts_with = "compare")]
    pub lite_topics: Option<usize>,

    /// A server setting for --spawn, passed on as `--set KEY=VALUE` (repeatable), e.g.
    /// `--server-set broker.flush=sync`.
    #[arg(long = "server-set", value_name = "KEY=VALUE")]
    pub server_set: Vec<String>,

    /// Access key (user name) the raw and official clients sign every call with, as the
    /// official clients do (HMAC-SHA1 of x-mq-date-time); needs --secret-key.
    #[arg(long, value_name = "AK", requires = "secret_key")]
    pub access_key: Option<String>,

    /// Secret key (password) of --access-key.
    #[arg(
        long,
        value_name = "SK",
        requires = "access_key",
        hide_env_values = true
    )]
    pub secret_key: Option<String>,

    /// Auth overhead in one run: spawn two `comet standalone` servers, one with auth off and
    /// one with auth on (a bootstrap super user, then a normal user with an ACL allowing only
    /// Pub on --topic, whose credentials the bench signs with), alternate --auth-rounds runs
    /// of --duration on each, and print both rates, their ratio and the servers' CPU per
    /// message. Uses --comet-bin like --spawn.
    #[arg(long, conflicts_with_all = ["compare", "spawn", "access_key"])]
    pub auth_compare: bool,

    /// Rounds per side of --auth-compare (off, on, off, on, ...).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub auth_rounds: u32,
}

/// Parses a humantime duration such as `30s`, `1m 30s` or `500ms`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 30s, 2m, 500ms"))
}

/// Topic and group names the RocketMQ proxies accept (`comet_vocab::names`).
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
        if self.backlog && self.consumers == 0 {
            bail!("--backlog measures consumers: give --consumers 1 or more");
        }
        let size = self.message_size.0;
        if size < TIMESTAMP_BYTES as u64 || size > MAX_MESSAGE_SIZE {
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
        if (self.comet_bin.is_some() || !self.server_set.is_empty())
            && self.spawn.is_none()
            && !self.auth_compare
        {
            bail!("--comet-bin and --server-set go with --spawn or --auth-compare");
        }
        if self.access_key.is_some() && self.client == ClientKind::Sdk {
            bail!(
                "--access-key signs the raw and official clients' calls; use --client raw or official"
            );
        }
        if self.auth_compare && (self.client == ClientKind::Sdk || self.auth_rounds == 0) {
            bail!("--auth-compare runs the raw or official client for 1 or more --auth-rounds");
        }
        if self.auth_compare && self.consumers > 0 {
            bail!("--auth-compare measures single sends: give --consumers 0");
        }
        if self.lite_topics == Some(0) {
            bail!("--lite-topics must be at least 1");
        }
        if let Some(bad) = self.server_set.iter().find(|kv| !kv.contains('=')) {
            bail!("--server-set {bad:?}: expected section.key=value, e.g. broker.flush=sync");
        }
        Ok(())
    }
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
        assert_eq!(a.client, ClientKind::Raw);
        assert!(!a.compare && !a.backlog);
        assert!(a.spawn.is_none() && a.comet_bin.is_none() && a.server_set.is_empty());
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
    fn given_a_client_flag_when_parsed_should_pick_it_and_refuse_it_with_compare() {
        assert_eq!(
            parse(&["--client", "sdk"]).expect("parses").client,
            ClientKind::Sdk
        );
        assert_eq!(
            parse(&["--client", "official"]).expect("parses").client,
            ClientKind::Official
        );
        assert!(parse(&["--client", "java"]).is_err());
        assert!(parse(&["--compare"]).expect("parses").compare);
        assert!(parse(&["--compare", "--client", "sdk"]).is_err());
    }

    #[test]
    fn given_spawn_flags_when_parsed_should_pick_the_mode_and_refuse_compare() {
        let a =
            parse(&["--spawn", "cluster", "--server-set", "broker.flush=sync"]).expect("parses");
        assert_eq!(a.spawn, Some(SpawnMode::Cluster));
        assert_eq!(a.server_set, vec!["broker.flush=sync".to_owned()]);
        assert_eq!(
            parse(&["--spawn", "standalone"]).expect("parses").spawn,
            Some(SpawnMode::Standalone)
        );
        assert!(parse(&["--spawn", "cluster", "--compare"]).is_err());
        let alone = parse(&["--comet-bin", "/x/comet"]).expect("parses");
        assert!(alone.validate().is_err(), "--comet-bin needs --spawn");
        assert!(parse(&["--spawn", "mesh"]).is_err());
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
            (&["--backlog", "--consumers", "0"], "--backlog"),
            (
                &["--spawn", "cluster", "--server-set", "nokey"],
                "--server-set",
            ),
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
}
