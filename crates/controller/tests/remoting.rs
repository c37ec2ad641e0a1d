//! The NameServer-compatible remoting endpoint of a single controller over
//! real TCP: route reads in both header encodings and both JSON forms,
//! 4.x-style broker registration through Raft, and bad input that closes
//! only its own connection.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use comet_controller::remoting::client::{RemotingClient, RequestStyle};
use comet_controller::remoting::codec::{self, MAX_FRAME_BYTES};
use comet_controller::remoting::route_data::ClusterInfo;
use comet_controller::remoting::{RemotingCommand, SerializeType, request_code, response_code};
use comet_proto::comet::v1 as pb;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Remoting {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn serve_remoting(node: &Node) -> Remoting {
    let (listener, addr) = bind().await;
    let server = node.ctrl.remoting();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.serve(listener, stop.clone()));
    Remoting { addr, stop, task }
}

impl Remoting {
    async fn client(&self) -> RemotingClient {
        RemotingClient::connect(&self.addr.to_string(), TIMEOUT)
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

const STYLES: [RequestStyle; 4] = [
    RequestStyle {
        serialize_type: SerializeType::Json,
        version: 317,
        accept_standard_json_only: false,
    },
    RequestStyle {
        serialize_type: SerializeType::Json,
        version: 401,
        accept_standard_json_only: false,
    },
    RequestStyle {
        serialize_type: SerializeType::RocketMq,
        version: 100,
        accept_standard_json_only: false,
    },
    RequestStyle {
        serialize_type: SerializeType::RocketMq,
        version: 100,
        accept_standard_json_only: true,
    },
];

fn is_legacy(style: RequestStyle) -> bool {
    style.version < 401 && !style.accept_standard_json_only
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_topic_on_two_broker_sets_when_routed_over_remoting_should_match_its_layout() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = bind().await;
    let node = start(test_config(1, dir.path(), addr), listener).await;
    wait_leader(&node.ctrl).await;
    let remoting = serve_remoting(&node).await;
    let mut c = node.client().await;
    c.register_broker(register("broker-a", 0, "127.0.0.1:10911"))
        .await
        .unwrap();
    c.register_broker(register("broker-a", 1, "127.0.0.1:10912"))
        .await
        .unwrap();
    c.register_broker(register("broker-b", 0, "127.0.0.1:10921"))
        .await
        .unwrap();
    let mut t = topic("ns%orders", "broker-a", 8);
    t.placements.push(pb::QueuePlacement {
        broker_set: "broker-b".into(),
        queue_count: 3,
    });
    t.permission = comet_proto::apache::rocketmq::v2::Permission::Read as i32;
    c.create_topic(pb::CreateTopicRequest { topic: Some(t) })
        .await
        .unwrap();

    let mut rc = remoting.client().await;
    for style in STYLES {
        let (route, body) = rc.topic_route("ns%orders", style).await.unwrap().unwrap();
        assert_eq!(
            body.contains("{0:\""),
            is_legacy(style),
            "{style:?}: brokerAddrs form in {body}"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).is_ok(),
            !is_legacy(style),
            "{style:?}: standard JSON exactly when asked for"
        );
        let queues: Vec<(&str, u32, u32, u32)> = route
            .queue_datas
            .iter()
            .map(|q| {
                (
                    q.broker_name.as_str(),
                    q.read_queue_nums,
                    q.write_queue_nums,
                    q.perm,
                )
            })
            .collect();
        assert_eq!(queues, [("broker-a", 8, 8, 4), ("broker-b", 3, 3, 4)]);
        let brokers: Vec<(&str, &str, BTreeMap<u64, String>)> = route
            .broker_datas
            .iter()
            .map(|b| {
                (
                    b.cluster.as_str(),
                    b.broker_name.as_str(),
                    b.broker_addrs.clone(),
                )
            })
            .collect();
        assert_eq!(
            brokers,
            [
                (
                    "DefaultCluster",
                    "broker-a",
                    BTreeMap::from([
                        (0, "127.0.0.1:10911".to_owned()),
                        (1, "127.0.0.1:10912".to_owned())
                    ])
                ),
                (
                    "DefaultCluster",
                    "broker-b",
                    BTreeMap::from([(0, "127.0.0.1:10921".to_owned())])
                ),
            ]
        );

        let missing = rc.topic_route("nope", style).await.unwrap().unwrap_err();
        assert_eq!(missing.code, response_code::TOPIC_NOT_EXIST);
        assert!(missing.remark.contains("nope"), "{}", missing.remark);

        let info = rc.cluster_info(style).await.unwrap();
        assert_eq!(
            info.cluster_addr_table["DefaultCluster"],
            ["broker-a", "broker-b"]
        );
        assert_eq!(info.broker_addr_table["broker-a"].broker_addrs.len(), 2);

        assert_eq!(rc.topic_list(style).await.unwrap(), ["ns%orders"]);
    }

    // Unknown request codes are answered, in the request's encoding.
    for st in [SerializeType::Json, SerializeType::RocketMq] {
        let reply = rc.call(RemotingCommand::request(12345, st)).await.unwrap();
        assert_eq!(reply.code, response_code::REQUEST_CODE_NOT_SUPPORTED);
        assert_eq!(reply.serialize_type, st);
        assert!(reply.remark.unwrap().contains("12345"));
    }
    // A route request without a topic is a clear error.
    let reply = rc
        .call(RemotingCommand::request(
            request_code::GET_ROUTEINFO_BY_TOPIC,
            SerializeType::Json,
        ))
        .await
        .unwrap();
    assert_eq!(reply.code, response_code::SYSTEM_ERROR);
    assert!(reply.remark.unwrap().contains("topic"));

    drop(c);
    remoting.stop().await;
    node.stop().await;
}

fn broker_request(code: i32, set: &str, addr: &str, id: Option<u64>) -> RemotingCommand {
    let mut r = RemotingCommand::request(code, SerializeType::RocketMq);
    r.ext_fields
        .insert("clusterName".into(), "DefaultCluster".into());
    r.ext_fields.insert("brokerName".into(), set.into());
    r.ext_fields.insert("brokerAddr".into(), addr.into());
    if let Some(id) = id {
        r.ext_fields.insert("brokerId".into(), id.to_string());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_4x_style_broker_when_it_registers_over_remoting_should_enter_and_leave_routes() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = bind().await;
    let mut cfg = test_config(1, dir.path(), addr);
    cfg.broker_lease = Duration::from_millis(300);
    let node = start(cfg, listener).await;
    wait_leader(&node.ctrl).await;
    let remoting = serve_remoting(&node).await;
    let mut rc = remoting.client().await;
    let mut rx = node.ctrl.metadata();

    // Wrong cluster and missing fields are refused with a remark.
    let mut wrong = broker_request(
        request_code::REGISTER_BROKER,
        "legacy",
        "127.0.0.1:30911",
        Some(0),
    );
    wrong
        .ext_fields
        .insert("clusterName".into(), "OtherCluster".into());
    let reply = rc.call(wrong).await.unwrap();
    assert_eq!(reply.code, response_code::SYSTEM_ERROR);
    assert!(reply.remark.unwrap().contains("OtherCluster"));
    let reply = rc
        .call(broker_request(
            request_code::REGISTER_BROKER,
            "legacy",
            "127.0.0.1:30911",
            None,
        ))
        .await
        .unwrap();
    assert_eq!(reply.code, response_code::SYSTEM_ERROR);
    assert!(reply.remark.unwrap().contains("brokerId"));

    // A master and a slave register (the slave learns the master's address).
    let mut master = broker_request(
        request_code::REGISTER_BROKER,
        "legacy",
        "127.0.0.1:30911",
        Some(0),
    );
    master
        .ext_fields
        .insert("heartbeatTimeoutMillis".into(), "1000".into());
    let reply = rc.call(master).await.unwrap();
    assert_eq!(reply.code, response_code::SUCCESS, "{:?}", reply.remark);
    assert_eq!(&reply.body[..], b"{\"table\":{}}");
    let mut slave = broker_request(
        request_code::REGISTER_BROKER,
        "legacy",
        "127.0.0.1:30912",
        Some(1),
    );
    slave
        .ext_fields
        .insert("heartbeatTimeoutMillis".into(), "1000".into());
    let reply = rc.call(slave).await.unwrap();
    assert_eq!(reply.code, response_code::SUCCESS, "{:?}", reply.remark);
    assert_eq!(reply.field("masterAddr"), Some("127.0.0.1:30911"));
    wait_metadata(&mut rx, "remoting brokers registered", |m| {
        m.broker_sets
            .iter()
            .any(|s| s.name == "legacy" && s.members.len() == 2)
    })
    .await;

    // A topic placed on that broker set routes to it.
    let mut c = node.client().await;
    c.create_topic(pb::CreateTopicRequest {
        topic: Some(topic("legacy-topic", "legacy", 4)),
    })
    .await
    .unwrap();
    let (route, _) = rc
        .topic_route("legacy-topic", RequestStyle::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        route.broker_datas[0].broker_addrs,
        BTreeMap::from([(0, "127.0.0.1:30911".into()), (1, "127.0.0.1:30912".into())])
    );

    // One-way heartbeats (by address, as 5.x brokers send them) keep the
    // master alive past its lease; the slave, silent, goes down.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut hb = broker_request(
            request_code::BROKER_HEARTBEAT,
            "legacy",
            "127.0.0.1:30911",
            None,
        );
        hb.ext_fields
            .insert("heartbeatTimeoutMills".into(), "1000".into());
        let reply = rc.call(hb).await.unwrap();
        assert_eq!(reply.code, response_code::SUCCESS, "{:?}", reply.remark);
        let m = node.ctrl.metadata().borrow().clone();
        let set = m.broker_sets.iter().find(|s| s.name == "legacy").unwrap();
        let alive: Vec<bool> = set.members.iter().map(|m| m.alive).collect();
        if alive == [true, false] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slave never expired: {alive:?}"
        );
        // Wait for the next metadata change (or re-heartbeat within the lease).
        let mut rx = node.ctrl.metadata();
        let _ = tokio::time::timeout(Duration::from_millis(250), rx.changed()).await;
    }
    let (route, _) = rc
        .topic_route("legacy-topic", RequestStyle::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        route.broker_datas[0].broker_addrs,
        BTreeMap::from([(0, "127.0.0.1:30911".into())]),
        "a down member leaves brokerAddrs"
    );

    // A heartbeat from an unknown broker is refused.
    let reply = rc
        .call(broker_request(
            request_code::BROKER_HEARTBEAT,
            "legacy",
            "127.0.0.1:1",
            None,
        ))
        .await
        .unwrap();
    assert_eq!(reply.code, response_code::SYSTEM_ERROR);

    // Unregistering from another address changes nothing; from its own, the
    // master leaves at once and the topic has no route left.
    let reply = rc
        .call(broker_request(
            request_code::UNREGISTER_BROKER,
            "legacy",
            "127.0.0.1:9",
            Some(0),
        ))
        .await
        .unwrap();
    assert_eq!(reply.code, response_code::SUCCESS);
    assert!(node.ctrl.metadata().borrow().broker_sets[0].members[0].alive);
    let reply = rc
        .call(broker_request(
            request_code::UNREGISTER_BROKER,
            "legacy",
            "127.0.0.1:30911",
            Some(0),
        ))
        .await
        .unwrap();
    assert_eq!(reply.code, response_code::SUCCESS);
    assert!(!node.ctrl.metadata().borrow().broker_sets[0].members[0].alive);
    let refused = rc
        .topic_route("legacy-topic", RequestStyle::default())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code, response_code::TOPIC_NOT_EXIST);
    assert!(refused.remark.contains("live broker"), "{}", refused.remark);

    drop(c);
    remoting.stop().await;
    node.stop().await;
}

