//! Validation of published messages (RocketMQ proxy rules, with Comet's limits).
//!
//! Every check answers with the in-body code the official clients expect and a message that
//! says what is wrong and what is allowed. Empty optional strings (`tag = ""`,
//! `message_group = ""`) mean "absent", as in the Java proxy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comet_proto::apache::rocketmq::v2::{Code, Encoding, Message, MessageType, SystemProperties};
use comet_proto::comet::v1::Topic;
use comet_vocab::limits;

use crate::config::ProxyConfig;
use crate::context::RequestContext;
use crate::names::{self, Name};
use crate::routes::accepted_types;
use crate::status::{Failure, Outcome};

/// User property keys RocketMQ reserves for its own message properties (the Apache
/// `MessageConst.STRING_HASH_SET`): the Apache proxy answers ILLEGAL_MESSAGE_PROPERTY_KEY for
/// them, and a remoting client would read them as system properties (`TAGS`, `KEYS`, ...).
const RESERVED_PROPERTY_KEYS: [&str; 51] = [
    "TRACE_ON",
    "MSG_REGION",
    "KEYS",
    "TAGS",
    "WAIT",
    "DELAY",
    "RETRY_TOPIC",
    "REAL_TOPIC",
    "REAL_QID",
    "TRAN_MSG",
    "PGROUP",
    "MIN_OFFSET",
    "MAX_OFFSET",
    "BUYER_ID",
    "ORIGIN_MESSAGE_ID",
    "TRANSFER_FLAG",
    "CORRECTION_FLAG",
    "MQ2_FLAG",
    "RECONSUME_TIME",
    "UNIQ_KEY",
    "MAX_RECONSUME_TIMES",
    "CONSUME_START_TIME",
    "POP_CK",
    "POP_CK_OFFSET",
    "1ST_POP_TIME",
    "TRAN_PREPARED_QUEUE_OFFSET",
    "DUP_INFO",
    "EXTEND_UNIQ_INFO",
    "INSTANCE_ID",
    "CORRELATION_ID",
    "REPLY_TO_CLIENT",
    "TTL",
    "ARRIVE_TIME",
    "PUSH_REPLY_TIME",
    "CLUSTER",
    "MSG_TYPE",
    "INNER_MULTI_QUEUE_OFFSET",
    "TIMER_DELAY_MS",
    "TIMER_DELAY_SEC",
    "TIMER_DELIVER_MS",
    "TIMER_ENQUEUE_MS",
    "TIMER_DEQUEUE_MS",
    "TIMER_ROLL_TIMES",
    "TIMER_OUT_MS",
    "TIMER_DEL_UNIQKEY",
    "TIMER_DELAY_LEVEL",
    "__BORNHOST",
    "BORN_TIMESTAMP",
    "DLQ_ORIGIN_TOPIC",
    "DLQ_ORIGIN_MESSAGE_ID",
    "__CRC32#",
];

/// What the proxy learned about a valid message.
#[derive(Debug, Clone)]
pub(crate) struct ValidMessage {
    pub(crate) topic: Name,
    pub(crate) message_id: String,
    pub(crate) message_type: MessageType,
    pub(crate) message_group: Option<String>,
    /// A LITE message's lite topic.
    pub(crate) lite_topic: Option<String>,
}

/// Checks a lite topic name (messages and lite subscriptions): not blank, the characters of
/// a topic name, at most `max_lite_topic_size` bytes.
///
/// # Errors
/// ILLEGAL_LITE_TOPIC.
pub(crate) fn lite_topic(cfg: &ProxyConfig, lite: &str) -> Outcome<()> {
    if lite.len() > cfg.max_lite_topic_size {
        return Err(Failure::new(
            Code::IllegalLiteTopic,
            format!(
                "lite topic is {} bytes, more than the limit of {} (max_lite_topic_size)",
                lite.len(),
                cfg.max_lite_topic_size
            ),
        ));
    }
    if is_blank(lite) {
        return Err(Failure::new(
            Code::IllegalLiteTopic,
            "lite topic must not be empty or blank",
        ));
    }
    comet_vocab::names::validate(comet_vocab::NameKind::Topic, lite)
        .map_err(|e| Failure::new(Code::IllegalLiteTopic, format!("lite topic: {e}")))
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn is_blank(s: &str) -> bool {
    s.chars().all(char::is_whitespace)
}

fn type_name(t: MessageType) -> &'static str {
    t.as_str_name()
}

