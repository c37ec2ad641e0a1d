//! The gRPC adapter's conversions: protobuf requests to the broker's own request types, and
//! its results (stored messages, deliveries, failures) to protobuf replies. The only place,
//! with `service` and the replication wire code, where the broker's operations meet protobuf.
//!
//! Fields the store has no column for travel in the record's system-property map under the
//! `SYS_*` keys of the `sys` module; a delivered message shows them as the public fields.

use std::time::Duration;

use bytes::Bytes;
use comet_proto::apache::rocketmq::v2::{
    self as v2, Code, DeadLetterQueue, Digest, DigestType, Encoding, MessageType, Resource, Status,
    SystemProperties,
};
use comet_store::StoredMessage;
use comet_vocab::duration;
use md5::{Digest as _, Md5};

use crate::clock::ms_to_ts;
use crate::lite::{LiteAction, LiteOffset, LiteSubscriptionRequest};
use crate::outcome::Failure;
use crate::record::{MessageKind, NewMessage};
use crate::sys::{
    SYS_BODY_ENCODING, SYS_BORN_HOST, SYS_DELIVERY_TIMESTAMP, SYS_DLQ_ORIGIN_TOPIC, SYS_LITE_TOPIC,
    SYS_MESSAGE_GROUP, SYS_MESSAGE_TYPE, SYS_PRIORITY, SYS_TRACE_CONTEXT,
};

// ---------------------------------------------------------------------------- statuses

pub(crate) use comet_vocab::status::{ok, status};

/// A failure as an in-body status.
pub(crate) fn failed(f: Failure) -> Status {
    status(f.code, f.message)
}

/// The status of a single-outcome answer.
pub(crate) fn status_of<T>(r: &Result<T, Failure>) -> Status {
    match r {
        Ok(_) => ok(),
        Err(f) => failed(f.clone()),
    }
}

/// The overall status of per-entry results (RocketMQ's rule, defined once in vocab).
pub(crate) use comet_vocab::status::aggregate as overall;

// ---------------------------------------------------------------------------- requests

/// The name of a resource (empty when absent).
pub(crate) fn name(r: Option<&Resource>) -> String {
    r.map(|r| r.name.clone()).unwrap_or_default()
}

/// The topic and queue id a request's `message_queue` names.
///
/// # Errors
/// BAD_REQUEST when it is absent.
pub(crate) fn queue(mq: Option<&v2::MessageQueue>) -> Result<(String, i32), Failure> {
    let mq = mq.ok_or_else(|| Failure::new(Code::BadRequest, "message_queue is required"))?;
    Ok((name(mq.topic.as_ref()), mq.id))
}

/// A message of a SendMessage request as the broker's own type, its fields moved (a message
/// without system properties reads as one without a message id).
pub(crate) fn new_message(m: v2::Message) -> NewMessage {
    let v2::Message {
        topic,
        user_properties,
        system_properties,
        body,
    } = m;
    let sp = system_properties.unwrap_or_default();
    let kind = match MessageType::try_from(sp.message_type).unwrap_or(MessageType::Unspecified) {
        MessageType::Unspecified => None,
        MessageType::Normal => Some(MessageKind::Normal),
        MessageType::Fifo => Some(MessageKind::Fifo),
        MessageType::Delay => Some(MessageKind::Delay),
        MessageType::Transaction => Some(MessageKind::Transaction),
        MessageType::Lite => Some(MessageKind::Lite),
        MessageType::Priority => Some(MessageKind::Priority),
    };
    NewMessage {
        topic: topic.map(|r| r.name).unwrap_or_default(),
        queue_id: sp.queue_id,
        message_id: sp.message_id,
        kind,
        tag: sp.tag,
        keys: sp.keys,
        message_group: sp.message_group,
        delivery_ms: sp.delivery_timestamp.as_ref().map(ts_to_ms),
        priority: sp.priority,
        lite_topic: sp.lite_topic,
        // A negative or malformed one is ignored (the broker's `transaction_timeout` applies),
        // as the proxy passes it through unchecked.
        recovery: sp
            .orphaned_transaction_recovery_duration
            .as_ref()
            .and_then(duration::from_proto),
        trace_context: sp.trace_context,
        born_host: sp.born_host,
        born_ms: sp.born_timestamp.as_ref().map(ts_to_ms),
        gzip: sp.body_encoding == Encoding::Gzip as i32,
        user_properties: user_properties.into_iter().collect(),
        body,
    }
}

