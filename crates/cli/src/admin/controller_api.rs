//! Commands over the controller's gRPC API: `comet topic ...`, `comet group ...` and
//! `comet cluster ...` (including the controllers' Raft membership), and the controller
//! connection the broker-side commands also use to read the cluster metadata.

use std::time::Duration;

use anyhow::{Context, bail};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1::{
    AddControllerRequest, ClusterMetadata, CreateGroupRequest, CreateTopicRequest,
    DeleteGroupRequest, DeleteTopicRequest, DescribeControllersRequest, GetMetadataRequest, Group,
    QueuePlacement, RemoveControllerRequest, Topic, TopicMessageType, UpdateGroupRequest,
    UpdateTopicRequest,
};
use serde_json::{Value, json};

use super::args::{AdminTarget, ClusterCommand, GroupCommand, RouteArgs, TopicCommand};
use super::parse::{parse_backoff, qualify};
use super::render::{
    brokers_json, controllers_json, group_json, metadata_json, perm_name, topic_json,
};
use super::signing::Signer;
use crate::config::{Config, Sources};
use crate::controller_client::ControllerClient;

/// Runs a `comet topic` command.
pub async fn topic(target: &AdminTarget, cmd: &TopicCommand) -> anyhow::Result<Value> {
    let (client, signer) = connect(target)?;
    let signer = &signer;
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
                    let req = signer.sign(CreateTopicRequest {
                        topic: Some(topic.clone()),
                    });
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
                    let req = signer.sign(UpdateTopicRequest {
                        topic: Some(topic.clone()),
                    });
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
                    let req = signer.sign(DeleteTopicRequest { name: name.clone() });
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
    let (client, signer) = connect(target)?;
    let signer = &signer;
    let ns = &target.namespace;
    match cmd {
        GroupCommand::Create(spec) | GroupCommand::Update(spec) => {
            let group = Group {
                name: qualify(ns, &spec.name)?,
                max_retries: spec.max_retries,
                retry_policy: spec.backoff.as_deref().map(parse_backoff).transpose()?,
                fifo: spec.fifo,
                priority_percent: spec.priority_percent,
                broadcast: spec.broadcast,
                broadcast_from_start: spec.from_start,
            };
            let create = matches!(cmd, GroupCommand::Create(_));
            let reply = client
                .call(|mut c| {
                    let group = Some(group.clone());
                    async move {
                        if create {
                            c.create_group(signer.sign(CreateGroupRequest { group }))
                                .await
                        } else {
                            c.update_group(signer.sign(UpdateGroupRequest { group }))
                                .await
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
                    let req = signer.sign(DeleteGroupRequest { name: name.clone() });
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
    let (client, signer) = connect(target)?;
    let signer = &signer;
    match cmd {
        ClusterCommand::Describe => {
            let meta = metadata(&client).await?;
            let mut out = metadata_json(&meta);
            let (_, controllers) = describe_controllers(&client, signer).await?;
            out["controllers"] = controllers;
            Ok(out)
        }
        ClusterCommand::Brokers => {
            let meta = metadata(&client).await?;
            Ok(brokers_json(&meta))
        }
        ClusterCommand::Members => {
            let (answered_by, mut out) = describe_controllers(&client, signer).await?;
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
                    let req = signer.sign(req.clone());
                    async move { c.add_controller(req).await }
                })
                .await
                .map_err(|s| status_error("adding controller", &args.node_id.to_string(), s))?;
            Ok(controllers_json(&reply))
        }
        ClusterCommand::RemoveMember(args) => {
            let reply = client
                .call_admin(|mut c| {
                    let req = signer.sign(RemoveControllerRequest {
                        node_id: args.node_id,
                    });
                    async move { c.remove_controller(req).await }
                })
                .await
                .map_err(|s| status_error("removing controller", &args.node_id.to_string(), s))?;
            Ok(controllers_json(&reply))
        }
    }
}

/// The Raft view of the first controller that answers, and its address.
async fn describe_controllers(
    client: &ControllerClient,
    signer: &Signer,
) -> anyhow::Result<(String, Value)> {
    let (addr, reply) = client
        .call_any_admin(|mut c| {
            let req = signer.sign(DescribeControllersRequest {});
            async move { c.describe_controllers(req).await }
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

pub(super) fn client(target: &AdminTarget) -> anyhow::Result<ControllerClient> {
    Ok(connect(target)?.0)
}

/// The controller client and the signer of `target`. The config (file and `COMET_*`
/// environment) gives the controllers without `--controller`, credentials without flags, and
/// the internal TLS the controllers and brokers are dialed with.
pub(super) fn connect(target: &AdminTarget) -> anyhow::Result<(ControllerClient, Signer)> {
    // Read every time: the internal TLS settings (`tls.internal_*`, file or COMET_TLS_*)
    // decide how the controllers and brokers are dialed.
    let cfg = Config::load(&Sources::from_process(target.config.clone()))?;
    let addrs = if target.controllers.is_empty() {
        cfg.controllers.clone()
    } else {
        target.controllers.clone()
    };
    let signer = Signer::new(target, Some(&cfg))?;
    let client = ControllerClient::new(addrs)?.with_connector(cfg.internal_connector()?);
    Ok((client, signer))
}

pub(super) async fn metadata(client: &ControllerClient) -> anyhow::Result<ClusterMetadata> {
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