/// Checks one message on its own (the topic's type is checked by [`check_topic_type`]).
pub(crate) fn message(
    cfg: &ProxyConfig,
    ctx: &RequestContext,
    msg: &Message,
) -> Outcome<ValidMessage> {
    let topic = names::writable_topic(ctx, msg.topic.as_ref())?;
    let default_props = SystemProperties::default();
    let sys = msg.system_properties.as_ref().unwrap_or(&default_props);

    if is_blank(&sys.message_id) {
        return Err(Failure::new(Code::IllegalMessageId, "message id is empty"));
    }
    if sys.message_id.len() > cfg.max_message_id_bytes || has_control(&sys.message_id) {
        return Err(Failure::new(
            Code::IllegalMessageId,
            format!(
                "message id must be at most {} bytes without control characters",
                cfg.max_message_id_bytes
            ),
        ));
    }

    if msg.body.is_empty() {
        return Err(Failure::new(
            Code::MessageBodyEmpty,
            "message body is empty",
        ));
    }
    if msg.body.len() > cfg.max_body_size {
        return Err(Failure::new(
            Code::MessageBodyTooLarge,
            format!(
                "message body is {} bytes, more than the limit of {} bytes",
                msg.body.len(),
                cfg.max_body_size
            ),
        ));
    }
    match Encoding::try_from(sys.body_encoding) {
        Ok(Encoding::Unspecified | Encoding::Identity | Encoding::Gzip) => {}
        Err(_) => {
            return Err(Failure::bad_request(format!(
                "unknown body encoding {}; use IDENTITY or GZIP",
                sys.body_encoding
            )));
        }
    }

    if let Some(tag) = sys.tag.as_deref().filter(|t| !t.is_empty()) {
        let reason = if is_blank(tag) {
            Some("tag must not be blank".to_owned())
        } else if tag.contains('|') {
            Some("tag must not contain '|'".to_owned())
        } else if has_control(tag) {
            Some("tag must not contain control characters".to_owned())
        } else if tag.len() > cfg.max_tag_bytes {
            Some(format!(
                "tag is {} bytes, more than the limit of {} bytes",
                tag.len(),
                cfg.max_tag_bytes
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Failure::new(Code::IllegalMessageTag, reason));
        }
    }

    let mut key_bytes = 0usize;
    for key in &sys.keys {
        if is_blank(key) {
            return Err(Failure::new(
                Code::IllegalMessageKey,
                "message key must not be empty or blank",
            ));
        }
        if has_control(key) {
            return Err(Failure::new(
                Code::IllegalMessageKey,
                "message key must not contain control characters",
            ));
        }
        key_bytes += key.len();
    }
    if key_bytes > cfg.max_keys_bytes {
        return Err(Failure::new(
            Code::IllegalMessageKey,
            format!(
                "message keys total {key_bytes} bytes, more than the limit of {} bytes",
                cfg.max_keys_bytes
            ),
        ));
    }

    let message_group = sys.message_group.as_deref().filter(|g| !g.is_empty());
    if let Some(group) = message_group {
        let reason = if group.len() > cfg.max_message_group_bytes {
            Some(format!(
                "message group is {} bytes, more than the limit of {} bytes",
                group.len(),
                cfg.max_message_group_bytes
            ))
        } else if is_blank(group) {
            Some("message group must not be blank".to_owned())
        } else if has_control(group) {
            Some("message group must not contain control characters".to_owned())
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Failure::new(Code::IllegalMessageGroup, reason));
        }
    }

    if msg.user_properties.len() > cfg.max_user_properties {
        return Err(Failure::new(
            Code::MessagePropertiesTooLarge,
            format!(
                "message has {} user properties, more than the limit of {}",
                msg.user_properties.len(),
                cfg.max_user_properties
            ),
        ));
    }
    let mut property_bytes = 0usize;
    for (k, v) in &msg.user_properties {
        if is_blank(k) {
            return Err(Failure::new(
                Code::IllegalMessagePropertyKey,
                "user property key must not be empty or blank",
            ));
        }
        if has_control(k) {
            return Err(Failure::new(
                Code::IllegalMessagePropertyKey,
                "user property key must not contain control characters",
            ));
        }
        if has_control(v) {
            return Err(Failure::new(
                Code::IllegalMessagePropertyKey,
                format!("the value of user property {k} must not contain control characters"),
            ));
        }
        if RESERVED_PROPERTY_KEYS.contains(&k.as_str()) {
            return Err(Failure::new(
                Code::IllegalMessagePropertyKey,
                format!("user property key {k} is reserved for a system property"),
            ));
        }
        property_bytes += k.len() + v.len();
    }
    if property_bytes > cfg.max_user_property_bytes {
        return Err(Failure::new(
            Code::MessagePropertiesTooLarge,
            format!(
                "user properties total {property_bytes} bytes, more than the limit of {} bytes",
                cfg.max_user_property_bytes
            ),
        ));
    }

    if sys.born_host.len() > cfg.max_born_host_bytes {
        return Err(Failure::bad_request(format!(
            "born host is {} bytes, more than the limit of {} bytes",
            sys.born_host.len(),
            cfg.max_born_host_bytes
        )));
    }
    if sys
        .trace_context
        .as_ref()
        .is_some_and(|t| t.len() > cfg.max_trace_context_bytes)
    {
        return Err(Failure::bad_request(format!(
            "trace context is longer than the limit of {} bytes",
            cfg.max_trace_context_bytes
        )));
    }

    let delivery = sys.delivery_timestamp.as_ref();
    if let Some(ts) = delivery {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        limits::check_delivery_time(ts, now, cfg.max_delivery_delay)
            .map_err(|e| Failure::new(Code::IllegalDeliveryTime, e.to_string()))?;
    }

    let declared = MessageType::try_from(sys.message_type).map_err(|_| {
        Failure::new(
            Code::MessagePropertyConflictWithType,
            format!("unknown message type {}", sys.message_type),
        )
    })?;
    let lite = sys.lite_topic.as_deref().filter(|l| !l.is_empty());
    let message_type = match declared {
        MessageType::Unspecified if lite.is_some() => MessageType::Lite,
        MessageType::Unspecified if message_group.is_some() => MessageType::Fifo,
        MessageType::Unspecified if delivery.is_some() => MessageType::Delay,
        MessageType::Unspecified if sys.priority.is_some() => MessageType::Priority,
        MessageType::Unspecified => MessageType::Normal,
        t => t,
    };
    if let Some(priority) = sys.priority {
        // RIP-80's rule, as the clients check it (comet_vocab).
        let peers = limits::PriorityPeers {
            message_group: message_group.is_some(),
            delivery_time: delivery.is_some(),
            lite_topic: sys.lite_topic.as_deref().is_some_and(|l| !l.is_empty()),
        };
        limits::check_priority(priority, peers).map_err(|e| {
            let code = match e {
                comet_vocab::Error::NegativePriority { .. } => Code::BadRequest,
                _ => Code::MessagePropertyConflictWithType,
            };
            Failure::new(code, e.to_string())
        })?;
    }
    let conflict = match message_type {
        MessageType::Normal if message_group.is_some() => {
            Some("a NORMAL message must not carry a message group; send it as FIFO")
        }
        MessageType::Normal if delivery.is_some() => {
            Some("a NORMAL message must not carry a delivery timestamp; send it as DELAY")
        }
        MessageType::Fifo if message_group.is_none() => {
            Some("a FIFO message needs a message group")
        }
        MessageType::Delay if delivery.is_none() => {
            Some("a DELAY message needs a delivery timestamp")
        }
        MessageType::Delay if message_group.is_some() => {
            Some("a DELAY message must not carry a message group; FIFO and delay do not combine")
        }
        MessageType::Fifo if delivery.is_some() => Some(
            "a FIFO message must not carry a delivery timestamp; FIFO and delay do not combine",
        ),
        MessageType::Transaction if delivery.is_some() => {
            Some("a TRANSACTION message must not carry a delivery timestamp")
        }
        MessageType::Priority if sys.priority.is_none() => {
            Some("a PRIORITY message needs a priority")
        }
        MessageType::Normal | MessageType::Transaction if sys.priority.is_some() => Some(
            "only a PRIORITY message carries a priority; send it as PRIORITY to a PRIORITY topic",
        ),
        MessageType::Lite if message_group.is_some() => {
            Some("a LITE message must not carry a message group")
        }
        MessageType::Lite if delivery.is_some() => {
            Some("a LITE message must not carry a delivery timestamp")
        }
        MessageType::Lite if sys.priority.is_some() => {
            Some("a LITE message must not carry a priority")
        }
        t if t != MessageType::Lite && lite.is_some() => {
            Some("only a LITE message carries a lite topic; send it as LITE to a LITE topic")
        }
        _ => None,
    };
    if let Some(reason) = conflict {
        return Err(Failure::new(Code::MessagePropertyConflictWithType, reason));
    }
    if message_type == MessageType::Lite {
        match lite {
            None => {
                return Err(Failure::new(
                    Code::IllegalLiteTopic,
                    "a LITE message needs a lite topic",
                ));
            }
            Some(l) => lite_topic(cfg, l)?,
        }
    }

    Ok(ValidMessage {
        topic,
        message_id: sys.message_id.clone(),
        message_type,
        message_group: message_group.map(str::to_owned),
        lite_topic: lite.map(str::to_owned),
    })
}

