//! Server configuration: one [`Config`] for every role, layered
//! defaults < TOML file < `COMET_*` environment < command-line flags.
//!
//! # Layering
//! 1. Built-in defaults ([`Config::default`]): a zero-config single node on 127.0.0.1.
//! 2. The TOML file given by `--config` or `COMET_CONFIG` (optional). Unknown keys are errors,
//!    reported with their path, so a typo never silently keeps a default.
//! 3. Environment variables `COMET_<KEY>` for top-level keys and `COMET_<SECTION>_<KEY>` for
//!    section keys, e.g. `COMET_DATA_DIR`, `COMET_PROXY_LISTEN`, `COMET_BROKER_FLUSH`. A value
//!    is read as a TOML value when it parses as one (`8`, `true`, `["a", "b"]`) and as a string
//!    otherwise. A variable naming an unknown key of a known section is an error; other `COMET_*`
//!    variables (e.g. `COMET_CONFIG`) are not settings and are left alone.
//! 4. Flags: the role's dedicated flags and any number of `--set section.key=value`.
//!
//! The merged TOML tree is deserialized once at the end, so every layer is checked by the same
//! rules and an error names the offending key. `deploy/comet.example.toml` documents every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use comet_vocab::{limits, names};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::size::ByteSize;

/// The sections of the config file; `COMET_<SECTION>_<KEY>` variables are matched against them.
const SECTIONS: [&str; 9] = [
    "log",
    "proxy",
    "broker",
    "controller",
    "metrics",
    "tracing",
    "auth",
    "tls",
    "console",
];

/// Everything a Comet process can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Root data directory; `standalone` keeps `controller/` and `broker/` below it, `broker`
    /// and `controller` use their own subdirectory of it.
    pub data_dir: PathBuf,
    /// Controller addresses (`host:port`) that a separate `comet proxy` or `comet broker`
    /// process, and the admin commands, talk to.
    pub controllers: Vec<String>,
    pub log: LogSection,
    pub proxy: ProxySection,
    pub broker: BrokerSection,
    pub controller: ControllerSection,
    pub metrics: MetricsSection,
    pub tracing: TracingSection,
    pub auth: AuthSection,
    pub tls: TlsSection,
    pub console: ConsoleSection,
}

/// Users, ACLs and request signatures (see the README's Security section).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Verify every proxy RPC and admin call (signature + ACL); off: everything is allowed.
    pub enabled: bool,
    /// Refuse requests whose `x-mq-date-time` is further than this from the server clock
    /// ("0s" = no check, the default: the Python client writes local time labelled `Z`).
    pub max_clock_skew: HumanDuration,
    /// The cluster key sealing user secrets at rest: 64 hex digits or base64 of 32 bytes.
    /// Give every controller and proxy the same key.
    pub cluster_key: String,
    /// A file holding the cluster key (instead of `cluster_key`).
    pub cluster_key_file: String,
    /// Former cluster keys, still accepted to open secrets sealed before a rotation.
    pub previous_cluster_keys: Vec<String>,
    /// The first admin user (a super user), created on the cluster's first start only.
    pub bootstrap_username: String,
    pub bootstrap_password: String,
    /// The credentials this process signs its admin calls with (the `comet` admin commands;
    /// `COMET_USERNAME` / `COMET_PASSWORD` and `--auth-username` / `--auth-password` win).
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &str| if s.is_empty() { "" } else { "<hidden>" };
        f.debug_struct("AuthSection")
            .field("enabled", &self.enabled)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("cluster_key", &hidden(&self.cluster_key))
            .field("cluster_key_file", &self.cluster_key_file)
            .field("previous_cluster_keys", &self.previous_cluster_keys.len())
            .field("bootstrap_username", &self.bootstrap_username)
            .field("bootstrap_password", &hidden(&self.bootstrap_password))
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .finish()
    }
}

/// TLS of the proxy's client port, and (`internal_*`) mutual TLS of the internal links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// `disabled` (plaintext), `permissive` (TLS and plaintext on one port) or `enforcing`.
    pub mode: String,
    /// PEM certificate chain (leaf first) and its private key.
    pub cert_chain: String,
    pub private_key: String,
    /// PEM CA whose certificates clients must present (mutual TLS); empty: none asked for.
    pub client_ca: String,
    /// How often the files are looked at for a renewed certificate (new connections get it;
    /// open ones keep theirs). Applies to the internal files too.
    pub reload_interval: HumanDuration,
    /// Internal links (proxy → broker, broker → controller, controller ↔ controller, broker ↔
    /// broker replication, admin commands): `disabled` (plaintext), `permissive` (listeners
    /// take both, clients dial TLS and fall back to plaintext for a peer without TLS) or
    /// `enforcing` (TLS only, both ways).
    pub internal_mode: String,
    /// PEM cluster CA: the only issuer trusted on internal links, both ways.
    pub internal_ca: String,
    /// PEM certificate chain and key of this node, issued by the cluster CA, presented as
    /// server and as client; its SANs must hold the node's advertised host names.
    pub internal_cert_chain: String,
    pub internal_private_key: String,
    /// The name every peer's certificate must carry; empty: the host of the address dialed.
    pub internal_server_name: String,
}

