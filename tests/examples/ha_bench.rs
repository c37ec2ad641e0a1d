//! High-availability figures on loopback, with real broker processes (see `comet_tests::ha`):
//!
//! 1. **Replication throughput**: a replica that was down catches up with a master holding
//!    `--catch-up-mib` MiB; MB/s from its start to its return into the sync-state set.
//! 2. **SYNC vs ASYNC produce**: the same closed-loop load (`--concurrency` producers sending
//!    `--size`-byte messages through the proxy for `--seconds`) against a two-broker set in
//!    each mode: throughput and p50/p99/p99.9 send latency.
//! 3. **Failover time**: default timeouts (3 s broker lease), three brokers, SYNC: kill -9 the
//!    master, then the time until a send through the proxy is acknowledged again (a client
//!    retrying every 10 ms with a 1 s deadline), over `--trials` kills.
//!
//! Run with `cargo run --release -p comet-tests --example ha_bench -- [--seconds 10]
//! [--concurrency 32] [--size 1024] [--catch-up-mib 256] [--trials 5]`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use comet::admin::{self, TopicCommand, TopicSpec, TopicType};
use comet::config::ReplicationModeKey;
use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1::broker_service_client::BrokerServiceClient;
use comet_tests::ha::{HaDeployment, HaOptions, SET};
use comet_tests::procs::{CHILD_FLAG, child_main};
use hdrhistogram::Histogram;
use pb::messaging_service_client::MessagingServiceClient;
use tonic::transport::Channel;

const TOPIC: &str = "bench";

struct Args {
    seconds: u64,
    concurrency: usize,
    size: usize,
    catch_up_mib: u64,
    trials: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        seconds: 10,
        concurrency: 32,
        size: 1024,
        catch_up_mib: 256,
        trials: 5,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || {
            argv.get(i + 1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{} needs a number", argv[i]))
        };
        match argv[i].as_str() {
            "--seconds" => a.seconds = value(),
            "--concurrency" => a.concurrency = value() as usize,
            "--size" => a.size = value() as usize,
            "--catch-up-mib" => a.catch_up_mib = value(),
            "--trials" => a.trials = value() as usize,
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(i) = argv.iter().position(|a| a == CHILD_FLAG) {
        child_main(Path::new(&argv[i + 1]));
        return;
    }
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        replication_throughput(&args).await;
        let async_load = produce(&args, ReplicationModeKey::Async).await;
        let sync_load = produce(&args, ReplicationModeKey::Sync).await;
        for (name, r) in [("ASYNC", async_load), ("SYNC", sync_load)] {
            println!(
                "produce {name:5}: {:8.0} msg/s {:6.1} MB/s  p50 {:6.2} ms  p99 {:6.2} ms  \
                 p99.9 {:6.2} ms  ({} sends, {} failed, {} producers, {} B)",
                r.per_sec,
                r.per_sec * args.size as f64 / 1e6,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.count,
                r.failed,
                args.concurrency,
                args.size
            );
        }
        failover(&args).await;
    });
}

fn res(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    })
}

fn message(id: String, queue_id: i32, body: Vec<u8>) -> pb::Message {
    pb::Message {
        topic: res(TOPIC),
        user_properties: HashMap::new(),
        system_properties: Some(pb::SystemProperties {
            message_id: id,
            queue_id,
            born_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: pb::MessageType::Normal as i32,
            ..Default::default()
        }),
        body: body.into(),
    }
}

fn with_client<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("x-mq-client-id", "ha-bench@1#1".parse().expect("ascii"));
    r.metadata_mut()
        .insert("x-mq-language", "HTTP".parse().expect("ascii"));
    r.set_timeout(timeout);
    r
}

async fn create_topic(d: &HaDeployment) {
    admin::topic(
        &d.cluster.admin(),
        &TopicCommand::Create(TopicSpec {
            name: TOPIC.to_owned(),
            queues: 8,
            message_type: TopicType::Normal,
            broker_sets: vec![SET.to_owned()],
            perm: admin::Perm::Rw,
        }),
    )
    .await
    .expect("topic created");
    d.cluster
        .wait_metadata("topic routable", |m| {
            m.topics.iter().any(|t| t.name == TOPIC)
        })
        .await;
}

async fn send_ok(
    client: &mut MessagingServiceClient<Channel>,
    m: pb::Message,
    timeout: Duration,
) -> bool {
    match client
        .send_message(with_client(
            pb::SendMessageRequest { messages: vec![m] },
            timeout,
        ))
        .await
    {
        Ok(r) => r
            .into_inner()
            .entries
            .first()
            .and_then(|e| e.status.as_ref())
            .is_some_and(|s| s.code == pb::Code::Ok as i32),
        Err(_) => false,
    }
}

