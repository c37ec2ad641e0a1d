//! The broker's own message types and the store records built from them: a message as a
//! producer sends it ([`NewMessage`]), and the copy a dead letter makes. Fields the store has
//! no column for travel in the record's system-property map under the keys of `sys`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use comet_store::{Message, Properties, StoredMessage};

use crate::outcome::{Code, Failure};
use crate::sys::{
    SYS_BODY_ENCODING, SYS_BORN_HOST, SYS_DELIVERY_TIMESTAMP, SYS_DLQ, SYS_DLQ_DELIVERIES,
    SYS_DLQ_GROUP, SYS_DLQ_ORIGIN_QUEUE_ID, SYS_DLQ_ORIGIN_QUEUE_OFFSET, SYS_DLQ_ORIGIN_TOPIC,
    SYS_LITE_TOPIC, SYS_MESSAGE_GROUP, SYS_MESSAGE_TYPE, SYS_PRIORITY, SYS_RECOVERY_MS,
    SYS_TRACE_CONTEXT,
};
use comet_vocab::limits;

/// RocketMQ's message types. The broker stores every one; a LITE message must name its lite
/// topic (see `lite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// An ordinary message.
    Normal,
    /// A message of a message group, delivered in order within it.
    Fifo,
    /// A message delivered at its delivery time.
    Delay,
    /// A half message until its transaction is resolved.
    Transaction,
    /// A message of a lite topic of a LITE parent topic.
    Lite,
    /// A message with a priority (PRIORITY topics: higher priorities are handed out first).
    Priority,
}

