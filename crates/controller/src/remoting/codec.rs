//! The RocketMQ remoting frame and command header, as pure functions over bytes
//! (no I/O): [`RemotingCommand`], [`encode`], [`decode_frame`] and the
//! incremental [`split_frame`] used by the server's reader.
//!
//! # Frame
//!
//! ```text
//! int32 BE  length = 4 + headerLen + bodyLen          (does not count itself)
//! int32 BE  (serializeType << 24) | (headerLen & 0xFFFFFF)
//! bytes     header (headerLen): JSON (type 0) or ROCKETMQ binary (type 1)
//! bytes     body   (the rest)
//! ```
//!
//! A whole frame, length prefix included, is at most [`MAX_FRAME_BYTES`]
//! (16 MiB, as Netty's frame decoder in RocketMQ counts it).
//!
//! # Headers
//!
//! - JSON: `{"code":105,"language":"JAVA","version":401,"opaque":7,"flag":0,
//!   "remark":...,"extFields":{...},"serializeTypeCurrentRPC":"JSON"}`. On
//!   input, missing `language`/`version`/`opaque`/`flag` default (OTHER, 0, 0,
//!   0), numeric and boolean `extFields` values are read as their text, null
//!   values are dropped; `code` is required.
//! - ROCKETMQ binary: code int16, language uint8, version int16, opaque
//!   int32, flag int32, remark (int32 length + UTF-8), extFields (int32 total
//!   length, then repeated int16 key length + key, int32 value length +
//!   value). An empty remark is written as length 0 and read back as none.
//!
//! Every length read from the wire is checked against what remains, so a
//! truncated or lying frame is an error, never a panic or an over-read.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::ControllerError;

/// Largest frame accepted or produced, length prefix included (16 MiB).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Largest header: its length has 24 bits on the wire.
pub const MAX_HEADER_BYTES: usize = 0xFF_FFFF;

/// `flag` bit: the command is a response.
pub const FLAG_RESPONSE: i32 = 1;
/// `flag` bit: the request expects no response.
pub const FLAG_ONEWAY: i32 = 1 << 1;

fn frame_err(reason: impl Into<String>) -> ControllerError {
    ControllerError::Frame {
        reason: reason.into(),
    }
}

/// How a header is encoded (the high byte of the header-length word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SerializeType {
    /// JSON header (type 0).
    Json,
    /// Compact binary header (type 1, "ROCKETMQ").
    RocketMq,
}

impl SerializeType {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            SerializeType::Json => 0,
            SerializeType::RocketMq => 1,
        }
    }

    /// The type for a wire value, if known.
    pub fn from_code(code: u8) -> Option<SerializeType> {
        match code {
            0 => Some(SerializeType::Json),
            1 => Some(SerializeType::RocketMq),
            _ => None,
        }
    }
}

/// A remoting client's language (`LanguageCode`): a byte on the binary wire,
/// an enum name in JSON. Unknown bytes are kept as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LanguageCode(pub u8);

/// `LanguageCode` names by wire value.
const LANGUAGE_NAMES: [&str; 14] = [
    "JAVA", "CPP", "DOTNET", "PYTHON", "DELPHI", "ERLANG", "RUBY", "OTHER", "HTTP", "GO", "PHP",
    "OMS", "RUST", "NODE_JS",
];

impl LanguageCode {
    /// Java.
    pub const JAVA: LanguageCode = LanguageCode(0);
    /// Go.
    pub const GO: LanguageCode = LanguageCode(9);
    /// Any other language; also the reading of an unknown JSON name.
    pub const OTHER: LanguageCode = LanguageCode(7);
    /// Rust (what this server answers with).
    pub const RUST: LanguageCode = LanguageCode(12);

    /// The enum name, if the value is known.
    pub fn name(self) -> Option<&'static str> {
        LANGUAGE_NAMES.get(usize::from(self.0)).copied()
    }

    /// The code of an enum name; unknown names read as [`LanguageCode::OTHER`].
    pub fn from_name(name: &str) -> LanguageCode {
        LANGUAGE_NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| u8::try_from(i).ok())
            .map_or(LanguageCode::OTHER, LanguageCode)
    }
}

