//! Admin commands over the controller's gRPC API: `comet topic ...`, `comet group ...`,
//! `comet cluster ...` (including the controllers' Raft membership: `members`, `add-member`,
//! `remove-member`); and over the brokers' internal API (addresses from the controller's
//! metadata): `comet offset reset|progress`, `comet message id|key|offset`. Each prints one
//! JSON object (the resulting resource) on stdout.
//!
//! Names given here are plain names plus an optional `--namespace`; the controller stores the
//! qualified name `<namespace>%<name>` (see `proto/comet/v1/metadata.proto`).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1::broker_service_client::BrokerServiceClient;
use comet_proto::comet::v1::query_message_request::Query;
use comet_proto::comet::v1::reset_offset_request::Target as ResetTarget;
use comet_proto::comet::v1::{
    AddControllerRequest, ClusterMetadata, CreateGroupRequest, CreateTopicRequest,
    DeleteGroupRequest, DeleteTopicRequest, DescribeControllersRequest,
    DescribeControllersResponse, GetConsumerProgressRequest, GetMetadataRequest, Group, KeyQuery,
    QueryMessageRequest, QueueOffsetQuery, QueuePlacement, RemoveControllerRequest,
    ResetOffsetRequest, Topic, TopicMessageType, UpdateGroupRequest, UpdateTopicRequest,
};
use comet_vocab::system;
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};

use crate::config::{Config, Sources};
use crate::controller_client::ControllerClient;
use crate::duration::HumanDuration;

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

/// Runs a `comet topic` command.
pub async fn topic(target: &AdminTarget, cmd: &TopicCommand) -> anyhow::Result<Value> {
    let client = client(target)?;
    let ns = &target.namespace;
    match cmd {
        TopicCommand::Create(spec) => {
            let placements = if spec.broker_sets.is_empty() {
                let meta = metadata(&client).await?;
                if meta.broker_sets.is_empty() {
                    bail!(
                        "no broker set is registered yet, so the topic has nowhere to live; \
                         start a broker (or `comet standalone`) first"
                    );
                }
                meta.broker_sets
                    .iter()
                    .map(|b| QueuePlacement {
                        broker_set: b.name.clone(),
                        queue_count: spec.queues,
                    })
                    .collect()
            } else {
                spec.broker_sets
                    .iter()
                    .map(|b| QueuePlacement {
                        broker_set: b.clone(),
                        queue_count: spec.queues,
                    })
                    .collect()
            };
            let topic = Topic {
                name: qualify(ns, &spec.name)?,
                message_type: TopicMessageType::from(spec.message_type) as i32,
                placements,
                permission: pb::Permission::from(spec.perm) as i32,
                attributes: Default::default(),
            };
            let reply = client
                .call(|mut c| {
                    let req = CreateTopicRequest {
                        topic: Some(topic.clone()),
                    };
                    async move { c.create_topic(req).await }
                })
                .await
                .map_err(|s| status_error("creating topic", &spec.name, s))?;
            Ok(topic_json(reply.topic.as_ref()))
        }
        TopicCommand::Update(up) => {
            let name = qualify(ns, &up.name)?;
            let meta = metadata(&client).await?;
            let Some(mut topic) = meta.topics.iter().find(|t| t.name == name).cloned() else {
                bail!("topic {:?} does not exist", up.name);
            };
            if let Some(t) = up.message_type {
                topic.message_type = TopicMessageType::from(t) as i32;
            }
            if let Some(p) = up.perm {
                topic.permission = pb::Permission::from(p) as i32;
            }
            if up.broker_sets.is_empty() {
                if let Some(q) = up.queues {
                    for p in &mut topic.placements {
                        p.queue_count = q;
                    }
                }
            } else {
                for b in &up.broker_sets {
                    let count = up.queues.unwrap_or(8);
                    match topic.placements.iter_mut().find(|p| &p.broker_set == b) {
                        Some(p) => p.queue_count = count,
                        None => topic.placements.push(QueuePlacement {
                            broker_set: b.clone(),
                            queue_count: count,
                        }),
                    }
                }
            }
            let reply = client
                .call(|mut c| {
                    let req = UpdateTopicRequest {
                        topic: Some(topic.clone()),
                    };
                    async move { c.update_topic(req).await }
                })
                .await
                .map_err(|s| status_error("updating topic", &up.name, s))?;
            Ok(topic_json(reply.topic.as_ref()))
        }
        TopicCommand::Delete(n) => {
            let name = qualify(ns, &n.name)?;
            let reply = client
                .call(|mut c| {
                    let req = DeleteTopicRequest { name: name.clone() };
                    async move { c.delete_topic(req).await }
                })
                .await
                .map_err(|s| status_error("deleting topic", &n.name, s))?;
            Ok(json!({"deleted": name, "revision": reply.revision}))
        }
        TopicCommand::Describe(n) => {
            let name = qualify(ns, &n.name)?;
            let meta = metadata(&client).await?;
            match meta.topics.iter().find(|t| t.name == name) {
                Some(t) => Ok(topic_json(Some(t))),
                None => bail!("topic {:?} does not exist", n.name),
            }
        }
        TopicCommand::List => {
            let meta = metadata(&client).await?;
            let topics: Vec<Value> = meta.topics.iter().map(|t| topic_json(Some(t))).collect();
            Ok(json!({"revision": meta.revision, "topics": topics}))
        }
        TopicCommand::Route(args) => topic_route(&client, ns, args).await,
    }
}

