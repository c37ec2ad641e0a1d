//! Admin commands over the controller's gRPC API: `comet topic ...`, `comet group ...`,
//! `comet cluster ...` (including the controllers' Raft membership: `members`, `add-member`,
//! `remove-member`). Each prints one JSON object (the resulting resource) on stdout.
//!
//! Names given here are plain names plus an optional `--namespace`; the controller stores the
//! qualified name `<namespace>%<name>` (see `proto/comet/v1/metadata.proto`).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1::{
    AddControllerRequest, ClusterMetadata, CreateGroupRequest, CreateTopicRequest,
    DeleteGroupRequest, DeleteTopicRequest, DescribeControllersRequest,
    DescribeControllersResponse, GetMetadataRequest, Group, QueuePlacement,
    RemoveControllerRequest, Topic, TopicMessageType, UpdateGroupRequest, UpdateTopicRequest,
};
use serde_json::{Value, json};

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
    /// List every broker: broker set, id, address, role, liveness, last heartbeat.
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
    /// Redeliveries before a message goes to %DLQ%<group>.
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
                json!({
                    "broker_set": s.name,
                    "broker_id": b.broker_id,
                    "address": b.address,
                    "role": if b.broker_id == s.master_broker_id { "master" } else { "replica" },
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

/// `<namespace>%<name>`, or the plain name without a namespace.
pub fn qualify(namespace: &str, name: &str) -> anyhow::Result<String> {
    if name.is_empty() {
        bail!("the name is empty");
    }
    if namespace.is_empty() {
        Ok(name.to_owned())
    } else if namespace.contains('%') {
        bail!("namespace {namespace:?} must not contain '%'")
    } else {
        Ok(format!("{namespace}%{name}"))
    }
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