/// Logging to stderr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter: `info`, `warn`, `comet_broker=debug,info`, ... (`RUST_LOG` wins).
    pub level: String,
    /// `text` (human) or `json` (one object per line).
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The public gRPC endpoint (`apache.rocketmq.v2.MessagingService`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Address to listen on.
    pub listen: String,
    /// `host:port` clients are told to use in routes; empty = the bound listen address.
    pub advertised_endpoint: String,
    /// Largest message body accepted (the official clients cap inbound frames at 4 MiB).
    pub max_body_size: ByteSize,
    /// Most user properties per message.
    pub max_user_properties: usize,
    /// Largest total size of a message's user property keys and values.
    pub max_user_property_size: ByteSize,
    /// Shortest and longest long-polling time granted to a receive.
    pub long_polling_min: HumanDuration,
    pub long_polling_max: HumanDuration,
    /// Accepted invisible durations on receive, and the one used when a client sends none.
    /// The broker applies the same bounds (`invisible_max`, `invisible_default`): a broker
    /// process reads them from its own config, so give proxies and brokers the same values.
    pub invisible_min: HumanDuration,
    pub invisible_max: HumanDuration,
    pub invisible_default: HumanDuration,
    /// Create unknown topics on first use (off: topics are created explicitly).
    pub auto_create_topics: bool,
    /// Queues of an auto-created topic.
    pub default_queue_count: u32,
    /// Furthest in the future a delay message's delivery time may lie.
    pub max_delivery_delay: HumanDuration,
    /// Threads serving client connections (each a single-threaded runtime); 0 = one per CPU.
    pub io_threads: usize,
    /// The link to brokers (`comet proxy`; standalone calls its broker in process): HTTP/2
    /// connections each proxy thread opens to each broker.
    pub link_connections_per_thread: usize,
    /// Calls to one broker in flight per proxy thread; SendMessage calls (and, separately,
    /// acks and invisible-time changes) arriving while all are busy wait and leave together
    /// as one call.
    pub link_calls_in_flight: usize,
    /// Most messages (ack entries) and bytes in one combined call.
    pub link_call_max_messages: usize,
    pub link_call_max_bytes: ByteSize,
    /// Most messages (ack entries) and bytes waiting per proxy thread and broker; beyond them
    /// a call is answered TOO_MANY_REQUESTS (nothing is sent).
    pub link_queue_max_messages: usize,
    pub link_queue_max_bytes: ByteSize,
    /// A broker connect (TCP and HTTP/2 handshake) gives up after this long.
    pub link_connect_timeout: HumanDuration,
    /// Each link connection sends an HTTP/2 PING this often ("0s": never); one unanswered
    /// for link_keepalive_timeout closes the connection, and the next call opens a new one.
    pub link_keepalive_interval: HumanDuration,
    pub link_keepalive_timeout: HumanDuration,
    /// Lite consumers: most lite topics one client may subscribe to on a parent topic.
    pub lite_subscription_quota: u32,
    /// Longest lite topic name, in bytes.
    pub max_lite_topic_size: usize,
}

impl ProxySection {
    /// The proxy's link to brokers as these settings describe it (plaintext: the caller sets
    /// `tls` from the `[tls]` section's internal settings).
    pub fn link_options(&self) -> comet_proxy::link::LinkOptions {
        let size = |b: ByteSize| usize::try_from(b.0).unwrap_or(usize::MAX);
        comet_proxy::link::LinkOptions {
            connect_timeout: self.link_connect_timeout.0,
            connections_per_thread: self.link_connections_per_thread,
            combine: comet_proxy::link::CombineLimits {
                calls_in_flight: self.link_calls_in_flight,
                max_call_messages: self.link_call_max_messages,
                max_call_bytes: size(self.link_call_max_bytes),
                max_queued_messages: self.link_queue_max_messages,
                max_queued_bytes: size(self.link_queue_max_bytes),
            },
            keepalive_interval: self.link_keepalive_interval.0,
            keepalive_timeout: self.link_keepalive_timeout.0,
            tls: comet_auth::Connector::plaintext(),
        }
    }
}

/// How the broker flushes its commitlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// Acknowledge after the write reaches the page cache; flush every `flush_interval`.
    Async,
    /// Acknowledge after an fdatasync covering the write (group commit).
    Sync,
}