/// A SyncLiteSubscription as the broker's own type.
///
/// # Errors
/// BAD_REQUEST for an unknown action or offset policy.
pub(crate) fn lite_subscription(
    r: v2::SyncLiteSubscriptionRequest,
    client_id: String,
    quota: i32,
) -> Result<LiteSubscriptionRequest, Failure> {
    use v2::offset_option::{OffsetType, Policy};
    let action = match v2::LiteSubscriptionAction::try_from(r.action) {
        Ok(v2::LiteSubscriptionAction::PartialAdd) => LiteAction::PartialAdd,
        Ok(v2::LiteSubscriptionAction::PartialRemove) => LiteAction::PartialRemove,
        Ok(v2::LiteSubscriptionAction::CompleteAdd) => LiteAction::CompleteAdd,
        Ok(v2::LiteSubscriptionAction::CompleteRemove) => LiteAction::CompleteRemove,
        Err(_) => {
            return Err(Failure::new(
                Code::BadRequest,
                format!("unknown lite subscription action {}", r.action),
            ));
        }
    };
    let offset = match r.offset_option.and_then(|o| o.offset_type) {
        None => None,
        Some(OffsetType::Policy(p)) => Some(match Policy::try_from(p) {
            Ok(Policy::Last) => LiteOffset::Last,
            Ok(Policy::Min) => LiteOffset::Min,
            Ok(Policy::Max) => LiteOffset::Max,
            Err(_) => {
                return Err(Failure::new(
                    Code::BadRequest,
                    format!("unknown offset policy {p}"),
                ));
            }
        }),
        Some(OffsetType::Offset(o)) => Some(LiteOffset::Offset(o)),
        Some(OffsetType::TailN(n)) => Some(LiteOffset::TailN(n)),
        Some(OffsetType::Timestamp(t)) => Some(LiteOffset::Timestamp(t)),
    };
    Ok(LiteSubscriptionRequest {
        group: name(r.group.as_ref()),
        topic: name(r.topic.as_ref()),
        client_id,
        action,
        lite_topics: r.lite_topic_set,
        offset,
        quota: usize::try_from(quota).unwrap_or(0),
    })
}

/// The invisible duration of a request. Refused when negative or malformed (nanos outside
/// `0..1e9`) with the proxy's code for it; its range is the operation's rule.
///
/// # Errors
/// ILLEGAL_INVISIBLE_TIME.
pub(crate) fn invisible(d: &prost_types::Duration) -> Result<Duration, Failure> {
    duration::from_proto(d).ok_or_else(|| {
        Failure::new(
            Code::IllegalInvisibleTime,
            format!(
                "invisible duration {}s{}ns is negative or malformed",
                d.seconds, d.nanos
            ),
        )
    })
}

/// The long-polling timeout of a request (absent: none). Refused when negative or malformed
/// (nanos outside `0..1e9`) with the proxy's code and message.
///
/// # Errors
/// ILLEGAL_POLLING_TIME.
pub(crate) fn long_poll(d: Option<&prost_types::Duration>) -> Result<Duration, Failure> {
    let Some(d) = d else {
        return Ok(Duration::ZERO);
    };
    duration::from_proto(d).ok_or_else(|| {
        Failure::new(
            Code::IllegalPollingTime,
            format!(
                "long polling timeout {}s{}ns is negative or malformed",
                d.seconds, d.nanos
            ),
        )
    })
}

pub(crate) fn ts_to_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos) / 1_000_000)
}

/// How a message is being handed out.
pub(crate) struct Delivery<'a> {
    pub receipt_handle: String,
    pub attempt: u32,
    pub invisible: Duration,
    /// Shown as store host when the record carries none (e.g. a host name was advertised).
    pub advertised_addr: &'a str,
}

/// Uppercase hex MD5 of the body.
pub(crate) fn md5_upper(body: &Bytes) -> String {
    hex::encode_upper(Md5::digest(body))
}

