//! Golden tables of the `apache.rocketmq.v2` wire contract, checked against the
//! descriptor set that `build.rs` compiled (`FILE_DESCRIPTOR_SET`).
//!
//! The tables are written from the contract (shared/docs/grpc-compat.md §1–§3,
//! which was checked field by field against apache/rocketmq-apis), not from
//! the `.proto` files: an edit to a proto that changes a name, number, label,
//! type, oneof membership, enum value or RPC shape makes these tests fail.
//!
//! Field kinds are spelled like proto source:
//! `string`, `repeated Resource`, `optional google.protobuf.Duration`,
//! `map<string, string>`, `oneof content Status` (member of oneof `content`).
//! Type names are relative to `apache.rocketmq.v2`.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};

use crate::FILE_DESCRIPTOR_SET;

const PACKAGE: &str = "apache.rocketmq.v2";

type FieldRow = (&'static str, i32, &'static str);

/// Every message of the package (nested ones as `Outer.Inner`; synthetic map
/// entry types are covered by the `map<..>` kind of their field).
#[rustfmt::skip]
const MESSAGES: &[(&str, &[FieldRow])] = &[
    // ---- definition.proto (contract §2) ----
    ("Resource", &[("resource_namespace", 1, "string"), ("name", 2, "string")]),
    ("Address", &[("host", 1, "string"), ("port", 2, "int32")]),
    ("Endpoints", &[("scheme", 1, "AddressScheme"), ("addresses", 2, "repeated Address")]),
    ("Broker", &[("name", 1, "string"), ("id", 2, "int32"), ("endpoints", 3, "Endpoints")]),
    ("MessageQueue", &[
        ("topic", 1, "Resource"),
        ("id", 2, "int32"),
        ("permission", 3, "Permission"),
        ("broker", 4, "Broker"),
        ("accept_message_types", 5, "repeated MessageType"),
    ]),
    ("Assignment", &[("message_queue", 1, "MessageQueue")]),
    ("FilterExpression", &[("type", 1, "FilterType"), ("expression", 2, "string")]),
    ("SubscriptionEntry", &[("topic", 1, "Resource"), ("expression", 2, "FilterExpression")]),
    ("RetryPolicy", &[
        ("max_attempts", 1, "int32"),
        ("exponential_backoff", 2, "oneof strategy ExponentialBackoff"),
        ("customized_backoff", 3, "oneof strategy CustomizedBackoff"),
    ]),
    ("ExponentialBackoff", &[
        ("initial", 1, "google.protobuf.Duration"),
        ("max", 2, "google.protobuf.Duration"),
        ("multiplier", 3, "float"),
    ]),
    ("CustomizedBackoff", &[("next", 1, "repeated google.protobuf.Duration")]),
    ("Digest", &[("type", 1, "DigestType"), ("checksum", 2, "string")]),
    ("DeadLetterQueue", &[("topic", 1, "string"), ("message_id", 2, "string")]),
    ("Message", &[
        ("topic", 1, "Resource"),
        ("user_properties", 2, "map<string, string>"),
        ("system_properties", 3, "SystemProperties"),
        ("body", 4, "bytes"),
    ]),
    ("SystemProperties", &[
        ("tag", 1, "optional string"),
        ("keys", 2, "repeated string"),
        ("message_id", 3, "string"),
        ("body_digest", 4, "Digest"),
        ("body_encoding", 5, "Encoding"),
        ("message_type", 6, "MessageType"),
        ("born_timestamp", 7, "google.protobuf.Timestamp"),
        ("born_host", 8, "string"),
        ("store_timestamp", 9, "optional google.protobuf.Timestamp"),
        ("store_host", 10, "string"),
        ("delivery_timestamp", 11, "optional google.protobuf.Timestamp"),
        ("receipt_handle", 12, "optional string"),
        ("queue_id", 13, "int32"),
        ("queue_offset", 14, "optional int64"),
        ("invisible_duration", 15, "optional google.protobuf.Duration"),
        ("delivery_attempt", 16, "optional int32"),
        ("message_group", 17, "optional string"),
        ("trace_context", 18, "optional string"),
        ("orphaned_transaction_recovery_duration", 19, "optional google.protobuf.Duration"),
        ("dead_letter_queue", 20, "optional DeadLetterQueue"),
        ("lite_topic", 21, "optional string"),
        ("priority", 22, "optional int32"),
    ]),
    ("Status", &[("code", 1, "Code"), ("message", 2, "string")]),
    ("UA", &[
        ("language", 1, "Language"),
        ("version", 2, "string"),
        ("platform", 3, "string"),
        ("hostname", 4, "string"),
    ]),
    ("Settings", &[
        ("client_type", 1, "optional ClientType"),
        ("access_point", 2, "optional Endpoints"),
        ("backoff_policy", 3, "optional RetryPolicy"),
        ("request_timeout", 4, "optional google.protobuf.Duration"),
        ("publishing", 5, "oneof pub_sub Publishing"),
        ("subscription", 6, "oneof pub_sub Subscription"),
        ("user_agent", 7, "UA"),
        ("metric", 8, "Metric"),
        ("client_properties", 9, "map<string, string>"),
    ]),
    ("Publishing", &[
        ("topics", 1, "repeated Resource"),
        ("max_body_size", 2, "int32"),
        ("validate_message_type", 3, "bool"),
    ]),
    ("Subscription", &[
        ("group", 1, "optional Resource"),
        ("subscriptions", 2, "repeated SubscriptionEntry"),
        ("fifo", 3, "optional bool"),
        ("receive_batch_size", 4, "optional int32"),
        ("long_polling_timeout", 5, "optional google.protobuf.Duration"),
        ("lite_subscription_quota", 6, "optional int32"),
        ("max_lite_topic_size", 7, "optional int32"),
    ]),
    ("Metric", &[("on", 1, "bool"), ("endpoints", 2, "optional Endpoints")]),
    ("OffsetOption", &[
        ("policy", 1, "oneof offset_type OffsetOption.Policy"),
        ("offset", 2, "oneof offset_type int64"),
        ("tail_n", 3, "oneof offset_type int64"),
        ("timestamp", 4, "oneof offset_type int64"),
    ]),
    // ---- service.proto (contract §1.1) ----
    ("QueryRouteRequest", &[("topic", 1, "Resource"), ("endpoints", 2, "Endpoints")]),
    ("QueryRouteResponse", &[
        ("status", 1, "Status"),
        ("message_queues", 2, "repeated MessageQueue"),
    ]),
    ("SendMessageRequest", &[("messages", 1, "repeated Message")]),
    ("SendResultEntry", &[
        ("status", 1, "Status"),
        ("message_id", 2, "string"),
        ("transaction_id", 3, "string"),
        ("offset", 4, "int64"),
        ("recall_handle", 5, "string"),
    ]),
    ("SendMessageResponse", &[("status", 1, "Status"), ("entries", 2, "repeated SendResultEntry")]),
    ("QueryAssignmentRequest", &[
        ("topic", 1, "Resource"),
        ("group", 2, "Resource"),
        ("endpoints", 3, "Endpoints"),
    ]),
    ("QueryAssignmentResponse", &[
        ("status", 1, "Status"),
        ("assignments", 2, "repeated Assignment"),
    ]),
    ("ReceiveMessageRequest", &[
        ("group", 1, "Resource"),
        ("message_queue", 2, "MessageQueue"),
        ("filter_expression", 3, "FilterExpression"),
        ("batch_size", 4, "int32"),
        ("invisible_duration", 5, "optional google.protobuf.Duration"),
        ("auto_renew", 6, "bool"),
        ("long_polling_timeout", 7, "optional google.protobuf.Duration"),
        ("attempt_id", 8, "optional string"),
    ]),
    ("ReceiveMessageResponse", &[
        ("status", 1, "oneof content Status"),
        ("message", 2, "oneof content Message"),
        ("delivery_timestamp", 3, "oneof content google.protobuf.Timestamp"),
    ]),
    ("AckMessageEntry", &[
        ("message_id", 1, "string"),
        ("receipt_handle", 2, "string"),
        ("lite_topic", 3, "optional string"),
    ]),
    ("AckMessageRequest", &[
        ("group", 1, "Resource"),
        ("topic", 2, "Resource"),
        ("entries", 3, "repeated AckMessageEntry"),
    ]),
    ("AckMessageResultEntry", &[
        ("message_id", 1, "string"),
        ("receipt_handle", 2, "string"),
        ("status", 3, "Status"),
    ]),
    ("AckMessageResponse", &[
        ("status", 1, "Status"),
        ("entries", 2, "repeated AckMessageResultEntry"),
    ]),
    ("ForwardMessageToDeadLetterQueueRequest", &[
        ("group", 1, "Resource"),
        ("topic", 2, "Resource"),
        ("receipt_handle", 3, "string"),
        ("message_id", 4, "string"),
        ("delivery_attempt", 5, "int32"),
        ("max_delivery_attempts", 6, "int32"),
        ("lite_topic", 7, "optional string"),
    ]),
    ("ForwardMessageToDeadLetterQueueResponse", &[("status", 1, "Status")]),
    ("HeartbeatRequest", &[("group", 1, "optional Resource"), ("client_type", 2, "ClientType")]),
    ("HeartbeatResponse", &[("status", 1, "Status")]),
    ("EndTransactionRequest", &[
        ("topic", 1, "Resource"),
        ("message_id", 2, "string"),
        ("transaction_id", 3, "string"),
        ("resolution", 4, "TransactionResolution"),
        ("source", 5, "TransactionSource"),
        ("trace_context", 6, "string"),
    ]),
    ("EndTransactionResponse", &[("status", 1, "Status")]),
    ("PrintThreadStackTraceCommand", &[("nonce", 1, "string")]),
    ("ReconnectEndpointsCommand", &[("nonce", 1, "string")]),
    ("ThreadStackTrace", &[("nonce", 1, "string"), ("thread_stack_trace", 2, "optional string")]),
    ("VerifyMessageCommand", &[("nonce", 1, "string"), ("message", 2, "Message")]),
    ("VerifyMessageResult", &[("nonce", 1, "string")]),
    ("RecoverOrphanedTransactionCommand", &[
        ("message", 1, "Message"),
        ("transaction_id", 2, "string"),
    ]),
    ("NotifyUnsubscribeLiteCommand", &[("lite_topic", 1, "string")]),
    ("TelemetryCommand", &[
        ("status", 1, "optional Status"),
        ("settings", 2, "oneof command Settings"),
        ("thread_stack_trace", 3, "oneof command ThreadStackTrace"),
        ("verify_message_result", 4, "oneof command VerifyMessageResult"),
        ("recover_orphaned_transaction_command", 5, "oneof command RecoverOrphanedTransactionCommand"),
        ("print_thread_stack_trace_command", 6, "oneof command PrintThreadStackTraceCommand"),
        ("verify_message_command", 7, "oneof command VerifyMessageCommand"),
        ("reconnect_endpoints_command", 8, "oneof command ReconnectEndpointsCommand"),
        ("notify_unsubscribe_lite_command", 9, "oneof command NotifyUnsubscribeLiteCommand"),
    ]),
    ("NotifyClientTerminationRequest", &[("group", 1, "optional Resource")]),
    ("NotifyClientTerminationResponse", &[("status", 1, "Status")]),
    ("ChangeInvisibleDurationRequest", &[
        ("group", 1, "Resource"),
        ("topic", 2, "Resource"),
        ("receipt_handle", 3, "string"),
        ("invisible_duration", 4, "google.protobuf.Duration"),
        ("message_id", 5, "string"),
        ("lite_topic", 6, "optional string"),
        ("suspend", 7, "optional bool"),
    ]),
    ("ChangeInvisibleDurationResponse", &[
        ("status", 1, "Status"),
        ("receipt_handle", 2, "string"),
    ]),
    ("PullMessageRequest", &[
        ("group", 1, "Resource"),
        ("message_queue", 2, "MessageQueue"),
        ("offset", 3, "int64"),
        ("batch_size", 4, "int32"),
        ("filter_expression", 5, "FilterExpression"),
        ("long_polling_timeout", 6, "google.protobuf.Duration"),
    ]),
    ("PullMessageResponse", &[
        ("status", 1, "oneof content Status"),
        ("message", 2, "oneof content Message"),
        ("next_offset", 3, "oneof content int64"),
    ]),
    ("UpdateOffsetRequest", &[
        ("group", 1, "Resource"),
        ("message_queue", 2, "MessageQueue"),
        ("offset", 3, "int64"),
    ]),
    ("UpdateOffsetResponse", &[("status", 1, "Status")]),
    ("GetOffsetRequest", &[("group", 1, "Resource"), ("message_queue", 2, "MessageQueue")]),
    ("GetOffsetResponse", &[("status", 1, "Status"), ("offset", 2, "int64")]),
    ("QueryOffsetRequest", &[
        ("message_queue", 1, "MessageQueue"),
        ("query_offset_policy", 2, "QueryOffsetPolicy"),
        ("timestamp", 3, "optional google.protobuf.Timestamp"),
    ]),
    ("QueryOffsetResponse", &[("status", 1, "Status"), ("offset", 2, "int64")]),
    ("RecallMessageRequest", &[("topic", 1, "Resource"), ("recall_handle", 2, "string")]),
    ("RecallMessageResponse", &[("status", 1, "Status"), ("message_id", 2, "string")]),
    ("SyncLiteSubscriptionRequest", &[
        ("action", 1, "LiteSubscriptionAction"),
        ("topic", 2, "Resource"),
        ("group", 3, "Resource"),
        ("lite_topic_set", 4, "repeated string"),
        ("version", 5, "optional int64"),
        ("offset_option", 6, "optional OffsetOption"),
    ]),
    ("SyncLiteSubscriptionResponse", &[("status", 1, "Status")]),
    // ---- admin.proto (contract §3, ChangeLogLevel only) ----
    ("ChangeLogLevelRequest", &[("level", 1, "ChangeLogLevelRequest.Level")]),
    ("ChangeLogLevelResponse", &[("remark", 1, "string")]),
];