/// One remoting request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotingCommand {
    /// Request code, or response code in a response.
    pub code: i32,
    /// Sender's language.
    pub language: LanguageCode,
    /// Sender's version (`MQVersion` ordinal; 401 is 4.9.4).
    pub version: i32,
    /// Request id, echoed by the response.
    pub opaque: i32,
    /// [`FLAG_RESPONSE`], [`FLAG_ONEWAY`] bits.
    pub flag: i32,
    /// Error text of a response; `None` when absent (an empty remark reads as `None`).
    pub remark: Option<String>,
    /// The custom header fields, as strings.
    pub ext_fields: BTreeMap<String, String>,
    /// The body (JSON for every command this server handles).
    pub body: Bytes,
    /// How the header was (or will be) encoded.
    pub serialize_type: SerializeType,
}

impl RemotingCommand {
    /// A request with `code` and no fields.
    pub fn request(code: i32, serialize_type: SerializeType) -> Self {
        RemotingCommand {
            code,
            language: LanguageCode::RUST,
            version: 0,
            opaque: 0,
            flag: 0,
            remark: None,
            ext_fields: BTreeMap::new(),
            body: Bytes::new(),
            serialize_type,
        }
    }

    /// The response to this request: same opaque and header encoding, the
    /// response flag set, `code` and `remark` given.
    pub fn response_to(&self, code: i32, remark: Option<String>) -> Self {
        RemotingCommand {
            code,
            language: LanguageCode::RUST,
            version: self.version,
            opaque: self.opaque,
            flag: FLAG_RESPONSE,
            remark: remark.filter(|r| !r.is_empty()),
            ext_fields: BTreeMap::new(),
            body: Bytes::new(),
            serialize_type: self.serialize_type,
        }
    }

    /// Whether this is a response.
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// Whether the sender expects no response.
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// A header field.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.ext_fields.get(key).map(String::as_str)
    }
}

// ---------------------------------------------------------------- JSON header

#[derive(Serialize)]
struct JsonHeaderOut<'a> {
    code: i32,
    #[serde(rename = "extFields", skip_serializing_if = "BTreeMap::is_empty")]
    ext_fields: &'a BTreeMap<String, String>,
    flag: i32,
    language: &'a str,
    opaque: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    remark: Option<&'a str>,
    #[serde(rename = "serializeTypeCurrentRPC")]
    serialize_type: &'static str,
    version: i32,
}

#[derive(Deserialize)]
struct JsonHeaderIn {
    code: i32,
    #[serde(default)]
    language: Option<serde_json::Value>,
    #[serde(default)]
    version: Option<i32>,
    #[serde(default)]
    opaque: Option<i32>,
    #[serde(default)]
    flag: Option<i32>,
    #[serde(default)]
    remark: Option<String>,
    #[serde(rename = "extFields", default)]
    ext_fields: Option<BTreeMap<String, serde_json::Value>>,
}

fn encode_json_header(cmd: &RemotingCommand) -> Result<Vec<u8>, ControllerError> {
    let header = JsonHeaderOut {
        code: cmd.code,
        ext_fields: &cmd.ext_fields,
        flag: cmd.flag,
        language: cmd.language.name().unwrap_or("OTHER"),
        opaque: cmd.opaque,
        remark: cmd.remark.as_deref().filter(|r| !r.is_empty()),
        serialize_type: "JSON",
        version: cmd.version,
    };
    serde_json::to_vec(&header).map_err(|e| frame_err(format!("JSON header: {e}")))
}

fn decode_json_header(header: &[u8], body: Bytes) -> Result<RemotingCommand, ControllerError> {
    let h: JsonHeaderIn = serde_json::from_slice(header)
        .map_err(|e| frame_err(format!("JSON header is not a remoting command: {e}")))?;
    let language = match h.language {
        Some(serde_json::Value::String(s)) => LanguageCode::from_name(&s),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .map_or(LanguageCode::OTHER, LanguageCode),
        _ => LanguageCode::OTHER,
    };
    let mut ext_fields = BTreeMap::new();
    for (k, v) in h.ext_fields.unwrap_or_default() {
        let v = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                return Err(frame_err(format!(
                    "JSON header field extFields.{k} is not a string"
                )));
            }
        };
        ext_fields.insert(k, v);
    }
    Ok(RemotingCommand {
        code: h.code,
        language,
        version: h.version.unwrap_or(0),
        opaque: h.opaque.unwrap_or(0),
        flag: h.flag.unwrap_or(0),
        remark: h.remark.filter(|r| !r.is_empty()),
        ext_fields,
        body,
        serialize_type: SerializeType::Json,
    })
}

// -------------------------------------------------------------- binary header

