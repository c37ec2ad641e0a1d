//! The gRPC framing of a unary call's one message: a byte saying whether it is compressed
//! (never, here), its length as a big-endian `u32`, and the encoded protobuf message.
//!
//! The SDK's own unary calls frame their requests and check their answers with these two
//! functions (see the `transport` module). They are public for tools that make
//! `apache.rocketmq.v2` calls on HTTP/2 themselves, such as the raw client of `comet-bench`,
//! so that those tools frame and check messages exactly as the SDK does instead of keeping a
//! copy of this code.
//!
//! Failures are reported as the [`tonic::Status`] tonic's own codec would report: `INTERNAL`
//! for an answer that is not exactly one uncompressed, decodable message, `INVALID_ARGUMENT`
//! for a request too large to frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before the message in a frame: the compression flag and the length.
pub const FRAME_HEADER_LEN: usize = 5;

/// `message` as one uncompressed gRPC frame, in one buffer of exactly the frame's size.
///
/// # Errors
/// `INVALID_ARGUMENT` when the encoded message is longer than a frame's `u32` length allows;
/// `INTERNAL` if encoding fails.
pub fn encode_frame(message: &impl prost::Message) -> Result<Bytes, tonic::Status> {
    let len = message.encoded_len();
    let prefix = u32::try_from(len).map_err(|_| {
        tonic::Status::invalid_argument(format!("a request of {len} bytes is too large"))
    })?;
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + len);
    buf.put_u8(0);
    buf.put_u32(prefix);
    message
        .encode(&mut buf)
        .map_err(|e| tonic::Status::internal(format!("encoding the request: {e}")))?;
    Ok(buf.freeze())
}

/// The one message of a unary answer's body (all its DATA frames together).
///
/// # Errors
/// `INTERNAL` when the body is shorter than a frame header, is compressed, holds more or
/// fewer bytes than its frame announces, or does not decode as `R`.
pub fn decode_frame<R: prost::Message + Default>(mut body: Bytes) -> Result<R, tonic::Status> {
    if body.len() < FRAME_HEADER_LEN {
        return Err(tonic::Status::internal(format!(
            "the answer's body has {} bytes, fewer than a gRPC frame header",
            body.len()
        )));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err(tonic::Status::internal(
            "the answer is compressed, which the client did not ask for",
        ));
    }
    if len != body.len() {
        return Err(tonic::Status::internal(format!(
            "the answer's frame announces {len} bytes and {} follow",
            body.len()
        )));
    }
    R::decode(body).map_err(|e| tonic::Status::internal(format!("decoding the answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_proto::apache::rocketmq::v2 as pb;

    fn answer() -> pb::SendMessageResponse {
        pb::SendMessageResponse {
            status: Some(pb::Status {
                code: pb::Code::Ok as i32,
                message: "fine".into(),
            }),
            entries: vec![],
        }
    }

    #[test]
    fn given_a_message_when_framed_and_unframed_should_round_trip() {
        let m = answer();
        let framed = encode_frame(&m).expect("frames");
        assert_eq!(framed[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize,
            framed.len() - FRAME_HEADER_LEN
        );
        let back: pb::SendMessageResponse = decode_frame(framed).expect("unframes");
        assert_eq!(back, m);
    }

    #[test]
    fn given_bad_bodies_when_unframed_should_say_what_is_wrong() {
        let message = |body: &'static [u8]| {
            decode_frame::<pb::SendMessageResponse>(Bytes::from_static(body))
                .expect_err("a bad body")
                .message()
                .to_owned()
        };
        assert!(message(&[0, 0]).contains("fewer than a gRPC frame header"));
        assert!(message(&[1, 0, 0, 0, 0]).contains("compressed"));
        assert!(message(&[0, 0, 0, 0, 9, 1]).contains("announces 9 bytes and 1 follow"));
        assert!(message(&[0, 0, 0, 0, 1, 0xff]).contains("decoding the answer"));
    }
}