/// Every enum of the package, nested ones as `Outer.Inner`.
#[rustfmt::skip]
const ENUMS: &[(&str, &[(&str, i32)])] = &[
    ("TransactionResolution", &[
        ("TRANSACTION_RESOLUTION_UNSPECIFIED", 0), ("COMMIT", 1), ("ROLLBACK", 2),
    ]),
    ("TransactionSource", &[
        ("SOURCE_UNSPECIFIED", 0), ("SOURCE_CLIENT", 1), ("SOURCE_SERVER_CHECK", 2),
    ]),
    ("Permission", &[
        ("PERMISSION_UNSPECIFIED", 0), ("NONE", 1), ("READ", 2), ("WRITE", 3), ("READ_WRITE", 4),
    ]),
    ("FilterType", &[("FILTER_TYPE_UNSPECIFIED", 0), ("TAG", 1), ("SQL", 2)]),
    ("AddressScheme", &[
        ("ADDRESS_SCHEME_UNSPECIFIED", 0), ("IPv4", 1), ("IPv6", 2), ("DOMAIN_NAME", 3),
    ]),
    ("MessageType", &[
        ("MESSAGE_TYPE_UNSPECIFIED", 0), ("NORMAL", 1), ("FIFO", 2), ("DELAY", 3),
        ("TRANSACTION", 4), ("LITE", 5), ("PRIORITY", 6),
    ]),
    ("DigestType", &[("DIGEST_TYPE_UNSPECIFIED", 0), ("CRC32", 1), ("MD5", 2), ("SHA1", 3)]),
    ("ClientType", &[
        ("CLIENT_TYPE_UNSPECIFIED", 0), ("PRODUCER", 1), ("PUSH_CONSUMER", 2),
        ("SIMPLE_CONSUMER", 3), ("PULL_CONSUMER", 4), ("LITE_PUSH_CONSUMER", 5),
        ("LITE_SIMPLE_CONSUMER", 6),
    ]),
    ("Encoding", &[("ENCODING_UNSPECIFIED", 0), ("IDENTITY", 1), ("GZIP", 2)]),
    ("Code", CODES),
    ("Language", &[
        ("LANGUAGE_UNSPECIFIED", 0), ("JAVA", 1), ("CPP", 2), ("DOT_NET", 3), ("GOLANG", 4),
        ("RUST", 5), ("PYTHON", 6), ("PHP", 7), ("NODE_JS", 8), ("RUBY", 9), ("OBJECTIVE_C", 10),
        ("DART", 11), ("KOTLIN", 12),
    ]),
    ("LiteSubscriptionAction", &[
        ("PARTIAL_ADD", 0), ("PARTIAL_REMOVE", 1), ("COMPLETE_ADD", 2), ("COMPLETE_REMOVE", 3),
    ]),
    ("QueryOffsetPolicy", &[("BEGINNING", 0), ("END", 1), ("TIMESTAMP", 2)]),
    ("OffsetOption.Policy", &[("LAST", 0), ("MIN", 1), ("MAX", 2)]),
    ("ChangeLogLevelRequest.Level", &[
        ("TRACE", 0), ("DEBUG", 1), ("INFO", 2), ("WARN", 3), ("ERROR", 4),
    ]),
];