impl MessageKind {
    /// The name stored with the message (RocketMQ's enum name).
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Normal => "NORMAL",
            MessageKind::Fifo => "FIFO",
            MessageKind::Delay => "DELAY",
            MessageKind::Transaction => "TRANSACTION",
            MessageKind::Lite => "LITE",
            MessageKind::Priority => "PRIORITY",
        }
    }

    /// The kind a stored name reads as, if any.
    pub fn from_name(name: &str) -> Option<MessageKind> {
        [
            MessageKind::Normal,
            MessageKind::Fifo,
            MessageKind::Delay,
            MessageKind::Transaction,
            MessageKind::Lite,
            MessageKind::Priority,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// A message as a producer sends it, addressed to one queue of this broker set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMessage {
    /// The topic (qualified by namespace already).
    pub topic: String,
    /// The queue of the topic on this broker set.
    pub queue_id: i32,
    /// The producer's message id (required).
    pub message_id: String,
    /// The type; `None` infers it: FIFO with a message group, DELAY with a delivery time,
    /// NORMAL otherwise.
    pub kind: Option<MessageKind>,
    /// The tag (empty = none).
    pub tag: Option<String>,
    /// The keys (indexed for queries).
    pub keys: Vec<String>,
    /// The FIFO message group.
    pub message_group: Option<String>,
    /// When to deliver, ms since the epoch (DELAY).
    pub delivery_ms: Option<i64>,
    /// The priority (PRIORITY; 0 or more, higher first).
    pub priority: Option<i32>,
    /// The lite topic (LITE messages; see `lite`).
    pub lite_topic: Option<String>,
    /// How long a TRANSACTION stays unchecked at least (the producer's
    /// `orphaned_transaction_recovery_duration`).
    pub recovery: Option<Duration>,
    /// Trace context (empty = none).
    pub trace_context: Option<String>,
    /// The producer's host as it sent it (may be a host name; empty = unknown).
    pub born_host: String,
    /// When the producer made it, ms since the epoch (`None`: now).
    pub born_ms: Option<i64>,
    /// The body is GZIP-compressed.
    pub gzip: bool,
    /// User properties.
    pub user_properties: BTreeMap<String, String>,
    /// The body.
    pub body: Bytes,
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

/// The priority a record was stored with (PRIORITY messages).
pub(crate) fn priority(rec: &Message) -> Option<i32> {
    rec.properties
        .system
        .get(SYS_PRIORITY)
        .and_then(|s| s.parse().ok())
}

/// The rule for a message that is LITE or carries a lite topic: a LITE message needs a valid
/// lite topic and carries no message group, delivery time or priority; no other type carries
/// a lite topic.
///
/// # Errors
/// ILLEGAL_LITE_TOPIC, MESSAGE_PROPERTY_CONFLICT_WITH_TYPE.
pub(crate) fn check_lite_message(msg: &NewMessage, kind: MessageKind) -> Result<(), Failure> {
    let lite = msg.lite_topic.as_deref().unwrap_or_default();
    if kind != MessageKind::Lite {
        return Err(Failure::new(
            Code::MessagePropertyConflictWithType,
            format!("a {} message must not carry a lite topic", kind.name()),
        ));
    }
    if lite.is_empty() {
        return Err(Failure::new(
            Code::IllegalLiteTopic,
            "a LITE message needs a lite topic",
        ));
    }
    crate::lite::index::check_lite_name(lite)?;
    let conflict = if msg.message_group.as_ref().is_some_and(|g| !g.is_empty()) {
        Some("a message group")
    } else if msg.delivery_ms.is_some() {
        Some("a delivery timestamp")
    } else if msg.priority.is_some() {
        Some("a priority")
    } else {
        None
    };
    match conflict {
        Some(what) => Err(Failure::new(
            Code::MessagePropertyConflictWithType,
            format!("a LITE message must not carry {what}"),
        )),
        None => Ok(()),
    }
}

/// Builds the store record of a message to send. `queue_id` is already validated.
///
/// # Errors
/// ILLEGAL_MESSAGE_ID without a message id; for LITE ones (or any with a lite topic)
/// [`check_lite_message`]'s rule; for PRIORITY ones (or any with a priority) `comet_vocab::limits::check_priority`'s rule: BAD_REQUEST below
/// zero, MESSAGE_PROPERTY_CONFLICT_WITH_TYPE with a message group or delivery time, or
/// without a priority.
pub(crate) fn to_record(msg: NewMessage, now: i64) -> Result<Message, Failure> {
    if msg.message_id.is_empty() {
        return Err(Failure::new(Code::IllegalMessageId, "message_id is empty"));
    }
    let lite_topic = msg.lite_topic.as_ref().filter(|l| !l.is_empty());
    let kind = match msg.kind {
        None if lite_topic.is_some() => MessageKind::Lite,
        None if msg.message_group.is_some() => MessageKind::Fifo,
        None if msg.delivery_ms.is_some() => MessageKind::Delay,
        None if msg.priority.is_some() => MessageKind::Priority,
        None => MessageKind::Normal,
        Some(k) => k,
    };
    let lite_topic = if kind == MessageKind::Lite || lite_topic.is_some() {
        check_lite_message(&msg, kind)?;
        lite_topic.cloned()
    } else {
        None
    };
    let priority = match (kind, msg.priority) {
        (MessageKind::Priority, None) => {
            return Err(Failure::new(
                Code::MessagePropertyConflictWithType,
                "a PRIORITY message needs a priority",
            ));
        }
        (MessageKind::Priority, Some(p)) => {
            let peers = limits::PriorityPeers {
                message_group: msg.message_group.as_ref().is_some_and(|g| !g.is_empty()),
                delivery_time: msg.delivery_ms.is_some(),
                lite_topic: msg.lite_topic.as_ref().is_some_and(|l| !l.is_empty()),
            };
            limits::check_priority(p, peers).map_err(|e| {
                let code = match e {
                    comet_vocab::Error::NegativePriority { .. } => Code::BadRequest,
                    _ => Code::MessagePropertyConflictWithType,
                };
                Failure::new(code, e.to_string())
            })?;
            Some(p)
        }
        // A priority on a message of another type means nothing (as upstream's broker).
        (_, _) => None,
    };
    let mut system = BTreeMap::new();
    system.insert(SYS_MESSAGE_TYPE.to_owned(), kind.name().to_owned());
    if let Some(g) = msg.message_group.as_ref().filter(|g| !g.is_empty()) {
        system.insert(SYS_MESSAGE_GROUP.to_owned(), g.clone());
    }
    if let Some(at) = msg.delivery_ms {
        system.insert(SYS_DELIVERY_TIMESTAMP.to_owned(), at.to_string());
    }
    if let Some(p) = priority {
        system.insert(SYS_PRIORITY.to_owned(), p.to_string());
    }
    if let Some(l) = lite_topic {
        system.insert(SYS_LITE_TOPIC.to_owned(), l);
    }
    if let Some(d) = msg.recovery.filter(|_| kind == MessageKind::Transaction) {
        system.insert(
            SYS_RECOVERY_MS.to_owned(),
            d.as_millis().min(i64::MAX as u128).to_string(),
        );
    }
    if let Some(t) = msg.trace_context.as_ref().filter(|t| !t.is_empty()) {
        system.insert(SYS_TRACE_CONTEXT.to_owned(), t.clone());
    }
    if !msg.born_host.is_empty() {
        system.insert(SYS_BORN_HOST.to_owned(), msg.born_host.clone());
    }
    if msg.gzip {
        system.insert(SYS_BODY_ENCODING.to_owned(), "GZIP".to_owned());
    }
    Ok(Message {
        topic: msg.topic,
        queue_id: msg.queue_id,
        flags: 0,
        born_timestamp: msg.born_ms.unwrap_or(now),
        born_host: parse_host(&msg.born_host),
        reconsume_times: 0,
        properties: Properties {
            tag: msg.tag.filter(|t| !t.is_empty()),
            keys: msg.keys,
            message_id: msg.message_id,
            system,
            user: msg.user_properties,
        },
        body: msg.body,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lite_msg(lite: &str) -> NewMessage {
        NewMessage {
            topic: "p".into(),
            message_id: "m".into(),
            lite_topic: Some(lite.into()),
            ..NewMessage::default()
        }
    }

    #[test]
    fn given_lite_messages_when_checked_should_refuse_bad_names_and_conflicts() {
        assert!(check_lite_message(&lite_msg("session-1"), MessageKind::Lite).is_ok());
        let code = |m: &NewMessage, k| check_lite_message(m, k).map_err(|f| f.code);
        assert_eq!(
            code(&lite_msg(""), MessageKind::Lite),
            Err(Code::IllegalLiteTopic)
        );
        assert_eq!(
            code(&lite_msg("a b"), MessageKind::Lite),
            Err(Code::IllegalLiteTopic)
        );
        assert_eq!(
            code(&lite_msg(&"x".repeat(200)), MessageKind::Lite),
            Err(Code::IllegalLiteTopic)
        );
        assert_eq!(
            code(&lite_msg("a"), MessageKind::Normal),
            Err(Code::MessagePropertyConflictWithType)
        );
        let mut m = lite_msg("a");
        m.message_group = Some("g".into());
        assert_eq!(
            code(&m, MessageKind::Lite),
            Err(Code::MessagePropertyConflictWithType)
        );
        let mut m = lite_msg("a");
        m.delivery_ms = Some(1);
        assert_eq!(
            code(&m, MessageKind::Lite),
            Err(Code::MessagePropertyConflictWithType)
        );
        let mut m = lite_msg("a");
        m.priority = Some(1);
        assert_eq!(
            code(&m, MessageKind::Lite),
            Err(Code::MessagePropertyConflictWithType)
        );
    }
}