fn encode_binary_header(cmd: &RemotingCommand) -> Result<Vec<u8>, ControllerError> {
    let code = i16::try_from(cmd.code)
        .map_err(|_| frame_err(format!("code {} does not fit the binary header", cmd.code)))?;
    let version = i16::try_from(cmd.version).map_err(|_| {
        frame_err(format!(
            "version {} does not fit the binary header",
            cmd.version
        ))
    })?;
    let remark = cmd.remark.as_deref().unwrap_or("").as_bytes();
    let remark_len = i32::try_from(remark.len()).map_err(|_| frame_err("remark too long"))?;
    let mut ext = Vec::new();
    for (k, v) in &cmd.ext_fields {
        let klen = i16::try_from(k.len())
            .map_err(|_| frame_err(format!("extFields key of {} bytes is too long", k.len())))?;
        let vlen = i32::try_from(v.len())
            .map_err(|_| frame_err(format!("extFields value of {k} is too long")))?;
        ext.put_i16(klen);
        ext.put_slice(k.as_bytes());
        ext.put_i32(vlen);
        ext.put_slice(v.as_bytes());
    }
    let ext_len = i32::try_from(ext.len()).map_err(|_| frame_err("extFields too long"))?;
    let mut out = Vec::with_capacity(2 + 1 + 2 + 4 + 4 + 4 + remark.len() + 4 + ext.len());
    out.put_i16(code);
    out.put_u8(cmd.language.0);
    out.put_i16(version);
    out.put_i32(cmd.opaque);
    out.put_i32(cmd.flag);
    out.put_i32(remark_len);
    out.put_slice(remark);
    out.put_i32(ext_len);
    out.put_slice(&ext);
    Ok(out)
}

