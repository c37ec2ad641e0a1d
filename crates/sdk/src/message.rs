//! Messages: what a producer sends ([`Message`], built and validated by [`MessageBuilder`]),
//! what a consumer receives ([`MessageView`]) and subscription filters ([`FilterExpression`]).
//!
//! Validation happens here, before any RPC: topic syntax, empty body, tag, keys, properties,
//! message group and lite topic lengths, and fields one message cannot carry together (a
//! message is NORMAL, FIFO, DELAY, PRIORITY or LITE; the type follows from the fields set).
//! The body size limit is the server's and is checked at send time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use comet_proto::apache::rocketmq::v2 as pb;
use md5::Digest as _;

use crate::endpoints::Endpoints;
use crate::error::{Invalid, Result};
use crate::session::std_duration;

/// Longest topic name (RocketMQ's limit).
const MAX_TOPIC_LEN: usize = 127;
/// Longest message group or lite topic (the reference proxy's default).
const MAX_GROUP_LEN: usize = 64;

/// A message to send. Build one with [`Message::builder`].
#[derive(Debug, Clone)]
pub struct Message {
    pub(crate) topic: String,
    pub(crate) body: Bytes,
    pub(crate) tag: Option<String>,
    pub(crate) keys: Vec<String>,
    pub(crate) properties: HashMap<String, String>,
    pub(crate) message_group: Option<String>,
    pub(crate) delivery_time: Option<SystemTime>,
    pub(crate) priority: Option<i32>,
    pub(crate) lite_topic: Option<String>,
}

impl Message {
    /// Starts a message for `topic`.
    pub fn builder(topic: impl Into<String>) -> MessageBuilder {
        MessageBuilder {
            message: Message {
                topic: topic.into(),
                body: Bytes::new(),
                tag: None,
                keys: Vec::new(),
                properties: HashMap::new(),
                message_group: None,
                delivery_time: None,
                priority: None,
                lite_topic: None,
            },
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The message's type as its fields make it.
    pub(crate) fn message_type(&self) -> pb::MessageType {
        if self.lite_topic.is_some() {
            pb::MessageType::Lite
        } else if self.message_group.is_some() {
            pb::MessageType::Fifo
        } else if self.delivery_time.is_some() {
            pb::MessageType::Delay
        } else if self.priority.is_some() {
            pb::MessageType::Priority
        } else {
            pb::MessageType::Normal
        }
    }

    /// The wire form, with its message id, born now; the message's fields move into it.
    /// The queue id is the sender's to set (it may change between attempts).
    pub(crate) fn into_proto(
        self,
        resource: pb::Resource,
        message_id: String,
        message_type: pb::MessageType,
        born: prost_types::Timestamp,
    ) -> pb::Message {
        pb::Message {
            topic: Some(resource),
            user_properties: self.properties,
            system_properties: Some(pb::SystemProperties {
                tag: self.tag,
                keys: self.keys,
                message_id,
                body_digest: None,
                body_encoding: pb::Encoding::Identity as i32,
                message_type: message_type as i32,
                born_timestamp: Some(born),
                born_host: host_name().to_owned(),
                delivery_timestamp: self.delivery_time.map(timestamp),
                queue_id: 0,
                message_group: self.message_group,
                lite_topic: self.lite_topic,
                priority: self.priority,
                ..Default::default()
            }),
            body: self.body,
        }
    }
}

/// Builds a [`Message`]; [`MessageBuilder::build`] validates it.
#[derive(Debug, Clone)]
#[must_use]
pub struct MessageBuilder {
    message: Message,
}

impl MessageBuilder {
    /// The body (must not be empty).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.message.body = body.into();
        self
    }

    /// The tag consumers filter on (no `|`, not blank).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.message.tag = Some(tag.into());
        self
    }

