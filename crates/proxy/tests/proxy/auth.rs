//! Authentication and authorization on the client port: every refusal reason, every ACL
//! outcome, the telemetry stream at its open, cache invalidation on a policy change, and the
//! public-only reflection listing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use comet_auth::{GateSettings, SecretCipher};
use comet_proto::apache::rocketmq::v2::{
    Code, QueryRouteRequest, ReceiveMessageRequest, SendMessageRequest, TelemetryCommand,
    receive_message_response,
};
use comet_proto::comet::v1::{Acl, AclEntry, ClusterMetadata, User};
use comet_proxy::ProxySecurity;

use super::harness::{CLIENT_ID, Harness, default_metadata, req, res};
use super::message;

const KEY: [u8; 32] = [7; 32];

fn cipher() -> Arc<SecretCipher> {
    Arc::new(SecretCipher::new(&KEY, &[]).unwrap())
}

fn user(c: &SecretCipher, name: &str, secret: &str, kind: &str) -> User {
    User {
        name: name.into(),
        sealed_secret: c.seal(name, secret.as_bytes()).unwrap(),
        user_type: kind.into(),
    }
}

fn entry(resource: &str, actions: &str, decision: &str, ips: &[&str]) -> AclEntry {
    AclEntry {
        resource: resource.into(),
        actions: actions.into(),
        decision: decision.into(),
        source_ips: ips.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// alice: Pub on `normal`, Pub+Sub on `mixed` except Sub denied, Sub on group g, prefix
/// `fi*` Pub only from 10.0.0.0/8; root: super; bob: no entries.
fn secured_metadata(version: u64) -> ClusterMetadata {
    let c = cipher();
    ClusterMetadata {
        users: vec![
            user(&c, "alice", "alice-secret", "normal"),
            user(&c, "root", "root-secret", "super"),
            user(&c, "bob", "bob-secret", "normal"),
        ],
        acls: vec![Acl {
            subject: "User:alice".into(),
            entries: vec![
                entry("Topic:normal", "Pub", "Allow", &[]),
                entry("Topic:mixed", "All", "Allow", &[]),
                entry("Topic:mix*", "Sub", "Deny", &[]),
                entry("Group:g", "Sub", "Allow", &[]),
                entry("Topic:fi*", "Pub", "Allow", &["10.0.0.0/8"]),
                entry("Topic:ns1%scoped", "Pub", "Allow", &["127.0.0.1/32"]),
            ],
        }],
        auth_version: version,
        ..default_metadata()
    }
}

async fn secured(skew: Option<Duration>) -> Harness {
    Harness::builder()
        .config(|c| {
            c.security = ProxySecurity {
                auth: GateSettings {
                    enabled: true,
                    max_clock_skew: skew,
                },
                cipher: Some(cipher()),
                tls: None,
            }
        })
        .metadata(secured_metadata(1))
        .start()
        .await
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// A request signed as the official clients sign.
fn signed<T>(message: T, ak: &str, sk: &str, date: &str, upper: bool) -> tonic::Request<T> {
    let mut sig = hex::encode(comet_auth::signature::sign(sk.as_bytes(), date));
    if upper {
        sig.make_ascii_uppercase();
    }
    let auth =
        format!("MQv2-HMAC-SHA1 Credential={ak}, SignedHeaders=x-mq-date-time, Signature={sig}");
    let mut r = req(message);
    r.metadata_mut()
        .insert("x-mq-date-time", date.parse().unwrap());
    r.metadata_mut()
        .insert("authorization", auth.parse().unwrap());
    r
}

fn as_user<T>(message: T, ak: &str, sk: &str) -> tonic::Request<T> {
    signed(message, ak, sk, &now_rfc3339(), false)
}

fn route(topic: &str) -> QueryRouteRequest {
    QueryRouteRequest {
        topic: res(topic),
        endpoints: None,
    }
}

async fn route_status(h: &Harness, r: tonic::Request<QueryRouteRequest>) -> (i32, String) {
    let s = h
        .client()
        .await
        .query_route(r)
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    (s.code, s.message)
}

async fn send_status(h: &Harness, topic: &str, ak: &str, sk: &str) -> (i32, String) {
    send_to(h, res(topic), ak, sk).await
}

async fn send_to(
    h: &Harness,
    topic: Option<comet_proto::apache::rocketmq::v2::Resource>,
    ak: &str,
    sk: &str,
) -> (i32, String) {
    let r = as_user(
        SendMessageRequest {
            messages: vec![message(topic, b"x")],
        },
        ak,
        sk,
    );
    let s = h
        .client()
        .await
        .send_message(r)
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    (s.code, s.message)
}

async fn receive_status(
    h: &Harness,
    topic: &str,
    group: &str,
    ak: &str,
    sk: &str,
) -> (i32, String) {
    let r = as_user(
        ReceiveMessageRequest {
            group: res(group),
            message_queue: Some(comet_proto::apache::rocketmq::v2::MessageQueue {
                topic: res(topic),
                id: -1,
                ..Default::default()
            }),
            batch_size: 1,
            long_polling_timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
            ..Default::default()
        },
        ak,
        sk,
    );
    let mut stream = h
        .client()
        .await
        .receive_message(r)
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    match first.content {
        Some(receive_message_response::Content::Status(s)) => (s.code, s.message),
        other => panic!("first frame is not a status: {other:?}"),
    }
}

#[tokio::test]
async fn given_auth_on_when_credentials_are_missing_or_wrong_should_answer_unauthorized_saying_why()
{
    let h = secured(Some(Duration::from_secs(60))).await;
    let date = now_rfc3339();
    let unauthorized = Code::Unauthorized as i32;
    let cases: Vec<(tonic::Request<QueryRouteRequest>, &str)> = vec![
        (req(route("normal")), "authorization header is missing"),
        (
            signed(route("normal"), "alice", "guess", &date, false),
            "signature mismatch",
        ),
        (
            signed(route("normal"), "mallory", "x", &date, false),
            "unknown access key \"mallory\"",
        ),
        (
            signed(
                route("normal"),
                "alice",
                "alice-secret",
                "2001-01-01T00:00:00Z",
                false,
            ),
            "away from the server clock",
        ),
        (
            {
                let mut r = req(route("normal"));
                r.metadata_mut().insert(
                    "authorization",
                    "MQv2-HMAC-SHA1 Credential=alice".parse().unwrap(),
                );
                r.metadata_mut()
                    .insert("x-mq-date-time", date.parse().unwrap());
                r
            },
            "malformed authorization header",
        ),
        (
            {
                let mut r = signed(route("normal"), "alice", "alice-secret", &date, false);
                r.metadata_mut().remove("x-mq-date-time");
                r
            },
            "x-mq-date-time header is missing",
        ),
    ];
    for (request, says) in cases {
        let (code, message) = route_status(&h, request).await;
        assert_eq!(code, unauthorized, "{says}: {message}");
        assert!(message.contains(says), "{says}: {message}");
        assert!(!message.contains("alice-secret"), "{message}");
    }
    // Both hex cases authenticate (Rust/Python lower, Node upper).
    for upper in [false, true] {
        let (code, message) = route_status(
            &h,
            signed(route("normal"), "alice", "alice-secret", &date, upper),
        )
        .await;
        assert_eq!(code, Code::Ok as i32, "{message}");
    }
}

#[tokio::test]
async fn given_auth_off_when_python_sends_an_empty_credential_should_serve_it() {
    let h = Harness::start().await;
    let mut r = req(route("normal"));
    r.metadata_mut().insert(
        "authorization",
        "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=00"
            .parse()
            .unwrap(),
    );
    r.metadata_mut()
        .insert("x-mq-date-time", "20261121T004054Z".parse().unwrap());
    assert_eq!(route_status(&h, r).await.0, Code::Ok as i32);
}

#[tokio::test]
async fn given_acl_entries_when_users_act_should_allow_deny_and_default_deny() {
    let h = secured(None).await;
    let ok = Code::Ok as i32;
    let forbidden = Code::Forbidden as i32;
    // Allow.
    assert_eq!(
        send_status(&h, "normal", "alice", "alice-secret").await.0,
        ok
    );
    // Default deny: no entry for Sub on normal, nor anything on fifo-group.
    let (code, message) = receive_status(&h, "normal", "g", "alice", "alice-secret").await;
    assert_eq!(code, forbidden, "{message}");
    assert!(message.contains("may not Sub Topic:normal"), "{message}");
    // Deny wins: All allowed on mixed, Sub denied by the prefix entry.
    let (code, message) = receive_status(&h, "mixed", "g", "alice", "alice-secret").await;
    assert_eq!(code, forbidden, "{message}");
    assert!(message.contains("Sub Topic:mixed"), "{message}");
    assert_eq!(
        send_status(&h, "mixed", "alice", "alice-secret").await.0,
        ok
    );
    // Prefix with a source CIDR that excludes 127.0.0.1: not applicable, so denied.
    let (code, message) = send_status(&h, "fifo", "alice", "alice-secret").await;
    assert_eq!(code, forbidden, "{message}");
    assert!(message.contains("Pub Topic:fifo"), "{message}");
    // A source CIDR that includes 127.0.0.1.
    let scoped = super::harness::res_ns("ns1", "scoped");
    let (code, message) = send_to(&h, scoped, "alice", "alice-secret").await;
    assert_eq!(code, ok, "{message}");
    // A user without entries is denied; a super user is allowed anything.
    assert_eq!(
        send_status(&h, "normal", "bob", "bob-secret").await.0,
        forbidden
    );
    let (code, message) = send_status(&h, "mixed", "root", "root-secret").await;
    assert_eq!(code, ok, "{message}");
    let (code, message) = receive_status(&h, "fifo", "fifo-group", "root", "root-secret").await;
    assert_ne!(code, forbidden, "{message}");
    assert_ne!(code, Code::Unauthorized as i32, "{message}");
}

#[tokio::test]
async fn given_a_policy_change_when_the_metadata_moves_should_apply_at_once() {
    let h = secured(None).await;
    assert_eq!(
        send_status(&h, "normal", "bob", "bob-secret").await.0,
        Code::Forbidden as i32
    );
    let mut md = secured_metadata(2);
    md.acls.push(Acl {
        subject: "User:bob".into(),
        entries: vec![entry("Topic:*", "Pub", "Allow", &[])],
    });
    h.metadata.send(Arc::new(md)).unwrap();
    assert_eq!(
        send_status(&h, "normal", "bob", "bob-secret").await.0,
        Code::Ok as i32
    );
    // Removing the user refuses its signatures.
    let mut md = secured_metadata(3);
    md.users.retain(|u| u.name != "bob");
    h.metadata.send(Arc::new(md)).unwrap();
    let (code, message) = send_status(&h, "normal", "bob", "bob-secret").await;
    assert_eq!(code, Code::Unauthorized as i32, "{message}");
}

#[tokio::test]
async fn given_a_telemetry_stream_when_its_open_is_unsigned_should_answer_unauthorized() {
    let h = secured(None).await;
    let mut c = h.client().await;
    let r = req(tokio_stream::iter(vec![TelemetryCommand::default()]));
    let mut stream = c.telemetry(r).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let status = first.status.unwrap();
    assert_eq!(status.code, Code::Unauthorized as i32, "{}", status.message);
    assert!(stream.message().await.unwrap().is_none(), "the stream ends");
    // Signed at its open, the stream is served.
    let r = as_user(
        tokio_stream::iter(Vec::<TelemetryCommand>::new()),
        "alice",
        "alice-secret",
    );
    let mut stream = c.telemetry(r).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_none());
    assert!(!CLIENT_ID.is_empty());
}

#[tokio::test]
async fn given_the_public_port_when_listing_services_should_show_no_internal_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let h = Harness::start().await;
    let mut c = ServerReflectionClient::new(h.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = c
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("no service list")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "apache.rocketmq.v2.MessagingService".to_owned(),
            "grpc.health.v1.Health".to_owned(),
            "grpc.reflection.v1.ServerReflection".to_owned(),
        ]
    );
}
