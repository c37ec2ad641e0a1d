//! The console's JSON endpoints, one handler per operation. Reads use this node's applied
//! metadata; writes call this node's `ControllerService` (validation and Raft included), so
//! a follower refuses them with 503 and the leader's address; broker-side operations fan out
//! to the masters of the broker sets holding the topic. Every handler checks its [`Caller`]'s
//! rights first (see `session`); lists show only what the caller may see.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use comet_auth::{Action, Resource, ResourceType};
use comet_proto::apache::rocketmq::v2;
use comet_proto::comet::v1 as pb;
use comet_proto::comet::v1::controller_service_server::ControllerService;
use comet_proto::comet::v1::query_message_request::Query as MessageQuery;
use comet_proto::comet::v1::reset_offset_request::Target as ResetTarget;
use comet_vocab::{namespace, system};
use openraft::ServerState;
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::Request;

use super::Console;
use super::brokers::{
    broker_targets, call_error, check_status, internal, query_messages as query_on,
};
use super::error::ApiError;
use super::series::read_totals;
use super::session::Caller;
use super::view::{
    client_json, group_json, message_json, parse_perm, parse_type, perm_name, topic_json,
};
use crate::lease::wall_ms;

pub(super) type ApiResult = Result<Json<Value>, ApiError>;

/// Most messages a key query returns per broker set.
const MAX_KEY_RESULTS: u32 = 1000;

/// `name` qualified by `namespace` (a name that already holds a namespace, as listed by the
/// console, is taken as it is).
fn qualified(namespace: Option<&str>, name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_request("the name is empty"));
    }
    let ns = namespace.unwrap_or("").trim();
    if ns.contains(namespace::SEPARATOR) {
        return Err(ApiError::bad_request(format!(
            "namespace {ns:?} must not contain '{}'",
            namespace::SEPARATOR
        )));
    }
    Ok(namespace::qualify(ns, name))
}

/// A destructive operation goes ahead only with `confirm` equal to the resource's name.
pub(super) fn confirmed(confirm: Option<&str>, name: &str, what: &str) -> Result<(), ApiError> {
    match confirm {
        Some(c) if c == name => Ok(()),
        Some(c) => Err(ApiError::bad_request(format!(
            "{what}: the confirmation {c:?} does not match {name:?}; type the name exactly"
        ))),
        None => Err(ApiError::bad_request(format!(
            "{what} cannot be undone: repeat the name {name:?} in the `confirm` field"
        ))),
    }
}

/// Milliseconds since the epoch from `ms` digits or an RFC 3339 time (UTC).
fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        ApiError::bad_request(format!(
            "{field} {s:?} is neither milliseconds since the epoch nor an RFC 3339 time such \
             as 2024-05-01T12:00:00Z: {e}"
        ))
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::bad_request(format!("{field} {s:?} is before 1970")))?
        .as_millis();
    i64::try_from(ms).map_err(|_| ApiError::bad_request(format!("{field} {s:?} is too late")))
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

// ---- cluster ---------------------------------------------------------------------------

