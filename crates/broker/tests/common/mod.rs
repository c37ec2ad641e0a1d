//! Test helpers: a broker in a temp dir with hand-built metadata, and short request builders.
#![allow(dead_code, clippy::unwrap_used)]

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comet_broker::{Broker, BrokerConfig, BrokerGrpc};
use comet_proto::apache::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, ChangeInvisibleDurationRequest,
    ChangeInvisibleDurationResponse, Code, EndTransactionRequest, FilterExpression, FilterType,
    Message, MessageQueue, MessageType, ReceiveMessageRequest, Resource, SendMessageRequest,
    SendMessageResponse, SystemProperties, TransactionResolution, TransactionSource,
};
use comet_proto::comet::v1::broker_service_server::BrokerService;
use comet_proto::comet::v1::{
    ClusterMetadata, Group, PopMessageResponse, QueuePlacement, Topic, TransactionCheck,
    WatchTransactionChecksRequest,
};
use comet_store::{DiskStats, DiskUsage};
use tokio::sync::watch;

pub const SET: &str = "broker-a";

/// Reports a mostly empty disk, so tests never depend on the host's free space.
struct RoomyDisk;

impl DiskUsage for RoomyDisk {
    fn stats(&self, _: &Path) -> io::Result<DiskStats> {
        Ok(DiskStats {
            total: 1 << 40,
            available: 1 << 39,
        })
    }
}

pub fn metadata(topics: &[(&str, u32)], groups: &[(&str, u32)]) -> ClusterMetadata {
    ClusterMetadata {
        revision: 1,
        cluster_name: "test".into(),
        topics: topics
            .iter()
            .map(|(name, queues)| Topic {
                name: (*name).into(),
                message_type: 5,
                placements: vec![QueuePlacement {
                    broker_set: SET.into(),
                    queue_count: *queues,
                }],
                ..Default::default()
            })
            .collect(),
        groups: groups
            .iter()
            .map(|(name, max_retries)| Group {
                name: (*name).into(),
                max_retries: *max_retries,
                ..Default::default()
            })
            .collect(),
        broker_sets: Vec::new(),
        ..Default::default()
    }
}

pub fn config(dir: &Path) -> BrokerConfig {
    let mut cfg = BrokerConfig {
        data_dir: dir.to_owned(),
        segment_size: 1 << 20,
        ..Default::default()
    };
    cfg.retention.disk_usage = Arc::new(RoomyDisk);
    cfg
}

pub struct Node {
    pub broker: Broker,
    pub svc: BrokerGrpc,
    pub meta: watch::Sender<Arc<ClusterMetadata>>,
}

pub async fn open_with(cfg: BrokerConfig, md: ClusterMetadata) -> Node {
    let (tx, rx) = watch::channel(Arc::new(md));
    let broker = Broker::open(cfg, rx).await.unwrap();
    let svc = broker.service();
    Node {
        broker,
        svc,
        meta: tx,
    }
}

pub async fn open(dir: &Path, md: ClusterMetadata) -> Node {
    open_with(config(dir), md).await
}

pub fn res(name: &str) -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

pub fn msg(topic: &str, queue_id: i32, id: &str, tag: Option<&str>, body: &str) -> Message {
    Message {
        topic: res(topic),
        user_properties: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
        system_properties: Some(SystemProperties {
            tag: tag.map(str::to_owned),
            keys: vec![format!("key-{id}")],
            message_id: id.into(),
            born_host: "client-host".into(),
            born_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            queue_id,
            ..Default::default()
        }),
        body: body.to_owned().into_bytes().into(),
    }
}

pub async fn send(svc: &BrokerGrpc, msgs: Vec<Message>) -> SendMessageResponse {
    svc.send_message(tonic::Request::new(SendMessageRequest { messages: msgs }))
        .await
        .unwrap()
        .into_inner()
}

pub async fn send_one(svc: &BrokerGrpc, topic: &str, queue: i32, id: &str, tag: Option<&str>) {
    let r = send(svc, vec![msg(topic, queue, id, tag, &format!("body-{id}"))]).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
}

pub fn code(s: &Option<comet_proto::apache::rocketmq::v2::Status>) -> Code {
    Code::try_from(s.as_ref().unwrap().code).unwrap()
}

pub fn secs(ms: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

pub struct Pop<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub queue: i32,
    pub filter: &'a str,
    pub batch: i32,
    pub invisible_ms: u64,
    pub long_poll_ms: u64,
}

impl Default for Pop<'_> {
    fn default() -> Self {
        Pop {
            group: "g",
            topic: "t",
            queue: -1,
            filter: "*",
            batch: 32,
            invisible_ms: 30_000,
            long_poll_ms: 0,
        }
    }
}