/// A storage node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    /// Address of the internal BrokerService (proxies connect here in cluster mode).
    pub listen: String,
    /// `host:port` registered with the controller and shown as store host; empty = bound address.
    pub advertised_addr: String,
    /// The broker set this broker belongs to.
    pub broker_set: String,
    /// This broker's id within its set.
    pub broker_id: u64,
    pub flush: FlushMode,
    /// ASYNC flush period.
    pub flush_interval: HumanDuration,
    /// SYNC: how long an append may wait for its fdatasync before it fails.
    pub sync_flush_timeout: HumanDuration,
    /// Commitlog segment size (fixed once the store exists).
    pub segment_size: ByteSize,
    /// Segments whose last write is older than this are deleted (RocketMQ `fileReservedTime`).
    pub file_reserved_time: HumanDuration,
    /// Above this used fraction of the data disk the oldest segments are deleted whatever
    /// their age.
    pub disk_high_watermark: f64,
    /// Above this used fraction of the data disk sends are refused (RocketMQ
    /// `diskMaxUsedSpaceRatio`); nothing already stored is lost.
    pub disk_refuse_watermark: f64,
    /// Redeliveries before a message goes to `%DLQ%<group>`, for groups without their own setting.
    pub max_retries: u32,
    /// When an unacknowledged message is delivered again.
    pub redelivery: Redelivery,
    /// Furthest in the future a delay message's delivery time may lie.
    pub max_delivery_delay: HumanDuration,
    /// Granularity of the on-disk timer wheel (fixed once the timer store exists).
    pub timer_slot: HumanDuration,
    /// Age of an unresolved half (transactional) message at its first check-back.
    pub transaction_timeout: HumanDuration,
    /// Interval between check-backs of the same unresolved transaction.
    pub transaction_check_interval: HumanDuration,
    /// Check-backs before an unresolved half message is discarded.
    pub transaction_max_checks: u32,
    /// When a send to the master of a replicated broker set (`comet broker`) is acknowledged.
    pub replication_mode: ReplicationModeKey,
    /// SYNC: fewest members of the sync-state set (the master included) a send needs.
    pub min_in_sync_replicas: u32,
    /// SYNC: longest wait for the in-sync replicas before SLAVE_PERSISTENCE_TIMEOUT.
    pub sync_replication_timeout: HumanDuration,
    /// A replica that has not caught up for this long leaves the sync-state set.
    pub replica_max_lag_time: HumanDuration,
    /// A replica this far behind leaves the sync-state set ("0B" = no byte limit).
    pub replica_max_lag_bytes: ByteSize,
    /// Target size of one replication chunk.
    pub replication_chunk_size: ByteSize,
    /// Quiet time after which the master sends replicas a heartbeat.
    pub replication_heartbeat_interval: HumanDuration,
    /// How often replicas adopt the master's consume offsets.
    pub consumer_offsets_sync_interval: HumanDuration,
    /// Broadcast consumer groups: how long a client that stopped receiving keeps its position.
    pub broadcast_client_ttl: HumanDuration,
    /// Lite topics: a lite topic without a new message for this long is removed.
    pub lite_topic_ttl: HumanDuration,
    /// Most lite topics one broker holds.
    pub max_lite_topics: usize,
}

/// `broker.replication_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationModeKey {
    /// Acknowledge after the master's own write.
    Async,
    /// Acknowledge after every in-sync replica holds the message.
    Sync,
}

/// When a message whose invisible time expired becomes visible again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Redelivery {
    /// At the invisible deadline plus the group's backoff for that attempt.
    GroupBackoff,
    /// At the invisible deadline (RocketMQ 5 POP: the invisible time is the backoff).
    InvisibleTime,
}