    /// Adds keys (indexed for lookup; not blank).
    pub fn keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.message.keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Adds a user property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.message.properties.insert(key.into(), value.into());
        self
    }

    /// Makes this a FIFO message of `group`: messages of one group are delivered in order.
    pub fn message_group(mut self, group: impl Into<String>) -> Self {
        self.message.message_group = Some(group.into());
        self
    }

    /// Makes this a DELAY message delivered at `at`.
    pub fn delivery_time(mut self, at: SystemTime) -> Self {
        self.message.delivery_time = Some(at);
        self
    }

    /// Makes this a DELAY message delivered `delay` from now.
    pub fn delay(self, delay: Duration) -> Self {
        self.delivery_time(SystemTime::now() + delay)
    }

    /// Makes this a PRIORITY message.
    pub fn priority(mut self, priority: i32) -> Self {
        self.message.priority = Some(priority);
        self
    }

    /// Makes this a LITE message of `lite_topic` (within its parent topic).
    pub fn lite_topic(mut self, lite_topic: impl Into<String>) -> Self {
        self.message.lite_topic = Some(lite_topic.into());
        self
    }

    /// Validates and returns the message.
    ///
    /// # Errors
    /// [`crate::Error::InvalidMessage`] naming the first rule broken.
    pub fn build(self) -> Result<Message> {
        validate(&self.message)?;
        Ok(self.message)
    }
}

pub(crate) fn validate_topic(topic: &str) -> Result<(), Invalid> {
    if topic.is_empty() {
        return Err(Invalid::EmptyTopic);
    }
    let ok = topic.len() <= MAX_TOPIC_LEN
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::IllegalTopic(topic.to_owned()))
    }
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn validate(m: &Message) -> Result<(), Invalid> {
    validate_topic(&m.topic)?;
    if m.body.is_empty() {
        return Err(Invalid::EmptyBody);
    }
    if let Some(tag) = &m.tag
        && (blank(tag) || tag.contains('|'))
    {
        return Err(Invalid::IllegalTag(tag.clone()));
    }
    if m.keys.iter().any(|k| blank(k)) {
        return Err(Invalid::IllegalKey);
    }
    if let Some((k, _)) = m.properties.iter().find(|(k, v)| blank(k) || v.is_empty()) {
        return Err(Invalid::IllegalProperty(k.clone()));
    }
    if let Some(g) = &m.message_group
        && (blank(g) || g.len() > MAX_GROUP_LEN)
    {
        return Err(Invalid::IllegalMessageGroup);
    }
    if let Some(l) = &m.lite_topic
        && (blank(l) || l.len() > MAX_GROUP_LEN)
    {
        return Err(Invalid::IllegalLiteTopic);
    }
    if let Some(p) = m.priority.filter(|p| *p < 0) {
        // RIP-80, as the server's rule (comet_vocab::limits::check_priority).
        return Err(Invalid::Argument {
            what: "priority (0 or more)",
            value: p.to_string(),
        });
    }
    let kinds = [
        m.message_group.is_some(),
        m.delivery_time.is_some(),
        m.priority.is_some(),
        m.lite_topic.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(Invalid::Conflict(
            "a message is one of FIFO (message group), DELAY (delivery time), PRIORITY or LITE",
        ));
    }
    Ok(())
}

/// A subscription filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterExpression {
    pub(crate) kind: pb::FilterType,
    pub(crate) expression: String,
}

impl FilterExpression {
    /// Every message of the topic (`TAG *`).
    pub fn all() -> Self {
        FilterExpression {
            kind: pb::FilterType::Tag,
            expression: "*".into(),
        }
    }

    /// Tags: `"a"`, `"a||b"` or `"*"`.
    pub fn tag(expression: impl Into<String>) -> Self {
        FilterExpression {
            kind: pb::FilterType::Tag,
            expression: expression.into(),
        }
    }

