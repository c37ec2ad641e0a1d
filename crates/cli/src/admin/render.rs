//! Rendering: every resource an admin command prints, as the JSON object written on stdout.
//! Field names and value spellings here are the output format scripts rely on.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1::{
    ClusterMetadata, DescribeControllersResponse, Group, Topic, TopicMessageType,
};
use serde_json::{Value, json};

use crate::duration::HumanDuration;

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
        Ok(TopicMessageType::Priority) => "PRIORITY",
        Ok(TopicMessageType::Lite) => "LITE",
        _ => "UNSPECIFIED",
    }
}

pub(super) fn perm_name(p: i32) -> &'static str {
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
    json!({"name": g.name, "max_retries": g.max_retries, "fifo": g.fifo, "broadcast": g.broadcast,
        "broadcast_from_start": g.broadcast_from_start, "backoff": backoff,
        "priority_percent": g.priority_percent.unwrap_or(100)})
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

pub(super) fn time_json(t: Option<&prost_types::Timestamp>) -> Value {
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
