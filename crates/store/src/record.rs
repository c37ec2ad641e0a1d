//! The commitlog record format: encoding, verification and decoding.
//!
//! Every message is one self-describing record; all integers are little-endian.
//!
//! ```text
//! off  size  field
//!   0     4  total_len        whole record, this field included
//!   4     4  magic            RECORD_MAGIC (BLANK_MAGIC marks the unused end of a segment)
//!   8     4  crc32c           CRC32C of bytes [12, total_len): every field below, body included
//!  12     4  flags            opaque to the store; the broker's bits
//!  16     4  batch_left       records that follow in the same batch append (0 = last)
//!  20     4  queue_id         i32
//!  24     8  queue_offset     i64, logical offset in the (topic, queue) consume queue
//!  32     8  physical_offset  i64, this record's own commitlog offset
//!  40     8  born_timestamp   i64, ms since the Unix epoch (producer clock)
//!  48     8  store_timestamp  i64, ms since the Unix epoch (store clock, non-decreasing)
//!  56     4  reconsume_times  u32
//!  60    18  born_host        16-byte IPv6 address (IPv4 mapped) + u16 port
//!  78    18  store_host       same encoding
//!  96     2  topic_len        u16, then the topic bytes (UTF-8)
//!   .     4  props_len        u32, then the properties block
//!   .     4  body_len         u32, then the body
//! ```
//!
//! Properties block: tag, message id, keys, system properties, user properties. Each string is
//! a u32 length plus UTF-8 bytes; the key list and both maps start with a u32 count.
//!
//! A record is valid only if its length is in bounds, its magic matches, its CRC matches, its
//! recorded physical offset equals its position, and its inner lengths add up to `total_len`.
//! Recovery stops at the first record that is not valid; readers refuse such records.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use crate::error::{Result, StoreError};

/// Marks a message record.
pub(crate) const RECORD_MAGIC: u32 = 0xC0E7_0001;
/// Marks the unused end of a segment; `total_len` covers the rest of the segment.
pub(crate) const BLANK_MAGIC: u32 = 0xC0E7_B1A7;
/// Bytes before the topic.
pub(crate) const FIXED_HEADER: usize = 98;
/// Length + magic: the smallest thing that can be written at a position.
pub(crate) const MIN_MARKER: usize = 8;
/// Longest topic name the store accepts (RocketMQ's limit).
pub const MAX_TOPIC_LEN: usize = 127;
/// Highest queue id the store accepts.
pub const MAX_QUEUE_ID: i32 = u16::MAX as i32;

/// The properties of a message that the store understands, plus free-form maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// The message tag used for filtering; hashed into the consume queue.
    pub tag: Option<String>,
    /// Business keys; each is indexed for query by key.
    pub keys: Vec<String>,
    /// The message id (client-assigned, opaque); indexed for query by id.
    pub message_id: String,
    /// Properties the broker sets and reads (message group, delivery time, retry origin, ...).
    pub system: BTreeMap<String, String>,
    /// Properties set by the producing application.
    pub user: BTreeMap<String, String>,
}

/// A message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name: 1..=127 characters of `[%|a-zA-Z0-9_-]`.
    pub topic: String,
    /// Queue id within the topic: 0..=65535.
    pub queue_id: i32,
    /// Opaque flags for the broker.
    pub flags: u32,
    /// When the producer created the message, ms since the Unix epoch.
    pub born_timestamp: i64,
    /// The producer's address.
    pub born_host: SocketAddr,
    /// How many times the message was consumed and retried before.
    pub reconsume_times: u32,
    /// Tag, keys, id and property maps.
    pub properties: Properties,
    /// The payload.
    pub body: Bytes,
}

/// A message read back from the store, with the fields the store assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Commitlog offset of the record.
    pub physical_offset: i64,
    /// Size of the record in the commitlog, in bytes.
    pub size: u32,
    /// Logical offset within the (topic, queue) consume queue.
    pub queue_offset: i64,
    /// When the store appended the record, ms since the Unix epoch.
    pub store_timestamp: i64,
    /// The store's address at append time.
    pub store_host: SocketAddr,
    /// The message as appended.
    pub message: Message,
}

