//! The clap definitions of every admin subcommand: `comet topic|group|cluster ...` (answered
//! by the controller) and `comet offset|message ...` (answered by the brokers).

use clap::{Args, Subcommand, ValueEnum};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1::TopicMessageType;

/// Where the controller is.
#[derive(Debug, Clone, Args)]
pub struct AdminTarget {
    /// Controller address(es), host:port; repeat or separate with commas. Default: the
    /// `controllers` setting (127.0.0.1:9878, `COMET_CONTROLLERS`, or the --config file).
    #[arg(
        long = "controller",
        value_name = "ADDR",
        value_delimiter = ',',
        global = true
    )]
    pub controllers: Vec<String>,
    /// Config file to read `controllers` from.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<std::path::PathBuf>,
    /// Namespace of the topic or group.
    #[arg(long, short = 'n', default_value = "", global = true)]
    pub namespace: String,
}

/// `comet topic ...`
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(TopicSpec),
    /// Change a topic's type, permission or queue counts (queues can grow, never shrink).
    Update(TopicUpdate),
    /// Delete a topic (its stored messages age out with retention).
    Delete(NameArg),
    /// Show one topic.
    Describe(NameArg),
    /// List all topics.
    List,
    /// Show where a topic's queues live: per broker set its queue count, master address and
    /// liveness (what proxies route by), and optionally the NameServer route.
    Route(RouteArgs),
}

/// `comet topic route`.
#[derive(Debug, Args)]
pub struct RouteArgs {
    pub name: String,
    /// Also ask this NameServer-compatible remoting endpoint (host:port, e.g. a controller's
    /// 127.0.0.1:9876) and include its TopicRouteData as a 4.x client would get it.
    #[arg(long, value_name = "HOST:PORT")]
    pub remoting: Option<String>,
}

/// `comet group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a consumer group with its retry policy.
    Create(GroupSpec),
    /// Replace a consumer group's settings.
    Update(GroupSpec),
    /// Delete a consumer group.
    Delete(NameArg),
    /// Show one consumer group.
    Describe(NameArg),
    /// List all consumer groups.
    List,
}

/// `comet cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Controllers (Raft members and leader), broker sets with their members and liveness, and
    /// counts of topics and groups.
    Describe,
    /// List every broker: broker set, id, address, role (master / replica), master epoch,
    /// whether it is in the sync-state set, liveness, last heartbeat.
    Brokers,
    /// The controller cluster's Raft members, leader, term and log position (any controller
    /// answers from its own view).
    Members,
    /// Add a controller node. Start it first with `controller.join = true` (and its own
    /// node_id) on an empty data directory; it joins as a learner, catches up, then votes.
    AddMember(AddMemberArgs),
    /// Remove a controller node from the Raft membership (then stop its process). Removing the
    /// leader is allowed: the others elect a new one.
    RemoveMember(RemoveMemberArgs),
}

/// `comet cluster add-member`.
#[derive(Debug, Args)]
pub struct AddMemberArgs {
    /// Raft node id of the new controller (its `controller.node_id`).
    #[arg(long)]
    pub node_id: u64,
    /// Its controller gRPC address as peers reach it (its advertised address), host:port.
    #[arg(long, value_name = "HOST:PORT")]
    pub address: String,
    /// Keep it a learner (receives the log, does not vote).
    #[arg(long)]
    pub learner: bool,
}

/// `comet cluster remove-member`.
#[derive(Debug, Args)]
pub struct RemoveMemberArgs {
    /// Raft node id of the controller to remove.
    #[arg(long)]
    pub node_id: u64,
}

/// A resource name.
#[derive(Debug, Args)]
pub struct NameArg {
    pub name: String,
}

/// Message types a topic can accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopicType {
    Normal,
    Fifo,
    Delay,
    Transaction,
    /// Accepts NORMAL, FIFO, DELAY and TRANSACTION messages.
    Mixed,
}

impl From<TopicType> for TopicMessageType {
    fn from(t: TopicType) -> Self {
        match t {
            TopicType::Normal => TopicMessageType::Normal,
            TopicType::Fifo => TopicMessageType::Fifo,
            TopicType::Delay => TopicMessageType::Delay,
            TopicType::Transaction => TopicMessageType::Transaction,
            TopicType::Mixed => TopicMessageType::Mixed,
        }
    }
}

/// Topic permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Perm {
    /// Read and write.
    Rw,
    /// Read only (sends are refused).
    R,
    /// Write only (receives find nothing).
    W,
}

impl From<Perm> for pb::Permission {
    fn from(p: Perm) -> Self {
        match p {
            Perm::Rw => pb::Permission::ReadWrite,
            Perm::R => pb::Permission::Read,
            Perm::W => pb::Permission::Write,
        }
    }
}

/// `comet topic create`.
#[derive(Debug, Args)]
pub struct TopicSpec {
    pub name: String,
    /// Queues on each broker set.
    #[arg(long, default_value_t = 8)]
    pub queues: u32,
    /// Message type the topic accepts.
    #[arg(long = "type", value_enum, default_value_t = TopicType::Normal)]
    pub message_type: TopicType,
    /// Broker set(s) holding the queues; repeat or separate with commas. Default: every
    /// registered broker set.
    #[arg(long = "broker-set", value_delimiter = ',')]
    pub broker_sets: Vec<String>,
    #[arg(long, value_enum, default_value_t = Perm::Rw)]
    pub perm: Perm,
}