/// A bounds-checked reader over a header.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], ControllerError> {
        if self.buf.len() < n {
            return Err(frame_err(format!(
                "{} truncated at {field}: need {n} bytes, {} left",
                self.what,
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn i16(&mut self, field: &str) -> Result<i16, ControllerError> {
        let mut b = self.take(2, field)?;
        Ok(b.get_i16())
    }

    fn i32(&mut self, field: &str) -> Result<i32, ControllerError> {
        let mut b = self.take(4, field)?;
        Ok(b.get_i32())
    }

    fn u8(&mut self, field: &str) -> Result<u8, ControllerError> {
        Ok(self.take(1, field)?[0])
    }

    fn len(&mut self, n: i64, field: &str) -> Result<usize, ControllerError> {
        usize::try_from(n).map_err(|_| frame_err(format!("{field} has negative length {n}")))
    }

    fn string(&mut self, n: usize, field: &str) -> Result<String, ControllerError> {
        let b = self.take(n, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| frame_err(format!("{field} is not UTF-8")))
    }
}

fn decode_binary_header(header: &[u8], body: Bytes) -> Result<RemotingCommand, ControllerError> {
    let mut r = Reader {
        buf: header,
        what: "binary header",
    };
    let code = r.i16("code")?;
    let language = LanguageCode(r.u8("language")?);
    let version = r.i16("version")?;
    let opaque = r.i32("opaque")?;
    let flag = r.i32("flag")?;
    let remark_len = r.i32("remark length")?;
    let remark_len = r.len(i64::from(remark_len), "remark")?;
    let remark = r.string(remark_len, "remark")?;
    let ext_len = r.i32("extFields length")?;
    let ext_len = r.len(i64::from(ext_len), "extFields")?;
    let ext = r.take(ext_len, "extFields")?;
    if !r.buf.is_empty() {
        return Err(frame_err(format!(
            "binary header has {} bytes after extFields",
            r.buf.len()
        )));
    }
    let mut e = Reader {
        buf: ext,
        what: "extFields",
    };
    let mut ext_fields = BTreeMap::new();
    while !e.buf.is_empty() {
        let klen = e.i16("key length")?;
        let klen = e.len(i64::from(klen), "key")?;
        let key = e.string(klen, "key")?;
        let vlen = e.i32("value length")?;
        let vlen = e.len(i64::from(vlen), "value")?;
        let value = e.string(vlen, "value")?;
        ext_fields.insert(key, value);
    }
    Ok(RemotingCommand {
        code: i32::from(code),
        language,
        version: i32::from(version),
        opaque,
        flag,
        remark: (!remark.is_empty()).then_some(remark),
        ext_fields,
        body,
        serialize_type: SerializeType::RocketMq,
    })
}

// --------------------------------------------------------------------- frames

/// Appends the whole frame of `cmd` (length prefix included) to `dst`.
///
/// # Errors
/// A header that does not fit its encoding (binary code or version beyond
/// int16, a key longer than 32767 bytes) or a frame over [`MAX_FRAME_BYTES`].
pub fn encode(cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), ControllerError> {
    let header = match cmd.serialize_type {
        SerializeType::Json => encode_json_header(cmd)?,
        SerializeType::RocketMq => encode_binary_header(cmd)?,
    };
    if header.len() > MAX_HEADER_BYTES {
        return Err(frame_err(format!(
            "header of {} bytes exceeds {MAX_HEADER_BYTES}",
            header.len()
        )));
    }
    let total = 4 + 4 + header.len() + cmd.body.len();
    if total > MAX_FRAME_BYTES {
        return Err(frame_err(format!(
            "frame of {total} bytes exceeds {MAX_FRAME_BYTES}"
        )));
    }
    let length = u32::try_from(total - 4).map_err(|_| frame_err("frame length overflow"))?;
    let header_len =
        u32::try_from(header.len()).map_err(|_| frame_err("header length overflow"))?;
    dst.reserve(total);
    dst.put_u32(length);
    dst.put_u32((u32::from(cmd.serialize_type.code()) << 24) | header_len);
    dst.put_slice(&header);
    dst.put_slice(&cmd.body);
    Ok(())
}

/// Decodes one frame *without* its length prefix (header-length word,
/// header, body).
///
/// # Errors
/// Fewer than 4 bytes, an unknown serialize type, a header length beyond the
/// frame, or a header that does not decode.
pub fn decode_frame(mut frame: Bytes) -> Result<RemotingCommand, ControllerError> {
    if frame.len() < 4 {
        return Err(frame_err(format!(
            "frame of {} bytes has no header-length word",
            frame.len()
        )));
    }
    let word = frame.get_u32();
    let type_code = u8::try_from(word >> 24).unwrap_or(u8::MAX);
    let header_len = usize::try_from(word & 0xFF_FFFF).unwrap_or(usize::MAX);
    let serialize_type = SerializeType::from_code(type_code)
        .ok_or_else(|| frame_err(format!("unknown serialize type {type_code}")))?;
    if header_len > frame.len() {
        return Err(frame_err(format!(
            "header length {header_len} exceeds the {} bytes left in the frame",
            frame.len()
        )));
    }
    let header = frame.split_to(header_len);
    match serialize_type {
        SerializeType::Json => decode_json_header(&header, frame),
        SerializeType::RocketMq => decode_binary_header(&header, frame),
    }
}

/// Takes one whole frame off the front of `buf` if it is there: `Ok(None)`
/// means "need more bytes". The returned bytes exclude the length prefix
/// (pass them to [`decode_frame`]).
///
/// # Errors
/// A length prefix below 4 or one that makes the frame exceed
/// [`MAX_FRAME_BYTES`]; the stream cannot be resynchronised after that.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, ControllerError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if length < 4 {
        return Err(frame_err(format!(
            "frame length {length} is below the 4-byte header-length word"
        )));
    }
    if length.saturating_add(4) > MAX_FRAME_BYTES {
        return Err(frame_err(format!(
            "frame of {} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
            length.saturating_add(4)
        )));
    }
    if buf.len() < 4 + length {
        buf.reserve(4 + length - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(length).freeze()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_of(cmd: &RemotingCommand) -> BytesMut {
        let mut b = BytesMut::new();
        encode(cmd, &mut b).unwrap();
        b
    }

    fn round_trip(cmd: &RemotingCommand) -> RemotingCommand {
        let mut b = frame_of(cmd);
        let frame = split_frame(&mut b).unwrap().unwrap();
        assert!(b.is_empty(), "one frame consumed exactly");
        decode_frame(frame).unwrap()
    }

    #[test]
    fn given_a_java_json_request_when_decoded_should_read_every_field() {
        let header = br#"{"code":105,"extFields":{"topic":"TopicTest","acceptStandardJsonOnly":true,"n":3,"gone":null},"flag":0,"language":"JAVA","opaque":42,"serializeTypeCurrentRPC":"JSON","version":453}"#;
        let mut frame = BytesMut::new();
        frame.put_u32(u32::try_from(header.len()).unwrap());
        frame.put_slice(header);
        let cmd = decode_frame(frame.freeze()).unwrap();
        assert_eq!(cmd.code, 105);
        assert_eq!(cmd.language, LanguageCode::JAVA);
        assert_eq!(cmd.version, 453);
        assert_eq!(cmd.opaque, 42);
        assert_eq!(cmd.field("topic"), Some("TopicTest"));
        assert_eq!(cmd.field("acceptStandardJsonOnly"), Some("true"));
        assert_eq!(cmd.field("n"), Some("3"));
        assert_eq!(cmd.field("gone"), None);
        assert!(cmd.body.is_empty());
        assert_eq!(cmd.serialize_type, SerializeType::Json);
    }

    #[test]
    fn given_a_binary_request_when_decoded_should_match_the_java_layout() {
        // Built by hand from RocketMQSerializable.rocketMQProtocolEncode.
        let mut h = BytesMut::new();
        h.put_i16(106);
        h.put_u8(9); // GO
        h.put_i16(401);
        h.put_i32(7);
        h.put_i32(0);
        h.put_i32(0); // no remark
        let mut ext = BytesMut::new();
        ext.put_i16(5);
        ext.put_slice(b"topic");
        ext.put_i32(1);
        ext.put_slice(b"t");
        h.put_i32(i32::try_from(ext.len()).unwrap());
        h.put_slice(&ext);
        let mut frame = BytesMut::new();
        frame.put_u32((1 << 24) | u32::try_from(h.len()).unwrap());
        frame.put_slice(&h);
        frame.put_slice(b"{}");
        let cmd = decode_frame(frame.freeze()).unwrap();
        assert_eq!(cmd.code, 106);
        assert_eq!(cmd.language, LanguageCode::GO);
        assert_eq!(cmd.version, 401);
        assert_eq!(cmd.opaque, 7);
        assert_eq!(cmd.remark, None);
        assert_eq!(cmd.field("topic"), Some("t"));
        assert_eq!(&cmd.body[..], b"{}");
        assert_eq!(cmd.serialize_type, SerializeType::RocketMq);
    }

    #[test]
    fn given_a_response_when_encoded_as_json_should_carry_flag_opaque_and_remark() {
        let mut req = RemotingCommand::request(105, SerializeType::Json);
        req.opaque = 9;
        let resp = req.response_to(17, Some("no such topic".into()));
        let b = frame_of(&resp);
        let header_len = usize::try_from(u32::from_be_bytes([b[4], b[5], b[6], b[7]])).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&b[8..8 + header_len]).unwrap();
        assert_eq!(header["code"], 17);
        assert_eq!(header["flag"], 1);
        assert_eq!(header["opaque"], 9);
        assert_eq!(header["language"], "RUST");
        assert_eq!(header["remark"], "no such topic");
        assert_eq!(header["serializeTypeCurrentRPC"], "JSON");
        assert!(resp.is_response() && !resp.is_oneway());
    }

    #[test]
    fn given_bad_frames_when_split_or_decoded_should_fail_without_panicking() {
        // Length below the header word.
        let mut b = BytesMut::from(&[0u8, 0, 0, 3, 1, 2, 3][..]);
        assert!(split_frame(&mut b).is_err());
        // Oversized.
        let mut b = BytesMut::new();
        b.put_u32(u32::try_from(MAX_FRAME_BYTES).unwrap());
        assert!(
            split_frame(&mut b)
                .unwrap_err()
                .to_string()
                .contains("exceeds")
        );
        // The largest allowed frame is only waited for.
        let mut b = BytesMut::new();
        b.put_u32(u32::try_from(MAX_FRAME_BYTES - 4).unwrap());
        assert!(split_frame(&mut b).unwrap().is_none());
        // Partial frames wait for more.
        let mut b = BytesMut::from(&[0u8, 0][..]);
        assert!(split_frame(&mut b).unwrap().is_none());
        // Unknown serialize type, header beyond the frame, bad JSON, missing code.
        for (word, rest) in [
            ((2u32 << 24) | 2, &b"{}"[..]),
            (100, &b"{}"[..]),
            (3, &b"{x}"[..]),
            (2, &b"{}"[..]),
            ((1 << 24) | 3, &b"\x00\x01\x02"[..]),
        ] {
            let mut f = BytesMut::new();
            f.put_u32(word);
            f.put_slice(rest);
            assert!(decode_frame(f.freeze()).is_err(), "{word:x}");
        }
        // A binary header whose remark length lies.
        let mut h = BytesMut::new();
        h.put_i16(105);
        h.put_u8(0);
        h.put_i16(0);
        h.put_i32(0);
        h.put_i32(0);
        h.put_i32(1000);
        let mut f = BytesMut::new();
        f.put_u32((1 << 24) | u32::try_from(h.len()).unwrap());
        f.put_slice(&h);
        let err = decode_frame(f.freeze()).unwrap_err().to_string();
        assert!(err.contains("remark"), "{err}");
        // Negative extFields length.
        let mut h = BytesMut::new();
        h.put_i16(105);
        h.put_u8(0);
        h.put_i16(0);
        h.put_i32(0);
        h.put_i32(0);
        h.put_i32(0);
        h.put_i32(-5);
        let mut f = BytesMut::new();
        f.put_u32((1 << 24) | u32::try_from(h.len()).unwrap());
        f.put_slice(&h);
        assert!(decode_frame(f.freeze()).is_err());
    }

    #[test]
    fn given_values_that_do_not_fit_the_binary_header_when_encoded_should_fail() {
        let mut cmd = RemotingCommand::request(40_000, SerializeType::RocketMq);
        assert!(encode(&cmd, &mut BytesMut::new()).is_err());
        cmd.code = 105;
        cmd.ext_fields.insert("k".repeat(40_000), "v".into());
        assert!(encode(&cmd, &mut BytesMut::new()).is_err());
        let mut big = RemotingCommand::request(105, SerializeType::Json);
        big.body = Bytes::from(vec![0u8; MAX_FRAME_BYTES]);
        assert!(encode(&big, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn given_language_names_when_mapped_should_round_trip_and_default_to_other() {
        for code in 0..14u8 {
            let l = LanguageCode(code);
            assert_eq!(LanguageCode::from_name(l.name().unwrap()), l);
        }
        assert_eq!(LanguageCode::from_name("COBOL"), LanguageCode::OTHER);
        assert_eq!(LanguageCode(200).name(), None);
    }

    fn arb_command() -> impl Strategy<Value = RemotingCommand> {
        (
            any::<i16>(),
            0u8..14,
            any::<i16>(),
            any::<i32>(),
            0i32..4,
            proptest::option::of("[^\u{0}]{1,40}"),
            proptest::collection::btree_map("[a-zA-Z]{1,12}", ".{0,40}", 0..6),
            proptest::collection::vec(any::<u8>(), 0..256),
            any::<bool>(),
        )
            .prop_map(
                |(code, lang, version, opaque, flag, remark, ext_fields, body, binary)| {
                    RemotingCommand {
                        code: i32::from(code),
                        language: LanguageCode(lang),
                        version: i32::from(version),
                        opaque,
                        flag,
                        remark,
                        ext_fields,
                        body: Bytes::from(body),
                        serialize_type: if binary {
                            SerializeType::RocketMq
                        } else {
                            SerializeType::Json
                        },
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn prop_commands_round_trip_in_both_encodings(cmd in arb_command()) {
            prop_assert_eq!(round_trip(&cmd), cmd);
        }

        #[test]
        fn prop_frames_split_identically_at_any_chunking(
            cmds in proptest::collection::vec(arb_command(), 1..5),
            cuts in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let mut wire = BytesMut::new();
            for c in &cmds {
                encode(c, &mut wire).unwrap();
            }
            let wire = wire.freeze();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut cut = cuts.iter().cycle();
            while pos < wire.len() {
                let n = (*cut.next().unwrap()).min(wire.len() - pos);
                buf.extend_from_slice(&wire[pos..pos + n]);
                pos += n;
                while let Some(f) = split_frame(&mut buf).unwrap() {
                    got.push(decode_frame(f).unwrap());
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, cmds);
        }

        /// Random bytes never panic the splitter or the decoder, and never
        /// yield more than the bytes hold.
        #[test]
        fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut frames = 0;
            while let Ok(Some(f)) = split_frame(&mut buf) {
                frames += 1;
                let _ = decode_frame(f);
                prop_assert!(frames <= bytes.len() / 4);
            }
            let _ = decode_frame(Bytes::from(bytes.clone()));
        }

        /// A valid frame with any single byte flipped decodes or fails, never panics.
        #[test]
        fn prop_corrupted_frames_never_panic(cmd in arb_command(), pos in any::<prop::sample::Index>(), xor in 1u8..) {
            let mut b = frame_of(&cmd);
            let i = pos.index(b.len());
            b[i] ^= xor;
            if let Ok(Some(f)) = split_frame(&mut b) {
                let _ = decode_frame(f);
            }
        }
    }
}