/// The complete `Code` enum (contract §2).
const CODES: &[(&str, i32)] = &[
    ("CODE_UNSPECIFIED", 0),
    ("OK", 20000),
    ("MULTIPLE_RESULTS", 30000),
    ("BAD_REQUEST", 40000),
    ("ILLEGAL_ACCESS_POINT", 40001),
    ("ILLEGAL_TOPIC", 40002),
    ("ILLEGAL_CONSUMER_GROUP", 40003),
    ("ILLEGAL_MESSAGE_TAG", 40004),
    ("ILLEGAL_MESSAGE_KEY", 40005),
    ("ILLEGAL_MESSAGE_GROUP", 40006),
    ("ILLEGAL_MESSAGE_PROPERTY_KEY", 40007),
    ("INVALID_TRANSACTION_ID", 40008),
    ("ILLEGAL_MESSAGE_ID", 40009),
    ("ILLEGAL_FILTER_EXPRESSION", 40010),
    ("ILLEGAL_INVISIBLE_TIME", 40011),
    ("ILLEGAL_DELIVERY_TIME", 40012),
    ("INVALID_RECEIPT_HANDLE", 40013),
    ("MESSAGE_PROPERTY_CONFLICT_WITH_TYPE", 40014),
    ("UNRECOGNIZED_CLIENT_TYPE", 40015),
    ("MESSAGE_CORRUPTED", 40016),
    ("CLIENT_ID_REQUIRED", 40017),
    ("ILLEGAL_POLLING_TIME", 40018),
    ("ILLEGAL_OFFSET", 40019),
    ("ILLEGAL_LITE_TOPIC", 40020),
    ("INVALID_CLIENT_PROPERTIES", 40021),
    ("UNAUTHORIZED", 40100),
    ("PAYMENT_REQUIRED", 40200),
    ("FORBIDDEN", 40300),
    ("NOT_FOUND", 40400),
    ("MESSAGE_NOT_FOUND", 40401),
    ("TOPIC_NOT_FOUND", 40402),
    ("CONSUMER_GROUP_NOT_FOUND", 40403),
    ("OFFSET_NOT_FOUND", 40404),
    ("REQUEST_TIMEOUT", 40800),
    ("PAYLOAD_TOO_LARGE", 41300),
    ("MESSAGE_BODY_TOO_LARGE", 41301),
    ("MESSAGE_BODY_EMPTY", 41302),
    ("PRECONDITION_FAILED", 42800),
    ("TOO_MANY_REQUESTS", 42900),
    ("LITE_TOPIC_QUOTA_EXCEEDED", 42901),
    ("LITE_SUBSCRIPTION_QUOTA_EXCEEDED", 42902),
    ("REQUEST_HEADER_FIELDS_TOO_LARGE", 43100),
    ("MESSAGE_PROPERTIES_TOO_LARGE", 43101),
    ("INTERNAL_ERROR", 50000),
    ("INTERNAL_SERVER_ERROR", 50001),
    ("HA_NOT_AVAILABLE", 50002),
    ("NOT_IMPLEMENTED", 50100),
    ("PROXY_TIMEOUT", 50400),
    ("MASTER_PERSISTENCE_TIMEOUT", 50401),
    ("SLAVE_PERSISTENCE_TIMEOUT", 50402),
    ("UNSUPPORTED", 50500),
    ("VERSION_UNSUPPORTED", 50501),
    ("VERIFY_FIFO_MESSAGE_UNSUPPORTED", 50502),
    ("FAILED_TO_CONSUME_MESSAGE", 60000),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Unary,
    ServerStreaming,
    Bidi,
}