/// `comet topic route`: the topic's placements joined with the broker sets' live members.
async fn topic_route(
    client: &ControllerClient,
    ns: &str,
    args: &RouteArgs,
) -> anyhow::Result<Value> {
    let name = qualify(ns, &args.name)?;
    let meta = metadata(client).await?;
    let Some(topic) = meta.topics.iter().find(|t| t.name == name) else {
        bail!("topic {:?} does not exist", args.name);
    };
    let placements: Vec<Value> = topic
        .placements
        .iter()
        .map(|p| {
            let set = meta.broker_sets.iter().find(|b| b.name == p.broker_set);
            let master =
                set.and_then(|s| s.members.iter().find(|m| m.broker_id == s.master_broker_id));
            json!({
                "broker_set": p.broker_set,
                "queues": p.queue_count,
                "master_address": master.map(|m| m.address.clone()),
                "master_alive": master.is_some_and(|m| m.alive),
                "alive_members": set.map_or(0, |s| s.members.iter().filter(|m| m.alive).count()),
            })
        })
        .collect();
    let routable: u32 = topic
        .placements
        .iter()
        .filter(|p| {
            meta.broker_sets.iter().any(|s| {
                s.name == p.broker_set
                    && s.members
                        .iter()
                        .any(|m| m.broker_id == s.master_broker_id && m.alive)
            })
        })
        .map(|p| p.queue_count)
        .sum();
    let mut out = json!({
        "topic": name,
        "revision": meta.revision,
        "permission": perm_name(topic.permission),
        "writable_queues": routable,
        "placements": placements,
    });
    if let Some(addr) = &args.remoting {
        out["nameserver_route"] = remoting_route(addr, &name).await?;
    }
    Ok(out)
}

/// The TopicRouteData a NameServer-compatible endpoint serves for `topic` (standard JSON).
async fn remoting_route(addr: &str, topic: &str) -> anyhow::Result<Value> {
    use comet_controller::remoting::client::{RemotingClient, RequestStyle};
    let mut c = RemotingClient::connect(addr, Duration::from_secs(5))
        .await
        .with_context(|| format!("connecting to the remoting endpoint {addr}"))?;
    let style = RequestStyle {
        accept_standard_json_only: true,
        ..RequestStyle::default()
    };
    match c.topic_route(topic, style).await? {
        Ok((_, body)) => serde_json::from_str(&body)
            .with_context(|| format!("the route from {addr} is not JSON")),
        Err(refused) => Ok(json!({"code": refused.code, "remark": refused.remark})),
    }
}

/// Runs a `comet group` command.
pub async fn group(target: &AdminTarget, cmd: &GroupCommand) -> anyhow::Result<Value> {
    let client = client(target)?;
    let ns = &target.namespace;
    match cmd {
        GroupCommand::Create(spec) | GroupCommand::Update(spec) => {
            let group = Group {
                name: qualify(ns, &spec.name)?,
                max_retries: spec.max_retries,
                retry_policy: spec.backoff.as_deref().map(parse_backoff).transpose()?,
                fifo: spec.fifo,
            };
            let create = matches!(cmd, GroupCommand::Create(_));
            let reply = client
                .call(|mut c| {
                    let group = Some(group.clone());
                    async move {
                        if create {
                            c.create_group(CreateGroupRequest { group }).await
                        } else {
                            c.update_group(UpdateGroupRequest { group }).await
                        }
                    }
                })
                .await
                .map_err(|s| {
                    let what = if create {
                        "creating group"
                    } else {
                        "updating group"
                    };
                    status_error(what, &spec.name, s)
                })?;
            Ok(group_json(reply.group.as_ref()))
        }
        GroupCommand::Delete(n) => {
            let name = qualify(ns, &n.name)?;
            let reply = client
                .call(|mut c| {
                    let req = DeleteGroupRequest { name: name.clone() };
                    async move { c.delete_group(req).await }
                })
                .await
                .map_err(|s| status_error("deleting group", &n.name, s))?;
            Ok(json!({"deleted": name, "revision": reply.revision}))
        }
        GroupCommand::Describe(n) => {
            let name = qualify(ns, &n.name)?;
            let meta = metadata(&client).await?;
            match meta.groups.iter().find(|g| g.name == name) {
                Some(g) => Ok(group_json(Some(g))),
                None => bail!(
                    "group {:?} does not exist (groups are also usable without being created; \
                     they then have the default settings)",
                    n.name
                ),
            }
        }
        GroupCommand::List => {
            let meta = metadata(&client).await?;
            let groups: Vec<Value> = meta.groups.iter().map(|g| group_json(Some(g))).collect();
            Ok(json!({"revision": meta.revision, "groups": groups}))
        }
    }
}