/// `GET /api/overview`: controllers, broker sets, proxies.
pub(super) async fn overview(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    caller.may(&c, &Resource::cluster(), Action::Get)?;
    let meta = c.inner.grpc.applied();
    let (node, controllers, leading) = {
        let m = c.inner.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader;
        let leading = m.state == ServerState::Leader;
        let controllers: Vec<Value> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| {
                json!({
                    "node_id": id,
                    "address": n.addr,
                    "voter": m.membership_config.membership().voter_ids().any(|v| v == *id),
                    "leader": leader == Some(*id),
                })
            })
            .collect();
        let leader_address = leader.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.addr.clone())
        });
        let node = json!({
            "node_id": c.inner.node_id,
            "state": format!("{:?}", m.state),
            "leader_id": leader,
            "leader_address": leader_address,
            "term": m.current_term,
            "last_log_index": m.last_log_index,
            "last_applied_index": m.last_applied.map(|l| l.index),
        });
        (node, controllers, leading)
    };
    let statuses = c.inner.brokers.statuses(&meta).await;
    let broker_sets: Vec<Value> = meta
        .broker_sets
        .iter()
        .map(|s| {
            // Log ends: as the members answer now, else as they last reported to the leader.
            let mut logs: HashMap<u64, i64> = if leading {
                c.inner
                    .grpc
                    .log_reports(&s.name)
                    .into_iter()
                    .map(|(id, (_, end))| (id, end))
                    .collect()
            } else {
                HashMap::new()
            };
            for ((set, id), st) in &statuses {
                if *set == s.name && st.log_end_offset > 0 {
                    logs.insert(*id, st.log_end_offset);
                }
            }
            let master_end = logs.get(&s.master_broker_id).copied();
            let members: Vec<Value> = s
                .members
                .iter()
                .map(|b| {
                    let role = if s.master_epoch == 0 {
                        "unelected"
                    } else if b.broker_id == s.master_broker_id {
                        "master"
                    } else {
                        "replica"
                    };
                    let end = logs.get(&b.broker_id).copied();
                    let lag = match (master_end, end) {
                        (Some(m), Some(e)) if role == "replica" => Some((m - e).max(0)),
                        _ => None,
                    };
                    let disk = statuses.get(&(s.name.clone(), b.broker_id)).map(disk_json);
                    json!({
                        "broker_id": b.broker_id,
                        "address": b.address,
                        "role": role,
                        "alive": b.alive,
                        "in_sync": s.sync_state_set.contains(&b.broker_id),
                        "last_heartbeat_ms": b.last_heartbeat_ms,
                        "log_end_offset": end,
                        "replication_lag_bytes": lag,
                        "disk": disk,
                    })
                })
                .collect();
            json!({
                "name": s.name,
                "master_broker_id": s.master_broker_id,
                "master_epoch": s.master_epoch,
                "sync_state_set": s.sync_state_set,
                "members": members,
            })
        })
        .collect();
    let now = wall_ms();
    let proxies: Vec<Value> = c
        .inner
        .grpc
        .clients()
        .proxies(now, c.inner.cfg.client_timeout)
        .iter()
        .map(|p| {
            json!({
                "proxy_id": p.proxy_id,
                "address": p.address,
                "started_ms": p.started_ms,
                "uptime_ms": now.saturating_sub(p.started_ms).max(0),
                "clients": p.clients.len(),
                "reported_ms_ago": p.reported_ago.as_millis(),
            })
        })
        .collect();
    Ok(Json(json!({
        "cluster": meta.cluster_name,
        "revision": meta.revision,
        "node": node,
        "controllers": controllers,
        "broker_sets": broker_sets,
        "proxies": proxies,
        "topics": meta.topics.len(),
        "groups": meta.groups.len(),
    })))
}

/// A broker's disk use against its watermarks.
fn disk_json(st: &pb::GetBrokerStatusResponse) -> Value {
    let state = if st.disk_used_ratio > st.disk_refuse_watermark {
        "refusing"
    } else if st.disk_used_ratio > st.disk_high_watermark {
        "cleaning"
    } else {
        "ok"
    };
    json!({
        "used_ratio": st.disk_used_ratio,
        "high_watermark": st.disk_high_watermark,
        "refuse_watermark": st.disk_refuse_watermark,
        "state": state,
        "storage_bytes": st.storage_bytes,
    })
}

// ---- topics ----------------------------------------------------------------------------

/// `GET /api/topics`.
pub(super) async fn list_topics(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    let meta = c.inner.grpc.applied();
    let series = c.inner.series.lock();
    let topics: Vec<Value> = meta
        .topics
        .iter()
        .filter(|t| caller.sees(&c, &Resource::topic(&t.name)))
        .map(|t| topic_json(t, series.rate(&t.name)))
        .collect();
    Ok(Json(json!({"revision": meta.revision, "topics": topics})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TopicBody {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(rename = "type")]
    message_type: Option<String>,
    queues: Option<u32>,
    broker_sets: Option<Vec<String>>,
    permission: Option<String>,
}

fn topic_type(s: Option<&str>) -> Result<Option<pb::TopicMessageType>, ApiError> {
    s.filter(|s| !s.is_empty())
        .map(|s| {
            parse_type(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "type {s:?} is not one of NORMAL, FIFO, DELAY, TRANSACTION, MIXED"
                ))
            })
        })
        .transpose()
}