type MethodRow = (&'static str, &'static str, &'static str, Shape);

/// `MessagingService`, in declaration order (contract §1).
#[rustfmt::skip]
const MESSAGING_SERVICE: &[MethodRow] = &[
    ("QueryRoute", "QueryRouteRequest", "QueryRouteResponse", Shape::Unary),
    ("Heartbeat", "HeartbeatRequest", "HeartbeatResponse", Shape::Unary),
    ("SendMessage", "SendMessageRequest", "SendMessageResponse", Shape::Unary),
    ("QueryAssignment", "QueryAssignmentRequest", "QueryAssignmentResponse", Shape::Unary),
    ("ReceiveMessage", "ReceiveMessageRequest", "ReceiveMessageResponse", Shape::ServerStreaming),
    ("AckMessage", "AckMessageRequest", "AckMessageResponse", Shape::Unary),
    ("ForwardMessageToDeadLetterQueue", "ForwardMessageToDeadLetterQueueRequest", "ForwardMessageToDeadLetterQueueResponse", Shape::Unary),
    ("PullMessage", "PullMessageRequest", "PullMessageResponse", Shape::ServerStreaming),
    ("UpdateOffset", "UpdateOffsetRequest", "UpdateOffsetResponse", Shape::Unary),
    ("GetOffset", "GetOffsetRequest", "GetOffsetResponse", Shape::Unary),
    ("QueryOffset", "QueryOffsetRequest", "QueryOffsetResponse", Shape::Unary),
    ("EndTransaction", "EndTransactionRequest", "EndTransactionResponse", Shape::Unary),
    ("Telemetry", "TelemetryCommand", "TelemetryCommand", Shape::Bidi),
    ("NotifyClientTermination", "NotifyClientTerminationRequest", "NotifyClientTerminationResponse", Shape::Unary),
    ("ChangeInvisibleDuration", "ChangeInvisibleDurationRequest", "ChangeInvisibleDurationResponse", Shape::Unary),
    ("RecallMessage", "RecallMessageRequest", "RecallMessageResponse", Shape::Unary),
    ("SyncLiteSubscription", "SyncLiteSubscriptionRequest", "SyncLiteSubscriptionResponse", Shape::Unary),
];

/// `Admin` (contract §3; only the RPC the official clients embed).
const ADMIN_SERVICE: &[MethodRow] = &[(
    "ChangeLogLevel",
    "ChangeLogLevelRequest",
    "ChangeLogLevelResponse",
    Shape::Unary,
)];

// ---------------------------------------------------------------------------
// Descriptor helpers
// ---------------------------------------------------------------------------

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

/// Files of our package, keyed by file name.
fn package_files(fds: &FileDescriptorSet) -> BTreeMap<String, &prost_types::FileDescriptorProto> {
    fds.file
        .iter()
        .filter(|f| f.package() == PACKAGE)
        .map(|f| (f.name().to_owned(), f))
        .collect()
}

/// All messages of the package, nested ones under `Outer.Inner`, map entries excluded.
fn all_messages(fds: &FileDescriptorSet) -> BTreeMap<String, DescriptorProto> {
    fn walk(prefix: &str, msgs: &[DescriptorProto], out: &mut BTreeMap<String, DescriptorProto>) {
        for m in msgs {
            if m.options.as_ref().is_some_and(|o| o.map_entry()) {
                continue;
            }
            let name = format!("{prefix}{}", m.name());
            walk(&format!("{name}."), &m.nested_type, out);
            let previous = out.insert(name.clone(), m.clone());
            assert!(previous.is_none(), "message {name} declared twice");
        }
    }
    let mut out = BTreeMap::new();
    for file in package_files(fds).values() {
        walk("", &file.message_type, &mut out);
    }
    out
}

/// All enums of the package (top-level and nested), as name -> [(value, number)].
fn all_enums(fds: &FileDescriptorSet) -> BTreeMap<String, Vec<(String, i32)>> {
    fn values(e: &prost_types::EnumDescriptorProto) -> Vec<(String, i32)> {
        e.value
            .iter()
            .map(|v| (v.name().to_owned(), v.number()))
            .collect()
    }
    fn walk(
        prefix: &str,
        msgs: &[DescriptorProto],
        out: &mut BTreeMap<String, Vec<(String, i32)>>,
    ) {
        for m in msgs {
            let name = format!("{prefix}{}", m.name());
            for e in &m.enum_type {
                out.insert(format!("{name}.{}", e.name()), values(e));
            }
            walk(&format!("{name}."), &m.nested_type, out);
        }
    }
    let mut out = BTreeMap::new();
    for file in package_files(fds).values() {
        for e in &file.enum_type {
            let previous = out.insert(e.name().to_owned(), values(e));
            assert!(previous.is_none(), "enum {} declared twice", e.name());
        }
        walk("", &file.message_type, &mut out);
    }
    out
}

/// `.apache.rocketmq.v2.Foo` -> `Foo`; `.google.protobuf.Duration` -> `google.protobuf.Duration`.
fn short_type_name(type_name: &str) -> String {
    let full = type_name.strip_prefix('.').unwrap_or(type_name);
    match full
        .strip_prefix(PACKAGE)
        .and_then(|rest| rest.strip_prefix('.'))
    {
        Some(local) => local.to_owned(),
        None => full.to_owned(),
    }
}

fn base_type(field: &FieldDescriptorProto) -> String {
    match field.r#type() {
        Type::Message | Type::Enum | Type::Group => short_type_name(field.type_name()),
        Type::Double => "double".into(),
        Type::Float => "float".into(),
        Type::Int64 => "int64".into(),
        Type::Uint64 => "uint64".into(),
        Type::Int32 => "int32".into(),
        Type::Fixed64 => "fixed64".into(),
        Type::Fixed32 => "fixed32".into(),
        Type::Bool => "bool".into(),
        Type::String => "string".into(),
        Type::Bytes => "bytes".into(),
        Type::Uint32 => "uint32".into(),
        Type::Sfixed32 => "sfixed32".into(),
        Type::Sfixed64 => "sfixed64".into(),
        Type::Sint32 => "sint32".into(),
        Type::Sint64 => "sint64".into(),
    }
}

