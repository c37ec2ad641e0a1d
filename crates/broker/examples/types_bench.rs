//! Message-type figures of one broker, called in process (no gRPC hop, no proxy):
//!
//! - **timer**: 100,000 delay messages due uniformly over one minute; consumers long-poll and
//!   record each message's lateness (arrival − delivery time): p50 / p99 / max, and early ones.
//! - **fifo**: 100,000 FIFO messages in 1,000 message groups over 8 queues; a FIFO consumer
//!   group drains them (4 pollers, ack at once), checking per-group order: messages/s.
//! - **transaction**: concurrent producers each send one half message and commit it: tx/s.
//!
//! ```sh
//! cargo run --release -p comet-broker --example types_bench -- [timer|fifo|transaction|all] [DIR]
//! ```
//! `DIR` (default: a temporary directory) holds the broker's data; ASYNC flush.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use comet_broker::{Broker, BrokerConfig, BrokerGrpc};
use comet_proto::apache::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, Code, EndTransactionRequest, FilterExpression, FilterType,
    Message, MessageQueue, MessageType, ReceiveMessageRequest, Resource, SendMessageRequest,
    SystemProperties, TransactionResolution, TransactionSource,
};
use comet_proto::comet::v1::broker_service_server::BrokerService;
use comet_proto::comet::v1::{ClusterMetadata, Group, QueuePlacement, Topic};
use tokio::sync::watch;

const TIMERS: usize = 100_000;
const TIMER_SPREAD_MS: i64 = 60_000;
const FIFO_MESSAGES: usize = 100_000;
const FIFO_GROUPS: usize = 1_000;
const TRANSACTIONS: usize = 20_000;
const TX_PRODUCERS: usize = 16;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn res(name: &str) -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

fn metadata() -> ClusterMetadata {
    let topic = |name: &str, queues: u32| Topic {
        name: name.into(),
        message_type: 5,
        placements: vec![QueuePlacement {
            broker_set: "broker-a".into(),
            queue_count: queues,
        }],
        ..Default::default()
    };
    ClusterMetadata {
        revision: 1,
        cluster_name: "bench".into(),
        topics: vec![topic("timer", 4), topic("fifo", 8), topic("tx", 8)],
        groups: vec![Group {
            name: "fifo-group".into(),
            max_retries: 16,
            retry_policy: None,
            fifo: true,
            priority_percent: None,
            ..Default::default()
        }],
        broker_sets: Vec::new(),
        ..Default::default()
    }
}

