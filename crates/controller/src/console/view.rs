//! Metadata, clients and stored messages as the JSON objects the console pages read. Field
//! names here are the console API's format.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2;
use comet_proto::comet::v1::{ConnectedClient, Group, Topic, TopicMessageType};
use serde_json::{Value, json};

/// Bodies larger than this are cut in the message view (the page says so).
const MAX_BODY_SHOWN: usize = 64 << 10;

/// A topic message type's name.
pub(super) fn type_name(t: i32) -> &'static str {
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

/// A topic message type from its name (case-insensitive).
pub(super) fn parse_type(s: &str) -> Option<TopicMessageType> {
    match s.to_ascii_uppercase().as_str() {
        "NORMAL" => Some(TopicMessageType::Normal),
        "FIFO" => Some(TopicMessageType::Fifo),
        "DELAY" => Some(TopicMessageType::Delay),
        "TRANSACTION" => Some(TopicMessageType::Transaction),
        "MIXED" => Some(TopicMessageType::Mixed),
        _ => None,
    }
}

/// A permission's name.
pub(super) fn perm_name(p: i32) -> &'static str {
    match v2::Permission::try_from(p) {
        Ok(v2::Permission::Read) => "READ",
        Ok(v2::Permission::Write) => "WRITE",
        Ok(v2::Permission::None) => "NONE",
        _ => "READ_WRITE",
    }
}

/// A permission from its name (case-insensitive; `RW`, `R` and `W` too).
pub(super) fn parse_perm(s: &str) -> Option<v2::Permission> {
    match s.to_ascii_uppercase().as_str() {
        "READ_WRITE" | "RW" => Some(v2::Permission::ReadWrite),
        "READ" | "R" => Some(v2::Permission::Read),
        "WRITE" | "W" => Some(v2::Permission::Write),
        _ => None,
    }
}

/// A topic, with its rate of arrivals (messages/s) when the charts sampled it.
pub(super) fn topic_json(t: &Topic, rate_in: Option<f64>) -> Value {
    json!({
        "name": t.name,
        "type": type_name(t.message_type),
        "permission": perm_name(t.permission),
        "queues": t.placements.iter().map(|p| p.queue_count).sum::<u32>(),
        "placements": t.placements.iter()
            .map(|p| json!({"broker_set": p.broker_set, "queues": p.queue_count}))
            .collect::<Vec<_>>(),
        "attributes": t.attributes,
        "rate_in": rate_in,
    })
}

fn dur_ms(d: Option<&prost_types::Duration>) -> Option<u128> {
    d.and_then(|d| Duration::try_from(*d).ok())
        .map(|d| d.as_millis())
}

/// A consumer group.
pub(super) fn group_json(g: &Group) -> Value {
    let backoff = match g.retry_policy.as_ref().and_then(|p| p.strategy.as_ref()) {
        Some(v2::retry_policy::Strategy::ExponentialBackoff(e)) => json!({
            "exponential": {
                "initial_ms": dur_ms(e.initial.as_ref()),
                "max_ms": dur_ms(e.max.as_ref()),
                "multiplier": e.multiplier,
            }
        }),
        Some(v2::retry_policy::Strategy::CustomizedBackoff(c)) => json!({
            "customized_ms": c.next.iter().map(|d| dur_ms(Some(d))).collect::<Vec<_>>()
        }),
        None => Value::String("default".into()),
    };
    json!({
        "name": g.name,
        "max_retries": g.max_retries,
        "fifo": g.fifo,
        "backoff": backoff,
    })
}

/// A connected client as a proxy reported it.
pub(super) fn client_json(c: &ConnectedClient, proxy: &str, now_ms: i64) -> Value {
    json!({
        "client_id": c.client_id,
        "proxy": proxy,
        "language": c.language,
        "version": c.version,
        "hostname": c.hostname,
        "platform": c.platform,
        "client_type": c.client_type,
        "group": c.group,
        "topics": c.topics,
        "subscriptions": c.subscriptions.iter().map(|s| json!({
            "topic": s.topic, "type": s.expression_type, "expression": s.expression,
        })).collect::<Vec<_>>(),
        "last_heartbeat_ms": c.last_heartbeat_ms,
        "idle_ms": now_ms.saturating_sub(c.last_heartbeat_ms).max(0),
        "telemetry_streams": c.telemetry_streams,
    })
}

/// Milliseconds since the epoch of a protobuf timestamp.
pub(super) fn ts_ms(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000)
    })
}

/// The body as the page shows it: JSON pretty-printed, text, or hex; cut at 64 KiB.
fn body_json(body: &[u8]) -> Value {
    let truncated = body.len() > MAX_BODY_SHOWN;
    let shown = &body[..body.len().min(MAX_BODY_SHOWN)];
    let (format, text) = match std::str::from_utf8(shown) {
        Ok(s) => match serde_json::from_str::<Value>(s) {
            Ok(v) if !truncated && (v.is_object() || v.is_array()) => (
                "json",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| s.to_owned()),
            ),
            _ => ("text", s.to_owned()),
        },
        Err(_) => ("hex", hex::encode(shown)),
    };
    json!({"format": format, "content": text, "size": body.len(), "truncated": truncated})
}

/// A stored message: headers, properties and body.
pub(super) fn message_json(broker_set: &str, m: &v2::Message) -> Value {
    let sp = m.system_properties.clone().unwrap_or_default();
    json!({
        "topic": m.topic.as_ref().map(|t| t.name.clone()),
        "message_id": sp.message_id,
        "broker_set": broker_set,
        "queue_id": sp.queue_id,
        "queue_offset": sp.queue_offset,
        "message_type": v2::MessageType::try_from(sp.message_type)
            .map_or("UNSPECIFIED", |t| t.as_str_name()),
        "tag": sp.tag,
        "keys": sp.keys,
        "message_group": sp.message_group,
        "user_properties": m.user_properties,
        "born_host": sp.born_host,
        "born_ms": ts_ms(sp.born_timestamp.as_ref()),
        "store_host": sp.store_host,
        "store_ms": ts_ms(sp.store_timestamp.as_ref()),
        "delivery_ms": ts_ms(sp.delivery_timestamp.as_ref()),
        "dead_letter_of": sp.dead_letter_queue.as_ref().map(|d| d.topic.clone()),
        "body": body_json(&m.body),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_bodies_when_shown_should_pick_json_text_or_hex() {
        assert_eq!(body_json(br#"{"a":1}"#)["format"], "json");
        assert_eq!(body_json(b"hello")["format"], "text");
        assert_eq!(body_json(b"42")["format"], "text");
        let b = body_json(&[0xff, 0x00]);
        assert_eq!(b["format"], "hex");
        assert_eq!(b["content"], "ff00");
        let big = vec![b'a'; MAX_BODY_SHOWN + 1];
        assert_eq!(body_json(&big)["truncated"], true);
    }
}