/// Runs a `comet cluster` command.
pub async fn cluster(target: &AdminTarget, cmd: &ClusterCommand) -> anyhow::Result<Value> {
    let client = client(target)?;
    match cmd {
        ClusterCommand::Describe => {
            let meta = metadata(&client).await?;
            let mut out = metadata_json(&meta);
            let (_, controllers) = describe_controllers(&client).await?;
            out["controllers"] = controllers;
            Ok(out)
        }
        ClusterCommand::Brokers => {
            let meta = metadata(&client).await?;
            Ok(brokers_json(&meta))
        }
        ClusterCommand::Members => {
            let (answered_by, mut out) = describe_controllers(&client).await?;
            out["answered_by"] = Value::String(answered_by);
            Ok(out)
        }
        ClusterCommand::AddMember(args) => {
            let req = AddControllerRequest {
                node_id: args.node_id,
                address: args.address.clone(),
                learner_only: args.learner,
            };
            let reply = client
                .call_admin(|mut c| {
                    let req = req.clone();
                    async move { c.add_controller(req).await }
                })
                .await
                .map_err(|s| status_error("adding controller", &args.node_id.to_string(), s))?;
            Ok(controllers_json(&reply))
        }
        ClusterCommand::RemoveMember(args) => {
            let reply = client
                .call_admin(|mut c| async move {
                    c.remove_controller(RemoveControllerRequest {
                        node_id: args.node_id,
                    })
                    .await
                })
                .await
                .map_err(|s| status_error("removing controller", &args.node_id.to_string(), s))?;
            Ok(controllers_json(&reply))
        }
    }
}

/// The Raft view of the first controller that answers, and its address.
async fn describe_controllers(client: &ControllerClient) -> anyhow::Result<(String, Value)> {
    let (addr, reply) = client
        .call_any_admin(|mut c| async move {
            c.describe_controllers(DescribeControllersRequest {}).await
        })
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "describing the controllers: {} ({:?}); is a controller running at the \
                 address given by --controller?",
                s.message(),
                s.code()
            )
        })?;
    Ok((addr, controllers_json(&reply)))
}

/// A `DescribeControllersResponse` as JSON.
pub fn controllers_json(d: &DescribeControllersResponse) -> Value {
    json!({
        "node_id": d.node_id,
        "state": d.state,
        "leader_id": d.leader_id,
        "leader_address": d.leader_address,
        "term": d.term,
        "last_log_index": d.last_log_index,
        "last_applied_index": d.last_applied_index,
        "members": d.members.iter().map(|m| json!({
            "node_id": m.node_id, "address": m.address,
            "role": if m.voter { "voter" } else { "learner" },
        })).collect::<Vec<_>>(),
    })
}

/// Every broker of every broker set as JSON rows.
pub fn brokers_json(m: &ClusterMetadata) -> Value {
    let rows: Vec<Value> = m
        .broker_sets
        .iter()
        .flat_map(|s| {
            s.members.iter().map(move |b| {
                let role = if s.master_epoch == 0 {
                    "unelected"
                } else if b.broker_id == s.master_broker_id {
                    "master"
                } else {
                    "replica"
                };
                json!({
                    "broker_set": s.name,
                    "broker_id": b.broker_id,
                    "address": b.address,
                    "role": role,
                    "master_epoch": s.master_epoch,
                    "in_sync": s.sync_state_set.contains(&b.broker_id),
                    "alive": b.alive,
                    "last_heartbeat_ms": b.last_heartbeat_ms,
                })
            })
        })
        .collect();
    json!({"revision": m.revision, "brokers": rows})
}