/// Sends raw bytes on a fresh connection and reports whether the server
/// closed it (EOF) without answering.
async fn closed_after(addr: SocketAddr, bytes: &[u8], half_close: bool) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(TIMEOUT, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("the server neither answered nor closed the connection"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_bad_frames_when_sent_should_close_only_that_connection() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = bind().await;
    let node = start(test_config(1, dir.path(), addr), listener).await;
    wait_leader(&node.ctrl).await;
    let remoting = serve_remoting(&node).await;
    let mut healthy = remoting.client().await;
    assert!(
        healthy
            .topic_list(RequestStyle::default())
            .await
            .unwrap()
            .is_empty()
    );

    let mut oversized = BytesMut::new();
    oversized.put_u32(u32::try_from(MAX_FRAME_BYTES).unwrap());
    let mut bad_json = BytesMut::new();
    bad_json.put_u32(4 + 5);
    bad_json.put_u32(5);
    bad_json.put_slice(b"{nope");
    let mut bad_type = BytesMut::new();
    bad_type.put_u32(4 + 2);
    bad_type.put_u32((9 << 24) | 2);
    bad_type.put_slice(b"{}");
    let mut tiny = BytesMut::new();
    tiny.put_u32(2);
    tiny.put_slice(b"ab");
    let mut truncated = BytesMut::new();
    codec::encode(
        &RemotingCommand::request(
            request_code::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
            SerializeType::Json,
        ),
        &mut truncated,
    )
    .unwrap();
    truncated.truncate(truncated.len() - 3);
    for (what, bytes, half_close) in [
        ("oversized", &oversized[..], false),
        ("bad json header", &bad_json[..], false),
        ("unknown serialize type", &bad_type[..], false),
        ("length below 4", &tiny[..], false),
        ("truncated then EOF", &truncated[..], true),
    ] {
        assert!(
            closed_after(remoting.addr, bytes, half_close).await,
            "{what}: connection not closed"
        );
    }
    // A request followed by a half-close is still answered.
    let mut whole = BytesMut::new();
    codec::encode(
        &RemotingCommand::request(
            request_code::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
            SerializeType::Json,
        ),
        &mut whole,
    )
    .unwrap();
    assert!(!closed_after(remoting.addr, &whole, true).await);
    // The long-lived connection is unaffected.
    assert!(
        healthy
            .topic_list(RequestStyle::default())
            .await
            .unwrap()
            .is_empty()
    );

    // A pipelined burst over one connection gets every reply, by opaque.
    let mut s = TcpStream::connect(remoting.addr).await.unwrap();
    let mut burst = BytesMut::new();
    for opaque in 0..200 {
        let mut r = RemotingCommand::request(
            request_code::GET_BROKER_CLUSTER_INFO,
            SerializeType::RocketMq,
        );
        r.opaque = opaque;
        codec::encode(&r, &mut burst).unwrap();
    }
    s.write_all(&burst).await.unwrap();
    let mut buf = BytesMut::new();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 200 {
        while let Some(f) = codec::split_frame(&mut buf).unwrap() {
            let reply = codec::decode_frame(f).unwrap();
            assert_eq!(reply.code, response_code::SUCCESS);
            assert!(ClusterInfo::from_json(std::str::from_utf8(&reply.body).unwrap()).is_ok());
            seen.insert(reply.opaque);
        }
        if seen.len() == 200 {
            break;
        }
        let n = tokio::time::timeout(TIMEOUT, s.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {} replies", seen.len());
    }
    remoting.stop().await;
    node.stop().await;
}