/// Renders a field the way it is spelled in the golden table.
fn field_kind(msg: &DescriptorProto, field: &FieldDescriptorProto) -> String {
    assert_ne!(
        field.label(),
        Label::Required,
        "proto3 has no required fields"
    );
    let base = base_type(field);
    if field.label() == Label::Repeated {
        let map_entry = (field.r#type() == Type::Message)
            .then(|| {
                let entry_name = field.type_name().rsplit('.').next().unwrap_or_default();
                msg.nested_type.iter().find(|n| n.name() == entry_name)
            })
            .flatten()
            .filter(|n| n.options.as_ref().is_some_and(|o| o.map_entry()));
        return match map_entry {
            Some(entry) => {
                let key = entry
                    .field
                    .iter()
                    .find(|f| f.number() == 1)
                    .expect("map key");
                let value = entry
                    .field
                    .iter()
                    .find(|f| f.number() == 2)
                    .expect("map value");
                format!("map<{}, {}>", base_type(key), base_type(value))
            }
            None => format!("repeated {base}"),
        };
    }
    if field.proto3_optional() {
        return format!("optional {base}");
    }
    match field.oneof_index {
        Some(index) => {
            let oneof = usize::try_from(index)
                .ok()
                .and_then(|i| msg.oneof_decl.get(i))
                .expect("oneof_index points at a oneof_decl");
            format!("oneof {} {base}", oneof.name())
        }
        None => base,
    }
}

fn rows_by_number(rows: &[FieldRow]) -> Vec<(i32, String, String)> {
    let mut v: Vec<_> = rows
        .iter()
        .map(|(name, number, kind)| (*number, (*name).to_owned(), (*kind).to_owned()))
        .collect();
    v.sort();
    v
}

fn service_rows(fds: &FileDescriptorSet, service: &str) -> Vec<(String, String, String, Shape)> {
    let svc = package_files(fds)
        .values()
        .flat_map(|f| f.service.iter())
        .find(|s| s.name() == service)
        .unwrap_or_else(|| panic!("service {service} is missing"))
        .clone();
    svc.method
        .iter()
        .map(|m| {
            let shape = match (m.client_streaming(), m.server_streaming()) {
                (false, false) => Shape::Unary,
                (false, true) => Shape::ServerStreaming,
                (true, true) => Shape::Bidi,
                (true, false) => panic!(
                    "{}: client-streaming RPCs are not part of the API",
                    m.name()
                ),
            };
            (
                m.name().to_owned(),
                short_type_name(m.input_type()),
                short_type_name(m.output_type()),
                shape,
            )
        })
        .collect()
}

fn expected_service_rows(rows: &[MethodRow]) -> Vec<(String, String, String, Shape)> {
    rows.iter()
        .map(|(n, i, o, s)| ((*n).to_owned(), (*i).to_owned(), (*o).to_owned(), *s))
        .collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn given_descriptor_set_should_hold_the_three_api_files_and_their_imports() {
    let fds = descriptor_set();
    let files = package_files(&fds);
    let names: Vec<_> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "apache/rocketmq/v2/admin.proto",
            "apache/rocketmq/v2/definition.proto",
            "apache/rocketmq/v2/service.proto",
        ]
    );
    for file in files.values() {
        assert_eq!(file.syntax(), "proto3", "{}", file.name());
    }
    // Reflection clients need the imported well-known types too.
    let all: BTreeSet<_> = fds.file.iter().map(|f| f.name()).collect();
    assert!(
        all.contains("google/protobuf/timestamp.proto"),
        "files: {all:?}"
    );
    assert!(
        all.contains("google/protobuf/duration.proto"),
        "files: {all:?}"
    );
    // Nothing outside the public API package but the well-known types and
    // Comet's internal package (free to evolve, so not pinned here).
    for f in &fds.file {
        assert!(
            f.package() == PACKAGE || f.package() == "google.protobuf" || f.package() == "comet.v1",
            "unexpected package {} in {}",
            f.package(),
            f.name()
        );
    }
}