/// The complete public message for a delivery.
pub(crate) fn to_proto(m: &StoredMessage, d: Delivery<'_>) -> v2::Message {
    let p = &m.message.properties;
    let sys = |k: &str| p.system.get(k);
    let message_type = sys(SYS_MESSAGE_TYPE)
        .and_then(|s| MessageType::from_str_name(s))
        .unwrap_or(MessageType::Normal);
    let body_encoding = if sys(SYS_BODY_ENCODING).is_some_and(|e| e == "GZIP") {
        Encoding::Gzip
    } else {
        Encoding::Identity
    };
    let born_host = sys(SYS_BORN_HOST)
        .cloned()
        .unwrap_or_else(|| m.message.born_host.to_string());
    let store_host = if m.store_host == comet_store::record::UNKNOWN_HOST {
        d.advertised_addr.to_owned()
    } else {
        m.store_host.to_string()
    };
    let dead_letter_queue = sys(SYS_DLQ_ORIGIN_TOPIC).map(|t| DeadLetterQueue {
        topic: t.clone(),
        message_id: p.message_id.clone(),
    });
    v2::Message {
        topic: Some(Resource {
            resource_namespace: String::new(),
            name: m.message.topic.clone(),
        }),
        user_properties: p.user.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        system_properties: Some(SystemProperties {
            tag: p.tag.clone(),
            keys: p.keys.clone(),
            message_id: p.message_id.clone(),
            body_digest: Some(Digest {
                r#type: DigestType::Md5 as i32,
                checksum: md5_upper(&m.message.body),
            }),
            body_encoding: body_encoding as i32,
            message_type: message_type as i32,
            born_timestamp: Some(ms_to_ts(m.message.born_timestamp)),
            born_host,
            store_timestamp: Some(ms_to_ts(m.store_timestamp)),
            store_host,
            delivery_timestamp: sys(SYS_DELIVERY_TIMESTAMP)
                .and_then(|s| s.parse::<i64>().ok())
                .map(ms_to_ts),
            receipt_handle: Some(d.receipt_handle),
            queue_id: m.message.queue_id,
            queue_offset: Some(m.queue_offset),
            invisible_duration: Some(duration::to_proto(d.invisible)),
            delivery_attempt: Some(i32::try_from(d.attempt).unwrap_or(i32::MAX)),
            message_group: sys(SYS_MESSAGE_GROUP).cloned(),
            trace_context: sys(SYS_TRACE_CONTEXT).cloned(),
            priority: sys(SYS_PRIORITY).and_then(|s| s.parse::<i32>().ok()),
            lite_topic: sys(SYS_LITE_TOPIC).cloned(),
            dead_letter_queue,
            ..Default::default()
        }),
        body: m.message.body.clone(),
    }
}

/// The public message of a stored one for reads that hand out nothing (pull, query): no
/// receipt handle, invisible duration or delivery attempt.
pub(crate) fn plain_message(m: &StoredMessage, advertised_addr: &str) -> v2::Message {
    let mut msg = to_proto(
        m,
        Delivery {
            receipt_handle: String::new(),
            attempt: 1,
            invisible: Duration::ZERO,
            advertised_addr,
        },
    );
    if let Some(sp) = msg.system_properties.as_mut() {
        sp.receipt_handle = None;
        sp.invisible_duration = None;
        sp.delivery_attempt = None;
    }
    msg
}

/// A half message as a transaction check shows it to its producer: like a delivery, without
/// receipt handle, attempt or invisible time.
pub(crate) fn to_check_proto(m: &StoredMessage) -> v2::Message {
    let mut out = to_proto(
        m,
        Delivery {
            receipt_handle: String::new(),
            attempt: 0,
            invisible: Duration::ZERO,
            advertised_addr: "",
        },
    );
    if let Some(sp) = out.system_properties.as_mut() {
        sp.receipt_handle = None;
        sp.delivery_attempt = None;
        sp.invisible_duration = None;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_timestamps_when_converted_should_round_trip_ms() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(ts_to_ms(&ms_to_ts(ms)), ms);
        }
    }

    #[test]
    fn given_body_when_digested_should_be_uppercase_md5() {
        assert_eq!(
            md5_upper(&Bytes::from_static(b"hello")),
            "5D41402ABC4B2A76B9719D911017C592"
        );
    }
}