/// Fields the commitlog assigns while appending a record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Assigned {
    pub queue_offset: i64,
    pub physical_offset: i64,
    pub store_timestamp: i64,
    pub batch_left: u32,
}

/// Stable 64-bit hash of a tag (FNV-1a), as stored in consume-queue entries. No tag hashes to 0.
pub fn tag_hash(tag: Option<&str>) -> i64 {
    match tag {
        None => 0,
        Some(t) => {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in t.as_bytes() {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            h as i64
        }
    }
}

/// Checks the fields the store depends on (names become directory names).
pub(crate) fn validate(msg: &Message) -> Result<()> {
    validate_topic(&msg.topic)?;
    if !(0..=MAX_QUEUE_ID).contains(&msg.queue_id) {
        return Err(StoreError::InvalidMessage(format!(
            "queue id {} is outside 0..={MAX_QUEUE_ID}",
            msg.queue_id
        )));
    }
    Ok(())
}

/// Checks a topic name: 1..=127 characters of `[%|a-zA-Z0-9_-]`.
pub fn validate_topic(topic: &str) -> Result<()> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(StoreError::InvalidMessage(format!(
            "topic must be 1..={MAX_TOPIC_LEN} characters, got {}",
            topic.len()
        )));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-')))
    {
        return Err(StoreError::InvalidMessage(format!(
            "topic contains {c:?}; allowed are letters, digits and % | _ -"
        )));
    }
    Ok(())
}

fn props_len(p: &Properties) -> usize {
    let s = |x: &str| 4 + x.len();
    let map = |m: &BTreeMap<String, String>| 4 + m.iter().map(|(k, v)| s(k) + s(v)).sum::<usize>();
    s(p.tag.as_deref().unwrap_or(""))
        + s(&p.message_id)
        + 4
        + p.keys.iter().map(|k| s(k)).sum::<usize>()
        + map(&p.system)
        + map(&p.user)
}

/// Encoded size of a message's record.
pub(crate) fn encoded_len(msg: &Message) -> usize {
    FIXED_HEADER + msg.topic.len() + 4 + props_len(&msg.properties) + 4 + msg.body.len()
}