#[test]
fn given_golden_table_should_list_exactly_the_messages_of_the_package() {
    let actual: BTreeSet<String> = all_messages(&descriptor_set()).into_keys().collect();
    let expected: BTreeSet<String> = MESSAGES.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(
        expected.len(),
        MESSAGES.len(),
        "golden table lists a message twice"
    );
    let missing: Vec<_> = expected.difference(&actual).collect();
    let unexpected: Vec<_> = actual.difference(&expected).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "missing from protos: {missing:?}; not in golden table: {unexpected:?}"
    );
}

#[test]
fn given_every_message_should_match_golden_field_names_numbers_and_kinds() {
    let messages = all_messages(&descriptor_set());
    let mut mismatches = Vec::new();
    for (name, rows) in MESSAGES {
        let Some(msg) = messages.get(*name) else {
            mismatches.push(format!("{name}: message missing"));
            continue;
        };
        let mut actual: Vec<(i32, String, String)> = msg
            .field
            .iter()
            .map(|f| (f.number(), f.name().to_owned(), field_kind(msg, f)))
            .collect();
        actual.sort();
        let expected = rows_by_number(rows);
        if actual != expected {
            mismatches.push(format!(
                "{name}:\n  expected {expected:?}\n  actual   {actual:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "wire contract drift:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn given_every_enum_should_match_golden_values() {
    let actual = all_enums(&descriptor_set());
    let expected: BTreeMap<String, Vec<(String, i32)>> = ENUMS
        .iter()
        .map(|(name, values)| {
            let values = values.iter().map(|(v, n)| ((*v).to_owned(), *n)).collect();
            ((*name).to_owned(), values)
        })
        .collect();
    assert_eq!(
        expected.len(),
        ENUMS.len(),
        "golden table lists an enum twice"
    );
    let names_actual: Vec<_> = actual.keys().collect();
    let names_expected: Vec<_> = expected.keys().collect();
    assert_eq!(names_actual, names_expected, "enum set differs");
    for (name, values) in &expected {
        let mut got = actual[name].clone();
        got.sort_by_key(|(_, n)| *n);
        let mut want = values.clone();
        want.sort_by_key(|(_, n)| *n);
        assert_eq!(got, want, "enum {name} differs");
    }
}

#[test]
fn given_code_enum_should_have_the_complete_list_in_generated_rust_too() {
    use crate::apache::rocketmq::v2::Code;
    assert_eq!(CODES.len(), 54, "the contract lists 54 codes");
    for (name, number) in CODES {
        let code = Code::from_str_name(name).unwrap_or_else(|| panic!("Code::{name} missing"));
        assert_eq!(code as i32, *number, "Code::{name}");
        assert_eq!(Code::try_from(*number).map(|c| c.as_str_name()), Ok(*name));
    }
}

#[test]
fn given_messaging_service_should_have_the_17_rpcs_in_order_with_their_shapes() {
    let actual = service_rows(&descriptor_set(), "MessagingService");
    assert_eq!(MESSAGING_SERVICE.len(), 17);
    assert_eq!(actual, expected_service_rows(MESSAGING_SERVICE));
}

#[test]
fn given_admin_service_should_have_change_log_level() {
    let actual = service_rows(&descriptor_set(), "Admin");
    assert_eq!(actual, expected_service_rows(ADMIN_SERVICE));
}

#[test]
fn given_package_should_define_only_the_two_public_services() {
    let fds = descriptor_set();
    let services: BTreeSet<_> = package_files(&fds)
        .values()
        .flat_map(|f| f.service.iter())
        .map(|s| s.name())
        .collect();
    assert_eq!(services, BTreeSet::from(["Admin", "MessagingService"]));
}

#[cfg(feature = "server")]
#[test]
fn given_server_feature_should_expose_the_grpc_service_names() {
    use crate::apache::rocketmq::v2::{admin_server, messaging_service_server};
    assert_eq!(
        messaging_service_server::SERVICE_NAME,
        "apache.rocketmq.v2.MessagingService"
    );
    assert_eq!(admin_server::SERVICE_NAME, "apache.rocketmq.v2.Admin");
}