fn client(target: &AdminTarget) -> anyhow::Result<ControllerClient> {
    let addrs = if target.controllers.is_empty() {
        Config::load(&Sources::from_process(target.config.clone()))?.controllers
    } else {
        target.controllers.clone()
    };
    ControllerClient::new(addrs)
}

async fn metadata(client: &ControllerClient) -> anyhow::Result<ClusterMetadata> {
    client
        .call(|mut c| async move { c.get_metadata(GetMetadataRequest {}).await })
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "reading cluster metadata: {} ({:?}); is a controller running at the \
                 address given by --controller?",
                s.message(),
                s.code()
            )
        })
}

fn status_error(what: &str, name: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what} {name:?}: {} ({:?})", s.message(), s.code())
}

/// `<namespace>%<name>`, or the plain name without a namespace (`comet_vocab::namespace`:
/// `%DLQ%<name>` becomes `%DLQ%<namespace>%<name>`).
pub fn qualify(namespace: &str, name: &str) -> anyhow::Result<String> {
    if name.is_empty() {
        bail!("the name is empty");
    }
    if namespace.contains(comet_vocab::namespace::SEPARATOR) {
        bail!(
            "namespace {namespace:?} must not contain '{}'",
            comet_vocab::namespace::SEPARATOR
        )
    }
    Ok(comet_vocab::namespace::qualify(namespace, name))
}

/// Parses `exponential:1s:60s:2` or `customized:1s,5s,30s`.
pub fn parse_backoff(spec: &str) -> anyhow::Result<pb::RetryPolicy> {
    let dur = |s: &str| -> anyhow::Result<prost_types::Duration> {
        let d: HumanDuration = s.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        prost_types::Duration::try_from(d.0).context("duration out of range")
    };
    let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let strategy = match kind {
        "exponential" => {
            let parts: Vec<&str> = rest.split(':').collect();
            let [initial, max, multiplier] = parts.as_slice() else {
                bail!(
                    "backoff {spec:?}: expected exponential:INITIAL:MAX:MULTIPLIER, e.g. \
                     exponential:1s:60s:2"
                );
            };
            let multiplier: f32 = multiplier
                .parse()
                .with_context(|| format!("backoff {spec:?}: multiplier must be a number"))?;
            if !(multiplier >= 1.0 && multiplier.is_finite()) {
                bail!("backoff {spec:?}: multiplier must be at least 1");
            }
            pb::retry_policy::Strategy::ExponentialBackoff(pb::ExponentialBackoff {
                initial: Some(dur(initial)?),
                max: Some(dur(max)?),
                multiplier,
            })
        }
        "customized" => {
            let next = rest
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(dur)
                .collect::<anyhow::Result<Vec<_>>>()?;
            if next.is_empty() {
                bail!("backoff {spec:?}: give at least one delay, e.g. customized:1s,5s,30s");
            }
            pb::retry_policy::Strategy::CustomizedBackoff(pb::CustomizedBackoff { next })
        }
        _ => bail!(
            "backoff {spec:?}: use exponential:INITIAL:MAX:MULTIPLIER or customized:D1,D2,..."
        ),
    };
    Ok(pb::RetryPolicy {
        max_attempts: 0,
        strategy: Some(strategy),
    })
}

fn dur_string(d: &Option<prost_types::Duration>) -> Value {
    match d
        .as_ref()
        .and_then(|d| Duration::try_from(*d).ok())
        .map(HumanDuration)
    {
        Some(d) => Value::String(d.to_string()),
        None => Value::Null,
    }
}

fn type_name(t: i32) -> &'static str {
    match TopicMessageType::try_from(t) {
        Ok(TopicMessageType::Normal) => "NORMAL",
        Ok(TopicMessageType::Fifo) => "FIFO",
        Ok(TopicMessageType::Delay) => "DELAY",
        Ok(TopicMessageType::Transaction) => "TRANSACTION",
        Ok(TopicMessageType::Mixed) => "MIXED",
        _ => "UNSPECIFIED",
    }
}

fn perm_name(p: i32) -> &'static str {
    match pb::Permission::try_from(p) {
        Ok(pb::Permission::Read) => "READ",
        Ok(pb::Permission::Write) => "WRITE",
        Ok(pb::Permission::None) => "NONE",
        _ => "READ_WRITE",
    }
}

/// A topic as JSON.
pub fn topic_json(t: Option<&Topic>) -> Value {
    let Some(t) = t else {
        return Value::Null;
    };
    json!({
        "name": t.name,
        "type": type_name(t.message_type),
        "permission": perm_name(t.permission),
        "placements": t.placements.iter().map(|p| json!({"broker_set": p.broker_set, "queues": p.queue_count})).collect::<Vec<_>>(),
        "attributes": t.attributes,
    })
}