    /// An SQL92 expression over the message's properties (`"region = 'eu' AND n > 3"`).
    pub fn sql(expression: impl Into<String>) -> Self {
        FilterExpression {
            kind: pb::FilterType::Sql,
            expression: expression.into(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if blank(&self.expression) {
            return Err(Invalid::EmptyFilter);
        }
        Ok(())
    }

    pub(crate) fn to_proto(&self) -> pb::FilterExpression {
        pb::FilterExpression {
            r#type: self.kind as i32,
            expression: self.expression.clone(),
        }
    }
}

/// A received message. Consumers acknowledge it (or change its invisibility) with the receipt
/// handle it carries.
#[derive(Debug, Clone)]
pub struct MessageView {
    pub(crate) message_id: String,
    pub(crate) topic: String,
    pub(crate) body: Bytes,
    pub(crate) tag: Option<String>,
    pub(crate) keys: Vec<String>,
    pub(crate) properties: HashMap<String, String>,
    pub(crate) message_group: Option<String>,
    pub(crate) delivery_time: Option<SystemTime>,
    pub(crate) born_time: Option<SystemTime>,
    pub(crate) born_host: String,
    pub(crate) delivery_attempt: u32,
    pub(crate) queue_id: i32,
    pub(crate) queue_offset: Option<i64>,
    pub(crate) invisible_duration: Option<Duration>,
    pub(crate) lite_topic: Option<String>,
    pub(crate) priority: Option<i32>,
    pub(crate) receipt_handle: String,
    pub(crate) corrupted: bool,
    /// Where it came from (acks and invisibility changes go there).
    pub(crate) endpoints: Arc<Endpoints>,
    pub(crate) size: usize,
}

impl MessageView {
    /// The message id.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }
    /// The topic (without namespace).
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// The body (decompressed if it was sent compressed).
    pub fn body(&self) -> &Bytes {
        &self.body
    }
    /// The tag.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// The keys.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }
    /// The user properties.
    pub fn properties(&self) -> &HashMap<String, String> {
        &self.properties
    }
    /// The message group of a FIFO message.
    pub fn message_group(&self) -> Option<&str> {
        self.message_group.as_deref()
    }
    /// When a DELAY message was due.
    pub fn delivery_time(&self) -> Option<SystemTime> {
        self.delivery_time
    }
    /// When the producer built it.
    pub fn born_time(&self) -> Option<SystemTime> {
        self.born_time
    }
    /// The producer's host.
    pub fn born_host(&self) -> &str {
        &self.born_host
    }
    /// How many times it has been delivered, this time included (1 on first delivery).
    pub fn delivery_attempt(&self) -> u32 {
        self.delivery_attempt
    }
    /// The queue it was stored in.
    pub fn queue_id(&self) -> i32 {
        self.queue_id
    }
    /// Its offset in that queue.
    pub fn queue_offset(&self) -> Option<i64> {
        self.queue_offset
    }
    /// How long the server keeps it invisible after this delivery, when it says.
    pub fn invisible_duration(&self) -> Option<Duration> {
        self.invisible_duration
    }
    /// The lite topic of a LITE message.
    pub fn lite_topic(&self) -> Option<&str> {
        self.lite_topic.as_deref()
    }
    /// The priority of a PRIORITY message.
    pub fn priority(&self) -> Option<i32> {
        self.priority
    }
    /// Whether the body failed its digest check.
    pub fn is_corrupted(&self) -> bool {
        self.corrupted
    }
    /// The current receipt handle (changes with each invisibility change).
    pub fn receipt_handle(&self) -> &str {
        &self.receipt_handle
    }

    /// Decodes a delivered message. Messages without id or topic are protocol errors.
    pub(crate) fn from_proto(
        m: pb::Message,
        endpoints: Arc<Endpoints>,
    ) -> std::result::Result<MessageView, String> {
        let topic = m.topic.map(|t| t.name).ok_or("a message without topic")?;
        let sp = m
            .system_properties
            .ok_or("a message without system properties")?;
        if sp.message_id.is_empty() {
            return Err("a message without message id".into());
        }
        let size = m.body.len();
        let (body, mut corrupted) = match pb::Encoding::try_from(sp.body_encoding) {
            Ok(pb::Encoding::Gzip) => match gunzip(&m.body) {
                Ok(b) => (Bytes::from(b), false),
                Err(_) => (m.body.clone(), true),
            },
            _ => (m.body.clone(), false),
        };
        if let Some(d) = &sp.body_digest
            && !digest_matches(d, &m.body)
        {
            corrupted = true;
        }
        Ok(MessageView {
            message_id: sp.message_id,
            topic,
            body,
            tag: sp.tag,
            keys: sp.keys,
            properties: m.user_properties,
            message_group: sp.message_group,
            delivery_time: sp.delivery_timestamp.as_ref().map(system_time),
            born_time: sp.born_timestamp.as_ref().map(system_time),
            born_host: sp.born_host,
            delivery_attempt: sp.delivery_attempt.map_or(1, |a| a.max(1).unsigned_abs()),
            queue_id: sp.queue_id,
            queue_offset: sp.queue_offset,
            invisible_duration: sp.invisible_duration.as_ref().map(std_duration),
            lite_topic: sp.lite_topic,
            priority: sp.priority,
            receipt_handle: sp.receipt_handle.unwrap_or_default(),
            corrupted,
            endpoints,
            size,
        })
    }
}

fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// Compares a body digest; hex case-insensitively; CRC32 also as decimal (Node's encoding).
fn digest_matches(d: &pb::Digest, body: &[u8]) -> bool {
    let expected = d.checksum.trim();
    match pb::DigestType::try_from(d.r#type) {
        Ok(pb::DigestType::Md5) => {
            expected.eq_ignore_ascii_case(&hex::encode(md5::Md5::digest(body)))
        }
        Ok(pb::DigestType::Sha1) => {
            expected.eq_ignore_ascii_case(&hex::encode(sha1::Sha1::digest(body)))
        }
        Ok(pb::DigestType::Crc32) => {
            let c = crc32fast::hash(body);
            expected.eq_ignore_ascii_case(&format!("{c:08X}")) || expected == c.to_string()
        }
        // An unknown digest type cannot be checked; the body is taken as is.
        _ => true,
    }
}

/// A protobuf timestamp.
pub(crate) fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn system_time(t: &prost_types::Timestamp) -> SystemTime {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0).min(999_999_999);
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}

fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    })
}

