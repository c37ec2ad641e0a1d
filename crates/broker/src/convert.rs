//! Conversions between the public `apache.rocketmq.v2.Message` and the store's records.
//!
//! Fields the store has no column for travel in the record's system-property map under the
//! `SYS_*` keys of the `sys` module.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use comet_proto::apache::rocketmq::v2::{
    self as v2, Code, DeadLetterQueue, Digest, DigestType, Encoding, MessageType, Resource,
    SystemProperties,
};
use comet_store::{Message, Properties, StoredMessage};
use md5::{Digest as _, Md5};

use crate::sys::{
    SYS_BODY_ENCODING, SYS_BORN_HOST, SYS_DELIVERY_TIMESTAMP, SYS_DLQ, SYS_DLQ_DELIVERIES,
    SYS_DLQ_GROUP, SYS_DLQ_ORIGIN_QUEUE_ID, SYS_DLQ_ORIGIN_QUEUE_OFFSET, SYS_DLQ_ORIGIN_TOPIC,
    SYS_MESSAGE_GROUP, SYS_MESSAGE_TYPE, SYS_RECOVERY_MS, SYS_TRACE_CONTEXT,
};

pub(crate) fn ts_to_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos) / 1_000_000)
}

pub(crate) fn ms_to_ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A protobuf duration as a std one; `None` if negative.
pub(crate) fn to_duration(d: &prost_types::Duration) -> Option<Duration> {
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(Duration::from_secs(secs) + Duration::from_nanos(u64::from(nanos)))
}

pub(crate) fn from_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

fn parse_host(s: &str) -> SocketAddr {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return a;
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return SocketAddr::new(ip, 0);
    }
    comet_store::record::UNKNOWN_HOST
}

/// Builds the store record of one message of a SendMessage request. `queue_id` is already
/// validated.
///
/// # Errors
/// The in-body code and message for a message the broker cannot store as asked.
pub(crate) fn to_record(
    msg: &v2::Message,
    topic: &str,
    now: i64,
) -> Result<Message, (Code, String)> {
    let Some(sp) = msg.system_properties.as_ref() else {
        return Err((Code::BadRequest, "message has no system_properties".into()));
    };
    if sp.message_id.is_empty() {
        return Err((Code::IllegalMessageId, "message_id is empty".into()));
    }
    let mtype = MessageType::try_from(sp.message_type).unwrap_or(MessageType::Unspecified);
    let mtype = match mtype {
        MessageType::Unspecified => {
            if sp.message_group.is_some() {
                MessageType::Fifo
            } else if sp.delivery_timestamp.is_some() {
                MessageType::Delay
            } else {
                MessageType::Normal
            }
        }
        MessageType::Lite | MessageType::Priority => {
            return Err((
                Code::Unsupported,
                format!("message type {} is not supported", mtype.as_str_name()),
            ));
        }
        t => t,
    };
    let mut system = std::collections::BTreeMap::new();
    system.insert(SYS_MESSAGE_TYPE.to_owned(), mtype.as_str_name().to_owned());
    if let Some(g) = sp.message_group.as_ref().filter(|g| !g.is_empty()) {
        system.insert(SYS_MESSAGE_GROUP.to_owned(), g.clone());
    }
    if let Some(t) = &sp.delivery_timestamp {
        system.insert(SYS_DELIVERY_TIMESTAMP.to_owned(), ts_to_ms(t).to_string());
    }
    if let Some(d) = sp
        .orphaned_transaction_recovery_duration
        .as_ref()
        .and_then(to_duration)
        .filter(|_| mtype == MessageType::Transaction)
    {
        system.insert(
            SYS_RECOVERY_MS.to_owned(),
            d.as_millis().min(i64::MAX as u128).to_string(),
        );
    }
    if let Some(t) = sp.trace_context.as_ref().filter(|t| !t.is_empty()) {
        system.insert(SYS_TRACE_CONTEXT.to_owned(), t.clone());
    }
    if !sp.born_host.is_empty() {
        system.insert(SYS_BORN_HOST.to_owned(), sp.born_host.clone());
    }
    if sp.body_encoding == Encoding::Gzip as i32 {
        system.insert(SYS_BODY_ENCODING.to_owned(), "GZIP".to_owned());
    }
    Ok(Message {
        topic: topic.to_owned(),
        queue_id: sp.queue_id,
        flags: 0,
        born_timestamp: sp.born_timestamp.as_ref().map_or(now, ts_to_ms),
        born_host: parse_host(&sp.born_host),
        reconsume_times: 0,
        properties: Properties {
            tag: sp.tag.clone().filter(|t| !t.is_empty()),
            keys: sp.keys.clone(),
            message_id: sp.message_id.clone(),
            system,
            user: msg
                .user_properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
        body: msg.body.clone(),
    })
}

/// The dead-letter copy of `m` for `group`, after `deliveries` deliveries.
pub(crate) fn to_dlq_record(
    m: &StoredMessage,
    dlq_topic: &str,
    group: &str,
    deliveries: u32,
) -> Message {
    let mut msg = m.message.clone();
    let sys = &mut msg.properties.system;
    sys.insert(SYS_DLQ.to_owned(), "true".to_owned());
    sys.insert(SYS_DLQ_ORIGIN_TOPIC.to_owned(), m.message.topic.clone());
    sys.insert(
        SYS_DLQ_ORIGIN_QUEUE_ID.to_owned(),
        m.message.queue_id.to_string(),
    );
    sys.insert(
        SYS_DLQ_ORIGIN_QUEUE_OFFSET.to_owned(),
        m.queue_offset.to_string(),
    );
    sys.insert(SYS_DLQ_GROUP.to_owned(), group.to_owned());
    sys.insert(SYS_DLQ_DELIVERIES.to_owned(), deliveries.to_string());
    msg.topic = dlq_topic.to_owned();
    msg.queue_id = 0;
    msg.reconsume_times = deliveries;
    msg
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
            invisible_duration: Some(from_duration(d.invisible)),
            delivery_attempt: Some(i32::try_from(d.attempt).unwrap_or(i32::MAX)),
            message_group: sys(SYS_MESSAGE_GROUP).cloned(),
            trace_context: sys(SYS_TRACE_CONTEXT).cloned(),
            dead_letter_queue,
            ..Default::default()
        }),
        body: m.message.body.clone(),
    }
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