/// A group as JSON.
pub fn group_json(g: Option<&Group>) -> Value {
    let Some(g) = g else {
        return Value::Null;
    };
    let backoff = match g.retry_policy.as_ref().and_then(|p| p.strategy.as_ref()) {
        Some(pb::retry_policy::Strategy::ExponentialBackoff(e)) => json!({
            "exponential": {"initial": dur_string(&e.initial), "max": dur_string(&e.max), "multiplier": e.multiplier}
        }),
        Some(pb::retry_policy::Strategy::CustomizedBackoff(c)) => json!({
            "customized": c.next.iter().map(|d| dur_string(&Some(*d))).collect::<Vec<_>>()
        }),
        None => Value::String("default".into()),
    };
    json!({"name": g.name, "max_retries": g.max_retries, "fifo": g.fifo, "backoff": backoff})
}

/// Cluster metadata summary as JSON.
pub fn metadata_json(m: &ClusterMetadata) -> Value {
    json!({
        "cluster": m.cluster_name,
        "revision": m.revision,
        "topics": m.topics.len(),
        "groups": m.groups.len(),
        "broker_sets": m.broker_sets.iter().map(|b| json!({
            "name": b.name,
            "master_broker_id": b.master_broker_id,
            "master_epoch": b.master_epoch,
            "sync_state_set": b.sync_state_set,
            "members": b.members.iter().map(|m| json!({
                "broker_id": m.broker_id, "address": m.address, "alive": m.alive,
                "last_heartbeat_ms": m.last_heartbeat_ms,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

// ------------------------------------------------------------------ offsets and message queries
//
// `comet offset ...` and `comet message ...` read the cluster metadata from the controller to
// find the broker sets holding a topic, then call each set's master on its internal
// BrokerService address (the `address` a broker registered).

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

/// Largest internal reply accepted (query results carry whole messages).
const BROKER_MAX_MESSAGE: usize = 256 << 20;

/// Parses a time given as ms since the Unix epoch or as RFC 3339 (UTC).
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        anyhow::anyhow!(
            "{s:?} is not a time: give milliseconds since the Unix epoch or an RFC 3339 time \
             such as 2024-05-01T12:00:00Z ({e})"
        )
    })?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| anyhow::anyhow!("{s:?} is before 1970"))?;
    i64::try_from(d.as_millis()).context("time out of range")
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn time_json(t: Option<&prost_types::Timestamp>) -> Value {
    let Some(t) = t else {
        return Value::Null;
    };
    let ms = t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000;
    let text = u64::try_from(ms).ok().map(|ms| {
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms))
            .to_string()
    });
    json!({"ms": ms, "utc": text})
}

/// A broker set holding a topic, with its master's internal address.
struct BrokerTarget {
    broker_set: String,
    address: String,
}

/// The broker sets holding `topic` (qualified), optionally only `only`; dead-letter topics
/// live on every broker set.
fn broker_targets(
    meta: &ClusterMetadata,
    topic: &str,
    only: Option<&str>,
) -> anyhow::Result<Vec<BrokerTarget>> {
    let sets: Vec<String> = if topic.starts_with(system::DLQ_PREFIX) {
        // Every broker set may hold dead letters; those without a live master cannot answer.
        meta.broker_sets
            .iter()
            .filter(|b| {
                b.members
                    .iter()
                    .any(|m| m.broker_id == b.master_broker_id && m.alive)
            })
            .map(|b| b.name.clone())
            .collect()
    } else {
        let Some(t) = meta.topics.iter().find(|t| t.name == topic) else {
            bail!("topic {topic:?} does not exist");
        };
        t.placements
            .iter()
            .filter(|p| p.queue_count > 0)
            .map(|p| p.broker_set.clone())
            .collect()
    };
    let sets: Vec<String> = match only {
        None => sets,
        Some(want) if sets.iter().any(|s| s == want) => vec![want.to_owned()],
        Some(want) => bail!(
            "topic {topic:?} has no queues on broker set {want:?} (it is on: {})",
            sets.join(", ")
        ),
    };
    if sets.is_empty() {
        bail!("topic {topic:?} has no queues on any broker set");
    }
    sets.into_iter()
        .map(|name| {
            let set = meta.broker_sets.iter().find(|b| b.name == name);
            let address = set.and_then(|b| {
                b.members
                    .iter()
                    .find(|m| m.broker_id == b.master_broker_id && m.alive && !m.address.is_empty())
                    .map(|m| m.address.clone())
            });
            match address {
                Some(address) => Ok(BrokerTarget {
                    broker_set: name,
                    address,
                }),
                None => bail!("broker set {name:?} has no live master right now"),
            }
        })
        .collect()
}

/// The one broker set of a single-queue command: the named one, or the topic's only one.
fn single_target(
    meta: &ClusterMetadata,
    topic: &str,
    only: Option<&str>,
) -> anyhow::Result<BrokerTarget> {
    let mut targets = broker_targets(meta, topic, only)?;
    if targets.len() > 1 {
        let sets: Vec<&str> = targets.iter().map(|t| t.broker_set.as_str()).collect();
        bail!(
            "topic {topic:?} spans several broker sets ({}); name one with --broker-set",
            sets.join(", ")
        );
    }
    targets.pop().context("the topic has no broker set")
}

async fn broker_client(t: &BrokerTarget) -> anyhow::Result<BrokerServiceClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{}", t.address))
        .with_context(|| format!("bad broker address {:?}", t.address))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let channel = endpoint.connect().await.with_context(|| {
        format!(
            "connecting to broker set {} at {} (its internal BrokerService address)",
            t.broker_set, t.address
        )
    })?;
    Ok(BrokerServiceClient::new(channel)
        .max_decoding_message_size(BROKER_MAX_MESSAGE)
        .max_encoding_message_size(BROKER_MAX_MESSAGE))
}

fn broker_call_error(t: &BrokerTarget, what: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} on broker set {}: {} ({:?})",
        t.broker_set,
        s.message(),
        s.code()
    )
}

/// The broker's in-body status as a result: OK passes, anything else is an error naming it.
fn check_status(t: &BrokerTarget, what: &str, s: Option<&pb::Status>) -> anyhow::Result<()> {
    let Some(s) = s else {
        bail!(
            "{what} on broker set {}: the broker returned no status",
            t.broker_set
        );
    };
    if s.code == pb::Code::Ok as i32 {
        return Ok(());
    }
    let name = pb::Code::try_from(s.code).map_or("UNKNOWN", |c| c.as_str_name());
    bail!(
        "{what} on broker set {}: {name} ({}): {}",
        t.broker_set,
        s.code,
        s.message
    )
}

/// A stored message as JSON (the body as UTF-8 text when it is, else base64).
pub fn message_json(broker_set: &str, m: &pb::Message) -> Value {
    use base64::Engine as _;
    let sp = m.system_properties.clone().unwrap_or_default();
    let body = match std::str::from_utf8(&m.body) {
        Ok(text) => json!({"text": text}),
        Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(&m.body)}),
    };
    json!({
        "topic": m.topic.as_ref().map(|t| t.name.clone()),
        "message_id": sp.message_id,
        "broker_set": broker_set,
        "queue_id": sp.queue_id,
        "queue_offset": sp.queue_offset,
        "message_type": pb::MessageType::try_from(sp.message_type)
            .map_or("UNSPECIFIED", |t| t.as_str_name()),
        "tag": sp.tag,
        "keys": sp.keys,
        "message_group": sp.message_group,
        "user_properties": m.user_properties,
        "born_host": sp.born_host,
        "born_timestamp": time_json(sp.born_timestamp.as_ref()),
        "store_host": sp.store_host,
        "store_timestamp": time_json(sp.store_timestamp.as_ref()),
        "delivery_timestamp": time_json(sp.delivery_timestamp.as_ref()),
        "body_size": m.body.len(),
        "body": body,
    })
}

