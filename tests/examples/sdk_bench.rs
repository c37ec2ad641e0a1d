//! Figures for the Comet Rust SDK against an in-process standalone node (loopback), one run:
//!
//! 1. **Producer**: `--concurrency` tasks sending `--size`-byte messages for `--seconds`, once
//!    with the SDK's [`comet_sdk::Producer`] and once with the official `rocketmq` 5.0.0
//!    crate's producer, same node, same topic: msgs/s of each and their ratio.
//! 2. **Push consumer**: an SDK push consumer with a no-op listener drains everything the two
//!    producers sent: msgs/s from its start to the last message.
//!
//! The bench's raw path is `comet bench` (a separate process against `comet standalone`); run
//! it on the same machine for the third column. Run with
//! `cargo run --release -p comet-tests --example sdk_bench -- [--seconds 10]
//! [--concurrency 16] [--size 1024]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use comet::admin::TopicType;
use comet_sdk::{ConsumeResult, FilterExpression, Message, MessageView, Producer, PushConsumer};
use comet_tests::{Mode, TestCluster};

const TOPIC: &str = "sdk-bench";
const GROUP: &str = "sdk-bench-group";

struct Args {
    seconds: u64,
    concurrency: usize,
    size: usize,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 10,
        concurrency: 16,
        size: 1024,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        let bad = |_| -> u64 { panic!("{} needs a positive number, got {value:?}", pair[0]) };
        let n = value.parse::<u64>().unwrap_or_else(bad);
        match pair[0].as_str() {
            "--seconds" => a.seconds = n,
            "--concurrency" => a.concurrency = usize::try_from(n).unwrap_or(usize::MAX),
            "--size" => a.size = usize::try_from(n).unwrap_or(usize::MAX),
            other => panic!("unknown argument {other:?} (--seconds, --concurrency, --size)"),
        }
    }
    a
}

/// Runs `concurrency` loops of `send` for `seconds`; returns (sent, failed).
async fn closed_loop<F, Fut>(a: &Args, send: F) -> (u64, u64)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let send = Arc::new(send);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (send, ok, failed) = (send.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                if send().await {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender task");
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

#[tokio::main]
async fn main() {
    let a = args();
    let cluster = TestCluster::start(Mode::Local).await;
    cluster.create_topic(TOPIC, 8, TopicType::Normal).await;
    cluster.create_group(GROUP, 16, None).await;
    let url = cluster.access_url();
    let body = vec![b'x'; a.size];

    let sdk = Producer::builder()
        .endpoints(&url)
        .topics([TOPIC])
        .build()
        .await
        .expect("SDK producer");
    let message = Message::builder(TOPIC)
        .body(body.clone())
        .build()
        .expect("valid message");
    let p = sdk.clone();
    let (sdk_sent, sdk_failed) = closed_loop(&a, move || {
        let (p, m) = (p.clone(), message.clone());
        async move { p.send(m).await.is_ok() }
    })
    .await;
    sdk.shutdown().await;

    let official = Arc::new(comet_tests::client::producer(&url, TOPIC).await);
    let (off_sent, off_failed) = closed_loop(&a, move || {
        let p = official.clone();
        let m = rocketmq::model::message::MessageBuilder::builder()
            .set_topic(TOPIC)
            .set_body(body.clone())
            .build()
            .expect("official message");
        async move { p.send(m).await.is_ok() }
    })
    .await;

    let total = sdk_sent + off_sent;
    let consumed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let consumer = {
        let (consumed, done) = (consumed.clone(), done.clone());
        PushConsumer::builder(GROUP)
            .endpoints(&url)
            .subscribe(TOPIC, FilterExpression::all())
            .max_concurrency(64)
            .max_cached_messages(4096)
            .listener(move |_m: MessageView| {
                let (consumed, done) = (consumed.clone(), done.clone());
                async move {
                    if consumed.fetch_add(1, Ordering::Relaxed) + 1 >= total {
                        done.notify_one();
                    }
                    ConsumeResult::Success
                }
            })
            .build()
            .await
            .expect("SDK push consumer")
    };
    let limit = Duration::from_secs(a.seconds * 20 + 60);
    let drained = tokio::time::timeout(limit, done.notified()).await.is_ok();
    let took = started.elapsed();
    consumer.shutdown().await;
    cluster.stop().await;

    let secs = a.seconds as f64;
    let sdk_rate = sdk_sent as f64 / secs;
    let off_rate = off_sent as f64 / secs;
    println!(
        "producer, {} B, {} in flight, {} s:",
        a.size, a.concurrency, a.seconds
    );
    println!("  comet-sdk        {sdk_rate:>10.0} msgs/s ({sdk_failed} failed)");
    println!("  rocketmq 5.0.0   {off_rate:>10.0} msgs/s ({off_failed} failed)");
    println!("  ratio            {:>10.2}x", sdk_rate / off_rate.max(1.0));
    let got = consumed.load(Ordering::Relaxed);
    println!(
        "push consumer (no-op listener): {got} of {total} in {took:.1?} = {:.0} msgs/s{}",
        got as f64 / took.as_secs_f64(),
        if drained { "" } else { " (did not drain)" }
    );
}