fn topic_perm(s: Option<&str>) -> Result<Option<v2::Permission>, ApiError> {
    s.filter(|s| !s.is_empty())
        .map(|s| {
            parse_perm(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "permission {s:?} is not one of READ_WRITE, READ, WRITE"
                ))
            })
        })
        .transpose()
}

fn queue_count(q: Option<u32>) -> Result<Option<u32>, ApiError> {
    match q {
        Some(0) => Err(ApiError::bad_request("queues must be at least 1")),
        other => Ok(other),
    }
}

/// `POST /api/topics`: creates a topic (queues on every broker set unless `broker_sets`).
pub(super) async fn create_topic(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<TopicBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    let name = qualified(b.namespace.as_deref(), b.name.as_deref().unwrap_or(""))?;
    caller.may(&c, &Resource::topic(&name), Action::Create)?;
    let message_type =
        topic_type(b.message_type.as_deref())?.unwrap_or(pb::TopicMessageType::Normal);
    let permission = topic_perm(b.permission.as_deref())?.unwrap_or(v2::Permission::ReadWrite);
    let queues = queue_count(b.queues)?.unwrap_or(8);
    let sets: Vec<String> = match b.broker_sets.filter(|s| !s.is_empty()) {
        Some(sets) => sets,
        None => {
            let meta = c.inner.grpc.applied();
            if meta.broker_sets.is_empty() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "no broker set is registered yet, so the topic has nowhere to live; start a \
                     broker first",
                ));
            }
            meta.broker_sets.iter().map(|s| s.name.clone()).collect()
        }
    };
    let topic = pb::Topic {
        name,
        message_type: message_type as i32,
        placements: sets
            .into_iter()
            .map(|broker_set| pb::QueuePlacement {
                broker_set,
                queue_count: queues,
            })
            .collect(),
        permission: permission as i32,
        attributes: Default::default(),
    };
    let reply = c
        .inner
        .grpc
        .create_topic(Request::new(pb::CreateTopicRequest { topic: Some(topic) }))
        .await?
        .into_inner();
    let t = reply.topic.unwrap_or_default();
    Ok((StatusCode::CREATED, Json(topic_json(&t, None))))
}

/// `PUT /api/topics/{name}`: changes the given fields (queues on `broker_sets`, or on all).
pub(super) async fn update_topic(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<TopicBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    caller.may(&c, &Resource::topic(&name), Action::Update)?;
    let meta = c.inner.grpc.applied();
    let Some(mut topic) = meta.topics.iter().find(|t| t.name == name).cloned() else {
        return Err(ApiError::not_found(format!(
            "topic {name:?} does not exist"
        )));
    };
    if let Some(t) = topic_type(b.message_type.as_deref())? {
        topic.message_type = t as i32;
    }
    if let Some(p) = topic_perm(b.permission.as_deref())? {
        topic.permission = p as i32;
    }
    let queues = queue_count(b.queues)?;
    match b.broker_sets.filter(|s| !s.is_empty()) {
        None => {
            if let Some(q) = queues {
                for p in &mut topic.placements {
                    p.queue_count = q;
                }
            }
        }
        Some(sets) => {
            for s in sets {
                let count = queues.unwrap_or(8);
                match topic.placements.iter_mut().find(|p| p.broker_set == s) {
                    Some(p) => p.queue_count = count,
                    None => topic.placements.push(pb::QueuePlacement {
                        broker_set: s,
                        queue_count: count,
                    }),
                }
            }
        }
    }
    let reply = c
        .inner
        .grpc
        .update_topic(Request::new(pb::UpdateTopicRequest { topic: Some(topic) }))
        .await?
        .into_inner();
    Ok(Json(topic_json(&reply.topic.unwrap_or_default(), None)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfirmBody {
    confirm: Option<String>,
}

/// Deletes the topic or group `resource` once the caller may and `body` confirms its name.
async fn delete_confirmed(
    c: &Console,
    caller: &Caller,
    resource: Resource,
    body: Result<Json<ConfirmBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    caller.may(c, &resource, Action::Delete)?;
    let name = resource.name;
    let reply = match resource.kind {
        ResourceType::Topic => {
            confirmed(b.confirm.as_deref(), &name, "deleting a topic")?;
            c.inner
                .grpc
                .delete_topic(Request::new(pb::DeleteTopicRequest { name: name.clone() }))
                .await?
        }
        ResourceType::Group => {
            confirmed(b.confirm.as_deref(), &name, "deleting a group")?;
            c.inner
                .grpc
                .delete_group(Request::new(pb::DeleteGroupRequest { name: name.clone() }))
                .await?
        }
        ResourceType::Cluster => {
            return Err(ApiError::bad_request("the cluster cannot be deleted"));
        }
    };
    let revision = reply.into_inner().revision;
    Ok(Json(json!({"deleted": name, "revision": revision})))
}

/// `DELETE /api/topics/{name}` with `{"confirm": "<name>"}`.
pub(super) async fn delete_topic(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<ConfirmBody>, JsonRejection>,
) -> ApiResult {
    delete_confirmed(&c, &caller, Resource::topic(name), body).await
}

/// `GET /api/topics/{name}`: the topic and its route as a client sees it.
pub(super) async fn topic_route(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    caller.may(&c, &Resource::topic(&name), Action::Get)?;
    let meta = c.inner.grpc.applied();
    let Some(topic) = meta.topics.iter().find(|t| t.name == name) else {
        return Err(ApiError::not_found(format!(
            "topic {name:?} does not exist"
        )));
    };
    let route: Vec<Value> = topic
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
                "permission": perm_name(topic.permission),
            })
        })
        .collect();
    let mut out = topic_json(topic, c.inner.series.lock().rate(&name));
    out["route"] = Value::Array(route);
    Ok(Json(out))
}