/// Runs a `comet offset` command.
pub async fn offset(target: &AdminTarget, cmd: &OffsetCommand) -> anyhow::Result<Value> {
    let client = client(target)?;
    let meta = metadata(&client).await?;
    let ns = &target.namespace;
    match cmd {
        OffsetCommand::Reset(spec) => {
            let group = qualify(ns, &spec.group)?;
            let topic = qualify(ns, &spec.topic)?;
            let reset_target = match (&spec.timestamp, spec.offset) {
                (Some(t), _) => ResetTarget::Timestamp(timestamp(parse_time(t)?)),
                (None, Some(o)) => ResetTarget::Offset(o),
                (None, None) => bail!("give --timestamp or --offset"),
            };
            let targets = match spec.queue {
                Some(_) => vec![single_target(&meta, &topic, spec.broker_set.as_deref())?],
                None => broker_targets(&meta, &topic, spec.broker_set.as_deref())?,
            };
            let mut sets = Vec::new();
            for t in &targets {
                let mut c = broker_client(t).await?;
                let reply = c
                    .reset_offset(ResetOffsetRequest {
                        group: Some(internal(&group)),
                        topic: Some(internal(&topic)),
                        queue_id: spec.queue.unwrap_or(-1),
                        target: Some(reset_target),
                    })
                    .await
                    .map_err(|s| broker_call_error(t, "resetting offsets", s))?
                    .into_inner();
                check_status(t, "resetting offsets", reply.status.as_ref())?;
                sets.push(json!({
                    "broker_set": t.broker_set,
                    "queues": reply.queues.iter().map(|q| json!({
                        "queue_id": q.queue_id,
                        "previous_offset": (q.previous_offset >= 0).then_some(q.previous_offset),
                        "offset": q.offset,
                        "dropped_inflight": q.dropped_inflight,
                    })).collect::<Vec<_>>(),
                }));
            }
            Ok(json!({"group": group, "topic": topic, "broker_sets": sets}))
        }
        OffsetCommand::Progress(spec) => {
            let group = qualify(ns, &spec.group)?;
            let topic = qualify(ns, &spec.topic)?;
            let mut queues = Vec::new();
            let (mut backlog, mut inflight) = (0i64, 0i64);
            for t in broker_targets(&meta, &topic, None)? {
                let mut c = broker_client(&t).await?;
                let reply = c
                    .get_consumer_progress(GetConsumerProgressRequest {
                        group: Some(internal(&group)),
                        topic: Some(internal(&topic)),
                    })
                    .await
                    .map_err(|s| broker_call_error(&t, "reading consumer progress", s))?
                    .into_inner();
                check_status(&t, "reading consumer progress", reply.status.as_ref())?;
                for q in &reply.queues {
                    backlog += q.backlog;
                    inflight += q.inflight;
                    queues.push(json!({
                        "broker_set": t.broker_set,
                        "queue_id": q.queue_id,
                        "min_offset": q.min_offset,
                        "max_offset": q.max_offset,
                        "consume_offset": (q.consume_offset >= 0).then_some(q.consume_offset),
                        "backlog": q.backlog,
                        "inflight": q.inflight,
                    }));
                }
            }
            Ok(json!({
                "group": group,
                "topic": topic,
                "backlog": backlog,
                "inflight": inflight,
                "queues": queues,
            }))
        }
    }
}