/// Checks that the topic accepts the message's type.
pub(crate) fn check_topic_type(topic: &Topic, valid: &ValidMessage) -> Outcome<()> {
    let accepted = accepted_types(topic);
    if accepted.contains(&valid.message_type) {
        return Ok(());
    }
    let names: Vec<&str> = accepted.iter().map(|t| type_name(*t)).collect();
    Err(Failure::new(
        Code::MessagePropertyConflictWithType,
        format!(
            "topic {} accepts {} messages, not {}",
            valid.topic.name,
            names.join("/"),
            type_name(valid.message_type)
        ),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use comet_proto::apache::rocketmq::v2::Resource;

    fn msg() -> Message {
        Message {
            topic: Some(Resource {
                resource_namespace: String::new(),
                name: "t".into(),
            }),
            user_properties: Default::default(),
            system_properties: Some(SystemProperties {
                message_id: "id-1".into(),
                ..SystemProperties::default()
            }),
            body: bytes::Bytes::from_static(b"hello"),
        }
    }

    fn check(m: &Message) -> Outcome<ValidMessage> {
        message(&ProxyConfig::default(), &RequestContext::default(), m)
    }

    fn sys(m: &mut Message) -> &mut SystemProperties {
        m.system_properties.as_mut().unwrap()
    }

    #[test]
    fn a_plain_message_is_normal() {
        let v = check(&msg()).unwrap();
        assert_eq!(v.message_type, MessageType::Normal);
        assert_eq!(v.topic.qualified, "t");
    }

    #[test]
    fn empty_optional_strings_mean_absent() {
        let mut m = msg();
        sys(&mut m).tag = Some(String::new());
        sys(&mut m).message_group = Some(String::new());
        assert_eq!(check(&m).unwrap().message_type, MessageType::Normal);
    }

    #[test]
    fn priority_messages_follow_the_clients_rule() {
        let prio = |p: i32| {
            let mut m = msg();
            sys(&mut m).message_type = MessageType::Priority as i32;
            sys(&mut m).priority = Some(p);
            m
        };
        assert_eq!(check(&prio(3)).unwrap().message_type, MessageType::Priority);
        // A priority alone makes an undeclared message PRIORITY.
        let mut m = msg();
        sys(&mut m).priority = Some(0);
        assert_eq!(check(&m).unwrap().message_type, MessageType::Priority);
        let e = check(&prio(-1)).unwrap_err();
        assert_eq!(e.code, Code::BadRequest);
        assert!(e.message.contains("negative"), "{}", e.message);
        let mut m = prio(1);
        sys(&mut m).message_group = Some("g".into());
        let e = check(&m).unwrap_err();
        assert_eq!(e.code, Code::MessagePropertyConflictWithType);
        assert!(e.message.contains("message group"), "{}", e.message);
        let mut m = prio(1);
        sys(&mut m).lite_topic = Some("l".into());
        assert!(check(&m).unwrap_err().message.contains("lite topic"));
        let mut m = prio(1);
        sys(&mut m).priority = None;
        assert_eq!(
            check(&m).unwrap_err().message,
            "a PRIORITY message needs a priority"
        );
        let mut m = prio(1);
        sys(&mut m).message_type = MessageType::Normal as i32;
        assert_eq!(
            check(&m).unwrap_err().code,
            Code::MessagePropertyConflictWithType
        );
    }

    #[test]
    fn lite_messages_follow_the_clients_rules() {
        let lite = |l: &str| {
            let mut m = msg();
            sys(&mut m).lite_topic = Some(l.into());
            m
        };
        let v = check(&lite("session-1")).unwrap();
        assert_eq!(v.message_type, MessageType::Lite);
        assert_eq!(v.lite_topic.as_deref(), Some("session-1"));
        assert_eq!(
            check(&lite("bad name")).unwrap_err().code,
            Code::IllegalLiteTopic
        );
        assert_eq!(
            check(&lite(&"x".repeat(65))).unwrap_err().code,
            Code::IllegalLiteTopic
        );
        let mut m = msg();
        sys(&mut m).message_type = MessageType::Lite as i32;
        assert_eq!(check(&m).unwrap_err().code, Code::IllegalLiteTopic);
        let mut m = lite("a");
        sys(&mut m).message_group = Some("g".into());
        let e = check(&m).unwrap_err();
        assert_eq!(e.code, Code::MessagePropertyConflictWithType);
        assert!(e.message.contains("message group"), "{}", e.message);
        let mut m = lite("a");
        sys(&mut m).message_type = MessageType::Normal as i32;
        assert_eq!(
            check(&m).unwrap_err().code,
            Code::MessagePropertyConflictWithType
        );
    }

    #[test]
    fn inferred_and_declared_types_must_agree() {
        let mut m = msg();
        sys(&mut m).message_group = Some("g".into());
        assert_eq!(check(&m).unwrap().message_type, MessageType::Fifo);
        sys(&mut m).message_type = MessageType::Normal as i32;
        assert_eq!(
            check(&m).unwrap_err().code,
            Code::MessagePropertyConflictWithType
        );
        let mut m = msg();
        sys(&mut m).message_type = MessageType::Delay as i32;
        assert_eq!(
            check(&m).unwrap_err().message,
            "a DELAY message needs a delivery timestamp"
        );
        sys(&mut m).message_type = 99;
        assert_eq!(check(&m).unwrap_err().message, "unknown message type 99");
    }

    #[test]
    fn far_future_delivery_is_rejected() {
        let mut m = msg();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        sys(&mut m).delivery_timestamp = Some(prost_types::Timestamp {
            seconds: now + 41 * 24 * 3600,
            nanos: 0,
        });
        let err = check(&m).unwrap_err();
        assert_eq!(err.code, Code::IllegalDeliveryTime);
        assert!(err.message.contains("limit of 3456000s"), "{}", err.message);
        sys(&mut m).delivery_timestamp = Some(prost_types::Timestamp {
            seconds: now + 39 * 24 * 3600,
            nanos: 0,
        });
        assert_eq!(check(&m).unwrap().message_type, MessageType::Delay);
        sys(&mut m).delivery_timestamp = Some(prost_types::Timestamp {
            seconds: now + 10,
            nanos: 0,
        });
        assert_eq!(check(&m).unwrap().message_type, MessageType::Delay);
    }
}