// ---- groups ----------------------------------------------------------------------------

/// `GET /api/groups`.
pub(super) async fn list_groups(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    let meta = c.inner.grpc.applied();
    let now = wall_ms();
    let proxies = c
        .inner
        .grpc
        .clients()
        .proxies(now, c.inner.cfg.client_timeout);
    let groups: Vec<Value> = meta
        .groups
        .iter()
        .filter(|g| caller.sees(&c, &Resource::group(&g.name)))
        .map(|g| {
            let mut v = group_json(g);
            let consumers = proxies
                .iter()
                .flat_map(|p| &p.clients)
                .filter(|cl| cl.group == g.name)
                .count();
            v["consumers"] = json!(consumers);
            v
        })
        .collect();
    Ok(Json(json!({"revision": meta.revision, "groups": groups})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupBody {
    name: Option<String>,
    namespace: Option<String>,
    max_retries: Option<u32>,
    fifo: Option<bool>,
    broadcast: Option<bool>,
    broadcast_from_start: Option<bool>,
    priority_percent: Option<u32>,
}

/// `POST /api/groups`.
pub(super) async fn create_group(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<GroupBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    let name = qualified(b.namespace.as_deref(), b.name.as_deref().unwrap_or(""))?;
    caller.may(&c, &Resource::group(&name), Action::Create)?;
    let group = pb::Group {
        name,
        max_retries: b.max_retries.unwrap_or(16),
        retry_policy: None,
        fifo: b.fifo.unwrap_or(false),
        broadcast: b.broadcast.unwrap_or(false),
        broadcast_from_start: b.broadcast_from_start.unwrap_or(false),
        priority_percent: b.priority_percent,
    };
    let reply = c
        .inner
        .grpc
        .create_group(Request::new(pb::CreateGroupRequest { group: Some(group) }))
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(group_json(&reply.group.unwrap_or_default())),
    ))
}

/// `PUT /api/groups/{name}`: changes max retries and FIFO (the retry backoff is kept).
pub(super) async fn update_group(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<GroupBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    caller.may(&c, &Resource::group(&name), Action::Update)?;
    let meta = c.inner.grpc.applied();
    let Some(mut group) = meta.groups.iter().find(|g| g.name == name).cloned() else {
        return Err(ApiError::not_found(format!(
            "group {name:?} does not exist"
        )));
    };
    if let Some(m) = b.max_retries {
        group.max_retries = m;
    }
    if let Some(f) = b.fifo {
        group.fifo = f;
    }
    let reply = c
        .inner
        .grpc
        .update_group(Request::new(pb::UpdateGroupRequest { group: Some(group) }))
        .await?
        .into_inner();
    Ok(Json(group_json(&reply.group.unwrap_or_default())))
}

/// `DELETE /api/groups/{name}` with `{"confirm": "<name>"}`.
pub(super) async fn delete_group(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<ConfirmBody>, JsonRejection>,
) -> ApiResult {
    delete_confirmed(&c, &caller, Resource::group(name), body).await
}

#[derive(Debug, Deserialize)]
pub(super) struct ProgressQuery {
    topic: Option<String>,
}

/// `GET /api/groups/{name}[?topic=T]`: settings, per-queue backlog and in flight on each
/// topic (the given one, else those its consumers subscribe to), dead letters, consumers.
pub(super) async fn group_progress(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    query: Result<Query<ProgressQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query?;
    if name.is_empty() {
        return Err(ApiError::bad_request("the group name is empty"));
    }
    caller.may(&c, &Resource::group(&name), Action::Get)?;
    let meta = c.inner.grpc.applied();
    let now = wall_ms();
    let consumers: Vec<Value> = c
        .inner
        .grpc
        .clients()
        .proxies(now, c.inner.cfg.client_timeout)
        .iter()
        .flat_map(|p| {
            p.clients
                .iter()
                .filter(|cl| cl.group == name)
                .map(|cl| client_json(cl, &p.address, now))
        })
        .collect();
    let topics: BTreeSet<String> = match q.topic.filter(|t| !t.is_empty()) {
        Some(t) => BTreeSet::from([t]),
        None => {
            let mut from_clients: BTreeSet<String> = consumers
                .iter()
                .flat_map(|cl| cl["topics"].as_array().cloned().unwrap_or_default())
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            from_clients.extend(
                c.inner
                    .series
                    .lock()
                    .pairs()
                    .into_iter()
                    .filter(|(g, _)| *g == name)
                    .map(|(_, t)| t),
            );
            from_clients
        }
    };
    let mut per_topic = Vec::new();
    for topic in &topics {
        let targets = broker_targets(&meta, topic, None)?;
        let (mut backlog, mut inflight) = (0i64, 0i64);
        let mut queues = Vec::new();
        for t in &targets {
            let reply = c
                .inner
                .brokers
                .client(t)?
                .get_consumer_progress(pb::GetConsumerProgressRequest {
                    group: Some(internal(&name)),
                    topic: Some(internal(topic)),
                })
                .await
                .map_err(|s| call_error(t, "reading consumer progress", &s))?
                .into_inner();
            check_status(t, "reading consumer progress", reply.status.as_ref())?;
            for qp in &reply.queues {
                backlog += qp.backlog;
                inflight += qp.inflight;
                queues.push(json!({
                    "broker_set": t.broker_set,
                    "queue_id": qp.queue_id,
                    "min_offset": qp.min_offset,
                    "max_offset": qp.max_offset,
                    "consume_offset": (qp.consume_offset >= 0).then_some(qp.consume_offset),
                    "backlog": qp.backlog,
                    "inflight": qp.inflight,
                }));
            }
        }
        c.inner
            .series
            .lock()
            .follow([(name.clone(), topic.clone())]);
        per_topic.push(json!({
            "topic": topic, "backlog": backlog, "inflight": inflight, "queues": queues,
        }));
    }
    let dlq = system::dlq_topic(&name);
    let mut dead_letters = 0i64;
    if let Ok(targets) = broker_targets(&meta, &dlq, None) {
        for t in &targets {
            let Ok(mut client) = c.inner.brokers.client(t) else {
                continue;
            };
            let reply = client
                .get_consumer_progress(pb::GetConsumerProgressRequest {
                    group: Some(internal(&name)),
                    topic: Some(internal(&dlq)),
                })
                .await;
            if let Ok(reply) = reply {
                let reply = reply.into_inner();
                if check_status(t, "", reply.status.as_ref()).is_ok() {
                    dead_letters += reply
                        .queues
                        .iter()
                        .map(|q| q.max_offset - q.min_offset)
                        .sum::<i64>();
                }
            }
        }
    }
    let settings = meta.groups.iter().find(|g| g.name == name).map(group_json);
    Ok(Json(json!({
        "group": name,
        "settings": settings,
        "fifo": settings.as_ref().is_some_and(|s| s["fifo"] == true),
        "topics": per_topic,
        "dead_letter_topic": dlq,
        "dead_letters": dead_letters,
        "consumers": consumers,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetBody {
    topic: Option<String>,
    timestamp: Option<String>,
    confirm: Option<String>,
}

/// `POST /api/groups/{name}/reset-offset` with `{"topic", "timestamp", "confirm": "<group>"}`:
/// moves the group's offsets on every queue of the topic to the first message stored at or
/// after the time.
pub(super) async fn reset_offset(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<ResetBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    caller.may(&c, &Resource::group(&name), Action::Update)?;
    let topic = b
        .topic
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("give the topic whose offsets to reset"))?;
    let at = b
        .timestamp
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("give the time to reset to (timestamp)"))?;
    let at = parse_time("timestamp", &at)?;
    confirmed(b.confirm.as_deref(), &name, "resetting a group's offsets")?;
    let meta = c.inner.grpc.applied();
    let targets = broker_targets(&meta, &topic, None)?;
    let mut sets = Vec::new();
    for t in &targets {
        let reply = c
            .inner
            .brokers
            .client(t)?
            .reset_offset(pb::ResetOffsetRequest {
                group: Some(internal(&name)),
                topic: Some(internal(&topic)),
                queue_id: -1,
                target: Some(ResetTarget::Timestamp(timestamp(at))),
            })
            .await
            .map_err(|s| call_error(t, "resetting offsets", &s))?
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
    tracing::info!(group = %name, topic = %topic, at_ms = at, "console: offsets reset");
    Ok(Json(
        json!({"group": name, "topic": topic, "broker_sets": sets}),
    ))
}

// ---- clients ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct ClientQuery {
    topic: Option<String>,
    group: Option<String>,
}

/// `GET /api/clients[?topic=T][&group=G]`: every client connected to any proxy.
pub(super) async fn list_clients(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ClientQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query?;
    let topic = q.topic.filter(|t| !t.is_empty());
    let group = q.group.filter(|g| !g.is_empty());
    let now = wall_ms();
    let proxies = c
        .inner
        .grpc
        .clients()
        .proxies(now, c.inner.cfg.client_timeout);
    let clients: Vec<Value> = proxies
        .iter()
        .flat_map(|p| p.clients.iter().map(move |cl| (p, cl)))
        .filter(|(_, cl)| group.as_ref().is_none_or(|g| &cl.group == g))
        .filter(|(_, cl)| topic.as_ref().is_none_or(|t| cl.topics.contains(t)))
        .filter(|(_, cl)| {
            (!cl.group.is_empty() && caller.sees(&c, &Resource::group(&cl.group)))
                || cl
                    .topics
                    .iter()
                    .any(|t| caller.sees(&c, &Resource::topic(t)))
        })
        .map(|(p, cl)| client_json(cl, &p.address, now))
        .collect();
    // Consumers seen here are followed by the charts.
    let pairs = proxies.iter().flat_map(|p| &p.clients).flat_map(|cl| {
        cl.subscriptions
            .iter()
            .filter(|_| !cl.group.is_empty())
            .map(|s| (cl.group.clone(), s.topic.clone()))
    });
    c.inner.series.lock().follow(pairs);
    Ok(Json(json!({"clients": clients, "proxies": proxies.len()})))
}

// ---- messages --------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct MessageQueryParams {
    topic: Option<String>,
    namespace: Option<String>,
    id: Option<String>,
    key: Option<String>,
    begin: Option<String>,
    end: Option<String>,
    max: Option<u32>,
    queue: Option<i32>,
    offset: Option<i64>,
    broker_set: Option<String>,
}

/// `GET /api/messages?topic=T&(id=I | key=K[&begin&end&max] | queue=Q&offset=O[&broker_set])`.
pub(super) async fn query_messages(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<MessageQueryParams>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query?;
    let topic = qualified(q.namespace.as_deref(), q.topic.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::bad_request("give the topic to search (topic)"))?;
    // Reading stored messages is reading the topic.
    caller.may(&c, &Resource::topic(&topic), Action::Sub)?;
    let meta = c.inner.grpc.applied();
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let (query, targets) = match (nonempty(q.id), nonempty(q.key), q.queue, q.offset) {
        (Some(id), None, None, None) => (
            MessageQuery::MessageId(id.trim().to_owned()),
            broker_targets(&meta, &topic, None)?,
        ),
        (None, Some(key), None, None) => {
            let max = q.max.unwrap_or(32);
            if !(1..=MAX_KEY_RESULTS).contains(&max) {
                return Err(ApiError::bad_request(format!(
                    "max must be within 1..={MAX_KEY_RESULTS}, got {max}"
                )));
            }
            let begin = nonempty(q.begin)
                .map(|b| parse_time("begin", &b))
                .transpose()?;
            let end = nonempty(q.end).map(|e| parse_time("end", &e)).transpose()?;
            if let (Some(b), Some(e)) = (begin, end)
                && b > e
            {
                return Err(ApiError::bad_request(format!(
                    "begin ({b} ms) is after end ({e} ms)"
                )));
            }
            let key = pb::KeyQuery {
                key,
                begin: begin.map(timestamp),
                end: end.map(timestamp),
                max: i32::try_from(max).unwrap_or(32),
            };
            (MessageQuery::Key(key), broker_targets(&meta, &topic, None)?)
        }
        (None, None, Some(queue), Some(offset)) => {
            if queue < 0 || offset < 0 {
                return Err(ApiError::bad_request(
                    "queue and offset must not be negative",
                ));
            }
            let targets = broker_targets(&meta, &topic, nonempty(q.broker_set).as_deref())?;
            if targets.len() > 1 {
                return Err(ApiError::bad_request(format!(
                    "topic {topic:?} spans several broker sets; name one (broker_set)"
                )));
            }
            (
                MessageQuery::QueueOffset(pb::QueueOffsetQuery {
                    queue_id: queue,
                    offset,
                }),
                targets,
            )
        }
        _ => {
            return Err(ApiError::bad_request(
                "search by exactly one of: id, key (with optional begin/end/max), or queue \
                 and offset",
            ));
        }
    };
    let mut messages = Vec::new();
    for t in &targets {
        let found = query_on(
            &mut c.inner.brokers.client(t)?,
            t,
            &topic,
            &query,
            tonic::Request::new,
        )
        .await?;
        messages.extend(found.iter().map(|m| message_json(&t.broker_set, m)));
    }
    Ok(Json(
        json!({"topic": topic, "count": messages.len(), "messages": messages}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResendBody {
    group: Option<String>,
    message_id: Option<String>,
}

/// `POST /api/dead-letters/resend` with `{"group", "message_id"}`: sends the dead-lettered
/// message again to the topic it came from (same id, key, tag, properties and body), where
/// every group subscribed to it receives it as a new message.
pub(super) async fn resend_dead_letter(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<ResendBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    let group = b
        .group
        .filter(|g| !g.is_empty())
        .ok_or_else(|| ApiError::bad_request("give the consumer group (group)"))?;
    let id = b
        .message_id
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("give the dead letter's message id (message_id)"))?;
    let meta = c.inner.grpc.applied();
    let dlq = system::dlq_topic(&group);
    caller.may(&c, &Resource::topic(&dlq), Action::Sub)?;
    let mut found = None;
    for t in broker_targets(&meta, &dlq, None)? {
        let reply = c
            .inner
            .brokers
            .client(&t)?
            .query_message(pb::QueryMessageRequest {
                topic: Some(internal(&dlq)),
                query: Some(MessageQuery::MessageId(id.clone())),
            })
            .await
            .map_err(|s| call_error(&t, "finding the dead letter", &s))?
            .into_inner();
        if let Some(m) = reply.messages.into_iter().next() {
            found = Some(m);
            break;
        }
    }
    let Some(dead) = found else {
        return Err(ApiError::not_found(format!(
            "no dead letter with message id {id:?} in {dlq:?}"
        )));
    };
    let sp = dead.system_properties.clone().unwrap_or_default();
    let origin = sp
        .dead_letter_queue
        .as_ref()
        .map(|d| d.topic.clone())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("the message {id:?} does not record the topic it came from"),
            )
        })?;
    caller.may(&c, &Resource::topic(&origin), Action::Pub)?;
    let Some(topic) = meta.topics.iter().find(|t| t.name == origin) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("the dead letter came from topic {origin:?}, which no longer exists"),
        ));
    };
    let targets = broker_targets(&meta, &origin, None)?;
    // The queue: the message group's hash for FIFO messages (order within the group), else
    // the id's; on the first broker set that holds the topic and has a live master.
    let t = targets.first().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no broker set to send to")
    })?;
    let queues = topic
        .placements
        .iter()
        .find(|p| p.broker_set == t.broker_set)
        .map_or(1, |p| p.queue_count.max(1));
    let key = sp.message_group.as_deref().unwrap_or(&id);
    let queue_id = i32::try_from(crc32c::crc32c(key.as_bytes()) % queues).unwrap_or(0);
    let message = v2::Message {
        topic: Some(internal(&origin)),
        user_properties: dead.user_properties.clone(),
        system_properties: Some(v2::SystemProperties {
            tag: sp.tag.clone(),
            keys: sp.keys.clone(),
            message_id: id.clone(),
            body_encoding: sp.body_encoding,
            message_type: sp.message_type,
            born_timestamp: Some(timestamp(wall_ms())),
            born_host: sp.born_host.clone(),
            queue_id,
            message_group: sp.message_group.clone(),
            ..Default::default()
        }),
        body: dead.body.clone(),
    };
    let reply = c
        .inner
        .brokers
        .client(t)?
        .send_message(v2::SendMessageRequest {
            messages: vec![message],
        })
        .await
        .map_err(|s| call_error(t, "resending the dead letter", &s))?
        .into_inner();
    check_status(t, "resending the dead letter", reply.status.as_ref())?;
    let offset = reply.entries.first().map(|e| e.offset);
    tracing::info!(group = %group, topic = %origin, message_id = %id, "console: dead letter resent");
    Ok(Json(json!({
        "resent": id,
        "topic": origin,
        "broker_set": t.broker_set,
        "queue_id": queue_id,
        "offset": offset,
    })))
}