/// Runs a `comet message` command. Finding nothing is not an error: `messages` is empty.
pub async fn message(target: &AdminTarget, cmd: &MessageCommand) -> anyhow::Result<Value> {
    let client = client(target)?;
    let meta = metadata(&client).await?;
    let ns = &target.namespace;
    let (topic, query, targets) = match cmd {
        MessageCommand::Id(q) => {
            let topic = qualify(ns, &q.topic)?;
            if q.message_id.is_empty() {
                bail!("the message id is empty");
            }
            let targets = broker_targets(&meta, &topic, None)?;
            (topic, Query::MessageId(q.message_id.clone()), targets)
        }
        MessageCommand::Key(q) => {
            let topic = qualify(ns, &q.topic)?;
            if q.key.is_empty() {
                bail!("the key is empty");
            }
            if !(1..=1000).contains(&q.max) {
                bail!("--max must be within 1..=1000, got {}", q.max);
            }
            let begin = q.begin.as_deref().map(parse_time).transpose()?;
            let end = q.end.as_deref().map(parse_time).transpose()?;
            if let (Some(b), Some(e)) = (begin, end)
                && b > e
            {
                bail!("--begin ({b} ms) is after --end ({e} ms)");
            }
            let targets = broker_targets(&meta, &topic, None)?;
            let key = KeyQuery {
                key: q.key.clone(),
                begin: begin.map(timestamp),
                end: end.map(timestamp),
                max: i32::try_from(q.max).unwrap_or(1000),
            };
            (topic, Query::Key(key), targets)
        }
        MessageCommand::Offset(q) => {
            let topic = qualify(ns, &q.topic)?;
            if q.queue < 0 {
                bail!("--queue must not be negative");
            }
            let t = single_target(&meta, &topic, q.broker_set.as_deref())?;
            let query = Query::QueueOffset(QueueOffsetQuery {
                queue_id: q.queue,
                offset: q.offset,
            });
            (topic, query, vec![t])
        }
    };
    let mut messages = Vec::new();
    for t in &targets {
        let mut c = broker_client(t).await?;
        let reply = c
            .query_message(QueryMessageRequest {
                topic: Some(internal(&topic)),
                query: Some(query.clone()),
            })
            .await
            .map_err(|s| broker_call_error(t, "querying messages", s))?
            .into_inner();
        if reply
            .status
            .as_ref()
            .is_some_and(|s| s.code == pb::Code::MessageNotFound as i32)
        {
            continue;
        }
        check_status(t, "querying messages", reply.status.as_ref())?;
        messages.extend(
            reply
                .messages
                .iter()
                .map(|m| message_json(&t.broker_set, m)),
        );
    }
    Ok(json!({"topic": topic, "count": messages.len(), "messages": messages}))
}