/// A metadata (Raft) node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerSection {
    /// Address of the ControllerService (admin commands, brokers, proxies, Raft peers).
    pub listen: String,
    /// `host:port` peers and clients use for this node; empty = bound address.
    pub advertised_addr: String,
    pub node_id: u64,
    pub cluster_name: String,
    /// A broker that has not heartbeated for this long leaves the routes; a master that lapsed
    /// is replaced by an in-sync replica.
    pub broker_lease: HumanDuration,
    /// Initial members of a new multi-node cluster as `id=host:port`; empty = single node.
    pub peers: Vec<String>,
    /// Start on an empty data directory without creating a cluster: wait to be added with
    /// `comet cluster add-member` (excludes `peers`).
    pub join: bool,
    /// NameServer-compatible remoting endpoint (RocketMQ 4.x clients, tools, brokers); empty =
    /// off.
    pub remoting_listen: String,
    /// Raft leader heartbeat period.
    pub heartbeat_interval: HumanDuration,
    /// Raft election timeout range: a follower that hears no leader for `election_timeout_max`
    /// (the leader lease) plus a random time in [min, max) starts an election.
    pub election_timeout_min: HumanDuration,
    pub election_timeout_max: HumanDuration,
    /// Elect a master from outside the sync-state set when no in-sync replica is alive (may
    /// lose acknowledged messages).
    pub enable_unclean_election: bool,
    /// Local IP address of outgoing Raft connections to the peers; empty = the OS picks.
    pub raft_source_ip: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("comet-data"),
            controllers: vec!["127.0.0.1:9878".to_owned()],
            log: LogSection::default(),
            proxy: ProxySection::default(),
            broker: BrokerSection::default(),
            controller: ControllerSection::default(),
            metrics: MetricsSection::default(),
            tracing: TracingSection::default(),
            auth: AuthSection::default(),
            tls: TlsSection::default(),
            console: ConsoleSection::default(),
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            enabled: false,
            max_clock_skew: Duration::ZERO.into(),
            cluster_key: String::new(),
            cluster_key_file: String::new(),
            previous_cluster_keys: Vec::new(),
            bootstrap_username: String::new(),
            bootstrap_password: String::new(),
            username: String::new(),
            password: String::new(),
        }
    }
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            mode: "disabled".to_owned(),
            cert_chain: String::new(),
            private_key: String::new(),
            client_ca: String::new(),
            reload_interval: Duration::from_secs(10).into(),
            internal_mode: "disabled".to_owned(),
            internal_ca: String::new(),
            internal_cert_chain: String::new(),
            internal_private_key: String::new(),
            internal_server_name: String::new(),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl Default for ProxySection {
    fn default() -> Self {
        let link = comet_proxy::link::LinkOptions::default();
        ProxySection {
            listen: "127.0.0.1:8081".to_owned(),
            advertised_endpoint: String::new(),
            max_body_size: ByteSize((4 << 20) - (64 << 10)),
            max_user_properties: 128,
            max_user_property_size: ByteSize(16 << 10),
            long_polling_min: Duration::from_secs(1).into(),
            long_polling_max: Duration::from_secs(20).into(),
            invisible_min: limits::INVISIBLE_MIN.into(),
            invisible_max: limits::INVISIBLE_MAX.into(),
            invisible_default: limits::INVISIBLE_DEFAULT.into(),
            auto_create_topics: false,
            default_queue_count: 8,
            max_delivery_delay: limits::MAX_DELIVERY_DELAY.into(),
            io_threads: 0,
            link_connections_per_thread: link.connections_per_thread,
            link_calls_in_flight: link.combine.calls_in_flight,
            link_call_max_messages: link.combine.max_call_messages,
            link_call_max_bytes: ByteSize(link.combine.max_call_bytes as u64),
            link_queue_max_messages: link.combine.max_queued_messages,
            link_queue_max_bytes: ByteSize(link.combine.max_queued_bytes as u64),
            link_connect_timeout: link.connect_timeout.into(),
            link_keepalive_interval: link.keepalive_interval.into(),
            link_keepalive_timeout: link.keepalive_timeout.into(),
            lite_subscription_quota: 10_000,
            max_lite_topic_size: 64,
        }
    }
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            listen: "127.0.0.1:10911".to_owned(),
            advertised_addr: String::new(),
            broker_set: "broker-a".to_owned(),
            broker_id: 0,
            flush: FlushMode::Async,
            flush_interval: Duration::from_millis(500).into(),
            sync_flush_timeout: Duration::from_secs(5).into(),
            segment_size: ByteSize(1 << 30),
            file_reserved_time: Duration::from_secs(72 * 3600).into(),
            disk_high_watermark: 0.85,
            disk_refuse_watermark: 0.90,
            max_retries: limits::DEFAULT_MAX_RETRIES,
            redelivery: Redelivery::GroupBackoff,
            max_delivery_delay: limits::MAX_DELIVERY_DELAY.into(),
            timer_slot: Duration::from_secs(1).into(),
            transaction_timeout: Duration::from_secs(6).into(),
            transaction_check_interval: Duration::from_secs(60).into(),
            transaction_max_checks: 15,
            replication_mode: ReplicationModeKey::Async,
            min_in_sync_replicas: 1,
            sync_replication_timeout: Duration::from_secs(2).into(),
            replica_max_lag_time: Duration::from_secs(3).into(),
            replica_max_lag_bytes: ByteSize(256 << 20),
            replication_chunk_size: ByteSize(1 << 20),
            replication_heartbeat_interval: Duration::from_millis(500).into(),
            consumer_offsets_sync_interval: Duration::from_secs(1).into(),
            broadcast_client_ttl: Duration::from_secs(3600).into(),
            lite_topic_ttl: Duration::from_secs(86_400).into(),
            max_lite_topics: 1_000_000,
        }
    }
}

impl Default for ControllerSection {
    fn default() -> Self {
        ControllerSection {
            listen: "127.0.0.1:9878".to_owned(),
            advertised_addr: String::new(),
            node_id: 1,
            cluster_name: "DefaultCluster".to_owned(),
            broker_lease: Duration::from_secs(3).into(),
            peers: Vec::new(),
            join: false,
            remoting_listen: "127.0.0.1:9876".to_owned(),
            heartbeat_interval: Duration::from_millis(100).into(),
            election_timeout_min: Duration::from_millis(500).into(),
            election_timeout_max: Duration::from_secs(1).into(),
            enable_unclean_election: false,
            raft_source_ip: String::new(),
        }
    }
}

/// The default metrics listener (RocketMQ's exporter port).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:5557";

/// Metrics: Prometheus text on an HTTP listener (also `/healthz` and `/readyz`), OTLP push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Record metrics at all (`false`: no instrument records; `/metrics` is empty).
    pub enabled: bool,
    /// Address of the metrics listener (`/metrics`, `/healthz`, `/readyz`); empty = none. Each
    /// process has one, whatever roles it runs. When the default address is taken, the process
    /// runs without the listener and says so; a configured address that is taken is an error.
    pub listen: String,
    /// Push metrics over OTLP/gRPC to this endpoint (`http://host:4317`); empty = off.
    pub otlp_endpoint: String,
    /// Interval between two OTLP pushes.
    pub otlp_interval: HumanDuration,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            listen: DEFAULT_METRICS_LISTEN.to_owned(),
            otlp_endpoint: String::new(),
            otlp_interval: Duration::from_secs(15).into(),
        }
    }
}

/// Traces: a span per RPC on every role, exported over OTLP/gRPC when an endpoint is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    /// OTLP/gRPC endpoint of a collector (`http://host:4317`); empty = spans are not exported.
    pub otlp_endpoint: String,
    /// Fraction of new traces sampled (0.0 to 1.0); a sampled caller's trace is always followed.
    pub sample_ratio: f64,
}

impl Default for TracingSection {
    fn default() -> Self {
        TracingSection {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
        }
    }
}

