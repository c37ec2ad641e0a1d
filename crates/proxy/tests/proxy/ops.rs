//! Reflection, health, heartbeats, termination, and the RPCs outside this release.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{
    ClientType, Code, EndTransactionRequest, HeartbeatRequest, NotifyClientTerminationRequest,
    RecallMessageRequest, TransactionResolution, TransactionSource,
};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use super::harness::{CLIENT_ID, Harness, bare, req, res};
use super::wait_until;

#[tokio::test]
async fn given_a_running_proxy_when_checking_health_should_report_serving() {
    let h = Harness::start().await;
    let mut health = HealthClient::new(h.channel().await);
    for service in ["", "apache.rocketmq.v2.MessagingService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test]
async fn given_a_running_proxy_when_listing_services_by_reflection_should_include_messaging() {
    let h = Harness::start().await;
    // v1
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
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
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"apache.rocketmq.v2.MessagingService".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_owned()),
            "{names:?}"
        );
    }
    // v1alpha
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut c = ServerReflectionClient::new(h.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "apache.rocketmq.v2.MessagingService".into(),
            )),
        };
        let mut stream = c
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("no file descriptors: {:?}", response.message_response)
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
}

#[tokio::test]
async fn given_heartbeats_when_sent_before_settings_should_be_accepted_and_require_a_client_id() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let r = c
        .heartbeat(req(HeartbeatRequest {
            group: res("g1"),
            client_type: ClientType::SimpleConsumer as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    let clients = h.proxy.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].client_id, CLIENT_ID);
    assert_eq!(clients[0].client_type, ClientType::SimpleConsumer);
    assert_eq!(clients[0].group.as_deref(), Some("g1"));
    assert!(!clients[0].has_settings);

    let r = c
        .heartbeat(bare(HeartbeatRequest {
            group: None,
            client_type: ClientType::Producer as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    let s = r.status.unwrap();
    assert_eq!(s.code, Code::ClientIdRequired as i32);
    assert_eq!(s.message, "the x-mq-client-id request header is required");

    let r = c
        .notify_client_termination(req(NotifyClientTerminationRequest { group: res("g1") }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    assert!(wait_until(Duration::from_secs(1), || h.proxy.clients().is_empty()).await);
}

#[tokio::test]
async fn given_rpcs_of_later_releases_when_called_should_answer_clearly() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let r = c
        .end_transaction(req(EndTransactionRequest {
            topic: res("mixed"),
            message_id: "m".into(),
            transaction_id: "t".into(),
            resolution: TransactionResolution::Commit as i32,
            source: TransactionSource::SourceClient as i32,
            trace_context: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    // Transactions are served: an id without a broker set is refused clearly.
    let s = r.status.unwrap();
    assert_eq!(s.code, Code::InvalidTransactionId as i32);
    assert!(s.message.contains("broker set"), "{}", s.message);

    // Recall is served: a handle without a broker set is refused clearly, one with a set is
    // routed to that set's broker, an unknown topic is TOPIC_NOT_FOUND.
    let recall = |topic: &str, handle: &str| RecallMessageRequest {
        topic: res(topic),
        recall_handle: handle.into(),
    };
    let s = c
        .recall_message(req(recall("mixed", "h")))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(s.code, Code::BadRequest as i32);
    assert!(s.message.contains("broker set"), "{}", s.message);
    let s = c
        .recall_message(req(recall("mixed", "zz~AAAA")))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(s.code, Code::BadRequest as i32);
    assert!(s.message.contains("zz"), "{}", s.message);
    let s = c
        .recall_message(req(recall("nope", "b~AAAA")))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(s.code, Code::TopicNotFound as i32);
    let r = c
        .recall_message(req(recall("mixed", "b~AAAA")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    assert_eq!(r.message_id, "recalled");
    let seen = h.broker("b").recalls();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].recall_handle, "b~AAAA");
    assert!(h.broker("a").recalls().is_empty());
}

#[tokio::test]
async fn given_a_running_proxy_when_stopped_should_drain_and_return_ok() {
    let mut h = Harness::start().await;
    let mut health = HealthClient::new(h.channel().await);
    assert_eq!(
        health
            .check(HealthCheckRequest {
                service: String::new()
            })
            .await
            .unwrap()
            .into_inner()
            .status,
        ServingStatus::Serving as i32
    );
    // Serve returns Ok once health turned NOT_SERVING and everything drained.
    h.stop().await.unwrap();
}

#[tokio::test]
async fn given_more_connections_than_io_threads_when_each_calls_should_all_be_served_and_stop_cleanly()
 {
    let mut h = Harness::builder()
        .config(|c| c.io_threads = 3)
        .start()
        .await;
    // Seven connections are dealt to three threads in turn: every thread serves several.
    let mut clients = Vec::new();
    for _ in 0..7 {
        clients.push(HealthClient::new(h.channel().await));
    }
    for (i, health) in clients.iter_mut().enumerate() {
        let r = health
            .check(HealthCheckRequest {
                service: "apache.rocketmq.v2.MessagingService".into(),
            })
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"))
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "connection {i}");
    }
    h.stop().await.unwrap();
}