fn message(topic: &str, id: String, queue_id: i32, sys: SystemProperties) -> Message {
    Message {
        topic: res(topic),
        user_properties: Default::default(),
        system_properties: Some(SystemProperties {
            message_id: id,
            queue_id,
            born_host: "bench".into(),
            ..sys
        }),
        body: vec![b'x'; 256].into(),
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn pop(svc: &BrokerGrpc, group: &str, topic: &str, batch: i32) -> Vec<Message> {
    svc.pop_message(tonic::Request::new(ReceiveMessageRequest {
        group: res(group),
        message_queue: Some(MessageQueue {
            topic: res(topic),
            id: -1,
            ..Default::default()
        }),
        filter_expression: Some(FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: batch,
        invisible_duration: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        attempt_id: None,
    }))
    .await
    .unwrap()
    .into_inner()
    .messages
}

async fn ack_all(svc: &BrokerGrpc, group: &str, topic: &str, msgs: &[Message]) {
    if msgs.is_empty() {
        return;
    }
    let entries = msgs
        .iter()
        .map(|m| AckMessageEntry {
            message_id: String::new(),
            receipt_handle: m
                .system_properties
                .as_ref()
                .unwrap()
                .receipt_handle
                .clone()
                .unwrap(),
            lite_topic: None,
        })
        .collect();
    let r = svc
        .ack_message(tonic::Request::new(AckMessageRequest {
            group: res(group),
            topic: res(topic),
            entries,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, Code::Ok as i32);
}

async fn timer_bench(svc: &BrokerGrpc) {
    let start = now_ms() + 5_000;
    let sent = Instant::now();
    for chunk in 0..(TIMERS / 100) {
        let msgs = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                let at = start + (n as i64 * TIMER_SPREAD_MS) / TIMERS as i64;
                message(
                    "timer",
                    format!("t{n}"),
                    (n % 4) as i32,
                    SystemProperties {
                        message_type: MessageType::Delay as i32,
                        delivery_timestamp: Some(prost_types::Timestamp {
                            seconds: at / 1000,
                            nanos: ((at % 1000) * 1_000_000) as i32,
                        }),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let r = svc
            .send_message(tonic::Request::new(SendMessageRequest { messages: msgs }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    }
    let send_secs = sent.elapsed().as_secs_f64();
    let lateness = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(TIMERS)));
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (svc, lateness, received) = (svc.clone(), lateness.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            while (received.load(Ordering::Relaxed) as usize) < TIMERS {
                let msgs = pop(&svc, "timer-group", "timer", 32).await;
                let now = now_ms();
                {
                    let mut l = lateness.lock();
                    for m in &msgs {
                        let ts = m
                            .system_properties
                            .as_ref()
                            .unwrap()
                            .delivery_timestamp
                            .unwrap();
                        l.push(now - (ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000));
                    }
                }
                received.fetch_add(msgs.len() as u64, Ordering::Relaxed);
                ack_all(&svc, "timer-group", "timer", &msgs).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut l = lateness.lock().clone();
    l.sort_unstable();
    let early = l.iter().filter(|x| **x < 0).count();
    println!(
        "timer: {TIMERS} delay messages over {} s (sent in {send_secs:.1} s): lateness p50 {} ms, \
         p99 {} ms, max {} ms, early {early}",
        TIMER_SPREAD_MS / 1000,
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(0)
    );
}

async fn fifo_bench(svc: &BrokerGrpc) {
    let sent = Instant::now();
    let queue_of = |g: usize| (g % 8) as i32;
    for chunk in 0..(FIFO_MESSAGES / 1000) {
        // One message of each group per chunk: per-group sequence = chunk.
        for batch in 0..10 {
            let msgs = (0..100)
                .map(|i| {
                    let g = batch * 100 + i;
                    message(
                        "fifo",
                        format!("{g}:{chunk}"),
                        queue_of(g),
                        SystemProperties {
                            message_type: MessageType::Fifo as i32,
                            message_group: Some(format!("group-{g}")),
                            ..Default::default()
                        },
                    )
                })
                .collect::<Vec<_>>();
            // The broker takes one queue per message: group the batch by queue.
            let mut by_queue: HashMap<i32, Vec<Message>> = HashMap::new();
            for m in msgs {
                by_queue
                    .entry(m.system_properties.as_ref().unwrap().queue_id)
                    .or_default()
                    .push(m);
            }
            for (_, msgs) in by_queue {
                let r = svc
                    .send_message(tonic::Request::new(SendMessageRequest { messages: msgs }))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.status.unwrap().code, Code::Ok as i32);
            }
        }
    }
    let send_rate = FIFO_MESSAGES as f64 / sent.elapsed().as_secs_f64();
    let next: Arc<parking_lot::Mutex<HashMap<String, usize>>> = Arc::default();
    let received = Arc::new(AtomicU64::new(0));
    let out_of_order = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (svc, next, received, bad) = (
            svc.clone(),
            next.clone(),
            received.clone(),
            out_of_order.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while (received.load(Ordering::Relaxed) as usize) < FIFO_MESSAGES {
                let msgs = pop(&svc, "fifo-group", "fifo", 32).await;
                {
                    let mut next = next.lock();
                    for m in &msgs {
                        let id = &m.system_properties.as_ref().unwrap().message_id;
                        let (g, seq) = id.split_once(':').unwrap();
                        let seq: usize = seq.parse().unwrap();
                        let want = next.entry(g.to_owned()).or_insert(0);
                        if seq != *want {
                            bad.store(true, Ordering::Relaxed);
                        }
                        *want = seq + 1;
                    }
                }
                received.fetch_add(msgs.len() as u64, Ordering::Relaxed);
                ack_all(&svc, "fifo-group", "fifo", &msgs).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fifo: {FIFO_MESSAGES} messages in {FIFO_GROUPS} message groups over 8 queues: sent \
         {send_rate:.0} msg/s; consumed (4 pollers, batch 32, ack each batch) {:.0} msg/s in \
         {secs:.1} s; order kept: {}",
        FIFO_MESSAGES as f64 / secs,
        !out_of_order.load(Ordering::Relaxed)
    );
}

async fn transaction_bench(svc: &BrokerGrpc) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..TX_PRODUCERS {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in 0..(TRANSACTIONS / TX_PRODUCERS) {
                let t0 = Instant::now();
                let id = format!("tx-{p}-{i}");
                let r = svc
                    .send_message(tonic::Request::new(SendMessageRequest {
                        messages: vec![message(
                            "tx",
                            id.clone(),
                            (i % 8) as i32,
                            SystemProperties {
                                message_type: MessageType::Transaction as i32,
                                ..Default::default()
                            },
                        )],
                    }))
                    .await
                    .unwrap()
                    .into_inner();
                let tx = r.entries[0].transaction_id.clone();
                let e = svc
                    .end_transaction(tonic::Request::new(EndTransactionRequest {
                        topic: res("tx"),
                        message_id: id,
                        transaction_id: tx,
                        resolution: TransactionResolution::Commit as i32,
                        source: TransactionSource::SourceClient as i32,
                        trace_context: String::new(),
                    }))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(e.status.unwrap().code, Code::Ok as i32);
                latencies.push(t0.elapsed().as_micros() as i64);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "transaction: {TRANSACTIONS} send+commit by {TX_PRODUCERS} producers: {:.0} tx/s; \
         latency p50 {} us, p99 {} us",
        TRANSACTIONS as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("all", String::as_str).to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let dir = args
        .get(2)
        .map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
    let mut cfg = BrokerConfig {
        data_dir: dir,
        segment_size: 256 << 20,
        ..Default::default()
    };
    // A shared benchmark machine's disk may be fuller than the default 90% refuse mark.
    cfg.retention.disk_high_watermark = 0.98;
    cfg.retention.disk_refuse_watermark = 0.99;
    let (_tx, rx) = watch::channel(Arc::new(metadata()));
    let broker = Broker::open(cfg, rx).await.unwrap();
    let svc = broker.service();
    if what == "timer" || what == "all" {
        timer_bench(&svc).await;
    }
    if what == "fifo" || what == "all" {
        fifo_bench(&svc).await;
    }
    if what == "transaction" || what == "all" {
        transaction_bench(&svc).await;
    }
    broker.shutdown().await.unwrap();
}