/// The web console a controller serves, and the client reports proxies send for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// HTTP address of the console (controller and standalone); empty = off.
    pub listen: String,
    /// A client without an open telemetry stream leaves the console's client list once it was
    /// not heard from for this long.
    pub client_timeout: HumanDuration,
    /// How often a proxy reports its connected clients to the controllers (and soon after a
    /// change).
    pub report_interval: HumanDuration,
    /// How long a console login lasts (with `auth.enabled`).
    pub session_timeout: HumanDuration,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        ConsoleSection {
            listen: "127.0.0.1:8082".to_owned(),
            client_timeout: Duration::from_secs(30).into(),
            report_interval: Duration::from_secs(5).into(),
            session_timeout: Duration::from_secs(8 * 3600).into(),
        }
    }
}

/// Where each layer comes from; [`Config::load`] merges them.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The TOML file (`--config`), if any.
    pub file: Option<PathBuf>,
    /// The process environment (all of it; only `COMET_*` settings are used).
    pub env: Vec<(String, String)>,
    /// Flag overrides as (`section.key` or `key`, raw value), applied in order.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// The file from `file` or else `COMET_CONFIG`, and the current process environment.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let file = file.or_else(|| {
            env.iter()
                .find(|(k, v)| k == "COMET_CONFIG" && !v.is_empty())
                .map(|(_, v)| PathBuf::from(v))
        });
        Sources {
            file,
            env,
            overrides: Vec::new(),
        }
    }
}

