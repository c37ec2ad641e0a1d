//! Byte-level checks of the generated messages against hand-assembled
//! protobuf encodings (field keys computed from the contract's field numbers),
//! independent of the descriptor tables.

use bytes::Bytes;
use prost::Message as _;

use crate::apache::rocketmq::v2::{
    Code, Message, ReceiveMessageResponse, Resource, SendMessageRequest, Status, SystemProperties,
    receive_message_response,
};

/// Wire type of varint scalars (int32, int64, bool, enums).
const VARINT: u8 = 0;
/// Wire type of length-delimited values (string, bytes, messages, packed).
const LEN: u8 = 2;

/// A field key: `(field_number << 3) | wire_type` (single byte for fields < 16).
const fn key(field: u8, wire_type: u8) -> u8 {
    assert!(field < 16, "single-byte keys only");
    (field << 3) | wire_type
}

/// `key, length, payload` for a length-delimited field whose payload is < 128 bytes.
fn len_field(field: u8, payload: &[u8]) -> Vec<u8> {
    let len = u8::try_from(payload.len()).expect("short payload");
    assert!(len < 0x80, "single-byte length only");
    let mut out = vec![key(field, LEN), len];
    out.extend_from_slice(payload);
    out
}

fn sample_request() -> SendMessageRequest {
    SendMessageRequest {
        messages: vec![Message {
            topic: Some(Resource {
                resource_namespace: String::new(),
                name: "TopicA".into(),
            }),
            user_properties: Default::default(),
            system_properties: Some(SystemProperties {
                tag: Some("TagA".into()),
                keys: vec!["k1".into(), "k2".into()],
                message_id: "01ABCDEF".into(),
                ..Default::default()
            }),
            body: Bytes::from_static(b"hello"),
        }],
    }
}

/// The expected encoding of [`sample_request`], assembled by hand.
fn sample_request_bytes() -> Vec<u8> {
    // Resource { name = 2 }
    let topic = len_field(2, b"TopicA");
    // SystemProperties { tag = 1 (optional), keys = 2 (repeated), message_id = 3 }
    let system_properties = [
        len_field(1, b"TagA"),
        len_field(2, b"k1"),
        len_field(2, b"k2"),
        len_field(3, b"01ABCDEF"),
    ]
    .concat();
    // Message { topic = 1, system_properties = 3, body = 4 }
    let message = [
        len_field(1, &topic),
        len_field(3, &system_properties),
        len_field(4, b"hello"),
    ]
    .concat();
    // SendMessageRequest { messages = 1 }
    len_field(1, &message)
}

#[test]
fn given_send_message_request_should_encode_to_hand_assembled_bytes() {
    let expected = sample_request_bytes();
    // Spelled out once more as literal bytes so the helper itself is checked.
    #[rustfmt::skip]
    let literal: &[u8] = &[
        0x0A, 43,                                   // messages (1, LEN), 43 bytes
          0x0A, 8,                                  //   topic (1, LEN)
            0x12, 6, b'T', b'o', b'p', b'i', b'c', b'A', // name (2, LEN)
          0x1A, 24,                                 //   system_properties (3, LEN)
            0x0A, 4, b'T', b'a', b'g', b'A',        //     tag (1, LEN)
            0x12, 2, b'k', b'1',                    //     keys (2, LEN)
            0x12, 2, b'k', b'2',                    //     keys (2, LEN)
            0x1A, 8, b'0', b'1', b'A', b'B', b'C', b'D', b'E', b'F', // message_id (3, LEN)
          0x22, 5, b'h', b'e', b'l', b'l', b'o',    //   body (4, LEN)
    ];
    assert_eq!(expected, literal);

    let request = sample_request();
    assert_eq!(request.encoded_len(), expected.len());
    assert_eq!(request.encode_to_vec(), expected);
}

#[test]
fn given_hand_assembled_bytes_should_decode_to_the_same_request_without_copying_the_body() {
    let wire = Bytes::from(sample_request_bytes());
    let decoded = SendMessageRequest::decode(wire.clone()).expect("valid encoding");
    assert_eq!(decoded, sample_request());

    // `Message.body` is `bytes::Bytes`: decoding from a `Bytes` buffer slices it.
    let body = &decoded.messages[0].body;
    let wire_range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
    assert!(
        wire_range.contains(&(body.as_ptr() as usize)),
        "body was copied, not sliced"
    );
}

#[test]
fn given_proto3_optional_field_should_track_presence_on_the_wire() {
    let absent = SystemProperties {
        tag: None,
        ..Default::default()
    };
    let empty = SystemProperties {
        tag: Some(String::new()),
        ..Default::default()
    };
    assert!(absent.encode_to_vec().is_empty());
    assert_eq!(empty.encode_to_vec(), [key(1, LEN), 0]);
    assert_eq!(
        SystemProperties::decode(&[key(1, LEN), 0][..]).expect("valid"),
        empty
    );
    // A plain (non-optional) proto3 string at its default is not written.
    let no_id = SystemProperties {
        message_id: String::new(),
        ..Default::default()
    };
    assert!(no_id.encode_to_vec().is_empty());
}

#[test]
fn given_receive_status_frame_should_encode_the_oneof_member_and_code_number() {
    let frame = ReceiveMessageResponse {
        content: Some(receive_message_response::Content::Status(Status {
            code: Code::Ok as i32,
            message: String::new(),
        })),
    };
    // Status { code = 1: varint 20000 = 0xA0 0x9C 0x01 } inside content.status (1, LEN).
    let status = [key(1, VARINT), 0xA0, 0x9C, 0x01];
    assert_eq!(frame.encode_to_vec(), len_field(1, &status));
    assert_eq!(
        ReceiveMessageResponse::decode(&len_field(1, &status)[..]).expect("valid"),
        frame
    );
}

#[test]
fn given_unknown_code_number_should_decode_and_round_trip_unchanged() {
    // Codes newer than this build must survive a proxy hop untouched.
    let bytes = [key(1, VARINT), 0xC0, 0xBB, 0x01]; // code = 24000 (not in enum Code)
    let status = Status::decode(&bytes[..]).expect("valid");
    assert_eq!(status.code, 24_000);
    assert!(Code::try_from(status.code).is_err());
    assert_eq!(status.encode_to_vec(), bytes);
}