// ---- charts ----------------------------------------------------------------------------

/// `GET /api/series`: the chart samples (taking a new one when due).
pub(super) async fn series(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    caller.may(&c, &Resource::cluster(), Action::Get)?;
    let (due, pairs) = {
        let mut s = c.inner.series.lock();
        (s.begin(c.inner.cfg.sample_interval), s.pairs())
    };
    if due {
        let meta = c.inner.grpc.applied();
        let read = tokio::time::timeout(Duration::from_secs(10), read_totals(&c, &meta, &pairs))
            .await
            .ok()
            .flatten();
        let latency: Vec<_> = c
            .inner
            .grpc
            .clients()
            .proxies(wall_ms(), c.inner.cfg.client_timeout)
            .into_iter()
            .map(|p| (p.proxy_id, p.rpc_latency))
            .collect();
        c.inner
            .series
            .lock()
            .record(Instant::now(), wall_ms(), read, &latency);
    }
    let mut out = c.inner.series.lock().json();
    out["interval_ms"] = json!(c.inner.cfg.sample_interval.as_millis());
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_names_and_times_when_parsed_should_accept_valid_and_explain_invalid() {
        assert_eq!(qualified(Some("ns"), "t").ok(), Some("ns%t".to_owned()));
        assert_eq!(qualified(None, "ns%t").ok(), Some("ns%t".to_owned()));
        assert!(qualified(None, " ").is_err());
        assert!(qualified(Some("a%b"), "t").is_err());
        assert!(confirmed(Some("t"), "t", "x").is_ok());
        assert!(confirmed(Some("u"), "t", "x").is_err());
        assert!(confirmed(None, "t", "x").is_err());
        assert_eq!(parse_time("t", "1000").ok(), Some(1000));
        assert_eq!(parse_time("t", "1970-01-01T00:00:01Z").ok(), Some(1000));
        assert!(parse_time("t", "yesterday").is_err());
    }
}