impl Config {
    /// Merges defaults, file, environment and overrides, then validates the result.
    pub fn load(sources: &Sources) -> anyhow::Result<Config> {
        let mut tree = toml::Table::new();
        if let Some(path) = &sources.file {
            merge(&mut tree, read_file(path)?);
        }
        let known = known_keys();
        for (name, value) in &sources.env {
            let Some(key) = env_key(name, &known)? else {
                continue;
            };
            set_path(&mut tree, &key, parse_value(value))
                .with_context(|| format!("environment variable {name}"))?;
        }
        for (key, value) in &sources.overrides {
            if !known.contains_key(key.as_str()) {
                bail!(
                    "--set {key}=...: unknown setting `{key}`; see deploy/comet.example.toml \
                     for the settings that exist"
                );
            }
            set_path(&mut tree, key, parse_value(value)).with_context(|| format!("--set {key}"))?;
        }
        let config: Config = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks that the types alone cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        let p = &self.proxy;
        if p.max_body_size.0 == 0 || p.max_body_size.0 > (4 << 20) - (64 << 10) {
            bail!(
                "proxy.max_body_size = {} is out of range: it must be between 1B and 4032KiB \
                 (official clients reject gRPC frames above 4 MiB, and a message needs room \
                 for its properties)",
                p.max_body_size
            );
        }
        if p.long_polling_min > p.long_polling_max {
            bail!(
                "proxy.long_polling_min ({}) is greater than proxy.long_polling_max ({})",
                p.long_polling_min,
                p.long_polling_max
            );
        }
        if !(p.invisible_min <= p.invisible_default && p.invisible_default <= p.invisible_max) {
            bail!(
                "proxy invisible durations must satisfy invisible_min ({}) <= invisible_default \
                 ({}) <= invisible_max ({})",
                p.invisible_min,
                p.invisible_default,
                p.invisible_max
            );
        }
        if p.default_queue_count == 0 || p.default_queue_count > 1024 {
            bail!(
                "proxy.default_queue_count = {} is out of range 1..=1024",
                p.default_queue_count
            );
        }
        if let Err(comet_proxy::ProxyError::InvalidConfig { key, reason }) =
            p.link_options().validate()
        {
            bail!("proxy.{key} {reason}");
        }
        let b = &self.broker;
        if let Err(e) = names::validate_broker_set(&b.broker_set) {
            bail!(
                "broker.broker_set = {:?} is not a valid name: {e}",
                b.broker_set
            );
        }
        if b.segment_size.0 < 64 << 10 {
            bail!(
                "broker.segment_size = {} is too small: the minimum is 64KiB",
                b.segment_size
            );
        }
        for (key, v) in [
            ("broker.disk_high_watermark", b.disk_high_watermark),
            ("broker.disk_refuse_watermark", b.disk_refuse_watermark),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                bail!("{key} = {v} is not a fraction in (0, 1]: e.g. 0.9 for 90% of the disk");
            }
        }
        if b.disk_high_watermark > b.disk_refuse_watermark {
            bail!(
                "broker.disk_high_watermark = {} is above broker.disk_refuse_watermark = {}: \
                 old segments must be deleted before sends are refused",
                b.disk_high_watermark,
                b.disk_refuse_watermark
            );
        }
        if b.file_reserved_time.0.is_zero() {
            bail!("broker.file_reserved_time must be greater than 0, e.g. \"72h\"");
        }
        if !(1..=16).contains(&b.min_in_sync_replicas) {
            bail!(
                "broker.min_in_sync_replicas = {} is out of range 1..=16 (the master counts)",
                b.min_in_sync_replicas
            );
        }
        if b.replication_heartbeat_interval >= b.replica_max_lag_time {
            bail!(
                "broker.replication_heartbeat_interval ({}) must be shorter than \
                 broker.replica_max_lag_time ({}), or idle replicas would leave the sync-state set",
                b.replication_heartbeat_interval,
                b.replica_max_lag_time
            );
        }
        let c = &self.controller;
        for peer in &c.peers {
            parse_peer(peer)?;
        }
        if c.join && !c.peers.is_empty() {
            bail!(
                "controller.join = true and controller.peers are exclusive: a joining node gets \
                 its members from the cluster it joins (`comet cluster add-member`)"
            );
        }
        if !(c.heartbeat_interval < c.election_timeout_min
            && c.election_timeout_min < c.election_timeout_max)
        {
            bail!(
                "controller timings must satisfy heartbeat_interval ({}) < election_timeout_min \
                 ({}) < election_timeout_max ({})",
                c.heartbeat_interval,
                c.election_timeout_min,
                c.election_timeout_max
            );
        }
        if self.controllers.is_empty() {
            bail!("controllers is empty: give at least one controller address (host:port)");
        }
        let ratio = self.tracing.sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            bail!(
                "tracing.sample_ratio = {ratio} is not in 0.0..=1.0: e.g. 0.1 for one trace in ten"
            );
        }
        for (key, endpoint) in [
            ("metrics.otlp_endpoint", &self.metrics.otlp_endpoint),
            ("tracing.otlp_endpoint", &self.tracing.otlp_endpoint),
        ] {
            let url = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            if !endpoint.is_empty() && !url {
                bail!("{key} = {endpoint:?} must be a URL such as http://127.0.0.1:4317");
            }
        }
        if self.console.session_timeout.0.is_zero() {
            bail!("console.session_timeout must be greater than 0, e.g. \"8h\"");
        }
        if self.metrics.otlp_interval.0.is_zero() {
            bail!("metrics.otlp_interval must be greater than 0, e.g. \"15s\"");
        }
        let a = &self.auth;
        if !a.cluster_key.is_empty() && !a.cluster_key_file.is_empty() {
            bail!("auth.cluster_key and auth.cluster_key_file are exclusive: give one of them");
        }
        if a.bootstrap_username.is_empty() != a.bootstrap_password.is_empty() {
            bail!(
                "auth.bootstrap_username and auth.bootstrap_password go together: give both or neither"
            );
        }
        let mode: comet_auth::TlsMode = self
            .tls
            .mode
            .parse()
            .map_err(|e| anyhow::anyhow!("tls.mode: {e}"))?;
        if mode != comet_auth::TlsMode::Disabled
            && (self.tls.cert_chain.is_empty() || self.tls.private_key.is_empty())
        {
            bail!("tls.mode = {mode} needs tls.cert_chain and tls.private_key (PEM files)");
        }
        let t = &self.tls;
        let internal: comet_auth::TlsMode = t
            .internal_mode
            .parse()
            .map_err(|e| anyhow::anyhow!("tls.internal_mode: {e}"))?;
        if internal != comet_auth::TlsMode::Disabled
            && (t.internal_ca.is_empty()
                || t.internal_cert_chain.is_empty()
                || t.internal_private_key.is_empty())
        {
            bail!(
                "tls.internal_mode = {internal} needs tls.internal_ca, tls.internal_cert_chain \
                 and tls.internal_private_key (PEM files of the cluster CA and this node)"
            );
        }
        Ok(())
    }

    /// The cluster key cipher (`auth.cluster_key` or `auth.cluster_key_file`, plus
    /// `auth.previous_cluster_keys`); `None` when no key is configured.
    pub fn cipher(&self) -> anyhow::Result<Option<std::sync::Arc<comet_auth::SecretCipher>>> {
        let a = &self.auth;
        let text = if !a.cluster_key_file.is_empty() {
            std::fs::read_to_string(&a.cluster_key_file)
                .with_context(|| format!("auth.cluster_key_file {}", a.cluster_key_file))?
        } else if !a.cluster_key.is_empty() {
            a.cluster_key.clone()
        } else {
            return Ok(None);
        };
        let key = comet_auth::secret::parse_key(&text).context("auth.cluster_key")?;
        let previous = a
            .previous_cluster_keys
            .iter()
            .map(|k| comet_auth::secret::parse_key(k))
            .collect::<Result<Vec<_>, _>>()
            .context("auth.previous_cluster_keys")?;
        Ok(Some(std::sync::Arc::new(
            comet_auth::SecretCipher::new(&key, &previous).context("auth.cluster_key")?,
        )))
    }

    /// The gate settings of `[auth]`.
    pub fn gate_settings(&self) -> comet_auth::GateSettings {
        comet_auth::GateSettings {
            enabled: self.auth.enabled,
            max_clock_skew: Some(self.auth.max_clock_skew.0).filter(|d| !d.is_zero()),
        }
    }

    /// The acceptor of the proxy's client port per `[tls]` (`None`: plaintext).
    pub fn tls_acceptor(&self) -> anyhow::Result<Option<comet_auth::Acceptor>> {
        let t = &self.tls;
        let mode: comet_auth::TlsMode = t
            .mode
            .parse()
            .map_err(|e| anyhow::anyhow!("tls.mode: {e}"))?;
        if mode == comet_auth::TlsMode::Disabled {
            return Ok(None);
        }
        let files = comet_auth::ServerFiles {
            cert_chain: t.cert_chain.clone().into(),
            private_key: t.private_key.clone().into(),
            client_ca: Some(t.client_ca.clone())
                .filter(|c| !c.is_empty())
                .map(Into::into),
        };
        let config = comet_auth::ReloadingConfig::new(files, t.reload_interval.0)
            .context("tls: loading the certificate")?;
        Ok(Some(comet_auth::Acceptor::new(
            mode,
            std::sync::Arc::new(config),
        )))
    }

    /// The internal links' TLS per `tls.internal_*` (`None`: disabled, plaintext).
    ///
    /// # Errors
    /// An unknown mode, or a certificate file that is missing or unusable (the message names
    /// the key and the file).
    pub fn internal_tls(&self) -> anyhow::Result<Option<comet_auth::InternalTls>> {
        let t = &self.tls;
        let mode: comet_auth::TlsMode = t
            .internal_mode
            .parse()
            .map_err(|e| anyhow::anyhow!("tls.internal_mode: {e}"))?;
        if mode == comet_auth::TlsMode::Disabled {
            return Ok(None);
        }
        let files = comet_auth::InternalFiles {
            ca: t.internal_ca.clone().into(),
            cert_chain: t.internal_cert_chain.clone().into(),
            private_key: t.internal_private_key.clone().into(),
        };
        let tls = comet_auth::InternalTls::new(
            mode,
            files,
            Some(t.internal_server_name.clone()),
            t.reload_interval.0,
        )
        .context("tls.internal_*: loading the cluster CA and this node's certificate")?;
        Ok(Some(tls))
    }

    /// The connector of this process's internal clients (plaintext when internal TLS is off).
    ///
    /// # Errors
    /// As [`Config::internal_tls`].
    pub fn internal_connector(&self) -> anyhow::Result<comet_auth::Connector> {
        Ok(self
            .internal_tls()?
            .map(|t| t.connector())
            .unwrap_or_default())
    }

    /// The configured Raft peers as (node id, address).
    pub fn peers(&self) -> anyhow::Result<Vec<(u64, String)>> {
        self.controller
            .peers
            .iter()
            .map(|p| parse_peer(p))
            .collect()
    }
}