pub async fn pop(svc: &BrokerGrpc, p: &Pop<'_>) -> PopMessageResponse {
    svc.pop_message(tonic::Request::new(ReceiveMessageRequest {
        group: res(p.group),
        message_queue: Some(MessageQueue {
            topic: res(p.topic),
            id: p.queue,
            ..Default::default()
        }),
        filter_expression: Some(FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: p.filter.into(),
        }),
        batch_size: p.batch,
        invisible_duration: secs(p.invisible_ms),
        auto_renew: false,
        long_polling_timeout: secs(p.long_poll_ms),
        attempt_id: None,
    }))
    .await
    .unwrap()
    .into_inner()
}

/// Pops (long-polling) until `n` messages arrived or `limit` passed.
pub async fn pop_n(svc: &BrokerGrpc, p: &Pop<'_>, n: usize, limit: Duration) -> Vec<Message> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n && start.elapsed() < limit {
        let r = pop(
            svc,
            &Pop {
                batch: (n - out.len()) as i32,
                long_poll_ms: 2000,
                ..*p
            },
        )
        .await;
        out.extend(r.messages);
    }
    out
}

pub fn handle(m: &Message) -> String {
    m.system_properties
        .as_ref()
        .unwrap()
        .receipt_handle
        .clone()
        .unwrap()
}

pub fn sp(m: &Message) -> &SystemProperties {
    m.system_properties.as_ref().unwrap()
}

pub async fn ack(svc: &BrokerGrpc, group: &str, topic: &str, handle: &str) -> Code {
    let r = svc
        .ack_message(tonic::Request::new(AckMessageRequest {
            group: res(group),
            topic: res(topic),
            entries: vec![AckMessageEntry {
                message_id: String::new(),
                receipt_handle: handle.into(),
                lite_topic: None,
            }],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.entries.len(), 1);
    code(&r.entries[0].status)
}

pub async fn change(
    svc: &BrokerGrpc,
    group: &str,
    topic: &str,
    handle: &str,
    ms: u64,
) -> ChangeInvisibleDurationResponse {
    svc.change_invisible_duration(tonic::Request::new(ChangeInvisibleDurationRequest {
        group: res(group),
        topic: res(topic),
        receipt_handle: handle.into(),
        invisible_duration: secs(ms),
        message_id: String::new(),
        lite_topic: None,
        suspend: None,
    }))
    .await
    .unwrap()
    .into_inner()
}

/// The wall clock in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A DELAY message for queue 0 of `t`, due at `at_ms`.
pub fn delayed(id: &str, at_ms: i64) -> Message {
    let mut m = msg("t", 0, id, None, &format!("body-{id}"));
    let sp = m.system_properties.as_mut().unwrap();
    sp.message_type = MessageType::Delay as i32;
    sp.delivery_timestamp = Some(prost_types::Timestamp {
        seconds: at_ms.div_euclid(1000),
        nanos: (at_ms.rem_euclid(1000) * 1_000_000) as i32,
    });
    m
}

/// A TRANSACTION message for queue 0 of `t`.
pub fn tx_msg(id: &str) -> Message {
    let mut m = msg("t", 0, id, Some("tx-tag"), &format!("body-{id}"));
    m.system_properties.as_mut().unwrap().message_type = MessageType::Transaction as i32;
    m
}

/// EndTransaction from a client; returns the answer's code and message.
pub async fn end(
    svc: &BrokerGrpc,
    topic: &str,
    message_id: &str,
    tx: &str,
    resolution: TransactionResolution,
) -> (Code, String) {
    let r = svc
        .end_transaction(tonic::Request::new(EndTransactionRequest {
            topic: res(topic),
            message_id: message_id.into(),
            transaction_id: tx.into(),
            resolution: resolution as i32,
            source: TransactionSource::SourceClient as i32,
            trace_context: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let s = r.status.unwrap();
    (Code::try_from(s.code).unwrap(), s.message)
}

/// Opens a transaction-check stream on `svc`, as a proxy does.
pub async fn watch(svc: &BrokerGrpc) -> comet_broker::TransactionCheckStream {
    svc.watch_transaction_checks(tonic::Request::new(WatchTransactionChecksRequest {
        proxy_id: "test-proxy".into(),
    }))
    .await
    .unwrap()
    .into_inner()
}

/// The next check on `s`, within `limit`.
pub async fn next_check(
    s: &mut comet_broker::TransactionCheckStream,
    limit: Duration,
) -> TransactionCheck {
    use futures::StreamExt as _;
    tokio::time::timeout(limit, s.next())
        .await
        .expect("a check in time")
        .expect("stream open")
        .unwrap()
}

/// RecallMessage of `handle` on `topic`: the status code, its message and the message id.
pub async fn recall(svc: &BrokerGrpc, topic: &str, handle: &str) -> (Code, String, String) {
    let r = svc
        .recall_message(tonic::Request::new(
            comet_proto::apache::rocketmq::v2::RecallMessageRequest {
                topic: res(topic),
                recall_handle: handle.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let msg = r.status.as_ref().unwrap().message.clone();
    (code(&r.status), msg, r.message_id)
}