/// A new message id in the official clients' format: version `01`, 6 bytes of host identity,
/// 2 bytes of pid, 4 bytes of seconds since 2021-01-01 and a 4-byte sequence, upper-case hex.
pub(crate) fn new_message_id() -> String {
    static PREFIX: OnceLock<[u8; 8]> = OnceLock::new();
    static SEQ: AtomicU32 = AtomicU32::new(0);
    const EPOCH_2021: u64 = 1_609_459_200;
    let prefix = PREFIX.get_or_init(|| {
        // No portable MAC lookup: a per-process random "host" part keeps ids unique.
        let mut p = [0u8; 8];
        let r: [u8; 6] = rand::random();
        p[..6].copy_from_slice(&r);
        p[6..].copy_from_slice(&(std::process::id() as u16).to_be_bytes());
        p
    });
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(EPOCH_2021);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(prefix);
    raw[8..12].copy_from_slice(&(secs as u32).to_be_bytes());
    raw[12..].copy_from_slice(&SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    format!("01{}", hex::encode_upper(raw))
}

/// A stable hash of a message group (CRC32), so every producer maps a group to one queue.
pub(crate) fn group_hash(group: &str) -> u32 {
    crc32fast::hash(group.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> MessageBuilder {
        Message::builder("t").body("b")
    }

    #[test]
    fn given_each_broken_rule_when_building_should_name_it() {
        let cases: Vec<(MessageBuilder, Invalid)> = vec![
            (Message::builder("").body("b"), Invalid::EmptyTopic),
            (
                Message::builder("a b").body("b"),
                Invalid::IllegalTopic("a b".into()),
            ),
            (Message::builder("t"), Invalid::EmptyBody),
            (ok().tag("a|b"), Invalid::IllegalTag("a|b".into())),
            (ok().tag(" "), Invalid::IllegalTag(" ".into())),
            (ok().keys([""]), Invalid::IllegalKey),
            (
                ok().property("", "v"),
                Invalid::IllegalProperty(String::new()),
            ),
            (ok().property("k", ""), Invalid::IllegalProperty("k".into())),
            (ok().message_group(""), Invalid::IllegalMessageGroup),
            (
                ok().message_group("g".repeat(65)),
                Invalid::IllegalMessageGroup,
            ),
            (ok().lite_topic(" "), Invalid::IllegalLiteTopic),
        ];
        for (b, want) in cases {
            match b.build() {
                Err(crate::Error::InvalidMessage(got)) => assert_eq!(got, want),
                other => panic!("expected {want:?}, got {other:?}"),
            }
        }
        let conflict = ok()
            .message_group("g")
            .delay(Duration::from_secs(1))
            .build();
        assert!(matches!(
            conflict,
            Err(crate::Error::InvalidMessage(Invalid::Conflict(_)))
        ));
        assert!(matches!(
            ok().priority(1).lite_topic("l").build(),
            Err(crate::Error::InvalidMessage(Invalid::Conflict(_)))
        ));
    }

    #[test]
    fn given_fields_when_built_should_derive_the_message_type() {
        let t = |b: MessageBuilder| b.build().map(|m| m.message_type()).ok();
        assert_eq!(t(ok()), Some(pb::MessageType::Normal));
        assert_eq!(t(ok().message_group("g")), Some(pb::MessageType::Fifo));
        assert_eq!(
            t(ok().delay(Duration::from_secs(2))),
            Some(pb::MessageType::Delay)
        );
        assert_eq!(t(ok().priority(3)), Some(pb::MessageType::Priority));
        assert!(matches!(
            ok().priority(-1).build(),
            Err(crate::Error::InvalidMessage(Invalid::Argument {
                what: "priority (0 or more)",
                ..
            }))
        ));
        assert_eq!(t(ok().lite_topic("l")), Some(pb::MessageType::Lite));
    }

    #[test]
    fn given_message_ids_when_generated_should_be_unique_34_hex_chars() {
        let a = new_message_id();
        let b = new_message_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("01"));
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn given_digests_when_checked_should_accept_matches_in_any_case() {
        let body = b"hello";
        let md5 = pb::Digest {
            r#type: pb::DigestType::Md5 as i32,
            checksum: "5D41402ABC4B2A76B9719D911017C592".into(),
        };
        assert!(digest_matches(&md5, body));
        assert!(!digest_matches(&md5, b"other"));
        let crc = crc32fast::hash(body);
        for checksum in [format!("{crc:08X}"), crc.to_string()] {
            let d = pb::Digest {
                r#type: pb::DigestType::Crc32 as i32,
                checksum,
            };
            assert!(digest_matches(&d, body));
        }
    }

    #[test]
    fn given_a_delivered_message_when_decoded_should_keep_its_fields() {
        let m = pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "t".into(),
            }),
            user_properties: HashMap::from([("k".into(), "v".into())]),
            system_properties: Some(pb::SystemProperties {
                message_id: "id".into(),
                tag: Some("a".into()),
                delivery_attempt: Some(3),
                receipt_handle: Some("rh".into()),
                body_encoding: pb::Encoding::Identity as i32,
                ..Default::default()
            }),
            body: Bytes::from_static(b"x"),
        };
        let v = MessageView::from_proto(m, Arc::new(Endpoints::from_access_point("a:1")))
            .expect("valid");
        assert_eq!(v.message_id(), "id");
        assert_eq!(v.tag(), Some("a"));
        assert_eq!(v.delivery_attempt(), 3);
        assert_eq!(v.receipt_handle(), "rh");
        assert_eq!(v.properties().get("k").map(String::as_str), Some("v"));
        assert!(!v.is_corrupted());
        let no_topic = pb::Message::default();
        assert!(
            MessageView::from_proto(no_topic, Arc::new(Endpoints::from_access_point("a:1")))
                .is_err()
        );
    }
}