/// Parses `id=host:port`.
fn parse_peer(peer: &str) -> anyhow::Result<(u64, String)> {
    let Some((id, addr)) = peer.split_once('=') else {
        bail!("controller.peers entry {peer:?} must look like `2=10.0.0.2:9878`");
    };
    let id: u64 = id
        .trim()
        .parse()
        .with_context(|| format!("controller.peers entry {peer:?}: node id must be a number"))?;
    if addr.trim().is_empty() {
        bail!("controller.peers entry {peer:?} has no address");
    }
    Ok((id, addr.trim().to_owned()))
}

fn read_file(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("parsing config file {}", path.display()))
}

/// Every settable key (`data_dir`, `proxy.listen`, ...) with its default value.
fn known_keys() -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    let Ok(toml::Value::Table(root)) = toml::Value::try_from(Config::default()) else {
        return out;
    };
    for (k, v) in root {
        match v {
            toml::Value::Table(section) => {
                for (sk, sv) in section {
                    out.insert(format!("{k}.{sk}"), sv);
                }
            }
            other => {
                out.insert(k, other);
            }
        }
    }
    out
}

/// Maps `COMET_PROXY_LISTEN` to `proxy.listen`; `None` for variables that are not settings.
fn env_key(name: &str, known: &BTreeMap<String, toml::Value>) -> anyhow::Result<Option<String>> {
    let Some(rest) = name.strip_prefix("COMET_") else {
        return Ok(None);
    };
    let rest = rest.to_ascii_lowercase();
    for section in SECTIONS {
        if let Some(key) = rest.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
            let path = format!("{section}.{key}");
            if known.contains_key(&path) {
                return Ok(Some(path));
            }
            bail!(
                "environment variable {name} names `{path}`, which is not a setting; \
                 see deploy/comet.example.toml for the settings that exist"
            );
        }
    }
    Ok(known.contains_key(&rest).then_some(rest))
}

/// A raw value as TOML when it parses as a TOML value, else as a string.
fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(tree: &mut toml::Table, path: &str, value: toml::Value) -> anyhow::Result<()> {
    match path.split_once('.') {
        None => {
            tree.insert(path.to_owned(), value);
        }
        Some((section, key)) => {
            let entry = tree
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(t) = entry else {
                bail!("`{section}` must be a table");
            };
            t.insert(key.to_owned(), value);
        }
    }
    Ok(())
}