struct Out<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Out<'_> {
    fn put(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.put(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.put(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.put(s.as_bytes());
    }
    fn host(&mut self, a: &SocketAddr) {
        let ip = match a.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        self.put(&ip.octets());
        self.u16(a.port());
    }
    fn map(&mut self, m: &BTreeMap<String, String>) {
        self.u32(m.len() as u32);
        for (k, v) in m {
            self.str(k);
            self.str(v);
        }
    }
}

/// Writes the record of `msg` into `buf`, which must be exactly [`encoded_len`] bytes.
pub(crate) fn encode(buf: &mut [u8], msg: &Message, a: Assigned, store_host: &SocketAddr) {
    debug_assert_eq!(buf.len(), encoded_len(msg));
    let total = buf.len();
    let mut o = Out { buf, pos: 0 };
    o.u32(total as u32);
    o.u32(RECORD_MAGIC);
    o.u32(0); // CRC, filled in below
    o.u32(msg.flags);
    o.u32(a.batch_left);
    o.i32(msg.queue_id);
    o.i64(a.queue_offset);
    o.i64(a.physical_offset);
    o.i64(msg.born_timestamp);
    o.i64(a.store_timestamp);
    o.u32(msg.reconsume_times);
    o.host(&msg.born_host);
    o.host(store_host);
    o.u16(msg.topic.len() as u16);
    o.put(msg.topic.as_bytes());
    let p = &msg.properties;
    o.u32(props_len(p) as u32);
    o.str(p.tag.as_deref().unwrap_or(""));
    o.str(&p.message_id);
    o.u32(p.keys.len() as u32);
    for k in &p.keys {
        o.str(k);
    }
    o.map(&p.system);
    o.map(&p.user);
    o.u32(msg.body.len() as u32);
    o.put(&msg.body);
    debug_assert_eq!(o.pos, total);
    let crc = crc32c::crc32c(&o.buf[12..]);
    o.buf[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Writes, into the first 8 bytes of `buf`, a blank marker covering `total` bytes (the unused
/// end of a segment). `buf.len() >= 8`.
pub(crate) fn encode_blank(buf: &mut [u8], total: usize) {
    buf[0..4].copy_from_slice(&(total as u32).to_le_bytes());
    buf[4..8].copy_from_slice(&BLANK_MAGIC.to_le_bytes());
}

/// What is at a position of a segment, as far as the first 8 bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// A message record of this many bytes (not yet verified).
    Record(usize),
    /// The rest of the segment is unused.
    Blank,
    /// Zeros, garbage, or a length that does not fit: the valid log ends here.
    Invalid,
}

/// Reads the length and magic at the start of `buf` (`buf` = rest of the segment).
pub(crate) fn peek(buf: &[u8]) -> Marker {
    peek_head(buf, buf.len())
}

/// Like [`peek`], from the first (up to) 8 bytes `head` and the segment bytes left, `rest`.
pub(crate) fn peek_head(head: &[u8], rest: usize) -> Marker {
    if rest < MIN_MARKER || head.len() < MIN_MARKER {
        return Marker::Blank;
    }
    let len = u32_at(head, 0) as usize;
    match u32_at(head, 4) {
        RECORD_MAGIC if (FIXED_HEADER + 10..=rest).contains(&len) => Marker::Record(len),
        BLANK_MAGIC if len == rest => Marker::Blank,
        _ => Marker::Invalid,
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A verified record, borrowed from the log. Field access does not allocate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordView<'a> {
    buf: &'a [u8],
    topic_end: usize,
    props: (usize, usize),
    body: (usize, usize),
}

struct In<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn skip_str(&mut self) -> Option<()> {
        self.str().map(|_| ())
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn map(&mut self) -> Option<BTreeMap<String, String>> {
        let n = self.u32()?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.str()?;
            let v = self.str()?;
            m.insert(k.to_owned(), v.to_owned());
        }
        Some(m)
    }
}

impl<'a> RecordView<'a> {
    /// Verifies the record that starts `buf` (exactly `total_len` bytes) and found at
    /// `physical_offset`: length, magic, CRC32C, own offset, inner structure and properties.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if any check fails.
    pub(crate) fn parse(buf: &'a [u8], physical_offset: i64) -> Result<Self> {
        if buf.len() >= 12 && crc32c::crc32c(&buf[12..]) != u32_at(buf, 8) {
            return Err(StoreError::corrupt(physical_offset, "CRC32C mismatch"));
        }
        let v = Self::parse_trusted(buf, physical_offset)?;
        let mut r = In {
            buf: &buf[v.props.0..v.props.1],
            pos: 0,
        };
        let props_ok = (|| {
            r.skip_str()?;
            r.skip_str()?;
            for _ in 0..r.u32()? {
                r.skip_str()?;
            }
            for _ in 0..2 {
                for _ in 0..r.u32()? {
                    r.skip_str()?;
                    r.skip_str()?;
                }
            }
            (r.pos == r.buf.len()).then_some(())
        })();
        props_ok.ok_or_else(|| StoreError::corrupt(physical_offset, "malformed properties"))?;
        Ok(v)
    }

    /// Checks the framing of a record without the CRC; for records this process wrote or
    /// recovery already verified.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the framing is inconsistent.
    pub(crate) fn parse_trusted(buf: &'a [u8], physical_offset: i64) -> Result<Self> {
        let bad = |why: &str| StoreError::corrupt(physical_offset, why.to_string());
        if buf.len() < FIXED_HEADER + 10 {
            return Err(bad("record shorter than its header"));
        }
        if u32_at(buf, 0) as usize != buf.len() {
            return Err(bad("length field does not match"));
        }
        if u32_at(buf, 4) != RECORD_MAGIC {
            return Err(bad("bad magic"));
        }
        let mut v = RecordView {
            buf,
            topic_end: 0,
            props: (0, 0),
            body: (0, 0),
        };
        if v.physical_offset() != physical_offset {
            return Err(bad("record belongs at another offset"));
        }
        let mut r = In {
            buf,
            pos: FIXED_HEADER - 2,
        };
        let structure = (|| {
            let tl = r.u16()? as usize;
            let topic = r.take(tl)?;
            std::str::from_utf8(topic).ok()?;
            let topic_end = r.pos;
            let pl = r.u32()? as usize;
            let ps = r.pos;
            r.take(pl)?;
            let bl = r.u32()? as usize;
            let bs = r.pos;
            r.take(bl)?;
            (r.pos == buf.len()).then_some((topic_end, (ps, ps + pl), (bs, bs + bl)))
        })();
        let (topic_end, props, body) =
            structure.ok_or_else(|| bad("inner lengths do not add up"))?;
        v.topic_end = topic_end;
        v.props = props;
        v.body = body;
        Ok(v)
    }

    fn i64_at(&self, at: usize) -> i64 {
        let b = &self.buf[at..at + 8];
        i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    fn host_at(&self, at: usize) -> SocketAddr {
        let mut o = [0u8; 16];
        o.copy_from_slice(&self.buf[at..at + 16]);
        let v6 = Ipv6Addr::from(o);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        let port = u16::from_le_bytes([self.buf[at + 16], self.buf[at + 17]]);
        SocketAddr::new(ip, port)
    }

    pub(crate) fn total_len(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn flags(&self) -> u32 {
        u32_at(self.buf, 12)
    }
    pub(crate) fn batch_left(&self) -> u32 {
        u32_at(self.buf, 16)
    }
    pub(crate) fn queue_id(&self) -> i32 {
        u32_at(self.buf, 20) as i32
    }
    pub(crate) fn queue_offset(&self) -> i64 {
        self.i64_at(24)
    }
    pub(crate) fn physical_offset(&self) -> i64 {
        self.i64_at(32)
    }
    pub(crate) fn born_timestamp(&self) -> i64 {
        self.i64_at(40)
    }
    pub(crate) fn store_timestamp(&self) -> i64 {
        self.i64_at(48)
    }
    pub(crate) fn reconsume_times(&self) -> u32 {
        u32_at(self.buf, 56)
    }
    pub(crate) fn topic(&self) -> &'a str {
        // Verified as UTF-8 in `parse`.
        std::str::from_utf8(&self.buf[FIXED_HEADER..self.topic_end]).unwrap_or_default()
    }

    /// Tag, message id and keys without allocating: `(tag, message_id, keys)`.
    pub(crate) fn index_fields(&self) -> (Option<&'a str>, &'a str, Vec<&'a str>) {
        let mut r = In {
            buf: &self.buf[self.props.0..self.props.1],
            pos: 0,
        };
        let tag = r.str().unwrap_or_default();
        let id = r.str().unwrap_or_default();
        let n = r.u32().unwrap_or(0);
        let keys = (0..n).map_while(|_| r.str()).collect();
        ((!tag.is_empty()).then_some(tag), id, keys)
    }

    fn properties(&self) -> Option<Properties> {
        let mut r = In {
            buf: &self.buf[self.props.0..self.props.1],
            pos: 0,
        };
        let tag = r.str()?;
        let message_id = r.str()?.to_owned();
        let n = r.u32()?;
        let mut keys = Vec::with_capacity((n as usize).min(64));
        for _ in 0..n {
            keys.push(r.str()?.to_owned());
        }
        let system = r.map()?;
        let user = r.map()?;
        (r.pos == r.buf.len()).then(|| Properties {
            tag: (!tag.is_empty()).then(|| tag.to_owned()),
            keys,
            message_id,
            system,
            user,
        })
    }

    /// Copies the record out into an owned message.
    pub(crate) fn to_stored(self) -> StoredMessage {
        StoredMessage {
            physical_offset: self.physical_offset(),
            size: self.total_len() as u32,
            queue_offset: self.queue_offset(),
            store_timestamp: self.store_timestamp(),
            store_host: self.host_at(78),
            message: Message {
                topic: self.topic().to_owned(),
                queue_id: self.queue_id(),
                flags: self.flags(),
                born_timestamp: self.born_timestamp(),
                born_host: self.host_at(60),
                reconsume_times: self.reconsume_times(),
                properties: self.properties().unwrap_or_default(),
                body: Bytes::copy_from_slice(&self.buf[self.body.0..self.body.1]),
            },
        }
    }
}

/// An unspecified IPv4 address with port 0, for messages without a known host.
pub const UNKNOWN_HOST: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(body: &[u8]) -> Message {
        let mut user = BTreeMap::new();
        user.insert("k".to_owned(), "v".to_owned());
        Message {
            topic: "orders".into(),
            queue_id: 3,
            flags: 9,
            born_timestamp: 1_700_000_000_000,
            born_host: "10.1.2.3:4567".parse().expect("addr"),
            reconsume_times: 2,
            properties: Properties {
                tag: Some("TagA".into()),
                keys: vec!["k1".into(), "k2".into()],
                message_id: "01ABCDEF".into(),
                system: BTreeMap::new(),
                user,
            },
            body: Bytes::copy_from_slice(body),
        }
    }

    fn encode_at(msg: &Message, phys: i64) -> Vec<u8> {
        let mut buf = vec![0u8; encoded_len(msg)];
        let a = Assigned {
            queue_offset: 42,
            physical_offset: phys,
            store_timestamp: 1_700_000_000_123,
            batch_left: 0,
        };
        encode(&mut buf, msg, a, &"[::1]:10911".parse().expect("addr"));
        buf
    }

    #[test]
    fn given_message_when_encoded_and_parsed_should_round_trip() {
        let msg = sample(b"hello world");
        let buf = encode_at(&msg, 4096);
        assert_eq!(peek(&buf), Marker::Record(buf.len()));
        let v = RecordView::parse(&buf, 4096).expect("parse");
        let s = v.to_stored();
        assert_eq!(s.message, msg);
        assert_eq!(s.queue_offset, 42);
        assert_eq!(s.physical_offset, 4096);
        assert_eq!(s.store_host, "[::1]:10911".parse().expect("addr"));
        let (tag, id, keys) = v.index_fields();
        assert_eq!(
            (tag, id, keys),
            (Some("TagA"), "01ABCDEF", vec!["k1", "k2"])
        );
    }

    #[test]
    fn given_any_single_bit_flip_when_parsed_should_be_rejected() {
        let buf = encode_at(&sample(b"payload bytes"), 0);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                let accepted = match peek(&b) {
                    Marker::Record(n) if n == b.len() => RecordView::parse(&b, 0).is_ok(),
                    _ => false,
                };
                assert!(!accepted, "flip of bit {bit} in byte {byte} went unnoticed");
            }
        }
    }

    #[test]
    fn given_record_at_wrong_offset_when_parsed_should_be_rejected() {
        let buf = encode_at(&sample(b"x"), 100);
        assert!(RecordView::parse(&buf, 200).is_err());
    }

    #[test]
    fn given_zeros_or_blank_when_peeked_should_classify() {
        assert_eq!(peek(&[0u8; 64]), Marker::Invalid);
        assert_eq!(peek(&[0u8; 7]), Marker::Blank);
        let mut b = vec![0u8; 64];
        encode_blank(&mut b, 64);
        assert_eq!(peek(&b), Marker::Blank);
    }

    #[test]
    fn given_bad_topics_when_validated_should_explain() {
        assert!(validate_topic("orders_1-%|x").is_ok());
        for bad in ["", "a/b", "..", "a b", &"x".repeat(128)] {
            let err = validate_topic(bad).expect_err(bad).to_string();
            assert!(err.contains("topic"), "{err}");
        }
    }

    #[test]
    fn given_tags_when_hashed_should_be_stable_and_distinct() {
        assert_eq!(tag_hash(None), 0);
        assert_eq!(tag_hash(Some("TagA")), tag_hash(Some("TagA")));
        assert_ne!(tag_hash(Some("TagA")), tag_hash(Some("TagB")));
    }
}