/// A qualified name as an internal Resource (empty namespace, see broker.proto).
fn internal(qualified: &str) -> pb::Resource {
    pb::Resource {
        resource_namespace: String::new(),
        name: qualified.to_owned(),
    }
}

#[cfg(test)]
mod query_tests {
    use super::*;
    use comet_proto::comet::v1::{BrokerMember, BrokerSet};

    fn meta() -> ClusterMetadata {
        let set = |name: &str, alive: bool| BrokerSet {
            name: name.into(),
            members: vec![BrokerMember {
                broker_set: name.into(),
                broker_id: 0,
                address: format!("{name}:10911"),
                alive,
                last_heartbeat_ms: 0,
            }],
            master_broker_id: 0,
            master_epoch: 1,
            sync_state_set: vec![0],
        };
        ClusterMetadata {
            topics: vec![
                Topic {
                    name: "t".into(),
                    placements: vec![
                        QueuePlacement {
                            broker_set: "a".into(),
                            queue_count: 2,
                        },
                        QueuePlacement {
                            broker_set: "b".into(),
                            queue_count: 2,
                        },
                    ],
                    ..Default::default()
                },
                Topic {
                    name: "solo".into(),
                    placements: vec![QueuePlacement {
                        broker_set: "dead".into(),
                        queue_count: 1,
                    }],
                    ..Default::default()
                },
            ],
            broker_sets: vec![set("a", true), set("b", true), set("dead", false)],
            ..Default::default()
        }
    }

    fn names(v: &[BrokerTarget]) -> Vec<(&str, &str)> {
        v.iter()
            .map(|t| (t.broker_set.as_str(), t.address.as_str()))
            .collect()
    }

    #[test]
    fn given_topics_when_targeted_should_find_live_masters_of_their_broker_sets() {
        let m = meta();
        assert_eq!(
            names(&broker_targets(&m, "t", None).unwrap()),
            vec![("a", "a:10911"), ("b", "b:10911")]
        );
        assert_eq!(
            names(&broker_targets(&m, "t", Some("b")).unwrap()),
            vec![("b", "b:10911")]
        );
        assert_eq!(
            names(&broker_targets(&m, "%DLQ%g", None).unwrap()),
            vec![("a", "a:10911"), ("b", "b:10911")],
            "dead letters: every broker set with a live master"
        );
        let e = broker_targets(&m, "t", Some("c"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no queues on broker set \"c\""), "{e}");
        let e = broker_targets(&m, "nope", None).err().unwrap().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = broker_targets(&m, "solo", None).err().unwrap().to_string();
        assert!(e.contains("no live master"), "{e}");
        let e = single_target(&m, "t", None).err().unwrap().to_string();
        assert!(e.contains("--broker-set"), "{e}");
    }

    #[test]
    fn given_times_when_parsed_should_accept_epoch_ms_and_rfc3339() {
        assert_eq!(parse_time("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z").unwrap(),
            1_700_000_000_500
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(
            time_json(Some(&timestamp(1_700_000_000_500)))["utc"],
            "2023-11-14T22:13:20.500Z"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_backoff_specs_when_parsed_should_build_policies() {
        let p = parse_backoff("exponential:1s:60s:2").unwrap();
        match p.strategy {
            Some(pb::retry_policy::Strategy::ExponentialBackoff(e)) => {
                assert_eq!(e.initial.unwrap().seconds, 1);
                assert_eq!(e.max.unwrap().seconds, 60);
                assert!((e.multiplier - 2.0).abs() < f32::EPSILON);
            }
            other => panic!("{other:?}"),
        }
        let p = parse_backoff("customized:100ms,1s").unwrap();
        match p.strategy {
            Some(pb::retry_policy::Strategy::CustomizedBackoff(c)) => {
                assert_eq!(c.next.len(), 2);
                assert_eq!(c.next[0].nanos, 100_000_000);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "linear:1s",
            "exponential:1s:2",
            "exponential:1s:60s:0.5",
            "customized:",
            "customized:soon",
        ] {
            assert!(parse_backoff(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn given_namespaces_when_qualified_should_join_with_percent() {
        assert_eq!(qualify("", "orders").unwrap(), "orders");
        assert_eq!(qualify("prod", "orders").unwrap(), "prod%orders");
        assert!(qualify("a%b", "orders").is_err());
        assert!(qualify("", "").is_err());
    }
}