/// Deep-merges `src` into `dst` (tables merge, everything else replaces).
fn merge(dst: &mut toml::Table, src: toml::Table) {
    for (k, v) in src {
        match (dst.get_mut(&k), v) {
            (Some(toml::Value::Table(d)), toml::Value::Table(s)) => merge(d, s),
            (_, v) => {
                dst.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn given_no_sources_when_loaded_should_be_the_defaults() {
        let c = Config::load(&Sources::default()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.proxy.listen, "127.0.0.1:8081");
        assert_eq!(c.controller.listen, "127.0.0.1:9878");
    }

    #[test]
    fn given_every_layer_when_loaded_should_apply_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("comet.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\n[proxy]\nlisten = \"127.0.0.1:1\"\nmax_body_size = \"1MiB\"\n\
             [broker]\nflush = \"sync\"\nbroker_id = 3\n",
        )
        .unwrap();
        let sources = Sources {
            file: Some(file),
            env: env(&[
                ("COMET_PROXY_LISTEN", "127.0.0.1:2"),
                ("COMET_BROKER_BROKER_ID", "4"),
                ("COMET_CONFIG", "ignored-here"),
                ("COMET_CRASH_ROUNDS", "7"),
                ("PATH", "/bin"),
            ]),
            overrides: vec![("proxy.listen".into(), "127.0.0.1:3".into())],
        };
        let c = Config::load(&sources).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.proxy.listen, "127.0.0.1:3");
        assert_eq!(c.proxy.max_body_size, ByteSize(1 << 20));
        assert_eq!(c.broker.flush, FlushMode::Sync);
        assert_eq!(c.broker.broker_id, 4);
        // Untouched keys keep their defaults.
        assert_eq!(c.broker.broker_set, "broker-a");
    }

    #[test]
    fn given_link_settings_in_the_environment_when_loaded_should_reach_the_link_options() {
        let c = Config::load(&Sources {
            env: env(&[
                ("COMET_PROXY_LINK_CONNECTIONS_PER_THREAD", "2"),
                ("COMET_PROXY_LINK_CALLS_IN_FLIGHT", "4"),
                ("COMET_PROXY_LINK_QUEUE_MAX_BYTES", "1MiB"),
                ("COMET_PROXY_LINK_KEEPALIVE_INTERVAL", "0s"),
            ]),
            ..Sources::default()
        })
        .unwrap();
        let link = c.proxy.link_options();
        assert_eq!(link.connections_per_thread, 2);
        assert_eq!(link.combine.calls_in_flight, 4);
        assert_eq!(link.combine.max_queued_bytes, 1 << 20);
        assert!(link.keepalive_interval.is_zero(), "keepalive off");
        assert_eq!(link.keepalive_timeout, Duration::from_secs(20));
    }

    #[test]
    fn given_unknown_keys_when_loaded_should_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("comet.toml");
        std::fs::write(&file, "[proxy]\nlisten_addr = \"x\"\n").unwrap();
        let err = Config::load(&Sources {
            file: Some(file),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("listen_addr"), "{err:#}");

        let err = Config::load(&Sources {
            env: env(&[("COMET_PROXY_LISTN", "x")]),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("proxy.listn"), "{err:#}");

        let err = Config::load(&Sources {
            overrides: vec![("broker.flsh".into(), "sync".into())],
            ..Sources::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("broker.flsh"), "{err:#}");

        let err = Config::load(&Sources {
            file: Some(dir.path().join("missing.toml")),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("missing.toml"), "{err:#}");
    }

    #[test]
    fn given_bad_values_when_loaded_should_explain() {
        for (key, value, needle) in [
            ("broker.flush", "sometimes", "flush"),
            ("proxy.max_body_size", "8MiB", "max_body_size"),
            ("proxy.long_polling_max", "soon", "not a duration"),
            ("broker.broker_set", "a b", "broker_set"),
            ("controller.peers", "[\"2\"]", "peers"),
            (
                "controller.election_timeout_min",
                "50ms",
                "heartbeat_interval",
            ),
            (
                "controller.election_timeout_max",
                "400ms",
                "election_timeout_max",
            ),
            ("proxy.invisible_default", "24h", "invisible"),
            (
                "broker.disk_refuse_watermark",
                "1.5",
                "disk_refuse_watermark",
            ),
            ("broker.disk_high_watermark", "0.95", "disk_high_watermark"),
            ("broker.file_reserved_time", "0s", "file_reserved_time"),
            ("broker.min_in_sync_replicas", "0", "min_in_sync_replicas"),
            ("broker.replication_mode", "maybe", "replication_mode"),
            (
                "proxy.link_calls_in_flight",
                "0",
                "proxy.link_calls_in_flight must be in 1..=256, got 0",
            ),
            (
                "proxy.link_keepalive_interval",
                "10ms",
                "proxy.link_keepalive_interval must be 0s (off) or 100ms",
            ),
            (
                "broker.replication_heartbeat_interval",
                "5s",
                "replica_max_lag_time",
            ),
        ] {
            let err = Config::load(&Sources {
                overrides: vec![(key.into(), value.into())],
                ..Sources::default()
            })
            .unwrap_err();
            assert!(
                format!("{err:#}").contains(needle),
                "{key}={value}: {err:#}"
            );
        }
    }

    #[test]
    fn given_the_example_config_when_loaded_should_parse_and_match_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/comet.example.toml");
        let c = Config::load(&Sources {
            file: Some(path),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(c, Config::default());
        // And it mentions every key, so it stays the complete reference.
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/comet.example.toml"),
        )
        .unwrap();
        for key in known_keys().keys() {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                text.contains(&format!("{leaf} =")),
                "example config lacks {key}"
            );
        }
    }

    #[test]
    fn given_peers_when_parsed_should_split_id_and_address() {
        let c = Config::load(&Sources {
            overrides: vec![(
                "controller.peers".into(),
                "[\"1=127.0.0.1:1\", \"2=127.0.0.1:2\"]".into(),
            )],
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(
            c.peers().unwrap(),
            vec![(1, "127.0.0.1:1".to_owned()), (2, "127.0.0.1:2".to_owned())]
        );
    }
}