/// `comet topic update`: only the given fields change.
#[derive(Debug, Args)]
pub struct TopicUpdate {
    pub name: String,
    /// New queue count on every broker set the topic is on (or on --broker-set).
    #[arg(long)]
    pub queues: Option<u32>,
    #[arg(long = "type", value_enum)]
    pub message_type: Option<TopicType>,
    /// Add the topic to (or resize it on) these broker sets.
    #[arg(long = "broker-set", value_delimiter = ',')]
    pub broker_sets: Vec<String>,
    #[arg(long, value_enum)]
    pub perm: Option<Perm>,
}

/// `comet group create|update`.
#[derive(Debug, Args)]
pub struct GroupSpec {
    pub name: String,
    /// Redeliveries before a message goes to `%DLQ%<group>`.
    #[arg(long, default_value_t = 16)]
    pub max_retries: u32,
    /// Deliver each message group's messages in order.
    #[arg(long)]
    pub fifo: bool,
    /// Backoff between deliveries: `exponential:INITIAL:MAX:MULTIPLIER` (e.g.
    /// `exponential:1s:60s:2`) or `customized:D1,D2,...` (e.g. `customized:1s,5s,30s`).
    /// Default: RocketMQ's customized table (1s 5s 10s 30s 1m 2m ... 2h).
    #[arg(long)]
    pub backoff: Option<String>,
}

/// `comet offset ...`
#[derive(Debug, Subcommand)]
pub enum OffsetCommand {
    /// Move a consumer group's offsets on a topic to a point in time (or an offset). The group
    /// then consumes from there; its messages in flight are forgotten.
    Reset(ResetSpec),
    /// A group's progress on every queue of a topic: consume offset, backlog and messages in
    /// flight.
    Progress(ProgressSpec),
}

/// `comet offset reset`.
#[derive(Debug, Args)]
pub struct ResetSpec {
    /// The consumer group.
    pub group: String,
    #[arg(long)]
    pub topic: String,
    /// Reset to the first message stored at or after this time: milliseconds since the Unix
    /// epoch, or an RFC 3339 time in UTC such as 2024-05-01T12:00:00Z.
    #[arg(
        long,
        value_name = "TIME",
        conflicts_with = "offset",
        required_unless_present = "offset"
    )]
    pub timestamp: Option<String>,
    /// Reset to this queue offset (clamped to each queue's stored range).
    #[arg(long)]
    pub offset: Option<i64>,
    /// Only this queue id (requires --broker-set when the topic spans several broker sets).
    #[arg(long)]
    pub queue: Option<i32>,
    /// Only this broker set.
    #[arg(long = "broker-set")]
    pub broker_set: Option<String>,
}

/// `comet offset progress`.
#[derive(Debug, Args)]
pub struct ProgressSpec {
    /// The consumer group.
    pub group: String,
    #[arg(long)]
    pub topic: String,
}

/// `comet message ...`
#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Find a message by its message id.
    Id(IdQuery),
    /// Find messages by key within a store-time range (newest first).
    Key(KeyQuerySpec),
    /// Show the message at a queue offset.
    Offset(OffsetQuerySpec),
}

/// `comet message id`.
#[derive(Debug, Args)]
pub struct IdQuery {
    pub message_id: String,
    #[arg(long)]
    pub topic: String,
}

/// `comet message key`.
#[derive(Debug, Args)]
pub struct KeyQuerySpec {
    pub key: String,
    #[arg(long)]
    pub topic: String,
    /// Stored at or after this time (ms since the epoch or RFC 3339). Default: no bound.
    #[arg(long, value_name = "TIME")]
    pub begin: Option<String>,
    /// Stored at or before this time (ms since the epoch or RFC 3339). Default: no bound.
    #[arg(long, value_name = "TIME")]
    pub end: Option<String>,
    /// Most messages per broker set (1..=1000).
    #[arg(long, default_value_t = 32)]
    pub max: u32,
}

/// `comet message offset`.
#[derive(Debug, Args)]
pub struct OffsetQuerySpec {
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub queue: i32,
    #[arg(long)]
    pub offset: i64,
    /// The broker set of the queue (required when the topic spans several).
    #[arg(long = "broker-set")]
    pub broker_set: Option<String>,
}

/// `comet client ...`
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Every producer and consumer connected to any proxy (as the proxies report them to the
    /// controllers): client id, type, language, version, group, topics, host, proxy.
    List(ClientListArgs),
}

/// `comet client list`.
#[derive(Debug, Args)]
pub struct ClientListArgs {
    /// Only clients that publish or subscribe to this topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only consumers of this group.
    #[arg(long)]
    pub group: Option<String>,
}

/// How admin commands print their result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables (the default on a terminal).
    Table,
    /// One JSON object (the default when stdout is not a terminal).
    Json,
}