async fn replication_throughput(args: &Args) {
    let d = HaDeployment::start(HaOptions {
        brokers: 2,
        mode: ReplicationModeKey::Async,
        min_in_sync: 1,
        broker_lease: Duration::from_secs(3),
        fast: false,
        tweak: |c| c.broker.segment_size = comet::size::ByteSize(64 << 20),
    })
    .await;
    create_topic(&d).await;
    let mut d = d;
    let master = d.master();
    let replica = 1 - master;
    d.brokers[replica].kill();
    d.wait_set("replica out of the set", |s| s.sync_state_set.len() == 1)
        .await;
    // Fill the master directly: 1 MiB requests of 16 KiB messages.
    let mut client =
        BrokerServiceClient::connect(format!("http://{}", d.brokers[master].real_addr()))
            .await
            .expect("connect to the master")
            .max_encoding_message_size(64 << 20);
    let body = vec![7u8; 16 << 10];
    let total = args.catch_up_mib << 20;
    let mut written = 0u64;
    let mut n = 0u64;
    let filled = Instant::now();
    while written < total {
        let batch: Vec<pb::Message> = (0..64)
            .map(|i| {
                n += 1;
                message(format!("fill-{n}"), i % 8, body.clone())
            })
            .collect();
        let r = client
            .send_message(pb::SendMessageRequest { messages: batch })
            .await
            .expect("fill the master")
            .into_inner();
        assert!(
            r.status.is_some_and(|s| s.code == pb::Code::Ok as i32),
            "fill failed"
        );
        written += 64 * body.len() as u64;
    }
    let fill_time = filled.elapsed();
    let started = Instant::now();
    d.brokers[replica].start().await;
    d.wait_set("replica caught up", |s| s.sync_state_set.len() == 2)
        .await;
    let took = started.elapsed();
    println!(
        "replication: a replica caught up {} MiB in {took:.2?} = {:.0} MB/s (replica start \
         to back in the sync-state set; master filled at {:.0} MB/s)",
        args.catch_up_mib,
        written as f64 / 1e6 / took.as_secs_f64(),
        written as f64 / 1e6 / fill_time.as_secs_f64()
    );
    d.stop().await;
}

struct LoadReport {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    count: u64,
    failed: u64,
}

async fn produce(args: &Args, mode: ReplicationModeKey) -> LoadReport {
    let d = HaDeployment::start(HaOptions {
        brokers: 2,
        mode,
        min_in_sync: if mode == ReplicationModeKey::Sync {
            2
        } else {
            1
        },
        broker_lease: Duration::from_secs(3),
        fast: false,
        tweak: |c| c.broker.segment_size = comet::size::ByteSize(64 << 20),
    })
    .await;
    create_topic(&d).await;
    let proxy = d.cluster.access_url();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in 0..args.concurrency {
        let (stop, failed, proxy, size) = (
            Arc::clone(&stop),
            Arc::clone(&failed),
            proxy.clone(),
            args.size,
        );
        tasks.push(tokio::spawn(async move {
            let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
                .await
                .expect("connect to proxy");
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let body = vec![b'x'; size];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let m = message(format!("p{p}-{n}"), 0, body.clone());
                let t = Instant::now();
                if send_ok(&mut client, m, Duration::from_secs(10)).await {
                    let _ = h.record(t.elapsed().as_micros() as u64);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            h
        }));
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let measuring = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = measuring.elapsed() + Duration::from_secs(2);
    for t in tasks {
        all.add(t.await.expect("producer"))
            .expect("merge histograms");
    }
    d.stop().await;
    let q = |p: f64| all.value_at_quantile(p) as f64 / 1000.0;
    LoadReport {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        count: all.len(),
        failed: failed.load(Ordering::Relaxed),
    }
}

async fn failover(args: &Args) {
    let mut d = HaDeployment::start(HaOptions {
        brokers: 3,
        mode: ReplicationModeKey::Sync,
        min_in_sync: 2,
        broker_lease: Duration::from_secs(3),
        fast: false,
        tweak: |_| {},
    })
    .await;
    create_topic(&d).await;
    let proxy = d.cluster.access_url();
    let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
        .await
        .expect("connect to proxy");
    let mut times = Vec::new();
    for trial in 0..args.trials {
        let m = d.master();
        let epoch = d.set().master_epoch;
        assert!(
            send_ok(
                &mut client,
                message(format!("pre-{trial}"), 0, vec![1]),
                Duration::from_secs(5)
            )
            .await,
            "the set serves before the kill"
        );
        let killed = Instant::now();
        d.brokers[m].kill();
        let mut n = 0;
        loop {
            n += 1;
            let probe = message(format!("probe-{trial}-{n}"), 0, vec![1]);
            if send_ok(&mut client, probe, Duration::from_secs(1)).await {
                break;
            }
            assert!(killed.elapsed() < Duration::from_secs(60), "no failover");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = killed.elapsed();
        times.push(took);
        println!(
            "failover trial {trial}: kill -9 master {m} → first acknowledged send after {took:.2?}"
        );
        d.wait_new_master(m, epoch).await;
        d.brokers[m].start().await;
        d.wait_all_in_sync("the killed master rejoins").await;
    }
    times.sort();
    println!(
        "failover (default timeouts: 3 s broker lease): p50 {:.2?}, max {:.2?} over {} kills",
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
    d.stop().await;
}
