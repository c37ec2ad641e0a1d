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
    /// User (access key) signing the admin calls, when the cluster has auth enabled.
    /// Default: `COMET_USERNAME`, else `auth.username` of the config file. (Not `--username`:
    /// `comet user create NAME --password ...` names the new user's own password.)
    #[arg(
        long = "auth-username",
        value_name = "NAME",
        env = "COMET_USERNAME",
        global = true
    )]
    pub username: Option<String>,
    /// Its password (secret key). Default: `COMET_PASSWORD`, else `auth.password`.
    #[arg(
        long = "auth-password",
        id = "auth_password",
        value_name = "SECRET",
        env = "COMET_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub password: Option<String>,
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
    /// PRIORITY messages: priority p goes to queue min(p, queues - 1) of its broker set, and
    /// a group takes the highest queue first.
    Priority,
    /// A parent of lite topics (LITE messages; each names its lite topic, created by its
    /// first message and removed after the broker's `lite_topic_ttl` without one).
    Lite,
}

impl From<TopicType> for TopicMessageType {
    fn from(t: TopicType) -> Self {
        match t {
            TopicType::Normal => TopicMessageType::Normal,
            TopicType::Fifo => TopicMessageType::Fifo,
            TopicType::Delay => TopicMessageType::Delay,
            TopicType::Transaction => TopicMessageType::Transaction,
            TopicType::Mixed => TopicMessageType::Mixed,
            TopicType::Priority => TopicMessageType::Priority,
            TopicType::Lite => TopicMessageType::Lite,
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
    /// Broadcast consumption: every client of the group receives every message, each from its
    /// own position (acks, retries and dead letters per client). A client the broker has not
    /// seen starts at the end of each queue; its position is forgotten after the broker's
    /// `broadcast_client_ttl` without receives.
    #[arg(long)]
    pub broadcast: bool,
    /// With --broadcast: a new client starts at the earliest stored message instead of the end.
    #[arg(long, requires = "broadcast")]
    pub from_start: bool,
    /// Backoff between deliveries: `exponential:INITIAL:MAX:MULTIPLIER` (e.g.
    /// `exponential:1s:60s:2`) or `customized:D1,D2,...` (e.g. `customized:1s,5s,30s`).
    /// Default: RocketMQ's customized table (1s 5s 10s 30s 1m 2m ... 2h).
    #[arg(long)]
    pub backoff: Option<String>,
    /// PRIORITY topics: the percentage (0-100) of this group's receives that take the highest
    /// priority first; the rest visit the queues round-robin. Default: 100 (strict); 0
    /// disables priority for the group.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub priority_percent: Option<u32>,
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

/// `comet user ...` (ACL 2.0 users: the user name is the access key, the password the secret
/// key of request signatures).
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create(UserSpec),
    /// Change a user's password and/or type.
    Update(UserUpdate),
    /// Delete a user (and its ACL).
    Delete(UserName),
    /// Show a user (never its password).
    Get(UserName),
    /// List users.
    List(UserFilter),
}

/// A user's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UserTypeArg {
    /// Allowed everything.
    Super,
    /// Allowed what its ACL allows.
    Normal,
}

impl UserTypeArg {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserTypeArg::Super => "super",
            UserTypeArg::Normal => "normal",
        }
    }
}

/// `comet user create NAME --password SECRET [--type super|normal]`
#[derive(Debug, Args)]
pub struct UserSpec {
    /// User name (access key).
    pub name: String,
    /// Password (secret key).
    #[arg(long)]
    pub password: String,
    #[arg(long = "type", value_enum, default_value_t = UserTypeArg::Normal)]
    pub user_type: UserTypeArg,
}

/// `comet user update NAME [--password SECRET] [--type super|normal]`
#[derive(Debug, Args)]
pub struct UserUpdate {
    /// User name.
    pub name: String,
    /// New password.
    #[arg(long)]
    pub password: Option<String>,
    /// New type.
    #[arg(long = "type", value_enum)]
    pub user_type: Option<UserTypeArg>,
}

/// A user name.
#[derive(Debug, Args)]
pub struct UserName {
    /// User name.
    pub name: String,
}

/// `comet user list [--filter TEXT]`
#[derive(Debug, Args)]
pub struct UserFilter {
    /// Only users whose name contains this text.
    #[arg(long, default_value = "")]
    pub filter: String,
}

/// `comet acl ...` (ACL 2.0 entries: a subject, resources, actions, a decision, sources).
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Add one entry per --resource to the subject's ACL.
    Create(AclSpec),
    /// Replace the subject's entries of these resources.
    Update(AclSpec),
    /// Delete entries of the subject's ACL (all of them without --resource).
    Delete(AclDelete),
    /// Show a subject's ACL.
    Get(AclSubject),
    /// List ACLs.
    List(AclFilter),
}

/// `comet acl create|update --subject User:NAME --resource Topic:NAME [--resource ...]
/// --actions Pub,Sub --decision Allow [--source-ip CIDR ...]`
#[derive(Debug, Args)]
pub struct AclSpec {
    /// `User:<name>`.
    #[arg(long)]
    pub subject: String,
    /// `Topic:<name>`, `Group:<name>` (a name may end with `*` for a prefix, or be `*`),
    /// `Cluster`, or `*`. Repeat for several.
    #[arg(long = "resource", required = true)]
    pub resources: Vec<String>,
    /// Comma-separated: Pub, Sub, Create, Update, Delete, Get, List, or All.
    #[arg(long)]
    pub actions: String,
    /// Allow or Deny (a matching Deny wins over any Allow).
    #[arg(long)]
    pub decision: String,
    /// Sources the entry applies to (an address or CIDR); repeat for several. None: any.
    #[arg(long = "source-ip")]
    pub source_ips: Vec<String>,
}

/// `comet acl delete --subject User:NAME [--resource ...]`
#[derive(Debug, Args)]
pub struct AclDelete {
    /// `User:<name>`.
    #[arg(long)]
    pub subject: String,
    /// Entries to delete; none: the whole ACL.
    #[arg(long = "resource")]
    pub resources: Vec<String>,
}

/// `comet acl get --subject User:NAME`
#[derive(Debug, Args)]
pub struct AclSubject {
    /// `User:<name>`.
    #[arg(long)]
    pub subject: String,
}

/// `comet acl list [--subject-filter TEXT] [--resource-filter TEXT]`
#[derive(Debug, Args)]
pub struct AclFilter {
    /// Only subjects containing this text.
    #[arg(long, default_value = "")]
    pub subject_filter: String,
    /// Only entries whose resource contains this text.
    #[arg(long, default_value = "")]
    pub resource_filter: String,
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
